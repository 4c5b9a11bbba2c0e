/*
 * cmd_logits.c - `lopad logits`: raw logits of every fed token, as float32
 * little-endian rows [n_tokens][n_vocab] (no shift applied). One bidirectional
 * forward over the given tokens at the given positions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "core/atomic_file.h"

static int usage(void) {
    printf("usage: lopad logits -m MODEL --tokens 1,2,3 [--positions 0,1,2] [--threads N]\n"
           "                    [--lora DIR] [--device cpu|cuda] --out FILE\n"
           "Writes float32 little-endian rows [n_tokens][n_vocab] of raw logits to FILE.\n");
    return 0;
}

/* Write all rows to the staged file and rename it over the target, so a
 * failure (or Ctrl-C) leaves nothing half-written and a planted symlink is
 * never followed. */
static int write_rows(struct lp_atomic_file *af, const float *rows, size_t n) {
    enum lopad_status st = lp_atomic_open(af);
    if (!st) st = lp_atomic_write(af, rows, sizeof(float) * n);
    if (!st)
        st = lp_atomic_commit(af);
    else
        lp_atomic_abort(af);
    return st ? lp_cli_fail("logits", st) : 0;
}

static int cmd_logits(int argc, char **argv) {
    const char *path = NULL, *out = NULL, *lora = NULL, *tok_s = NULL, *pos_s = NULL;
    const char *device = NULL;
    long threads = 0;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage();
        if (!v) return lp_cli_usage_error("logits", "option '%s' needs a value or is unknown", a);
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            path = v;
        else if (!strcmp(a, "--tokens"))
            tok_s = v;
        else if (!strcmp(a, "--positions"))
            pos_s = v;
        else if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--lora"))
            lora = v;
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--threads")) {
            if (!lp_cli_parse_int("logits", a, v, 0, 1024, &threads)) return 2;
        } else
            return lp_cli_usage_error("logits", "unknown option '%s'", a);
    }
    if (!path) return lp_cli_usage_error("logits", "no model given (-m MODEL)");
    if (!tok_s) return lp_cli_usage_error("logits", "no tokens given (--tokens 1,2,3)");
    if (!out) return lp_cli_usage_error("logits", "no output file given (--out FILE)");
    int32_t *tokens = NULL, *pos = NULL;
    int n = 0, n_pos = 0, rc = 2;
    if (!lp_cli_parse_ids("logits", "--tokens", tok_s, &tokens, &n)) goto done;
    if (pos_s) {
        if (!lp_cli_parse_ids("logits", "--positions", pos_s, &pos, &n_pos)) goto done;
        if (n_pos != n) {
            lp_cli_usage_error("logits", "--positions has %d entries but --tokens has %d", n_pos,
                               n);
            goto done;
        }
    } else {
        pos = malloc(sizeof(int32_t) * n);
        if (!pos) goto done;
        for (int i = 0; i < n; i++)
            pos[i] = i;
    }
    int max_pos = 0;
    for (int i = 0; i < n; i++) {
        if (pos[i] < 0) {
            lp_cli_usage_error("logits", "--positions: position %d is negative", pos[i]);
            goto done;
        }
        if (pos[i] > max_pos) max_pos = pos[i];
    }

    rc = 1;
    /* staged before the model loads: an unwritable --out fails at once */
    struct lp_atomic_file af;
    enum lopad_status st = lp_atomic_begin(out, &af);
    if (st) {
        lp_cli_fail("logits", st);
        goto done;
    }
    struct lopad_load_opts opts = {.lora_dir = lora};
    lopad_model *m = NULL;
    lopad_ctx *c = NULL;
    float *logits = NULL;
    int32_t *rows = NULL;
    st = lopad_model_load(path, &opts, &m);
    if (st) {
        lp_cli_fail("logits", st);
        goto cleanup;
    }
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    if (hp->n_ctx_train > 0 && max_pos >= hp->n_ctx_train) {
        rc = lp_cli_usage_error("logits",
                                "position %d is outside the model's trained context (positions "
                                "0..%d, n_ctx_train %d)",
                                max_pos, hp->n_ctx_train - 1, hp->n_ctx_train);
        goto cleanup;
    }
    struct lopad_ctx_params cp = {
        .n_ctx = n, .n_batch_max = n, .n_threads = (int)threads, .device = device};
    if ((st = lopad_ctx_new(m, &cp, &c))) {
        lp_cli_fail("logits", st);
        goto cleanup;
    }
    logits = malloc(sizeof(float) * (size_t)n * hp->n_vocab);
    rows = malloc(sizeof(int32_t) * n);
    if (!logits || !rows) {
        fprintf(stderr, "lopad logits: out of memory for %d x %d logits\n", n, hp->n_vocab);
        goto cleanup;
    }
    for (int i = 0; i < n; i++)
        rows[i] = i;
    struct lopad_batch b = {.n_tokens = n,
                            .tokens = tokens,
                            .pos = pos,
                            .n_seq = 1,
                            .n_out = n,
                            .out_rows = rows,
                            .logits = logits};
    if ((st = lopad_forward(c, &b))) {
        lp_cli_fail("logits", st);
        goto cleanup;
    }
    rc = write_rows(&af, logits, (size_t)n * hp->n_vocab);
cleanup:
    lp_atomic_abort(&af); /* no-op after write_rows */
    free(rows);
    free(logits);
    lopad_ctx_free(c);
    lopad_model_free(m);
done:
    free(tokens);
    free(pos);
    return rc;
}

LP_CLI_COMMAND("logits", cmd_logits, "write the raw logits of a token sequence to a file")
