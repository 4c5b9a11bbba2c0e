/*
 * vs_torch.c - lopad's side of bench/vs_torch.sh: a Dream-7B-shaped model with
 * a chosen number of layers (random weights of one type, tied embedding/head),
 * timed on windows of T tokens over a cached prefix of P rows, logits for every
 * fed row. One JSON line per window.
 *
 *   vs_torch LAYERS TYPE(f32|bf16|f16|q8_0|q4_0|q4_k|q6_k) TOKENS(32,128,...) PREFIX THREADS REPEAT
 *
 * LAYERS 0 = the whole Dream-7B from lp_model_synthetic (untied head, fast
 * multi-threaded generation), for forward timings of the full model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/common.h"
#include "core/types.h"
#include "forward/forward.h"
#include "model/model.h"
#include "model/synthetic.h"

/* CPU seconds of the whole process (all threads): on a shared machine a
 * 1-thread run's CPU time is its time on an otherwise idle core. */
static double cpu_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static void *rand_weight(struct lp_weight *w, const char *name, int type, int64_t n_out,
                         int64_t n_in, float scale) {
    const struct lp_type_traits *tt = lp_type_traits(type);
    size_t rb = lp_row_size(type, n_in);
    unsigned char *d = malloc(rb * n_out);
    float *row = malloc(sizeof(float) * n_in);
    if (!d || !row) {
        fprintf(stderr, "vs_torch: out of memory\n");
        exit(1);
    }
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = frand() * scale;
        if (type == LOPAD_TYPE_F32)
            memcpy(d + r * rb, row, rb);
        else
            tt->from_float(row, d + r * rb, n_in);
    }
    free(row);
    *w = (struct lp_weight){name, type, n_in, n_out, rb, d};
    return d;
}

static float *rand_vec(int64_t n, float base, float scale) {
    float *v = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++)
        v[i] = base + frand() * scale;
    return v;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: vs_torch LAYERS TYPE TOKENS PREFIX THREADS REPEAT\n");
        return 2;
    }
    const int L = atoi(argv[1]);
    const char *tname = argv[2];
    const int P = atoi(argv[4]), threads = atoi(argv[5]), R = atoi(argv[6]);
    int type = !strcmp(tname, "f32")    ? LOPAD_TYPE_F32
               : !strcmp(tname, "bf16") ? LOPAD_TYPE_BF16
               : !strcmp(tname, "f16")  ? LOPAD_TYPE_F16
               : !strcmp(tname, "q8_0") ? LOPAD_TYPE_Q8_0
               : !strcmp(tname, "q4_0") ? LOPAD_TYPE_Q4_0
               : !strcmp(tname, "q4_k") ? LOPAD_TYPE_Q4_K
               : !strcmp(tname, "q6_k") ? LOPAD_TYPE_Q6_K
                                        : -1;
    if (type < 0 || L < 0) {
        fprintf(stderr, "vs_torch: unknown type '%s' or bad layer count\n", tname);
        return 2;
    }
    int toks[16], nt = 0, maxT = 32;
    for (char *p = strdup(argv[3]), *t = strtok(p, ","); t && nt < 16; t = strtok(NULL, ",")) {
        toks[nt] = atoi(t);
        if (toks[nt] > maxT) maxT = toks[nt];
        nt++;
    }
    /* Dream-7B (Qwen2-7B) shapes */
    const int E = 3584, H = 28, HKV = 4, HD = 128, F = 18944, V = 152064;
    struct lopad_model *m = NULL;
    void *head = NULL, *bufs[7 * 64];
    int nb = 0;
    double t0 = lp_time();
    if (L == 0) {
        if (lp_model_synthetic("dream-7b", type, 1234, &m)) {
            fprintf(stderr, "vs_torch: %s\n", lopad_errmsg());
            return 1;
        }
        fprintf(stderr, "lopad: dream-7b %s generated in %.1f s\n", tname, lp_time() - t0);
        goto run;
    }
    m = calloc(1, sizeof *m);
    m->hp = (struct lopad_hparams){.arch = LOPAD_ARCH_DREAM,
                                   .rope = LOPAD_ROPE_NEOX,
                                   .n_embd = E,
                                   .n_layer = L,
                                   .n_head = H,
                                   .n_head_kv = HKV,
                                   .head_dim = HD,
                                   .n_ff = F,
                                   .n_vocab = V,
                                   .n_ctx_train = 32768,
                                   .rope_theta = 1e6f,
                                   .norm_eps = 1e-6f,
                                   .shift_logits = true,
                                   .has_qkv_bias = true,
                                   .mask_id = 151666,
                                   .bos_id = -1,
                                   .eos_id = -1,
                                   .pad_id = -1,
                                   .eot_id = -1};
    m->format = "synthetic";
    m->path = "vs_torch";
    head = rand_weight(&m->output, "output.weight", type, V, E, 0.02f);
    m->tok_embd = m->output;
    m->output_norm = rand_vec(E, 1.0f, 0.1f);
    m->layers = calloc(L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        struct lp_layer *ly = &m->layers[l];
        ly->attn_norm = rand_vec(E, 1.0f, 0.1f);
        ly->ffn_norm = rand_vec(E, 1.0f, 0.1f);
        bufs[nb++] = rand_weight(&ly->wq, "wq", type, H * HD, E, 0.02f);
        bufs[nb++] = rand_weight(&ly->wk, "wk", type, HKV * HD, E, 0.02f);
        bufs[nb++] = rand_weight(&ly->wv, "wv", type, HKV * HD, E, 0.02f);
        bufs[nb++] = rand_weight(&ly->wo, "wo", type, E, H * HD, 0.02f);
        bufs[nb++] = rand_weight(&ly->w_gate, "gate", type, F, E, 0.02f);
        bufs[nb++] = rand_weight(&ly->w_up, "up", type, F, E, 0.02f);
        bufs[nb++] = rand_weight(&ly->w_down, "down", type, E, F, 0.02f);
        ly->bq = rand_vec(H * HD, 0, 0.02f);
        ly->bk = rand_vec(HKV * HD, 0, 0.02f);
        ly->bv = rand_vec(HKV * HD, 0, 0.02f);
    }
    fprintf(stderr, "lopad: %d layers of %s generated in %.1f s\n", L, tname, lp_time() - t0);
run:;
    lopad_ctx *c = NULL;
    struct lopad_ctx_params cp = {.n_ctx = P + maxT, .n_batch_max = maxT, .n_threads = threads};
    if (lopad_ctx_new(m, &cp, &c)) {
        fprintf(stderr, "vs_torch: %s\n", lopad_errmsg());
        return 1;
    }
    int32_t *tok = malloc(sizeof(int32_t) * maxT), *pos = malloc(sizeof(int32_t) * maxT);
    int32_t *rows = malloc(sizeof(int32_t) * maxT);
    float *logits = malloc(sizeof(float) * (size_t)maxT * V);
    for (int i = 0; i < maxT; i++) {
        tok[i] = (int32_t)((i * 7919u + 13u) % V);
        pos[i] = i;
        rows[i] = i;
    }
    if (P > 0) { /* the K/V of one 32-row forward, committed over the whole prefix */
        struct lopad_batch b = {.n_tokens = 32,
                                .tokens = tok,
                                .pos = pos,
                                .n_seq = 1,
                                .n_out = 1,
                                .out_rows = rows,
                                .logits = logits};
        if (lopad_forward(c, &b)) return 1;
        for (int r = 0; r < P; r += 32)
            if (lopad_kv_commit(c, 0, LP_MIN(32, P - r), r)) return 1;
    }
    for (int w = 0; w < nt; w++) {
        const int T = toks[w];
        for (int i = 0; i < T; i++)
            pos[i] = P + i;
        struct lopad_batch b = {.n_tokens = T,
                                .tokens = tok,
                                .pos = pos,
                                .n_seq = 1,
                                .n_cache = P,
                                .n_out = T,
                                .out_rows = rows,
                                .logits = logits};
        double best = 1e30, best_cpu = 1e30;
        for (int r = 0; r <= R; r++) {
            double s = lp_time(), sc = cpu_time();
            if (lopad_forward(c, &b)) return 1;
            s = lp_time() - s;
            sc = cpu_time() - sc;
            if (r > 0 && s < best) best = s;
            if (r > 0 && sc < best_cpu) best_cpu = sc;
        }
        printf("{\"impl\": \"lopad\", \"type\": \"%s\", \"layers\": %d, \"tokens\": %d, "
               "\"prefix\": %d, \"threads\": %d, \"ms\": %.2f, \"cpu_ms\": %.2f}\n",
               tname, m->hp.n_layer, T, P, threads, best * 1e3, best_cpu * 1e3);
        fflush(stdout);
    }
    lopad_ctx_free(c);
    if (L == 0) {
        lopad_model_free(m);
        free(tok), free(pos), free(rows), free(logits);
        return 0;
    }
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
    for (int l = 0; l < L; l++) {
        struct lp_layer *ly = &m->layers[l];
        free(ly->attn_norm), free(ly->ffn_norm), free(ly->bq), free(ly->bk), free(ly->bv);
    }
    free(m->layers), free(m->output_norm), free(head), free(m);
    free(tok), free(pos), free(rows), free(logits);
    return 0;
}
