/*
 * repack_rss.c - peak memory of a Q8_0 model with and without the repacked
 * copy (bench/repack_rss.sh runs it under /usr/bin/time -v).
 *
 *   repack_rss make FILE [LAYERS]       write a Dream-7B-shaped Q8_0 GGUF of
 *                                       LAYERS (default 2) random layers
 *   repack_rss run FILE off|on|auto [THREADS] [TOKENS] [SAVE]
 *                                       load FILE, make a context with that
 *                                       repack mode, run one forward of TOKENS
 *                                       (default 32) fed rows, logits of all
 *                                       of them, and print a checksum; with
 *                                       SAVE, then write the model to SAVE as
 *                                       GGUF (types kept) while the context
 *                                       lives: it reads the released pages
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lopad.h"
#include "backend/cpu/cpu.h"
#include "forward/forward.h"
#include "model/synthetic.h"
#include "core/types.h"

static int make(const char *path, int layers) {
    lopad_model *m = NULL;
    if (lp_model_synthetic_layers("dream-7b", layers, LOPAD_TYPE_Q8_0, 1234, &m) ||
        lopad_model_save_gguf(m, path, -1)) {
        fprintf(stderr, "repack_rss: %s\n", lopad_errmsg());
        return 1;
    }
    lopad_model_free(m);
    return 0;
}

static int run(const char *path, const char *mode, int threads, int n, const char *save) {
    const int repack = !strcmp(mode, "on")    ? LOPAD_REPACK_ON
                       : !strcmp(mode, "off") ? LOPAD_REPACK_OFF
                                              : LOPAD_REPACK_AUTO;
    lopad_model *m = NULL;
    lopad_ctx *c = NULL;
    struct lopad_ctx_params p = {
        .n_ctx = n, .n_batch_max = n, .n_threads = threads, .repack = repack};
    if (lopad_model_load(path, NULL, &m) || lopad_ctx_new(m, &p, &c)) {
        fprintf(stderr, "repack_rss: %s\n", lopad_errmsg());
        return 1;
    }
    const int V = lopad_model_hparams(m)->n_vocab;
    int32_t *tok = malloc(sizeof(int32_t) * 3 * n), *pos = tok + n, *rows = pos + n;
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)((i * 7919u + 13) % (unsigned)V);
        pos[i] = rows[i] = i;
    }
    struct lopad_batch b = {.n_tokens = n,
                            .tokens = tok,
                            .pos = pos,
                            .n_seq = 1,
                            .n_out = n,
                            .out_rows = rows,
                            .logits = logits};
    if (lopad_forward(c, &b)) {
        fprintf(stderr, "repack_rss: %s\n", lopad_errmsg());
        return 1;
    }
    double sum = 0;
    for (size_t i = 0; i < (size_t)n * V; i++)
        sum += logits[i];
    printf("repack %s: %.1f MiB repacked, logits checksum %.9g\n", mode,
           lp_backend_cpu_repacked_bytes(&c->be) / 1048576.0, sum);
    if (save && lopad_model_save_gguf(m, save, -1)) {
        fprintf(stderr, "repack_rss: %s\n", lopad_errmsg());
        return 1;
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
    free(tok);
    free(logits);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "make")) return make(argv[2], argc > 3 ? atoi(argv[3]) : 2);
    if (argc >= 4 && !strcmp(argv[1], "run"))
        return run(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 2, argc > 5 ? atoi(argv[5]) : 32,
                   argc > 6 ? argv[6] : NULL);
    fprintf(
        stderr,
        "usage: repack_rss make FILE [LAYERS] | run FILE off|on|auto [THREADS] [TOKENS] [SAVE]\n");
    return 2;
}
