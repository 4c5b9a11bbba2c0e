/*
 * eval_score.c - answer extraction, comparison and sandboxed code execution for
 * `lopad eval` (see eval_score.h), plus the built-in scorer cases of
 * `lopad eval --self-test`.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "eval_score.h"

/* ------------------------------------------------------------ small strings */

static char *dup_n(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    memcpy(o, s, n);
    o[n] = 0;
    return o;
}

/* length of a number token at s ("-1,234.5", "7", ".5"), 0 when none starts there */
static size_t number_at(const char *s) {
    size_t i = 0;
    if (s[i] == '-') i++;
    size_t d0 = i;
    while (isdigit((unsigned char)s[i]) || (s[i] == ',' && isdigit((unsigned char)s[i + 1])))
        i++;
    bool digits = i > d0;
    if (s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        i++;
        while (isdigit((unsigned char)s[i]))
            i++;
        digits = true;
    }
    return digits ? i : 0;
}

char *lp_eval_last_number(const char *out) {
    const char *best = NULL;
    size_t best_n = 0;
    for (size_t i = 0; out[i];) {
        bool may_start = isdigit((unsigned char)out[i]) || out[i] == '.' ||
                         (out[i] == '-' && (i == 0 || !isalnum((unsigned char)out[i - 1])));
        size_t n = may_start ? number_at(out + i) : 0;
        if (n) {
            best = out + i;
            best_n = n;
            i += n;
        } else {
            i++;
        }
    }
    return best ? dup_n(best, best_n) : NULL;
}

char *lp_eval_gsm_strict(const char *out) {
    for (const char *p = strstr(out, "####"); p; p = strstr(p + 4, "####")) {
        const char *q = p + 4;
        while (*q == ' ' || *q == '\t' || *q == '$')
            q++;
        size_t n = number_at(q);
        if (n) return dup_n(q, n);
    }
    return NULL;
}

/* digits with '.', '-' only (commas, '$', spaces dropped, one trailing '.' dropped) */
static char *num_clean(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ',' && s[i] != '$' && !isspace((unsigned char)s[i])) o[k++] = s[i];
    while (k && o[k - 1] == '.')
        k--;
    o[k] = 0;
    return o;
}

static bool parse_num(const char *s, double *v) {
    if (!*s) return false;
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return !*end && !errno && isfinite(*v);
}

bool lp_eval_num_equal(const char *a, const char *b) {
    if (!a || !b) return false;
    char *x = num_clean(a), *y = num_clean(b);
    bool eq = false;
    double u, v;
    if (x && y) {
        if (parse_num(x, &u) && parse_num(y, &v))
            eq = fabs(u - v) <= 1e-6 * fmax(1.0, fabs(v));
        else
            eq = !strcmp(x, y);
    }
    free(x);
    free(y);
    return eq;
}

char *lp_eval_gsm_reference(const char *answer) {
    const char *p = strstr(answer, "####");
    p = p ? p + 4 : answer;
    while (isspace((unsigned char)*p))
        p++;
    size_t n = strlen(p);
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    char *raw = dup_n(p, n);
    if (!raw) return NULL;
    char *c = num_clean(raw);
    free(raw);
    return c;
}

/* ------------------------------------------------------------------ MATH */

/* index just past the '}' matching the '{' at s[open], or 0 when unbalanced */
static size_t match_brace(const char *s, size_t open) {
    int depth = 0;
    for (size_t i = open; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1]) {
            i++;
            continue;
        }
        if (s[i] == '{') depth++;
        if (s[i] == '}' && --depth == 0) return i + 1;
    }
    return 0;
}

char *lp_eval_math_extract(const char *out) {
    const char *last = NULL;
    size_t skip = 0;
    static const char *const marks[] = {"\\boxed", "\\fbox"};
    for (int m = 0; m < 2; m++)
        for (const char *p = strstr(out, marks[m]); p; p = strstr(p + 1, marks[m]))
            if (!last || p > last) {
                last = p;
                skip = strlen(marks[m]);
            }
    if (last) {
        const char *q = last + skip;
        while (*q == ' ')
            q++;
        if (*q == '{') {
            size_t e = match_brace(q, 0);
            if (e) return dup_n(q + 1, e - 2);
        } else if (*q) { /* "\boxed 5" */
            size_t n = 0;
            while (q[n] && q[n] != '$' && !isspace((unsigned char)q[n]))
                n++;
            if (n) return dup_n(q, n);
        }
    }
    return lp_eval_last_number(out);
}

/* growing output buffer */
struct sbuf {
    char *v;
    size_t n, cap;
    bool oom;
};
static void sb_putn(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *v = realloc(b->v, cap);
        if (!v) {
            b->oom = true;
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
}
static void sb_puts(struct sbuf *b, const char *s) {
    sb_putn(b, s, strlen(s));
}

static bool starts(const char *s, const char *p) {
    return !strncmp(s, p, strlen(p));
}

/* one pass of token rewrites; \frac / \sqrt arguments braced */
static char *math_rewrite(const char *s) {
    struct sbuf b = {0};
    sb_puts(&b, "");
    static const char *const drop[] = {"\\left", "\\right", "\\!",           "\\,",     "\\;",
                                       "\\:",    "\\ ",     "^{\\circ}",     "^\\circ", "\\%",
                                       "%",      "$",       "\\displaystyle"};
    static const char *const unwrap[] = {"\\text{", "\\textbf{", "\\mbox{", "\\mathrm{"};
    for (size_t i = 0; s[i];) {
        bool done = false;
        for (size_t d = 0; d < sizeof drop / sizeof *drop && !done; d++)
            if (starts(s + i, drop[d])) {
                i += strlen(drop[d]);
                done = true;
            }
        for (size_t u = 0; u < sizeof unwrap / sizeof *unwrap && !done; u++)
            if (starts(s + i, unwrap[u])) {
                size_t open = i + strlen(unwrap[u]) - 1, e = match_brace(s, open);
                if (e) {
                    char *in = dup_n(s + open + 1, e - open - 2);
                    char *r = in ? math_rewrite(in) : NULL;
                    if (r) sb_puts(&b, r);
                    free(in);
                    free(r);
                    i = e;
                    done = true;
                }
            }
        if (done) continue;
        const char *fr = starts(s + i, "\\dfrac")   ? "\\dfrac"
                         : starts(s + i, "\\tfrac") ? "\\tfrac"
                         : starts(s + i, "\\frac")  ? "\\frac"
                         : starts(s + i, "\\sqrt")  ? "\\sqrt"
                                                    : NULL;
        if (fr) {
            bool sq = !strcmp(fr, "\\sqrt");
            sb_puts(&b, sq ? "\\sqrt" : "\\frac");
            i += strlen(fr);
            for (int arg = 0; arg < (sq ? 1 : 2); arg++) {
                while (s[i] == ' ')
                    i++;
                if (s[i] == '{') {
                    size_t e = match_brace(s, i);
                    if (!e) break;
                    char *in = dup_n(s + i + 1, e - i - 2);
                    char *r = in ? math_rewrite(in) : NULL;
                    sb_puts(&b, "{");
                    if (r) sb_puts(&b, r);
                    sb_puts(&b, "}");
                    free(in);
                    free(r);
                    i = e;
                } else if (s[i]) { /* \frac12 -> \frac{1}{2} */
                    sb_puts(&b, "{");
                    sb_putn(&b, s + i, 1);
                    sb_puts(&b, "}");
                    i++;
                }
            }
            continue;
        }
        if (!isspace((unsigned char)s[i])) sb_putn(&b, s + i, 1);
        i++;
    }
    if (b.oom) {
        free(b.v);
        return NULL;
    }
    return b.v;
}

char *lp_eval_math_normalize(const char *s) {
    char *r = math_rewrite(s);
    if (!r) return NULL;
    size_t n = strlen(r);
    while (n && r[n - 1] == '.')
        r[--n] = 0;
    /* "x=5", "k=\frac{1}{2}": drop a short left-hand side */
    char *eq = strchr(r, '=');
    if (eq && eq - r <= 2 && !strchr(eq + 1, '=')) memmove(r, eq + 1, strlen(eq + 1) + 1);
    /* "1,000" -> "1000" when the whole answer is a number */
    bool numlike = *r != 0;
    for (char *p = r; *p; p++)
        numlike &= isdigit((unsigned char)*p) || *p == ',' || *p == '.' || *p == '-';
    if (numlike && strchr(r, ',')) {
        char *c = num_clean(r);
        double v;
        if (c && parse_num(c, &v)) {
            free(r);
            return c;
        }
        free(c);
    }
    return r;
}

/* the value of a normalised answer that is a number, -a, \frac{a}{b} or a/b */
static bool math_value(const char *s, double *v) {
    double sign = 1;
    if (*s == '-') {
        sign = -1;
        s++;
    }
    if (parse_num(s, v)) {
        *v *= sign;
        return true;
    }
    double a, b;
    char x[64], y[64];
    if (starts(s, "\\frac{")) {
        const char *p = s + 6, *q = strchr(p, '}');
        if (!q || q - p >= 63 || q[1] != '{') return false;
        memcpy(x, p, (size_t)(q - p));
        x[q - p] = 0;
        const char *r = strchr(q + 2, '}');
        if (!r || r[1] || r - (q + 2) >= 63) return false;
        memcpy(y, q + 2, (size_t)(r - (q + 2)));
        y[r - (q + 2)] = 0;
    } else {
        const char *sl = strchr(s, '/');
        if (!sl || sl - s >= 63 || strlen(sl + 1) >= 63) return false;
        memcpy(x, s, (size_t)(sl - s));
        x[sl - s] = 0;
        strcpy(y, sl + 1);
    }
    if (!parse_num(x, &a) || !parse_num(y, &b) || b == 0) return false;
    *v = sign * a / b;
    return true;
}

bool lp_eval_math_equal(const char *pred, const char *ref) {
    if (!pred || !ref) return false;
    char *p = lp_eval_math_normalize(pred), *r = lp_eval_math_normalize(ref);
    bool eq = false;
    if (p && r) {
        double u, v;
        eq = !strcmp(p, r) ||
             (math_value(p, &u) && math_value(r, &v) && fabs(u - v) <= 1e-6 * fmax(1.0, fabs(v)));
    }
    free(p);
    free(r);
    return eq;
}

/* ------------------------------------------------------------------ code */

char *lp_eval_code_block(const char *out) {
    const char *p = strstr(out, "```");
    if (!p) return NULL;
    p += 3;
    const char *nl = strchr(p, '\n');
    if (!nl) return NULL;
    p = nl + 1; /* skip the language tag */
    const char *e = strstr(p, "```");
    return dup_n(p, e ? (size_t)(e - p) : strlen(p));
}

char *lp_eval_cut_completion(const char *c) {
    const char *nl = strchr(c, '\n');
    while (nl) {
        const char *line = nl + 1;
        if (*line && *line != ' ' && *line != '\t' && *line != '\n' && *line != '\r')
            return dup_n(c, (size_t)(line - c));
        nl = strchr(line, '\n');
    }
    return dup_n(c, strlen(c));
}

const char *lp_exec_result_name(enum lp_exec_result r) {
    switch (r) {
    case LP_EXEC_PASS: return "pass";
    case LP_EXEC_FAIL: return "fail";
    case LP_EXEC_TIMEOUT: return "timeout";
    case LP_EXEC_NOSANDBOX: return "no-sandbox";
    default: return "error";
    }
}

/* ------------------------------------------------------------ execution */

/* Limits of a generated program. The address-space limit is per process; with
 * the process limit it bounds what a fork bomb can take. */
#define EXEC_AS_BYTES ((rlim_t)2 << 30)
#define EXEC_FSIZE_BYTES ((rlim_t)16 << 20)
#define EXEC_NPROC 64
#define EXEC_NOFILE 256
/* the exit status bwrap reports for a program killed by SIGXCPU (128 + signal) */
#define EXIT_SIGXCPU (128 + SIGXCPU)

static bool unsafe_exec;

void lp_eval_set_unsafe_exec(bool on) {
    unsafe_exec = on;
}

bool lp_eval_unsafe_exec(void) {
    return unsafe_exec;
}

/* an executable: a name with '/' as is, else searched in $PATH; malloc'd, NULL when none */
static char *find_exe(const char *name) {
    if (strchr(name, '/')) return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        char *cand = NULL;
        if (n && asprintf(&cand, "%.*s/%s", (int)n, p, name) > 0 && access(cand, X_OK) == 0)
            return cand;
        free(cand);
        p += n + (p[n] == ':');
    }
    return NULL;
}

/* $LOPAD_PYTHON, else the system interpreter (version-manager shims such as pyenv's
 * cost seconds per start), else python3 from PATH */
static char *python_exe(void) {
    const char *py = getenv("LOPAD_PYTHON");
    if (py && *py) return find_exe(py);
    if (access("/usr/bin/python3", X_OK) == 0) return strdup("/usr/bin/python3");
    return find_exe("python3");
}

/* wait for pid, killing it (and its process group) after timeout_s; true = timed out */
static bool wait_timeout(pid_t pid, double timeout_s, int *st) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid) return false;
        if (w < 0 && errno != EINTR) {
            *st = -1;
            return false;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double dt = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (dt > timeout_s) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, st, 0);
            return true;
        }
        struct timespec nap = {0, 2000000};
        nanosleep(&nap, NULL);
    }
}

/* whatever is in a non-blocking pipe, NUL-terminated (truncated to cap) */
static void drain(int fd, char *buf, size_t cap) {
    size_t n = 0;
    ssize_t r;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
}

/* ------------------------------------------------------------- bubblewrap */

/* The argv of a sandboxed run: bwrap with new user, PID, network, mount, IPC, UTS
 * and cgroup namespaces, the system read-only, a private tmpfs /tmp holding the
 * program (copied from prog_fd) as the working directory, then prlimit setting
 * the limits of the interpreter. Strings are either literals or in `hold`. */
struct bwrap_cmd {
    char *argv[96];
    int n;
    char *hold[16];
    int n_hold;
};

static void arg(struct bwrap_cmd *c, const char *a) {
    if (c->n < (int)(sizeof c->argv / sizeof *c->argv) - 1) c->argv[c->n++] = (char *)a;
}

/* s (malloc'd, may be NULL) is freed with c; false when it is NULL */
static bool held(struct bwrap_cmd *c, char *s) {
    if (!s) return false;
    if (c->n_hold == (int)(sizeof c->hold / sizeof *c->hold)) {
        free(s);
        return false;
    }
    c->hold[c->n_hold++] = s;
    return true;
}

/* a printf-made argument held by c; false when out of memory */
__attribute__((format(printf, 2, 3))) static bool argf(struct bwrap_cmd *c, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    if (n < 0 || !held(c, s)) return false;
    arg(c, s);
    return true;
}

static void bwrap_cmd_free(struct bwrap_cmd *c) {
    for (int i = 0; i < c->n_hold; i++)
        free(c->hold[i]);
}

/* the interpreter's installation, when it lies outside the bound system folders */
static void bind_prefix(struct bwrap_cmd *c, const char *exe) {
    if (!strncmp(exe, "/usr/", 5) || !strncmp(exe, "/bin/", 5)) return;
    char *dir = strdup(exe);
    if (!held(c, dir)) return;
    for (int up = 0; up < 2; up++) { /* PREFIX/bin/python3 -> PREFIX */
        char *sl = strrchr(dir, '/');
        if (sl && sl != dir) *sl = 0;
    }
    arg(c, "--ro-bind-try");
    arg(c, dir);
    arg(c, dir);
}

static bool bwrap_cmd_build(struct bwrap_cmd *c, const char *bwrap, const char *py,
                            const char *prlimit, int prog_fd, int status_fd, double timeout_s) {
    static const char *const system_dirs[] = {"/usr",
                                              "/bin",
                                              "/sbin",
                                              "/lib",
                                              "/lib32",
                                              "/lib64",
                                              "/etc/alternatives",
                                              "/etc/ld.so.cache",
                                              "/etc/localtime"};
    memset(c, 0, sizeof *c);
    arg(c, bwrap);
    arg(c, "--unshare-all");
    arg(c, "--die-with-parent");
    arg(c, "--new-session");
    for (size_t i = 0; i < sizeof system_dirs / sizeof *system_dirs; i++) {
        arg(c, "--ro-bind-try");
        arg(c, system_dirs[i]);
        arg(c, system_dirs[i]);
    }
    bind_prefix(c, py);
    char *real = realpath(py, NULL);
    if (held(c, real)) bind_prefix(c, real);
    static const char *const fs[] = {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++)
        arg(c, fs[i]);
    arg(c, "--file");
    bool ok = argf(c, "%d", prog_fd);
    arg(c, "/tmp/prog.py");
    arg(c, "--chdir");
    arg(c, "/tmp");
    arg(c, "--remount-ro"); /* the sandbox's own root too: only /tmp is writable */
    arg(c, "/");
    arg(c, "--json-status-fd");
    ok = ok && argf(c, "%d", status_fd);
    arg(c, "--");
    /* limits set inside the namespaces: the process count is then the sandbox's own */
    arg(c, prlimit);
    ok = ok && argf(c, "--cpu=%ld", (long)ceil(timeout_s) + 1) &&
         argf(c, "--as=%llu", (unsigned long long)EXEC_AS_BYTES) &&
         argf(c, "--fsize=%llu", (unsigned long long)EXEC_FSIZE_BYTES) &&
         argf(c, "--nproc=%d", EXEC_NPROC) && argf(c, "--nofile=%d", EXEC_NOFILE);
    arg(c, "--core=0");
    arg(c, "--");
    arg(c, py);
    arg(c, "-I"); /* isolated: no user site, no PYTHON* variables */
    arg(c, "/tmp/prog.py");
    c->argv[c->n] = NULL;
    return ok;
}

/* the program in an anonymous file bwrap copies into the sandbox; -1 on failure */
static int program_fd(const char *program) {
    int fd = memfd_create("lopad-prog", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = strlen(program);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, program + off, n - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* In the child, before exec: root runs the sandbox as nobody (65534), for the
 * process limit does not apply to uid 0 and the program gets no root-owned
 * files; bwrap then works through an unprivileged user namespace. */
static bool drop_root(void) {
    if (geteuid() != 0) return true;
    return setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 &&
           setresuid(65534, 65534, 65534) == 0;
}

/* Run program in bwrap; err (may be NULL) receives bwrap's message when the sandbox
 * could not be set up (the program's own output is discarded otherwise). */
static enum lp_exec_result sandbox_run(const char *program, double timeout_s, char *err,
                                       size_t errcap) {
    if (err && errcap) *err = 0;
    const char *env_bwrap = getenv("LOPAD_BWRAP");
    char *bwrap = env_bwrap ? (*env_bwrap ? find_exe(env_bwrap) : NULL) : find_exe("bwrap");
    char *py = python_exe(), *prlimit = find_exe("prlimit");
    int prog = -1, status[2] = {-1, -1}, errp[2] = {-1, -1};
    enum lp_exec_result r = LP_EXEC_NOSANDBOX;
    struct bwrap_cmd c = {0};
    if (!bwrap || !py || !prlimit) {
        if (err && !bwrap && env_bwrap)
            snprintf(err, errcap, "bwrap not found: LOPAD_BWRAP=%.300s is not an executable",
                     env_bwrap);
        else if (err)
            snprintf(err, errcap, "%s not found",
                     !bwrap ? "bwrap (package bubblewrap)"
                     : !py  ? "python3"
                            : "prlimit (package util-linux)");
        goto out;
    }
    r = LP_EXEC_ERROR;
    if ((prog = program_fd(program)) < 0 || pipe2(status, O_CLOEXEC) != 0 ||
        (err && pipe2(errp, O_CLOEXEC) != 0) ||
        !bwrap_cmd_build(&c, bwrap, py, prlimit, prog, status[1], timeout_s)) {
        if (err) snprintf(err, errcap, "cannot prepare the sandbox: %s", strerror(errno));
        goto out;
    }
    char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", NULL};
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) goto out;
    if (pid == 0) {
        setpgid(0, 0);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(errp[1] >= 0 ? errp[1] : null, 2);
        fcntl(prog, F_SETFD, 0); /* these two cross the exec */
        fcntl(status[1], F_SETFD, 0);
        struct rlimit core = {0, 0};
        setrlimit(RLIMIT_CORE, &core);
        if (chdir("/") != 0 || !drop_root()) {
            dprintf(2, "cannot leave the root account: %s\n", strerror(errno));
            _exit(126);
        }
        execve(c.argv[0], c.argv, envp);
        _exit(127);
    }
    setpgid(pid, pid);
    close(status[1]);
    status[1] = -1;
    int st = 0;
    bool timed_out = wait_timeout(pid, timeout_s, &st);
    char sbuf[256], ebuf[200];
    drain(status[0], sbuf, sizeof sbuf);
    if (timed_out) {
        r = LP_EXEC_TIMEOUT;
    } else if (!strstr(sbuf, "child-pid")) { /* bwrap failed before starting the program */
        r = LP_EXEC_NOSANDBOX;
        if (err) {
            drain(errp[0], ebuf, sizeof ebuf);
            ebuf[strcspn(ebuf, "\n")] = 0;
            snprintf(err, errcap, "bwrap (%.200s) does not work here (%s)", bwrap,
                     *ebuf ? ebuf : "no message");
        }
    } else if (st != -1 && WIFEXITED(st)) {
        int code = WEXITSTATUS(st);
        r = code == 0                    ? LP_EXEC_PASS
            : code == EXIT_SIGXCPU       ? LP_EXEC_TIMEOUT
            : code == 126 || code == 127 ? LP_EXEC_ERROR
                                         : LP_EXEC_FAIL;
    } else {
        r = LP_EXEC_FAIL;
    }
out:;
    int fds[] = {prog, status[0], status[1], errp[0], errp[1]};
    for (size_t i = 0; i < sizeof fds / sizeof *fds; i++)
        if (fds[i] >= 0) close(fds[i]);
    bwrap_cmd_free(&c);
    free(bwrap);
    free(py);
    free(prlimit);
    return r;
}

/* the sandbox, probed once by running an empty program in it */
static int probe_state = -1; /* -1 not yet, 0 works, 1 does not */
static char probe_why[800];

int lp_eval_sandbox_check(char *why, size_t cap) {
    if (probe_state < 0) {
        char err[512];
        enum lp_exec_result r = sandbox_run("pass", 30, err, sizeof err);
        probe_state = r == LP_EXEC_PASS ? 0 : 1;
        if (probe_state)
            snprintf(probe_why, sizeof probe_why,
                     "no working sandbox for generated code: %s (install bubblewrap, or pass "
                     "--unsafe-exec to run the code unconfined)",
                     *err ? err : lp_exec_result_name(r));
    }
    if (why && cap) snprintf(why, cap, "%s", probe_state ? probe_why : "");
    return probe_state;
}

/* socket calls fail inside the program even where unshare is not available */
static const char *const no_network_prelude =
    "import socket as _lopad_socket\n"
    "def _lopad_nonet(*a, **k):\n"
    "    raise OSError('network access is disabled in lopad eval')\n"
    "for _lopad_n in ('connect', 'connect_ex', 'bind', 'sendto'):\n"
    "    setattr(_lopad_socket.socket, _lopad_n, _lopad_nonet)\n"
    "_lopad_socket.create_connection = _lopad_nonet\n"
    "_lopad_socket.getaddrinfo = _lopad_nonet\n"
    "del _lopad_n, _lopad_socket\n";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* run argv to completion (output discarded); exit status or -1 */
static int run_quiet(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* 0 = no isolation tool, 1 = "unshare -n", 2 = "unshare -rn" (probed once) */
static int netns_mode = -1;

static void probe_netns(void) {
    if (netns_mode >= 0) return;
    char *a1[] = {"unshare", "-n", "true", NULL};
    char *a2[] = {"unshare", "-rn", "true", NULL};
    netns_mode = run_quiet(a1) == 0 ? 1 : run_quiet(a2) == 0 ? 2 : 0;
}

/* --unsafe-exec without a sandbox: the program runs in a temporary directory, in its own
 * process group, without network where unshare works, with rlimits; it has the
 * user's file access, and a setsid() child escapes the timeout */
static enum lp_exec_result exec_unsafe(const char *program, double timeout_s) {
    probe_netns();
    char *py = python_exe();
    if (!py) return LP_EXEC_ERROR;
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/lopad-eval-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        free(py);
        return LP_EXEC_ERROR;
    }
    char file[4200];
    snprintf(file, sizeof file, "%s/prog.py", dir);
    FILE *f = fopen(file, "w");
    if (!f) {
        rmdir(dir);
        free(py);
        return LP_EXEC_ERROR;
    }
    bool wok = fputs(no_network_prelude, f) >= 0 && fputs(program, f) >= 0 && fputc('\n', f) != EOF;
    if (fclose(f) != 0 || !wok) {
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
        free(py);
        return LP_EXEC_ERROR;
    }
    /* everything the child needs is prepared before fork (no allocation there) */
    char *argv[8];
    int k = 0;
    if (netns_mode == 1) {
        argv[k++] = "unshare";
        argv[k++] = "-n";
    } else if (netns_mode == 2) {
        argv[k++] = "unshare";
        argv[k++] = "-rn";
    }
    argv[k++] = py;
    argv[k++] = "-I"; /* isolated: no user site, no PYTHON* variables */
    argv[k++] = "prog.py";
    argv[k] = NULL;
    rlim_t cpu = (rlim_t)ceil(timeout_s) + 1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
        free(py);
        return LP_EXEC_ERROR;
    }
    if (pid == 0) {
        setpgid(0, 0);
        if (chdir(dir) != 0) _exit(126);
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        struct rlimit rl = {cpu, cpu};
        setrlimit(RLIMIT_CPU, &rl);
        rl.rlim_cur = rl.rlim_max = EXEC_AS_BYTES;
        setrlimit(RLIMIT_AS, &rl);
        rl.rlim_cur = rl.rlim_max = EXEC_FSIZE_BYTES;
        setrlimit(RLIMIT_FSIZE, &rl);
        rl.rlim_cur = rl.rlim_max = 0;
        setrlimit(RLIMIT_CORE, &rl);
        execvp(argv[0], argv);
        _exit(127);
    }
    setpgid(pid, pid); /* also from here: no race with the child's own call */
    int st = 0;
    enum lp_exec_result r = LP_EXEC_ERROR;
    if (wait_timeout(pid, timeout_s, &st))
        r = LP_EXEC_TIMEOUT;
    else if (st != -1 && WIFEXITED(st))
        r = WEXITSTATUS(st) == 0     ? LP_EXEC_PASS
            : WEXITSTATUS(st) >= 126 ? LP_EXEC_ERROR
                                     : LP_EXEC_FAIL;
    else if (st != -1) /* a signal: the CPU limit or a crash */
        r = WTERMSIG(st) == SIGXCPU ? LP_EXEC_TIMEOUT : LP_EXEC_FAIL;
    kill(-pid, SIGKILL); /* whatever the program left running in its group */
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(py);
    return r;
}

enum lp_exec_result lp_eval_exec_python(const char *program, double timeout_s) {
    if (lp_eval_sandbox_check(NULL, 0) == 0) return sandbox_run(program, timeout_s, NULL, 0);
    return unsafe_exec ? exec_unsafe(program, timeout_s) : LP_EXEC_NOSANDBOX;
}

/* ------------------------------------------------------------- self-test */

static int n_pass, n_fail;

static void expect_str(const char *what, char *got, const char *want) {
    bool ok = (!got && !want) || (got && want && !strcmp(got, want));
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL %s: got %s%s%s, want %s%s%s\n", what, got ? "'" : "", got ? got : "(none)",
               got ? "'" : "", want ? "'" : "", want ? want : "(none)", want ? "'" : "");
    }
    free(got);
}

static void expect_bool(const char *what, bool got, bool want) {
    if (got == want) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL %s: got %s, want %s\n", what, got ? "true" : "false", want ? "true" : "false");
    }
}

int lp_eval_self_test(void) {
    n_pass = n_fail = 0;
    /* GSM8K strict / flexible extraction */
    expect_str("strict", lp_eval_gsm_strict("so 5+3=8\n#### 8"), "8");
    expect_str("strict $,", lp_eval_gsm_strict("#### $1,234.50 dollars"), "1,234.50");
    expect_str("strict none", lp_eval_gsm_strict("the answer is 8"), NULL);
    expect_str("strict first", lp_eval_gsm_strict("#### 3\nQuestion: x\n#### 9"), "3");
    expect_str("strict neg", lp_eval_gsm_strict("####-4"), "-4");
    expect_str("flex last", lp_eval_last_number("3 apples and 4 pears: 7."), "7");
    expect_str("flex comma", lp_eval_last_number("total 1,200 cents"), "1,200");
    expect_str("flex dec", lp_eval_last_number("costs $2.50."), "2.50");
    expect_str("flex neg", lp_eval_last_number("is -12"), "-12");
    expect_str("flex dash", lp_eval_last_number("pages 3-5"), "5");
    expect_str("flex none", lp_eval_last_number("no digits"), NULL);
    expect_str("reference", lp_eval_gsm_reference("a <<1+1=2>> b\n#### 1,000 "), "1000");
    expect_bool("num eq comma", lp_eval_num_equal("1,000", "1000"), true);
    expect_bool("num eq decimal", lp_eval_num_equal("18.00", "18"), true);
    expect_bool("num eq dollar dot", lp_eval_num_equal("$18.", "18"), true);
    expect_bool("num ne", lp_eval_num_equal("17", "18"), false);
    expect_bool("num ne null", lp_eval_num_equal(NULL, "18"), false);
    /* MATH extraction and normalisation */
    expect_str("boxed", lp_eval_math_extract("so \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
    expect_str("boxed last", lp_eval_math_extract("\\boxed{1} then \\boxed{x^{2}}"), "x^{2}");
    expect_str("boxed space", lp_eval_math_extract("$\\boxed 5$"), "5");
    expect_str("fbox", lp_eval_math_extract("\\fbox{7}"), "7");
    expect_str("no box", lp_eval_math_extract("it is 12 or 13"), "13");
    expect_str("norm frac", lp_eval_math_normalize("\\dfrac12"), "\\frac{1}{2}");
    expect_str("norm lr", lp_eval_math_normalize("\\left( 3, \\frac{\\pi}{2} \\right)"),
               "(3,\\frac{\\pi}{2})");
    expect_str("norm text", lp_eval_math_normalize("10\\text{ inches}"), "10inches");
    expect_str("norm deg", lp_eval_math_normalize("90^\\circ"), "90");
    expect_str("norm eq", lp_eval_math_normalize("x = 5."), "5");
    expect_str("norm sqrt", lp_eval_math_normalize("2\\sqrt3"), "2\\sqrt{3}");
    expect_str("norm comma", lp_eval_math_normalize("1,000"), "1000");
    expect_bool("math eq frac", lp_eval_math_equal("\\tfrac{1}{2}", "\\frac12"), true);
    expect_bool("math eq num", lp_eval_math_equal("0.5", "\\frac{1}{2}"), true);
    expect_bool("math eq slash", lp_eval_math_equal("-3/4", "-\\frac{3}{4}"), true);
    expect_bool("math ne", lp_eval_math_equal("\\frac{1}{3}", "\\frac{1}{2}"), false);
    expect_bool("math tuple",
                lp_eval_math_equal("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
                true);
    /* code extraction */
    expect_str("code block", lp_eval_code_block("Here:\n```python\ndef f():\n    return 1\n```\n"),
               "def f():\n    return 1\n");
    expect_str("code none", lp_eval_code_block("def f(): pass"), NULL);
    expect_str("cut", lp_eval_cut_completion("    return 1\n\ndef g():\n    pass\n"),
               "    return 1\n\n");
    /* code execution: pass, fail, syntax error, timeout, no network */
    char why[800];
    if (lp_eval_sandbox_check(why, sizeof why) && !lp_eval_unsafe_exec()) {
        printf("execution cases skipped: %s\n", why);
    } else {
        const char *good = "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n";
        expect_str("exec pass", strdup(lp_exec_result_name(lp_eval_exec_python(good, 10))), "pass");
        expect_str("exec fail",
                   strdup(lp_exec_result_name(lp_eval_exec_python("assert 1 + 1 == 3\n", 10))),
                   "fail");
        expect_str("exec syntax", strdup(lp_exec_result_name(lp_eval_exec_python("def f(:\n", 10))),
                   "fail");
        expect_str("exec timeout",
                   strdup(lp_exec_result_name(lp_eval_exec_python("while True:\n    pass\n", 1))),
                   "timeout");
        expect_str(
            "exec no network",
            strdup(lp_exec_result_name(lp_eval_exec_python("import socket\n"
                                                           "s = socket.socket()\n"
                                                           "try:\n"
                                                           "    s.connect(('127.0.0.1', 9))\n"
                                                           "    raise SystemExit(1)\n"
                                                           "except OSError:\n"
                                                           "    pass\n",
                                                           10))),
            "pass");
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail;
}
