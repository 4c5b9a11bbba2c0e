/*
 * test_forward.c - self-consistency of lopad_forward and the KV cache on the
 * synthetic tiny models (Dream-like with GQA and biases, LLaDA-like, and a
 * NORM-RoPE variant), f32 weights:
 *   - prefix cache: cached rows equal a full forward whose mask hides the rest
 *     from the prefix (bitwise: the key order is the same);
 *   - dual cache: re-fed block with its cache rows hidden equals the full forward;
 *   - LoPA branches of different lengths in one batch equal each branch alone;
 *   - pruned canvases keep their positions; block-causal masks;
 *   - bitwise equality for 1, 2, 3 threads; no allocation inside a forward;
 *   - malformed batches and commits are rejected with clear messages;
 *   - the kernel cap and repack mode are the context's params (not the environment);
 *   - a context keeps its model alive: usable after lopad_model_free, and
 *     contexts made and freed on several threads at once (ASan / TSan builds).
 */
#include "test.h"

#include <pthread.h>

#include "backend/cpu/cpu.h"
#include "forward/forward.h"
#include "model/synthetic.h"
#include "core/types.h"

#define V 300 /* vocabulary of the tiny shapes */
#define NMAX 64

static lopad_model *models[3]; /* tiny, tiny-llada, tiny with NORM rope */
static const char *model_names[3] = {"tiny (dream)", "tiny-llada", "tiny (norm rope)"};

static lopad_ctx *new_ctx(const lopad_model *m, int n_ctx, int n_batch, int threads) {
    struct lopad_ctx_params p = {.n_ctx = n_ctx, .n_batch_max = n_batch, .n_threads = threads};
    lopad_ctx *c = NULL;
    enum lopad_status st = lopad_ctx_new(m, &p, &c);
    if (st) {
        fprintf(stderr, "lopad_ctx_new: %s\n", lopad_errmsg());
        exit(1);
    }
    return c;
}

struct feed {
    int n;
    const int32_t *tok, *pos, *seq, *block;
    int n_seq, n_cache, skip_b, skip_e;
};

/* Forward with every fed row as an output row. */
static enum lopad_status run(lopad_ctx *c, const struct feed *f, float *logits) {
    int32_t rows[NMAX];
    for (int i = 0; i < f->n; i++)
        rows[i] = i;
    struct lopad_batch b = {.n_tokens = f->n,
                            .tokens = f->tok,
                            .pos = f->pos,
                            .n_seq = f->n_seq ? f->n_seq : 1,
                            .seq = f->seq,
                            .block = f->block,
                            .n_cache = f->n_cache,
                            .cache_skip_begin = f->skip_b,
                            .cache_skip_end = f->skip_e,
                            .n_out = f->n,
                            .out_rows = rows,
                            .logits = logits};
    enum lopad_status st = lopad_forward(c, &b);
    if (st) fprintf(stderr, "  forward: %s\n", lopad_errmsg());
    return st;
}

static void make_tokens(int32_t *tok, int n, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        tok[i] = (int32_t)((seed >> 8) % 297);
    }
}
static void iota(int32_t *p, int n, int start) {
    for (int i = 0; i < n; i++)
        p[i] = start + i;
}
static bool same(const float *a, const float *b, int n_rows) {
    return memcmp(a, b, sizeof(float) * (size_t)n_rows * V) == 0;
}
static double max_diff(const float *a, const float *b, int n_rows) {
    double d = 0;
    for (int i = 0; i < n_rows * V; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* ------------------------------------------------------------ prefix cache */

static void test_prefix_cache(void) {
    for (int mi = 0; mi < 3; mi++) {
        const int N = 21, P1 = 5, P2 = 8;
        int32_t tok[NMAX], pos[NMAX], blk[NMAX];
        make_tokens(tok, N, 7 + mi);
        iota(pos, N, 0);
        for (int i = 0; i < N; i++)
            blk[i] = i < P1 ? 0 : i < P2 ? 1 : 2;
        static float ref[NMAX * V], got[NMAX * V], full[NMAX * V];
        lopad_ctx *c = new_ctx(models[mi], 32, 32, 2);
        /* reference: one forward in which [0,P1) sees only itself, [P1,P2) sees [0,P2) */
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos, .block = blk}, ref) == 0);
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, full) == 0);

        /* the same through the cache, in three steps (the first without logits) */
        struct lopad_batch prefill = {.n_tokens = P1, .tokens = tok, .pos = pos, .n_seq = 1};
        CHECK(lopad_forward(c, &prefill) == 0);
        CHECK(lopad_kv_commit(c, 0, P1, 0) == 0);
        CHECK(lopad_kv_len(c) == P1);
        CHECK(run(c, &(struct feed){.n = P2 - P1, .tok = tok + P1, .pos = pos + P1, .n_cache = P1},
                  got) == 0);
        CHECK_MSG(same(got, ref + P1 * V, P2 - P1), "%s: second chunk over the cache",
                  model_names[mi]);
        CHECK(lopad_kv_commit(c, 0, P2 - P1, P1) == 0);
        CHECK(lopad_kv_len(c) == P2);
        CHECK(run(c, &(struct feed){.n = N - P2, .tok = tok + P2, .pos = pos + P2, .n_cache = P2},
                  got) == 0);
        CHECK_MSG(same(got, ref + P2 * V, N - P2), "%s: rest over the cache, max diff %g",
                  model_names[mi], max_diff(got, ref + P2 * V, N - P2));
        /* sensitivity: with bidirectional attention the prefix would see the rest */
        CHECK(max_diff(full + P2 * V, ref + P2 * V, N - P2) > 1e-4);
        /* n_cache below the cache length hides the later rows */
        CHECK(run(c, &(struct feed){.n = N - P1, .tok = tok + P1, .pos = pos + P1, .n_cache = P1},
                  got) == 0);
        int32_t blk2[NMAX];
        for (int i = 0; i < N; i++)
            blk2[i] = i < P1 ? 0 : 1;
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos, .block = blk2}, ref) == 0);
        CHECK_MSG(same(got, ref + P1 * V, N - P1), "%s: n_cache < kv_len", model_names[mi]);
        lopad_ctx_free(c);
    }
}

/* -------------------------------------------------------------- dual cache */

static void test_dual_cache(void) {
    const int N = 24, bs = 8, be = 14;
    int32_t tok[NMAX], pos[NMAX];
    static float full[NMAX * V], got[NMAX * V];
    for (int mi = 0; mi < 3; mi++) {
        /* multi-layer: the whole canvas cached, its block re-fed unchanged */
        make_tokens(tok, N, 99 + mi);
        iota(pos, N, 0);
        lopad_ctx *c = new_ctx(models[mi], 32, 32, 2);
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, full) == 0);
        CHECK(lopad_kv_commit(c, 0, N, 0) == 0);
        CHECK(run(c,
                  &(struct feed){.n = be - bs,
                                 .tok = tok + bs,
                                 .pos = pos + bs,
                                 .n_cache = N,
                                 .skip_b = bs,
                                 .skip_e = be},
                  got) == 0);
        double d = max_diff(got, full + bs * V, be - bs);
        CHECK_MSG(d < 1e-4, "%s: re-fed block differs by %g", model_names[mi], d);
        /* overwrite in place: the length stays */
        CHECK(lopad_kv_commit(c, 0, be - bs, bs) == 0);
        CHECK(lopad_kv_len(c) == N);
        lopad_ctx_free(c);
    }

    /* one layer: cached K/V depend only on token and position, so a changed block
     * re-fed over the stale cache must equal the full forward of the new canvas */
    lopad_model *m1 = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 5, &m1) == 0);
    if (!m1) return;
    m1->hp.n_layer = 1;
    int32_t tok_b[NMAX];
    make_tokens(tok, N, 1234);
    memcpy(tok_b, tok, sizeof tok);
    make_tokens(tok_b + bs, be - bs, 555);
    iota(pos, N, 0);
    static float ref_b[NMAX * V];
    lopad_ctx *c = new_ctx(m1, 32, 32, 2);
    CHECK(run(c, &(struct feed){.n = N, .tok = tok_b, .pos = pos}, ref_b) == 0);
    CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, full) == 0);
    CHECK(lopad_kv_commit(c, 0, N, 0) == 0);
    CHECK(run(c,
              &(struct feed){.n = be - bs,
                             .tok = tok_b + bs,
                             .pos = pos + bs,
                             .n_cache = N,
                             .skip_b = bs,
                             .skip_e = be},
              got) == 0);
    double d = max_diff(got, ref_b + bs * V, be - bs);
    CHECK_MSG(d < 1e-4, "changed block over the dual cache differs by %g", d);
    /* commit the new block's K/V over the old rows; the suffix then sees it */
    CHECK(lopad_kv_commit(c, 0, be - bs, bs) == 0);
    CHECK(run(c,
              &(struct feed){.n = N - be,
                             .tok = tok_b + be,
                             .pos = pos + be,
                             .n_cache = N,
                             .skip_b = be,
                             .skip_e = N},
              got) == 0);
    d = max_diff(got, ref_b + be * V, N - be);
    CHECK_MSG(d < 1e-4, "suffix after the overwrite differs by %g", d);
    /* sensitivity: without hiding the stale block rows the answer is different */
    lopad_kv_truncate(c, 0);
    CHECK(lopad_kv_len(c) == 0);
    CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, full) == 0);
    CHECK(lopad_kv_commit(c, 0, N, 0) == 0);
    CHECK(run(c, &(struct feed){.n = be - bs, .tok = tok_b + bs, .pos = pos + bs, .n_cache = N},
              got) == 0);
    CHECK(max_diff(got, ref_b + bs * V, be - bs) > 1e-3);
    lopad_ctx_free(c);
    lopad_model_free(m1);
}

/* ---------------------------------------------------------------- branches */

static void test_branches(void) {
    for (int mi = 0; mi < 3; mi++) {
        const int P = 10, lens[3] = {5, 9, 3};
        int32_t tok[NMAX], pos[NMAX], seq[NMAX], blk[NMAX];
        static float alone[NMAX * V], batch[NMAX * V], pre[NMAX * V];
        make_tokens(tok, P, 31 + mi);
        iota(pos, P, 0);
        lopad_ctx *c = new_ctx(models[mi], 40, 32, 3);
        CHECK(run(c, &(struct feed){.n = P, .tok = tok, .pos = pos}, pre) == 0);
        CHECK(lopad_kv_commit(c, 0, P, 0) == 0);
        /* three branches, each over positions P.., different tokens and lengths */
        int n = 0, start[3];
        for (int s = 0; s < 3; s++) {
            start[s] = n;
            make_tokens(tok + P + n, lens[s], 1000 + 17 * s);
            for (int i = 0; i < lens[s]; i++) {
                pos[P + n + i] = P + i;
                seq[n + i] = s;
                blk[n + i] = i / 3;
            }
            n += lens[s];
        }
        for (int masked = 0; masked < 2; masked++) {
            CHECK(run(c,
                      &(struct feed){.n = n,
                                     .tok = tok + P,
                                     .pos = pos + P,
                                     .seq = seq,
                                     .n_seq = 3,
                                     .block = masked ? blk : NULL,
                                     .n_cache = P},
                      batch) == 0);
            for (int s = 0; s < 3; s++) {
                CHECK(run(c,
                          &(struct feed){.n = lens[s],
                                         .tok = tok + P + start[s],
                                         .pos = pos + P + start[s],
                                         .block = masked ? blk + start[s] : NULL,
                                         .n_cache = P},
                          alone) == 0);
                CHECK_MSG(same(alone, batch + start[s] * V, lens[s]),
                          "%s: branch %d in a batch differs from alone (mask %d)", model_names[mi],
                          s, masked);
            }
        }
        /* commit-winner: branch 1's rows become the cache after the prefix */
        CHECK(run(c,
                  &(struct feed){
                      .n = n, .tok = tok + P, .pos = pos + P, .seq = seq, .n_seq = 3, .n_cache = P},
                  batch) == 0);
        CHECK(lopad_kv_commit(c, start[1], lens[1], P) == 0);
        CHECK(lopad_kv_len(c) == P + lens[1]);
        lopad_ctx_free(c);
    }
}

/* ------------------------------------------------- positions and block mask */

static void test_positions(void) {
    for (int mi = 0; mi < 3; mi++) {
        const int N = 24, d0 = 10, d1 = 16; /* [d0, d1) pruned away */
        int32_t tok[NMAX], pos[NMAX], blk[NMAX], ktok[NMAX], kpos[NMAX], renum[NMAX];
        static float ref[NMAX * V], got[NMAX * V], wrong[NMAX * V];
        make_tokens(tok, N, 77 + mi);
        iota(pos, N, 0);
        int k = 0;
        for (int i = 0; i < N; i++) {
            blk[i] = (i >= d0 && i < d1) ? 1 : 0; /* the kept tokens never see the pruned ones */
            if (i < d0 || i >= d1) {
                ktok[k] = tok[i];
                kpos[k] = i;
                renum[k] = k;
                k++;
            }
        }
        lopad_ctx *c = new_ctx(models[mi], 32, 32, 2);
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos, .block = blk}, ref) == 0);
        CHECK(run(c, &(struct feed){.n = k, .tok = ktok, .pos = kpos}, got) == 0);
        CHECK(run(c, &(struct feed){.n = k, .tok = ktok, .pos = renum}, wrong) == 0);
        double dk = 0, dw = 0;
        for (int i = 0, j = 0; i < N; i++) {
            if (i >= d0 && i < d1) continue;
            dk = fmax(dk, max_diff(got + j * V, ref + i * V, 1));
            dw = fmax(dw, max_diff(wrong + j * V, ref + i * V, 1));
            j++;
        }
        CHECK_MSG(dk < 1e-4, "%s: pruned canvas with original positions differs by %g",
                  model_names[mi], dk);
        CHECK_MSG(dw > 1e-3, "%s: renumbered positions should change the logits (%g)",
                  model_names[mi], dw);
        lopad_ctx_free(c);
    }
}

static void test_block_causal(void) {
    for (int mi = 0; mi < 3; mi++) {
        const int N = 20, B = 5;
        int32_t tok[NMAX], pos[NMAX], blk[NMAX];
        static float ref[NMAX * V], got[NMAX * V];
        make_tokens(tok, N, 5 + mi);
        iota(pos, N, 0);
        for (int i = 0; i < N; i++)
            blk[i] = i / B;
        lopad_ctx *c = new_ctx(models[mi], 32, 32, 2);
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos, .block = blk}, ref) == 0);
        /* block by block through the cache: each block sees the committed earlier ones */
        for (int b = 0; b < N / B; b++) {
            CHECK(run(c,
                      &(struct feed){
                          .n = B, .tok = tok + b * B, .pos = pos + b * B, .n_cache = b * B},
                      got) == 0);
            CHECK_MSG(same(got, ref + b * B * V, B), "%s: block %d via the cache, max diff %g",
                      model_names[mi], b, max_diff(got, ref + b * B * V, B));
            CHECK(lopad_kv_commit(c, 0, B, b * B) == 0);
        }
        /* later blocks do not matter: a truncated canvas gives the same rows */
        CHECK(run(c, &(struct feed){.n = 2 * B, .tok = tok, .pos = pos, .block = blk}, got) == 0);
        CHECK(same(got, ref, 2 * B));
        /* sensitivity: bidirectional attention gives other values for early blocks */
        CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, got) == 0);
        CHECK(max_diff(got, ref, B) > 1e-4);
        lopad_ctx_free(c);
    }
}

/* ------------------------------------------------------- threads, allocation */

static void test_threads_and_alloc(void) {
    for (int mi = 0; mi < 3; mi++) {
        const int P = 12, n = 20;
        int32_t tok[NMAX], pos[NMAX], seq[NMAX], blk[NMAX];
        static float out[4][NMAX * V];
        make_tokens(tok, P + n, 3 + mi);
        iota(pos, P + n, 0);
        for (int i = 0; i < n; i++) {
            seq[i] = i < 12 ? 0 : 1;
            blk[i] = i % 7 / 3;
            if (i >= 12) pos[P + i] = P + (i - 12) * 2; /* non-contiguous */
        }
        for (int t = 1; t <= 4; t++) {
            lopad_ctx *c = new_ctx(models[mi], 40, 32, t == 4 ? 2 : t);
            CHECK(lopad_ctx_n_threads(c) == (t == 4 ? 2 : t));
            if (t == 4) lp_backend_cpu_force_scalar(&c->be, true);
            CHECK(run(c, &(struct feed){.n = P, .tok = tok, .pos = pos}, out[t - 1]) == 0);
            CHECK(lopad_kv_commit(c, 0, P, 0) == 0);
            long before = lp_alloc_count();
            CHECK(run(c,
                      &(struct feed){.n = n,
                                     .tok = tok + P,
                                     .pos = pos + P,
                                     .seq = seq,
                                     .n_seq = 2,
                                     .block = blk,
                                     .n_cache = P,
                                     .skip_b = 3,
                                     .skip_e = 5},
                      out[t - 1]) == 0);
            CHECK(lopad_kv_commit(c, 2, 5, P) == 0);
            CHECK_MSG(lp_alloc_count() == before, "%ld allocations inside forward + commit",
                      lp_alloc_count() - before);
            lopad_ctx_free(c);
        }
        CHECK_MSG(same(out[0], out[1], n), "%s: 1 vs 2 threads", model_names[mi]);
        CHECK_MSG(same(out[0], out[2], n), "%s: 1 vs 3 threads", model_names[mi]);
        double d = max_diff(out[0], out[3], n);
        CHECK_MSG(d < 1e-3, "%s: scalar vs simd kernels differ by %g", model_names[mi], d);
        /* sane magnitudes */
        double ss = 0;
        int finite = 1;
        for (int i = 0; i < n * V; i++) {
            finite &= isfinite(out[0][i]);
            ss += (double)out[0][i] * out[0][i];
        }
        double rms = sqrt(ss / (n * V));
        CHECK(finite);
        CHECK_MSG(rms > 0.1 && rms < 10, "%s: logit rms %g", model_names[mi], rms);
    }
}

/* ---------------------------------------------------------------- out rows */

static void test_out_rows(void) {
    const int N = 8;
    int32_t tok[NMAX], pos[NMAX];
    make_tokens(tok, N, 11);
    iota(pos, N, 0);
    static float all[NMAX * V], sub[40 * V];
    lopad_ctx *c = new_ctx(models[0], 16, N, 2);
    CHECK(run(c, &(struct feed){.n = N, .tok = tok, .pos = pos}, all) == 0);
    int32_t rows[40]; /* more rows than n_batch_max, with repeats, out of order */
    for (int i = 0; i < 40; i++)
        rows[i] = (i * 5 + 3) % N;
    struct lopad_batch b = {.n_tokens = N,
                            .tokens = tok,
                            .pos = pos,
                            .n_seq = 1,
                            .n_out = 40,
                            .out_rows = rows,
                            .logits = sub};
    CHECK(lopad_forward(c, &b) == 0);
    int ok = 1;
    for (int i = 0; i < 40; i++)
        ok &= same(sub + i * V, all + rows[i] * V, 1);
    CHECK(ok);
    b.n_out = 0; /* no logits at all is fine (prefill) */
    b.logits = NULL;
    CHECK(lopad_forward(c, &b) == 0);
    lopad_ctx_free(c);
}

/* ------------------------------------------------------------- bad input */

static void expect_err(lopad_ctx *c, const struct lopad_batch *b, const char *needle) {
    enum lopad_status st = lopad_forward(c, b);
    CHECK_MSG(st == LOPAD_ERR_ARG, "expected an error containing '%s', got status %d", needle, st);
    CHECK_MSG(strstr(lopad_errmsg(), needle) != NULL, "message '%s' lacks '%s'", lopad_errmsg(),
              needle);
}

static void test_bad_batches(void) {
    lopad_ctx *c = new_ctx(models[0], 16, 8, 1);
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, pos[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    int32_t seq[8] = {0, 0, 1, 1, 1, 2, 2, 2}, rows[2] = {0, 7};
    static float logits[2 * V];
    struct lopad_batch good = {.n_tokens = 8,
                               .tokens = tok,
                               .pos = pos,
                               .n_seq = 3,
                               .seq = seq,
                               .n_out = 2,
                               .out_rows = rows,
                               .logits = logits};
    CHECK(lopad_forward(c, &good) == 0);
    struct lopad_batch b;

    b = good, b.n_tokens = 9;
    expect_err(c, &b, "n_tokens 9");
    b = good, b.n_tokens = 0;
    expect_err(c, &b, "n_tokens 0");
    tok[5] = V;
    expect_err(c, &good, "token 5 has id 300");
    tok[5] = -1;
    expect_err(c, &good, "token 5 has id -1");
    tok[5] = 6;
    pos[3] = -2;
    expect_err(c, &good, "token 3 has negative position -2");
    pos[3] = 3;
    seq[4] = 0;
    expect_err(c, &good, "token 4 has seq id 0 after 1");
    seq[4] = 1;
    b = good, b.n_seq = 4;
    expect_err(c, &b, "n_seq is 4");
    b = good, b.seq = NULL;
    expect_err(c, &b, "no seq ids");
    seq[0] = 1;
    expect_err(c, &good, "token 0 has seq id 1");
    seq[0] = 0;
    b = good, b.n_cache = 1;
    expect_err(c, &b, "n_cache 1");
    CHECK(lopad_kv_commit(c, 0, 4, 0) == 0);
    b = good, b.n_cache = 4, b.cache_skip_begin = 3, b.cache_skip_end = 5;
    expect_err(c, &b, "skip range [3, 5)");
    b = good, b.n_cache = 4, b.cache_skip_begin = 3, b.cache_skip_end = 2;
    expect_err(c, &b, "skip range [3, 2)");
    rows[1] = 8;
    expect_err(c, &good, "out_rows[1] = 8");
    rows[1] = 7;
    b = good, b.logits = NULL;
    expect_err(c, &b, "logits is NULL");
    b = good, b.n_out = -1;
    expect_err(c, &b, "n_out -1");
    CHECK(lopad_forward(c, NULL) == LOPAD_ERR_ARG);
    /* a rejected batch leaves the previous forward committable */
    CHECK(lopad_kv_commit(c, 0, 8, 4) == 0);
    CHECK(lopad_kv_len(c) == 12);

    /* commits */
    CHECK(lopad_kv_commit(c, 4, 5, 0) == LOPAD_ERR_ARG); /* past the fed rows */
    CHECK(strstr(lopad_errmsg(), "[4, 4+5)") != NULL);
    CHECK(lopad_kv_commit(c, 0, 2, 13) == LOPAD_ERR_ARG); /* would leave a gap */
    CHECK(strstr(lopad_errmsg(), "gap") != NULL);
    CHECK(lopad_kv_commit(c, 0, 8, 12) == LOPAD_ERR_ARG); /* past n_ctx */
    CHECK(strstr(lopad_errmsg(), "n_ctx 16") != NULL);
    CHECK(lopad_kv_commit(c, -1, 1, 0) == LOPAD_ERR_ARG);
    lopad_kv_truncate(c, 20); /* longer than the cache: no change */
    CHECK(lopad_kv_len(c) == 12);
    lopad_kv_truncate(c, 2);
    CHECK(lopad_kv_len(c) == 2);
    b = good, b.n_cache = 4;
    expect_err(c, &b, "n_cache 4");
    lopad_ctx_free(c);

    /* a fresh context has nothing to commit */
    c = new_ctx(models[0], 16, 8, 1);
    CHECK(lopad_kv_commit(c, 0, 1, 0) == LOPAD_ERR_ARG);
    lopad_ctx_free(c);

    /* context parameters */
    lopad_ctx *bad = NULL;
    CHECK(lopad_ctx_new(models[0], &(struct lopad_ctx_params){.n_ctx = 0, .n_batch_max = 4},
                        &bad) == LOPAD_ERR_ARG);
    CHECK(bad == NULL);
    CHECK(lopad_ctx_new(models[0], &(struct lopad_ctx_params){.n_ctx = 4, .n_batch_max = 0},
                        &bad) == LOPAD_ERR_ARG);
    CHECK(lopad_ctx_new(models[0], NULL, &bad) == LOPAD_ERR_ARG);
    lopad_ctx_free(NULL);
}

static void test_ctx_alloc_failures(void) {
    /* every allocation of lopad_ctx_new can fail cleanly (ASan checks for leaks) */
    int failures = 0;
    for (long k = 0; k < 40; k++) {
        lopad_ctx *c = NULL;
        lp_alloc_fail_after(k);
        enum lopad_status st = lopad_ctx_new(
            models[0], &(struct lopad_ctx_params){.n_ctx = 8, .n_batch_max = 4, .n_threads = 2},
            &c);
        lp_alloc_fail_after(-1);
        if (st) {
            failures++;
            CHECK(st == LOPAD_ERR_NOMEM && c == NULL);
        } else {
            lopad_ctx_free(c);
            break;
        }
    }
    CHECK(failures > 5);
}

/* ------------------------------------------------------------ settings */

/* The kernel cap and the repack mode come from the context's params, per
 * context (two contexts of one model at different levels), never from the
 * environment; bad values are refused naming them. */
static void test_ctx_settings(void) {
    setenv("LOPAD_KERNELS", "ref", 1); /* the CLI's convenience: ignored by the library */
    setenv("LOPAD_REPACK", "1", 1);
    struct lp_backend probe = {0};
    struct lp_backend_limits lim = {.max_n_in = 128, .head_dim = 16, .n_head = 4, .n_head_kv = 2};
    CHECK(lp_backend_cpu_new(1, &lim, &probe) == 0);
    const int best = lp_backend_cpu_level(&probe);
    lp_backend_free(&probe);
    lopad_ctx *def = new_ctx(models[0], 8, 8, 1);
    CHECK_MSG(lp_backend_cpu_level(&def->be) == best, "level %d with no cap, best %d",
              lp_backend_cpu_level(&def->be), best);
    lopad_ctx *ref = NULL, *avx2 = NULL, *bad = NULL;
    struct lopad_ctx_params p = {.n_ctx = 8, .n_batch_max = 8, .n_threads = 1, .kernels = "ref"};
    CHECK(lopad_ctx_new(models[0], &p, &ref) == 0);
    p.kernels = "avx2";
    CHECK(lopad_ctx_new(models[0], &p, &avx2) == 0);
    if (ref && avx2) {
        CHECK(lp_backend_cpu_level(&ref->be) == 0);
        CHECK(lp_backend_cpu_level(&avx2->be) == LP_MIN(best, 1));
        CHECK(lp_backend_cpu_level(&def->be) == best); /* not changed by the others */
        int32_t tok[8], pos[8];
        make_tokens(tok, 8, 3);
        iota(pos, 8, 0);
        static float a[8 * V], b[8 * V];
        CHECK(run(ref, &(struct feed){.n = 8, .tok = tok, .pos = pos}, a) == 0);
        CHECK(run(avx2, &(struct feed){.n = 8, .tok = tok, .pos = pos}, b) == 0);
        CHECK(max_diff(a, b, 8) < 1e-3); /* same matmuls; small kernels round alike-ish */
    }
    p.kernels = "avx9000";
    CHECK(lopad_ctx_new(models[0], &p, &bad) == LOPAD_ERR_ARG && bad == NULL);
    CHECK(strstr(lopad_errmsg(), "avx9000") != NULL);
    p.kernels = NULL;
    p.repack = 3;
    CHECK(lopad_ctx_new(models[0], &p, &bad) == LOPAD_ERR_ARG && bad == NULL);
    CHECK(strstr(lopad_errmsg(), "repack") != NULL);
    lopad_ctx_free(def);
    lopad_ctx_free(ref);
    lopad_ctx_free(avx2);
    unsetenv("LOPAD_KERNELS");
    unsetenv("LOPAD_REPACK");
}

/* ------------------------------------------------------------- lifetimes */

/* A context keeps its model: after lopad_model_free the context still runs
 * (same logits, bitwise) and the model goes with the last context (the ASan
 * build reports a use-after-free or a leak otherwise). */
static void test_ctx_outlives_model(void) {
    int32_t tok[8], pos[8];
    make_tokens(tok, 8, 5);
    iota(pos, 8, 0);
    static float ref[8 * V], got[8 * V];
    lopad_ctx *c = new_ctx(models[0], 8, 8, 2);
    CHECK(run(c, &(struct feed){.n = 8, .tok = tok, .pos = pos}, ref) == 0);
    lopad_ctx_free(c);

    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 42, &m) == 0); /* models[0]'s twin */
    if (!m) return;
    lopad_ctx *a = new_ctx(m, 8, 8, 2), *b = new_ctx(m, 8, 8, 1);
    lopad_model_free(m); /* the caller's reference goes; a and b hold theirs */
    CHECK(run(a, &(struct feed){.n = 8, .tok = tok, .pos = pos}, got) == 0);
    CHECK(same(ref, got, 8));
    lopad_ctx_free(a);
    memset(got, 0, sizeof got);
    CHECK(run(b, &(struct feed){.n = 8, .tok = tok, .pos = pos}, got) == 0);
    CHECK(same(ref, got, 8));
    lopad_ctx_free(b); /* the last reference: frees the model */
}

struct ctx_thread {
    lopad_ctx *own; /* made before the thread starts: keeps the model alive */
    const float *ref;
    int bad;
};

static void *ctx_thread_main(void *arg) {
    struct ctx_thread *t = arg;
    int32_t tok[8], pos[8];
    make_tokens(tok, 8, 5);
    iota(pos, 8, 0);
    float *got = malloc(sizeof(float) * 8 * V);
    for (int i = 0; i < 6 && got; i++) {
        lopad_ctx *c = NULL;
        const struct lopad_ctx_params p = {.n_ctx = 8, .n_batch_max = 8, .n_threads = 1 + i % 2};
        if (lopad_ctx_new(t->own->model, &p, &c)) {
            t->bad++;
            continue;
        }
        if (run(c, &(struct feed){.n = 8, .tok = tok, .pos = pos}, got) || !same(t->ref, got, 8))
            t->bad++;
        lopad_ctx_free(c);
    }
    if (run(t->own, &(struct feed){.n = 8, .tok = tok, .pos = pos}, got) || !same(t->ref, got, 8))
        t->bad++;
    lopad_ctx_free(t->own); /* the last of the two threads frees the model */
    free(got);
    return NULL;
}

/* Two threads make, use and free contexts on one model at once (binding it
 * concurrently: the model cache), while the caller has already freed it. Run
 * under TSan too (a -fsanitize=thread build). */
static void test_ctx_threads(void) {
    int32_t tok[8], pos[8];
    make_tokens(tok, 8, 5);
    iota(pos, 8, 0);
    static float ref[8 * V];
    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_Q8_0, 7, &m) == 0);
    if (!m) return;
    lopad_ctx *c = new_ctx(m, 8, 8, 1);
    CHECK(run(c, &(struct feed){.n = 8, .tok = tok, .pos = pos}, ref) == 0);
    lopad_ctx_free(c);
    struct ctx_thread t[2] = {{new_ctx(m, 8, 8, 1), ref, 0}, {new_ctx(m, 8, 8, 2), ref, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, ctx_thread_main, &t[i]) == 0);
    lopad_model_free(m);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(t[i].bad == 0, "thread %d: %d failed or different forwards", i, t[i].bad);
    }
}

/* -------------------------------------------------------- synthetic models */

static void test_synthetic(void) {
    lopad_model *a = NULL, *b = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 42, &a) == 0);
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 42, &b) == 0);
    if (!a || !b) return;
    CHECK(memcmp(a->layers[1].w_up.data, b->layers[1].w_up.data,
                 a->layers[1].w_up.row_bytes * 128) == 0);
    CHECK(a->layers[0].bq != NULL && a->hp.has_qkv_bias && a->hp.n_head_kv == 2);
    lopad_model_free(b);
    b = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 43, &b) == 0);
    CHECK(memcmp(a->layers[1].w_up.data, b->layers[1].w_up.data,
                 a->layers[1].w_up.row_bytes * 128) != 0);
    lopad_model_free(b);

    /* other weight types: on-the-fly conversion equals f32 math on the converted
     * weights; F16/BF16 (converted from the same floats) stay close to the f32 model */
    int32_t tok[12], pos[12];
    make_tokens(tok, 12, 9);
    iota(pos, 12, 0);
    static float ref[12 * V], got[12 * V], deq[12 * V];
    lopad_ctx *c = new_ctx(a, 12, 12, 2);
    CHECK(run(c, &(struct feed){.n = 12, .tok = tok, .pos = pos}, ref) == 0);
    lopad_ctx_free(c);
    const int types[] = {LOPAD_TYPE_F16, LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0, LOPAD_TYPE_Q4_0};
    const double tol[] = {0.01, 0.1, 0, 0};
    for (int i = 0; i < 4; i++) {
        b = NULL;
        CHECK(lp_model_synthetic("tiny", types[i], 42, &b) == 0);
        if (!b) continue;
        CHECK(b->tok_embd.type == types[i] && b->layers[0].wq.type == types[i]);
        c = new_ctx(b, 12, 12, 2);
        CHECK(run(c, &(struct feed){.n = 12, .tok = tok, .pos = pos}, got) == 0);
        double d = max_diff(got, ref, 12);
        if (tol[i] > 0)
            CHECK_MSG(d < tol[i] && d > 0, "%s weights: logits differ from f32 by %g",
                      lp_type_name(types[i]), d);
        /* the same model with every matrix converted to f32 up front */
        float *bufs[2 + 2 * 7];
        int nb = 0;
        struct lp_weight *ws[2 + 2 * 7] = {&b->tok_embd, &b->output};
        int nw = 2;
        for (int l = 0; l < b->hp.n_layer; l++) {
            struct lp_layer *L = &b->layers[l];
            struct lp_weight *lw[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
            for (int k = 0; k < LP_N_LAYER_MATRICES; k++)
                ws[nw++] = lw[k];
        }
        for (int k = 0; k < nw; k++) {
            struct lp_weight *w = ws[k];
            float *f = malloc(sizeof(float) * w->n_in * w->n_out);
            lp_type_traits(w->type)->to_float(w->data, f, w->n_in * w->n_out);
            w->type = LOPAD_TYPE_F32;
            w->row_bytes = sizeof(float) * w->n_in;
            w->data = f;
            bufs[nb++] = f;
        }
        CHECK(run(c, &(struct feed){.n = 12, .tok = tok, .pos = pos}, deq) == 0);
        double dq = max_diff(got, deq, 12);
        CHECK_MSG(dq < 1e-4, "%s weights: on-the-fly conversion differs by %g",
                  lp_type_name(types[i]), dq);
        fprintf(stderr, "  %s: vs f32 model %g, vs converted %g\n", lp_type_name(types[i]), d, dq);
        lopad_ctx_free(c);
        for (int k = 0; k < nb; k++)
            free(bufs[k]);
        lopad_model_free(b);
    }
    lopad_model_free(a);

    b = NULL;
    CHECK(lp_model_synthetic("huge", LOPAD_TYPE_F32, 1, &b) == LOPAD_ERR_ARG && b == NULL);
    CHECK(strstr(lopad_errmsg(), "huge") != NULL);
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_Q4_K, 1, &b) == LOPAD_ERR_UNSUPPORTED);
    CHECK(lp_model_synthetic("tiny", 99, 1, &b) != 0);
}

int main(void) {
    if (lp_model_synthetic("tiny", LOPAD_TYPE_F32, 42, &models[0]) ||
        lp_model_synthetic("tiny-llada", LOPAD_TYPE_F32, 43, &models[1]) ||
        lp_model_synthetic("tiny", LOPAD_TYPE_F32, 44, &models[2])) {
        fprintf(stderr, "cannot build synthetic models: %s\n", lopad_errmsg());
        return 1;
    }
    models[2]->hp.rope = LOPAD_ROPE_NORM;
    TEST_RUN(test_prefix_cache);
    TEST_RUN(test_dual_cache);
    TEST_RUN(test_branches);
    TEST_RUN(test_positions);
    TEST_RUN(test_block_causal);
    TEST_RUN(test_threads_and_alloc);
    TEST_RUN(test_out_rows);
    TEST_RUN(test_bad_batches);
    TEST_RUN(test_ctx_alloc_failures);
    TEST_RUN(test_synthetic);
    TEST_RUN(test_ctx_settings);
    TEST_RUN(test_ctx_outlives_model);
    TEST_RUN(test_ctx_threads);
    for (int i = 0; i < 3; i++)
        lopad_model_free(models[i]);
    return test_report();
}
