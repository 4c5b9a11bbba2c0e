/* main.c - `lopad COMMAND ...`: dispatch to the registered commands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include "cli.h"
#include "dist.h"

#define MAX_COMMANDS 32

static struct {
    const char *name;
    lp_cli_fn fn;
    const char *summary;
} commands[MAX_COMMANDS];
static int n_commands;

void lp_cli_register(const char *name, lp_cli_fn fn, const char *summary) {
    if (n_commands < MAX_COMMANDS) {
        commands[n_commands].name = name;
        commands[n_commands].fn = fn;
        commands[n_commands].summary = summary;
        n_commands++;
    }
}

int lp_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "lopad %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int lp_cli_fail(const char *cmd, enum lopad_status st) {
    const char *msg = lopad_errmsg();
    fprintf(stderr, "lopad %s: %s\n", cmd, msg[0] ? msg : lopad_status_name(st));
    return 1;
}

int lp_cli_env_ctx_params(const char *cmd, const char **kernels, int *repack) {
    const char *k = getenv("LOPAD_KERNELS"), *r = getenv("LOPAD_REPACK");
    *kernels = k && *k ? k : NULL;
    *repack = LOPAD_REPACK_AUTO;
    if (!r || !*r) return 0;
    if (strcmp(r, "0") && strcmp(r, "1"))
        return lp_cli_usage_error(cmd, "LOPAD_REPACK must be 0 or 1, got '%s'", r);
    *repack = !strcmp(r, "1") ? LOPAD_REPACK_ON : LOPAD_REPACK_OFF;
    return 0;
}

bool lp_cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi,
                      long *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        lp_cli_usage_error(cmd, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi,
                           s ? s : "(nothing)");
        return false;
    }
    *out = v;
    return true;
}

bool lp_cli_parse_float(const char *cmd, const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || v != v) {
        lp_cli_usage_error(cmd, "%s expects a number, got '%s'", opt, s ? s : "(nothing)");
        return false;
    }
    *out = v;
    return true;
}

int lp_cli_weight_type(const char *name) {
    static const struct {
        const char *name;
        int type;
    } types[] = {{"f32", LOPAD_TYPE_F32},   {"f16", LOPAD_TYPE_F16},   {"bf16", LOPAD_TYPE_BF16},
                 {"q8_0", LOPAD_TYPE_Q8_0}, {"q4_0", LOPAD_TYPE_Q4_0}, {"q4_k", LOPAD_TYPE_Q4_K},
                 {"q6_k", LOPAD_TYPE_Q6_K}};
    for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++)
        if (name && !strcmp(name, types[i].name)) return types[i].type;
    return -1;
}

bool lp_cli_parse_ids(const char *cmd, const char *opt, const char *s, int32_t **out, int *n) {
    *out = NULL;
    *n = 0;
    if (!s || !*s) {
        lp_cli_usage_error(cmd, "%s expects a comma-separated list of integers, got nothing", opt);
        return false;
    }
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (!ids) return lp_cli_usage_error(cmd, "out of memory"), false;
    const char *p = s;
    int k = 0;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX || (*end != ',' && *end)) {
            lp_cli_usage_error(cmd, "%s: bad integer list '%s'", opt, s);
            free(ids);
            return false;
        }
        ids[k++] = (int32_t)v;
        if (!*end) break;
        p = end + 1;
    }
    *out = ids;
    *n = k;
    return true;
}

static int cmp_cmd(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void usage(FILE *f) {
    fprintf(f, "lopad %s - fast inference for diffusion language models\n\n", LOPAD_VERSION);
    fprintf(
        f,
        "usage: lopad COMMAND [options]   (lopad COMMAND --help for its options)\n\ncommands:\n");
    const char *names[MAX_COMMANDS];
    for (int i = 0; i < n_commands; i++)
        names[i] = commands[i].name;
    qsort(names, n_commands, sizeof names[0], cmp_cmd);
    for (int i = 0; i < n_commands; i++)
        for (int j = 0; j < n_commands; j++)
            if (commands[j].name == names[i])
                fprintf(f, "  %-10s %s\n", commands[j].name, commands[j].summary);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lopad %s\n", LOPAD_VERSION);
        return 0;
    }
#ifdef LOPAD_DEFAULT_MODEL_PATH
    /* the embedded default model, used by run/chat when no -m is given */
    setenv("LOPAD_DEFAULT_MODEL", LOPAD_DEFAULT_MODEL_PATH, 0);
#endif
    int rc = lp_cli_dist_init(argc, argv); /* mpirun: join the job (cli/dist.h) */
    if (rc) return rc;
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return lp_cli_dist_exit(commands[i].fn(argc - 1, argv + 1));
    fprintf(stderr, "lopad: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
