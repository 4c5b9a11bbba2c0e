/*
 * test_golden.c - the engine against the independent PyTorch reference.
 *
 * Loads the tiny fixture models (tests/fixtures, written by tools/ref/make_fixtures.py)
 * through the public API only - Hugging Face directories (Dream BF16, LLaDA F32 sharded),
 * GGUF files (Dream F32/BF16/Q8_0, LLaDA F16 with llama.cpp's interleaved q/k rows), PEFT
 * LoRA adapters - runs lopad_forward with each golden file's tokens / positions / block ids
 * and compares every row of logits with the reference's float64 logits.
 *
 * Golden file (.lpgl, little-endian, see tools/ref/README.md):
 *   "LPGL" u32 version=1 u32 n_tokens u32 n_vocab u32 flags(bit0: block ids apply)
 *   u32 n_out (0 = every row)  i32 tokens[n]  i32 pos[n]  i32 block[n]
 *   [i32 rows[n_out] when n_out > 0]  f32 logits[n_out or n][n_vocab]
 *
 * Tolerances are on max|got - want| / max(1, max|want|) over the compared rows. All fixture
 * weights are exactly representable in BF16 and F16, so the F32/BF16/F16 files hold the same
 * numbers and the only differences left are the engine's arithmetic. make_fixtures.py
 * measures what rounding the matmul inputs would cost (printed when it runs) and each
 * tolerance below is about 3x that measurement:
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lopad.h"
#include "test.h"

/* f32 weights, f32 arithmetic vs a float64 reference: the reference's own float32 run is
 * within 5e-7; 1e-4 leaves room for other summation orders and a float RoPE table. */
#define TOL_F32 1e-4
/* F16 weights: an engine may round activations to f16 for the dot products (as ggml does);
 * measured 6.7e-4. */
#define TOL_F16 3e-3
/* BF16 weights: activations possibly rounded to bf16 (8-bit mantissa); measured 4.7e-3. */
#define TOL_BF16 1.5e-2
/* Q8_0 weights vs the golden of the dequantised weights: activations possibly quantised to
 * Q8_0 blocks as ggml does; measured 1.7e-2. */
#define TOL_Q8 5e-2
/* Q8_0 vs the unquantised golden: weight quantisation (2.6e-2) + activations (1.7e-2). */
#define TOL_Q8_VS_F32 1e-1

#define FIX LOPAD_SOURCE_DIR "/tests/fixtures/"

#define MAX_FED 128 /* most fed tokens in any golden case (the long ones have 70) */

struct golden {
    int n, n_vocab;
    bool has_blocks;
    int32_t *tok, *pos, *blk; /* [n] */
    float *logits;            /* [n][n_vocab]; rows without a golden are unused */
    bool *have;               /* [n] row i has golden logits */
};

static void golden_free(struct golden *g) {
    free(g->tok);
    free(g->pos);
    free(g->blk);
    free(g->logits);
    free(g->have);
    memset(g, 0, sizeof(*g));
}

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read FIX/golden/<name>; false (with a CHECK failure) when missing or malformed. */
static bool golden_read(const char *name, struct golden *g) {
    memset(g, 0, sizeof(*g));
    char path[1024];
    snprintf(path, sizeof(path), FIX "golden/%s", name);
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s (run tools/ref/make_fixtures.py)", path);
    if (!f) return false;
    unsigned char h[24];
    bool ok =
        fread(h, 1, sizeof(h), f) == sizeof(h) && memcmp(h, "LPGL", 4) == 0 && rd_u32(h + 4) == 1;
    uint32_t n = ok ? rd_u32(h + 8) : 0, nv = ok ? rd_u32(h + 12) : 0;
    uint32_t n_out = ok ? rd_u32(h + 20) : 0;
    ok = ok && n >= 1 && n <= MAX_FED && nv >= 1 && nv <= (1u << 20) && n_out <= n;
    if (ok) {
        g->n = (int)n;
        g->n_vocab = (int)nv;
        g->has_blocks = rd_u32(h + 16) & 1;
        g->tok = malloc(sizeof(int32_t) * n);
        g->pos = malloc(sizeof(int32_t) * n);
        g->blk = malloc(sizeof(int32_t) * n);
        g->logits = calloc((size_t)n * nv, sizeof(float));
        g->have = calloc(n, sizeof(bool));
        /* the fixtures are little-endian and so is every machine lopad targets */
        ok = g->tok && g->pos && g->blk && g->logits && g->have && fread(g->tok, 4, n, f) == n &&
             fread(g->pos, 4, n, f) == n && fread(g->blk, 4, n, f) == n;
        int32_t rows[MAX_FED];
        if (ok && n_out > 0) ok = fread(rows, 4, n_out, f) == n_out;
        for (uint32_t i = 0; ok && i < (n_out ? n_out : n); i++) {
            uint32_t r = n_out ? (uint32_t)rows[i] : i;
            ok = r < n && !g->have[r] && fread(g->logits + (size_t)r * nv, 4, nv, f) == nv;
            if (ok) g->have[r] = true;
        }
        ok = ok && fgetc(f) == EOF;
    }
    fclose(f);
    CHECK_MSG(ok, "malformed golden file %s", path);
    if (!ok) golden_free(g);
    return ok;
}

/* max |got[i] - golden row r0 + rows[i]| / max(1, max |golden|) over the n_rows rows of
 * got (rows NULL = consecutive), skipping rows the golden does not hold. */
static double rel_diff(const float *got, const struct golden *g, int r0, const int32_t *rows,
                       int n_rows, int *n_cmp) {
    double d = 0, scale = 1;
    int nv = g->n_vocab;
    *n_cmp = 0;
    for (int i = 0; i < n_rows; i++) {
        int r = r0 + (rows ? rows[i] : i);
        if (r < 0 || r >= g->n || !g->have[r]) continue;
        ++*n_cmp;
        const float *w = g->logits + (size_t)r * nv;
        const float *o = got + (size_t)i * nv;
        for (int v = 0; v < nv; v++) {
            double e = fabs((double)o[v] - (double)w[v]);
            if (!(e <= d)) d = e; /* NaN propagates */
            if (fabs(w[v]) > scale) scale = fabs(w[v]);
        }
    }
    return d / scale;
}

static void check_close(const char *what, const float *got, const struct golden *g, int r0,
                        const int32_t *rows, int n_rows, double tol) {
    int n_cmp;
    double d = rel_diff(got, g, r0, rows, n_rows, &n_cmp);
    fprintf(stderr, "    %-48s %2d rows, rel diff %.3g (tol %.3g)\n", what, n_cmp, d, tol);
    CHECK_MSG(n_cmp > 0, "%s: no golden rows to compare", what);
    CHECK_MSG(d <= tol, "%s: logits differ from the reference by %.3g > %.3g", what, d, tol);
}

static lopad_model *load(const char *rel, const char *lora_rel) {
    char path[1024], lora[1024];
    snprintf(path, sizeof(path), FIX "%s", rel);
    if (lora_rel) snprintf(lora, sizeof(lora), FIX "%s", lora_rel);
    struct lopad_load_opts o = {.lora_dir = lora_rel ? lora : NULL};
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(path, &o, &m);
    CHECK_MSG(st == LOPAD_OK && m, "load %s%s%s: %s: %s", rel, lora_rel ? " + " : "",
              lora_rel ? lora_rel : "", lopad_status_name(st), lopad_errmsg());
    return st == LOPAD_OK ? m : NULL;
}

static lopad_ctx *new_ctx(const lopad_model *m) {
    struct lopad_ctx_params p = {.n_ctx = MAX_FED, .n_batch_max = MAX_FED, .n_threads = 2};
    lopad_ctx *c = NULL;
    enum lopad_status st = lopad_ctx_new(m, &p, &c);
    CHECK_MSG(st == LOPAD_OK && c, "lopad_ctx_new: %s: %s", lopad_status_name(st), lopad_errmsg());
    return st == LOPAD_OK ? c : NULL;
}

/* Feed golden rows [r0, r0+n) as one sequence, all rows out; block ids when the golden
 * has them. */
static enum lopad_status feed(lopad_ctx *c, const struct golden *g, int r0, int n, int n_cache,
                              int skip_b, int skip_e, float *out) {
    int32_t rows[MAX_FED];
    for (int i = 0; i < n; i++)
        rows[i] = i;
    struct lopad_batch b = {.n_tokens = n,
                            .tokens = g->tok + r0,
                            .pos = g->pos + r0,
                            .n_seq = 1,
                            .block = g->has_blocks ? g->blk + r0 : NULL,
                            .n_cache = n_cache,
                            .cache_skip_begin = skip_b,
                            .cache_skip_end = skip_e,
                            .n_out = n,
                            .out_rows = rows,
                            .logits = out};
    enum lopad_status st = lopad_forward(c, &b);
    CHECK_MSG(st == LOPAD_OK, "lopad_forward: %s: %s", lopad_status_name(st), lopad_errmsg());
    return st;
}

/* One full forward of golden `name` on model m; compare all rows. */
static void check_case(lopad_model *m, const char *label, const char *name, double tol) {
    struct golden g;
    if (!m || !golden_read(name, &g)) return;
    CHECK(g.n_vocab == lopad_model_hparams(m)->n_vocab);
    lopad_ctx *c = new_ctx(m);
    float *out = malloc(sizeof(float) * (size_t)g.n * g.n_vocab);
    if (c && out && g.n_vocab == lopad_model_hparams(m)->n_vocab &&
        feed(c, &g, 0, g.n, 0, 0, 0, out) == LOPAD_OK) {
        char what[256];
        snprintf(what, sizeof(what), "%s %s", label, name);
        check_close(what, out, &g, 0, NULL, g.n, tol);
    }
    free(out);
    lopad_ctx_free(c);
    golden_free(&g);
}

static void check_all_cases(lopad_model *m, const char *label, const char *arch, double tol) {
    static const char *cases[] = {"full", "pruned", "block", "long"};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s-%s.lpgl", arch, cases[i]);
        check_case(m, label, name, tol);
    }
}

/* ------------------------------------------------------------ hyper-parameters */

static void check_dream_hparams(const lopad_model *m) {
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    CHECK(hp->arch == LOPAD_ARCH_DREAM);
    CHECK(hp->rope == LOPAD_ROPE_NEOX);
    CHECK(hp->n_embd == 64 && hp->n_layer == 2 && hp->n_head == 4 && hp->n_head_kv == 2);
    CHECK(hp->head_dim == 16 && hp->n_ff == 128 && hp->n_vocab == 272);
    CHECK_NEAR(hp->rope_theta, 10000.0, 0, 1e-6);
    CHECK_NEAR(hp->norm_eps, 1e-6, 0, 1e-5);
    CHECK(hp->shift_logits);
    CHECK(hp->has_qkv_bias);
    CHECK(hp->mask_id == 268);
    CHECK(hp->bos_id == 267);
    CHECK(hp->eos_id == 264);
}

static void check_llada_hparams(const lopad_model *m, enum lopad_rope rope) {
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    CHECK(hp->arch == LOPAD_ARCH_LLADA);
    CHECK(hp->rope == rope);
    CHECK(hp->n_embd == 64 && hp->n_layer == 2 && hp->n_head == 4 && hp->n_head_kv == 4);
    CHECK(hp->head_dim == 16 && hp->n_ff == 128 && hp->n_vocab == 272);
    CHECK_NEAR(hp->rope_theta, 500000.0, 0, 1e-6);
    CHECK_NEAR(hp->norm_eps, 1e-5, 0, 1e-5);
    CHECK(!hp->shift_logits);
    CHECK(!hp->has_qkv_bias);
    CHECK(hp->mask_id == 266);
    CHECK(hp->eos_id == 265);
}

/* --------------------------------------------------------------------- tests */

static void test_dream_hf_bf16(void) {
    lopad_model *m = load("tiny-dream", NULL);
    if (!m) return;
    check_dream_hparams(m);
    check_all_cases(m, "dream hf bf16", "dream", TOL_BF16);
    lopad_model_free(m);
}

static void test_dream_gguf_f32(void) {
    lopad_model *m = load("tiny-dream.gguf", NULL);
    if (!m) return;
    check_dream_hparams(m);
    check_all_cases(m, "dream gguf f32", "dream", TOL_F32);
    lopad_model_free(m);
}

static void test_dream_gguf_bf16(void) {
    lopad_model *m = load("tiny-dream-bf16.gguf", NULL);
    if (!m) return;
    check_dream_hparams(m);
    check_case(m, "dream gguf bf16", "dream-full.lpgl", TOL_BF16);
    check_case(m, "dream gguf bf16", "dream-pruned.lpgl", TOL_BF16);
    lopad_model_free(m);
}

static void test_dream_gguf_q8_0(void) {
    lopad_model *m = load("tiny-dream-q8_0.gguf", NULL);
    if (!m) return;
    check_dream_hparams(m);
    check_case(m, "dream gguf q8_0", "dream-q8_0-full.lpgl", TOL_Q8);
    check_case(m, "dream gguf q8_0 vs f32", "dream-full.lpgl", TOL_Q8_VS_F32);
    lopad_model_free(m);
}

static void test_llada_hf_f32_sharded(void) {
    lopad_model *m = load("tiny-llada", NULL);
    if (!m) return;
    check_llada_hparams(m, LOPAD_ROPE_NEOX);
    check_all_cases(m, "llada hf f32", "llada", TOL_F32);
    lopad_model_free(m);
}

static void test_llada_gguf_f16_permuted(void) {
    lopad_model *m = load("tiny-llada.gguf", NULL);
    if (!m) return;
    /* llama.cpp's converter permuted q/k rows: the loader must pick interleaved RoPE */
    check_llada_hparams(m, LOPAD_ROPE_NORM);
    CHECK(lopad_model_hparams(m)->eot_id == 269);
    check_all_cases(m, "llada gguf f16", "llada", TOL_F16);
    lopad_model_free(m);
}

/* The same model from its HF directory and from GGUF gives the same logits. */
static void test_hf_vs_gguf(void) {
    static const struct {
        const char *hf, *gguf, *golden;
        double tol;
    } pairs[] = {
        {"tiny-dream", "tiny-dream.gguf", "dream-pruned.lpgl", TOL_BF16},
        {"tiny-llada", "tiny-llada.gguf", "llada-pruned.lpgl", TOL_F16},
    };
    for (int k = 0; k < 2; k++) {
        struct golden g;
        if (!golden_read(pairs[k].golden, &g)) continue;
        lopad_model *a = load(pairs[k].hf, NULL), *b = load(pairs[k].gguf, NULL);
        lopad_ctx *ca = a ? new_ctx(a) : NULL, *cb = b ? new_ctx(b) : NULL;
        size_t sz = sizeof(float) * (size_t)g.n * g.n_vocab;
        float *la = malloc(sz), *lb = malloc(sz);
        if (ca && cb && la && lb && feed(ca, &g, 0, g.n, 0, 0, 0, la) == LOPAD_OK &&
            feed(cb, &g, 0, g.n, 0, 0, 0, lb) == LOPAD_OK) {
            char what[128];
            snprintf(what, sizeof(what), "%s vs %s", pairs[k].hf, pairs[k].gguf);
            /* compare the two engines' outputs: la plays the golden */
            struct golden ga = g;
            bool all[MAX_FED];
            for (int i = 0; i < g.n; i++)
                all[i] = true;
            ga.logits = la;
            ga.have = all;
            check_close(what, lb, &ga, 0, NULL, g.n, pairs[k].tol);
        }
        free(la);
        free(lb);
        lopad_ctx_free(ca);
        lopad_ctx_free(cb);
        lopad_model_free(a);
        lopad_model_free(b);
        golden_free(&g);
    }
}

/* PEFT adapters merged at load: W + alpha/r * B A (Dream) and W + alpha/sqrt(r) * B A
 * (LLaDA, use_rslora). The merged weights may be kept in the base's storage type, so the
 * base's tolerance applies. */
static void test_lora(void) {
    lopad_model *m = load("tiny-dream", "tiny-dream-lora");
    if (m) {
        CHECK(lopad_model_hparams(m)->arch == LOPAD_ARCH_DREAM);
        check_case(m, "dream hf + lora", "dream-lora.lpgl", TOL_BF16);
        lopad_model_free(m);
    }
    if ((m = load("tiny-dream.gguf", "tiny-dream-lora"))) {
        check_case(m, "dream gguf f32 + lora", "dream-lora.lpgl", TOL_F32);
        lopad_model_free(m);
    }
    if ((m = load("tiny-llada", "tiny-llada-lora"))) {
        check_case(m, "llada hf + rslora", "llada-lora.lpgl", TOL_F32);
        lopad_model_free(m);
    }
    /* An HF-layout adapter on the permuted LLaDA GGUF: lopad must either permute the
     * adapter's q/k rows the same way or refuse; a silently wrong merge is the bug. */
    char path[1024], lora[1024];
    snprintf(path, sizeof(path), FIX "tiny-llada.gguf");
    snprintf(lora, sizeof(lora), FIX "tiny-llada-lora");
    struct lopad_load_opts o = {.lora_dir = lora};
    m = NULL;
    enum lopad_status st = lopad_model_load(path, &o, &m);
    CHECK_MSG(st == LOPAD_OK || st == LOPAD_ERR_UNSUPPORTED, "llada gguf + lora: %s: %s",
              lopad_status_name(st), lopad_errmsg());
    if (st == LOPAD_OK)
        check_case(m, "llada gguf f16 + rslora", "llada-lora.lpgl", TOL_F16);
    else
        fprintf(stderr, "    llada gguf + lora refused: %s\n", lopad_errmsg());
    lopad_model_free(m);
}

/* A block-causal golden reproduced block by block through the KV cache: each block
 * (a run of equal block ids) fed over the cached earlier blocks, then committed. Then the
 * dual cache: re-feed the second block over the whole cache minus its own stale rows; and
 * a truncate back to the first block followed by the second block as a prefix-cache step. */
static void kv_blocks(const char *model, const char *golden, double tol) {
    struct golden g;
    if (!golden_read(golden, &g)) return;
    CHECK(g.has_blocks);
    lopad_model *m = load(model, NULL);
    lopad_ctx *c = m ? new_ctx(m) : NULL;
    float *out = malloc(sizeof(float) * (size_t)g.n * g.n_vocab);
    int start[MAX_FED + 1], n_blk = 0;
    for (int i = 0; i < g.n; i++)
        if (i == 0 || g.blk[i] != g.blk[i - 1]) start[n_blk++] = i;
    start[n_blk] = g.n;
    if (c && out && g.has_blocks && n_blk >= 2) {
        char what[160];
        for (int b = 0; b < n_blk; b++) {
            int r0 = start[b], len = start[b + 1] - start[b];
            if (feed(c, &g, r0, len, r0, 0, 0, out) != LOPAD_OK) break;
            snprintf(what, sizeof(what), "%s %s block %d over %d cached", model, golden, b, r0);
            check_close(what, out, &g, r0, NULL, len, tol);
            enum lopad_status st = lopad_kv_commit(c, 0, len, r0);
            CHECK_MSG(st == LOPAD_OK, "kv_commit: %s", lopad_errmsg());
            CHECK(lopad_kv_len(c) == start[b + 1]);
        }
        int b0 = start[1], b1 = start[2];
        if (feed(c, &g, b0, b1 - b0, b1, b0, b1, out) == LOPAD_OK) {
            snprintf(what, sizeof(what), "%s %s dual cache, rows %d..%d hidden", model, golden, b0,
                     b1);
            check_close(what, out, &g, b0, NULL, b1 - b0, tol);
        }
        lopad_kv_truncate(c, b0);
        CHECK(lopad_kv_len(c) == b0);
        if (feed(c, &g, b0, b1 - b0, b0, 0, 0, out) == LOPAD_OK) {
            snprintf(what, sizeof(what), "%s %s after truncate", model, golden);
            check_close(what, out, &g, b0, NULL, b1 - b0, tol);
        }
    }
    free(out);
    lopad_ctx_free(c);
    lopad_model_free(m);
    golden_free(&g);
}

static void test_kv_cache(void) {
    kv_blocks("tiny-dream.gguf", "dream-block.lpgl", TOL_F32);
    kv_blocks("tiny-llada", "llada-block.lpgl", TOL_F32);
    kv_blocks("tiny-dream.gguf", "dream-long.lpgl", TOL_F32);
    kv_blocks("tiny-llada.gguf", "llada-long.lpgl", TOL_F16);
}

/* Two sequences in one batch (LoPA branches): seq 0 = the long block-causal case, seq 1 =
 * the pruned case (all block 0 = bidirectional); rows requested in a scrambled order. */
static void multi_seq(const char *model, const char *arch, double tol) {
    char n1[64], n2[64];
    snprintf(n1, sizeof(n1), "%s-long.lpgl", arch);
    snprintf(n2, sizeof(n2), "%s-pruned.lpgl", arch);
    struct golden a, b;
    if (!golden_read(n1, &a)) return;
    if (!golden_read(n2, &b)) {
        golden_free(&a);
        return;
    }
    lopad_model *m = load(model, NULL);
    lopad_ctx *c = m ? new_ctx(m) : NULL;
    int n = a.n + b.n, nv = a.n_vocab;
    int32_t tok[MAX_FED], pos[MAX_FED], seq[MAX_FED], blk[MAX_FED], rows[MAX_FED];
    float *out = malloc(sizeof(float) * (size_t)n * nv);
    CHECK(n <= MAX_FED);
    if (c && out && n <= MAX_FED) {
        for (int i = 0; i < n; i++) {
            bool first = i < a.n;
            tok[i] = first ? a.tok[i] : b.tok[i - a.n];
            pos[i] = first ? a.pos[i] : b.pos[i - a.n];
            blk[i] = first ? a.blk[i] : 0;
            seq[i] = first ? 0 : 1;
            rows[i] = (i * 5 + 3) % n; /* a permutation when 5 and n are coprime */
        }
        if (n % 5 == 0)
            for (int i = 0; i < n; i++)
                rows[i] = n - 1 - i;
        struct lopad_batch bt = {.n_tokens = n,
                                 .tokens = tok,
                                 .pos = pos,
                                 .n_seq = 2,
                                 .seq = seq,
                                 .block = blk,
                                 .n_out = n,
                                 .out_rows = rows,
                                 .logits = out};
        enum lopad_status st = lopad_forward(c, &bt);
        CHECK_MSG(st == LOPAD_OK, "multi-seq forward: %s", lopad_errmsg());
        if (st == LOPAD_OK) {
            /* gather each sequence's rows back from the scrambled output */
            float *ga = malloc(sizeof(float) * (size_t)a.n * nv);
            float *gb = malloc(sizeof(float) * (size_t)b.n * nv);
            if (ga && gb) {
                for (int i = 0; i < n; i++) {
                    int r = rows[i];
                    float *dst = r < a.n ? ga + (size_t)r * nv : gb + (size_t)(r - a.n) * nv;
                    memcpy(dst, out + (size_t)i * nv, sizeof(float) * nv);
                }
                char what[128];
                snprintf(what, sizeof(what), "%s 2 seqs: seq 0 long block-causal", model);
                check_close(what, ga, &a, 0, NULL, a.n, tol);
                snprintf(what, sizeof(what), "%s 2 seqs: seq 1 pruned", model);
                check_close(what, gb, &b, 0, NULL, b.n, tol);
            }
            free(ga);
            free(gb);
        }
    }
    free(out);
    lopad_ctx_free(c);
    lopad_model_free(m);
    golden_free(&a);
    golden_free(&b);
}

static void test_multi_seq(void) {
    multi_seq("tiny-dream.gguf", "dream", TOL_F32);
    multi_seq("tiny-llada", "llada", TOL_F32);
}

/* A subset of rows, in a given order: only those rows come back, in that order. */
static void test_out_rows_subset(void) {
    struct golden g;
    if (!golden_read("llada-full.lpgl", &g)) return;
    lopad_model *m = load("tiny-llada", NULL);
    lopad_ctx *c = m ? new_ctx(m) : NULL;
    int32_t rows[3] = {11, 0, 5};
    float *out = malloc(sizeof(float) * 3 * (size_t)g.n_vocab);
    if (c && out) {
        struct lopad_batch b = {.n_tokens = g.n,
                                .tokens = g.tok,
                                .pos = g.pos,
                                .n_seq = 1,
                                .n_out = 3,
                                .out_rows = rows,
                                .logits = out};
        enum lopad_status st = lopad_forward(c, &b);
        CHECK_MSG(st == LOPAD_OK, "forward: %s", lopad_errmsg());
        if (st == LOPAD_OK) check_close("llada rows {11,0,5}", out, &g, 0, rows, 3, TOL_F32);
    }
    free(out);
    lopad_ctx_free(c);
    lopad_model_free(m);
    golden_free(&g);
}

/* Bad caller input is refused with LOPAD_ERR_ARG, not a crash. */
static void test_bad_token(void) {
    lopad_model *m = load("tiny-dream.gguf", NULL);
    lopad_ctx *c = m ? new_ctx(m) : NULL;
    if (c) {
        float out[272];
        int32_t tok[2] = {1, 272}, pos[2] = {0, 1}, rows[1] = {0};
        struct lopad_batch b = {.n_tokens = 2,
                                .tokens = tok,
                                .pos = pos,
                                .n_seq = 1,
                                .n_out = 1,
                                .out_rows = rows,
                                .logits = out};
        CHECK(lopad_forward(c, &b) == LOPAD_ERR_ARG);
        tok[1] = -1;
        CHECK(lopad_forward(c, &b) == LOPAD_ERR_ARG);
        tok[1] = 2;
        rows[0] = 2; /* out of the fed range */
        CHECK(lopad_forward(c, &b) == LOPAD_ERR_ARG);
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
}

/* lopad_model_save_gguf round trip: HF (+ LoRA) -> GGUF written by lopad -> reloaded ->
 * golden. LLaDA's q/k rows are permuted to NORM on the way, so this also checks that the
 * writer and the loader agree on the RoPE layout. */
static void save_roundtrip(const char *src, const char *lora, int type, const char *golden,
                           double tol) {
    lopad_model *m = load(src, lora);
    if (!m) return;
    char out[1024], what[160];
    snprintf(out, sizeof(out), "%s/test_golden_save_%d.gguf", LOPAD_BINARY_DIR, (int)getpid());
    enum lopad_status st = lopad_model_save_gguf(m, out, type);
    CHECK_MSG(st == LOPAD_OK, "save %s as type %d: %s", src, type, lopad_errmsg());
    lopad_model_free(m);
    if (st != LOPAD_OK) return;
    lopad_model *r = NULL;
    st = lopad_model_load(out, NULL, &r);
    CHECK_MSG(st == LOPAD_OK, "reload %s: %s", out, lopad_errmsg());
    if (st == LOPAD_OK) {
        snprintf(what, sizeof(what), "%s%s%s -> gguf type %d", src, lora ? " + " : "",
                 lora ? lora : "", type);
        check_case(r, what, golden, tol);
        if (lopad_model_hparams(r)->arch == LOPAD_ARCH_LLADA)
            CHECK(lopad_model_hparams(r)->rope == LOPAD_ROPE_NORM);
    }
    lopad_model_free(r);
    remove(out);
}

static void test_save_gguf(void) {
    save_roundtrip("tiny-llada", NULL, -1, "llada-pruned.lpgl", TOL_F32);
    save_roundtrip("tiny-llada", "tiny-llada-lora", LOPAD_TYPE_F32, "llada-lora.lpgl", TOL_F32);
    save_roundtrip("tiny-dream", "tiny-dream-lora", LOPAD_TYPE_BF16, "dream-lora.lpgl", TOL_BF16);
    /* Q8_0 written by lopad's own quantiser, against the unquantised golden */
    save_roundtrip("tiny-llada", NULL, LOPAD_TYPE_Q8_0, "llada-full.lpgl", TOL_Q8_VS_F32);
}

/* `lopad logits` writes float32 rows [n][n_vocab]; it must agree with the golden. */
static void cli_logits(const char *model, const char *golden, double tol) {
    struct golden g;
    if (!golden_read(golden, &g)) return;
    char out[1024], cmd[4096], ids[512] = "", ps[512] = "";
    snprintf(out, sizeof(out), "%s/test_golden_cli_%d.bin", LOPAD_BINARY_DIR, (int)getpid());
    for (int i = 0; i < g.n; i++) {
        size_t li = strlen(ids), lp = strlen(ps);
        snprintf(ids + li, sizeof(ids) - li, "%s%d", i ? "," : "", g.tok[i]);
        snprintf(ps + lp, sizeof(ps) - lp, "%s%d", i ? "," : "", g.pos[i]);
    }
    snprintf(cmd, sizeof(cmd), "'%s' logits -m '" FIX "%s' --tokens %s --positions %s --out '%s'",
             LOPAD_CLI, model, ids, ps, out);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "`%s` exited with %d", cmd, rc);
    FILE *f = rc == 0 ? fopen(out, "rb") : NULL;
    if (f) {
        size_t n = (size_t)g.n * g.n_vocab;
        float *l = malloc(sizeof(float) * n);
        bool ok = l && fread(l, sizeof(float), n, f) == n && fgetc(f) == EOF;
        CHECK_MSG(ok, "%s does not hold %d x %d float32", out, g.n, g.n_vocab);
        if (ok) {
            char what[128];
            snprintf(what, sizeof(what), "cli logits %s %s", model, golden);
            check_close(what, l, &g, 0, NULL, g.n, tol);
        }
        free(l);
        fclose(f);
    }
    remove(out);
    golden_free(&g);
}

static void test_cli_logits(void) {
    if (access(LOPAD_CLI, X_OK) != 0) TEST_SKIP("%s not built", LOPAD_CLI);
    cli_logits("tiny-llada.gguf", "llada-pruned.lpgl", TOL_F16);
    cli_logits("tiny-dream.gguf", "dream-full.lpgl", TOL_F32);
}

int main(void) {
    TEST_RUN(test_dream_hf_bf16);
    TEST_RUN(test_dream_gguf_f32);
    TEST_RUN(test_dream_gguf_bf16);
    TEST_RUN(test_dream_gguf_q8_0);
    TEST_RUN(test_llada_hf_f32_sharded);
    TEST_RUN(test_llada_gguf_f16_permuted);
    TEST_RUN(test_hf_vs_gguf);
    TEST_RUN(test_lora);
    TEST_RUN(test_kv_cache);
    TEST_RUN(test_multi_seq);
    TEST_RUN(test_out_rows_subset);
    TEST_RUN(test_bad_token);
    TEST_RUN(test_save_gguf);
    TEST_RUN(test_cli_logits);
    return test_report();
}
