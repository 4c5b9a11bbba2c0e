/*
 * fake_engine.h - what the decoder tests' fake engines share (test_decode.c,
 * test_fast.c / test_dpad.c, test_d2f.c / test_lopa.c / test_dpad_lopa.c): the
 * special ids and hyper-parameters of the fakes, the hashed logit rows of the
 * PyTorch references' fake predictors (tools/ref/decoders.py, fast_dllm.py,
 * d2f_lopa.py), a row's sequence span, engine wrappers (spies), and the fused
 * output head emulated on a logits engine (forward_scores / last_logits computed
 * from its logits), optionally with scores moved by almost the decoders' tolerance.
 * Header only: every test is one translation unit (CMake globs tests/unit/test_*.c).
 */
#ifndef LP_TEST_FAKE_ENGINE_H
#define LP_TEST_FAKE_ENGINE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h" /* struct lp_row_scores */
#include "core/common.h"
#include "decode/decode.h"
#include "decode/decoder_impl.h" /* LP_SCORE_TOL */
#include "decode/predict.h"

/* ------------------------------------------------------------ the fakes */

#define FE_V 40    /* vocabulary of every fake */
#define FE_MASK 39 /* MASK */
#define FE_EOS 38  /* EOS */
#define FE_EOT 37  /* EoT */

typedef enum lopad_status (*fe_forward_fn)(void *ud, const struct lopad_batch *b);

/* A fake engine: forward (and the cache operations, which the caller sets when it
 * has them) over ud; vocabulary FE_V with MASK / EOS / EoT as above, no BOS / pad;
 * Dream-family with shifted logits when shift, else LLaDA; n_ctx = n_batch_max = n. */
static inline void fe_engine_init(struct lp_engine *e, void *ud, fe_forward_fn forward, bool shift,
                                  int n) {
    memset(e, 0, sizeof *e);
    e->ud = ud;
    e->forward = forward;
    e->hp.arch = shift ? LOPAD_ARCH_DREAM : LOPAD_ARCH_LLADA;
    e->hp.n_vocab = FE_V;
    e->hp.mask_id = FE_MASK;
    e->hp.eos_id = FE_EOS;
    e->hp.eot_id = FE_EOT;
    e->hp.bos_id = e->hp.pad_id = -1;
    e->hp.shift_logits = shift;
    e->n_ctx = n;
    e->n_batch_max = n;
}

/* The references' hashed rows: a row's base from its context value and position, and
 * its logit for token v, in [-4, 4) with a 21-bit fraction (exact in f32). */
static inline uint64_t fe_row_base(uint64_t ctx, int p) {
    return ctx * 0x9E3779B97F4A7C15ull + (uint64_t)(p + 1) * 0xD1B54A32D192ED03ull;
}
static inline float fe_hash_logit(uint64_t base, int v) {
    uint64_t h = lp_mix64(base + (uint64_t)(v + 1) * 0xABC98388FB8FAC03ull);
    return (float)(h >> 40) * (1.0f / 2097152.0f) - 4.0f;
}

/* Fed rows [*beg, *end) of the sequence that holds fed row r. */
static inline void fe_seq_span(const struct lopad_batch *b, int r, int *beg, int *end) {
    int s = b->seq ? b->seq[r] : 0, lo = r, hi = r + 1;
    while (lo > 0 && (b->seq ? b->seq[lo - 1] : 0) == s)
        lo--;
    while (hi < b->n_tokens && (b->seq ? b->seq[hi] : 0) == s)
        hi++;
    *beg = lo;
    *end = hi;
}

/* ------------------------------------------------------------- wrappers */

/* An engine in front of another: the wrapper's state starts with struct fe_wrap. */
struct fe_wrap {
    struct lp_engine inner;
};

static inline enum lopad_status fe_wrap_forward(void *ud, const struct lopad_batch *b) {
    struct fe_wrap *w = ud;
    return w->inner.forward(w->inner.ud, b);
}
static inline enum lopad_status fe_wrap_kv_commit(void *ud, int src, int n, int dst) {
    struct fe_wrap *w = ud;
    return w->inner.kv_commit(w->inner.ud, src, n, dst);
}
static inline void fe_wrap_kv_truncate(void *ud, int n) {
    struct fe_wrap *w = ud;
    w->inner.kv_truncate(w->inner.ud, n);
}
static inline enum lopad_status fe_wrap_forward_scores(void *ud, const struct lopad_batch *b,
                                                       struct lp_row_scores *sc) {
    struct fe_wrap *w = ud;
    return w->inner.forward_scores(w->inner.ud, b, sc);
}
static inline enum lopad_status fe_wrap_last_logits(void *ud, const int32_t *rows, int n,
                                                    float *lg) {
    struct fe_wrap *w = ud;
    return w->inner.last_logits(w->inner.ud, rows, n, lg);
}

/* Put w in front of *e: every operation the engine has passes through to it (forward
 * through `forward` when not NULL, e.g. a spy that records and then calls
 * fe_wrap_forward); the hyper-parameters are kept. */
static inline void fe_wrap_install(struct lp_engine *e, struct fe_wrap *w, fe_forward_fn forward) {
    w->inner = *e;
    e->ud = w;
    e->forward = forward ? forward : fe_wrap_forward;
    e->kv_commit = w->inner.kv_commit ? fe_wrap_kv_commit : NULL;
    e->kv_truncate = w->inner.kv_truncate ? fe_wrap_kv_truncate : NULL;
    e->forward_scores = w->inner.forward_scores ? fe_wrap_forward_scores : NULL;
    e->last_logits = w->inner.last_logits ? fe_wrap_last_logits : NULL;
}

/* ------------------------------------------------ the fused head, emulated */

/* Scores of a logits row as the fused head defines them (struct lp_row_scores), in
 * f64: argmax of the logits (ties to the lower id), p = softmax(z). */
static inline void fe_row_scores(const float *z, int V, struct lp_row_scores *o) {
    int a = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[a]) a = v;
    int b = -1;
    for (int v = 0; v < V; v++)
        if (v != a && (b < 0 || z[v] > z[b])) b = v;
    double m = z[a], S = 0, Z = 0;
    for (int v = 0; v < V; v++) {
        if (z[v] == -INFINITY) continue;
        double e = exp((double)z[v] - m);
        S += e;
        Z += e * ((double)z[v] - m);
    }
    double lse = m + log(S);
    o->argmax = a;
    o->logsumexp = (float)lse;
    o->pmax = (float)exp(z[a] - lse);
    o->margin = (float)(exp(z[a] - lse) - (b < 0 ? 0.0 : exp(z[b] - lse)));
    o->negent = (float)(Z / S - log(S));
}

#define FE_FUSED_ROWS 8192

/* A logits engine given forward_scores / last_logits: the forward's logits are kept
 * (rows of its out_rows) and turned into scores; with jitter, every score moves by
 * 0.9 LP_SCORE_TOL of its size, signs pseudo-random: below the error the decoders
 * allow for, so their tokens must not change. */
struct fe_fused {
    struct fe_wrap w;
    bool jitter;
    uint64_t n_jitter;
    int V, n_out;
    int32_t rows[FE_FUSED_ROWS];
    float *logits;        /* [FE_FUSED_ROWS][V] (lp_malloc) */
    int n_scores, n_last; /* calls */
};

static inline float fe_jitter(struct fe_fused *f, float x) {
    double d = 0.9 * LP_SCORE_TOL * fabs((double)x);
    return (float)(x + ((lp_mix64(f->n_jitter++) >> 63) ? d : -d));
}

static inline enum lopad_status fe_fused_scores(void *ud, const struct lopad_batch *b,
                                                struct lp_row_scores *sc) {
    struct fe_fused *f = ud;
    if (b->n_out > FE_FUSED_ROWS) return lp_error(LOPAD_ERR_ARG, "fe_fused: too many rows");
    f->n_scores++;
    struct lopad_batch bb = *b;
    bb.logits = f->logits;
    f->n_out = 0;
    enum lopad_status st = f->w.inner.forward(f->w.inner.ud, &bb);
    if (st != LOPAD_OK) return st;
    f->n_out = b->n_out;
    for (int o = 0; o < b->n_out; o++) {
        f->rows[o] = b->out_rows[o];
        fe_row_scores(f->logits + (size_t)o * f->V, f->V, &sc[o]);
        if (f->jitter) {
            sc[o].pmax = fe_jitter(f, sc[o].pmax);
            sc[o].margin = fe_jitter(f, sc[o].margin);
            sc[o].negent = fe_jitter(f, sc[o].negent);
        }
    }
    return LOPAD_OK;
}

static inline enum lopad_status fe_fused_last_logits(void *ud, const int32_t *rows, int n,
                                                     float *lg) {
    struct fe_fused *f = ud;
    f->n_last++;
    for (int i = 0; i < n; i++) {
        int o = 0;
        while (o < f->n_out && f->rows[o] != rows[i])
            o++;
        if (o == f->n_out)
            return lp_error(LOPAD_ERR_ARG, "fe_fused: row %d was not an output row", rows[i]);
        memcpy(lg + (size_t)i * f->V, f->logits + (size_t)o * f->V, sizeof(float) * f->V);
    }
    return LOPAD_OK;
}

/* Give the logits engine *e the emulated fused head; false on no memory. Free with
 * fe_fused_free. */
static inline bool fe_fused_install(struct lp_engine *e, struct fe_fused *f, bool jitter) {
    memset(f, 0, sizeof *f);
    f->V = e->hp.n_vocab;
    f->jitter = jitter;
    f->logits = lp_malloc(sizeof(float) * FE_FUSED_ROWS * (size_t)f->V, "fake fused logits");
    if (!f->logits) return false;
    fe_wrap_install(e, &f->w, NULL);
    e->forward_scores = fe_fused_scores;
    e->last_logits = fe_fused_last_logits;
    return true;
}

static inline void fe_fused_free(struct fe_fused *f) {
    lp_free(f->logits);
    f->logits = NULL;
}

/* An engine with a fused head (real or emulated) whose scores are jittered as above. */
struct fe_jitter_wrap {
    struct fe_wrap w;
    struct fe_fused j; /* only its jitter counter is used */
};

static inline enum lopad_status fe_jitter_scores(void *ud, const struct lopad_batch *b,
                                                 struct lp_row_scores *sc) {
    struct fe_jitter_wrap *jw = ud;
    enum lopad_status st = jw->w.inner.forward_scores(jw->w.inner.ud, b, sc);
    for (int o = 0; st == LOPAD_OK && o < b->n_out; o++) {
        sc[o].pmax = fe_jitter(&jw->j, sc[o].pmax);
        sc[o].margin = fe_jitter(&jw->j, sc[o].margin);
        sc[o].negent = fe_jitter(&jw->j, sc[o].negent);
    }
    return st;
}

static inline void fe_jitter_install(struct lp_engine *e, struct fe_jitter_wrap *jw) {
    memset(jw, 0, sizeof *jw);
    fe_wrap_install(e, &jw->w, NULL);
    if (e->forward_scores) e->forward_scores = fe_jitter_scores;
}

/* ------------------------------------------- Fast-dLLM + LoPA on a real model */

#include "decode/d2f_impl.h" /* lp_lopa_set_serial */

/* rq (--decoder fast, prompt set, lopa ignored) on model m through a real context
 * sized for 3 sequences: fast and `--lopa 0` decode the same (canvas, NFE), and
 * `--lopa 2` batched and one forward per branch decide the same (canvas, NFE,
 * sequence evaluations, winner histogram). 0 when all hold; 1 fast vs K = 0
 * differ; 2 batched vs serial differ; -1 a call failed (lopad_errmsg()). */
static inline int fe_fast_lopa_paths(lopad_model *m, struct lp_decode_request rq) {
    int L = rq.n_prompt + rq.gen_len, nb = 3 * L, bad = 0;
    struct lopad_ctx_params cp = {.n_ctx = L, .n_batch_max = nb, .n_threads = 1};
    lopad_ctx *c = NULL;
    if (lopad_ctx_new(m, &cp, &c) != LOPAD_OK) return -1;
    struct lp_engine e;
    lp_engine_from_ctx(&e, m, c, L, nb);
    struct lp_decode_result r[4];
    memset(r, 0, sizeof r);
    lp_decoder *d = NULL;
    rq.lopa = -1;
    bad = lp_decode_run(&e, &rq, NULL, NULL, &r[0]) != LOPAD_OK ? -1 : 0;
    rq.lopa = 0;
    if (!bad) bad = lp_decode_run(&e, &rq, NULL, NULL, &r[1]) != LOPAD_OK ? -1 : 0;
    if (!bad && (r[0].nfe != r[1].nfe || memcmp(r[0].canvas, r[1].canvas, sizeof(int32_t) * L)))
        bad = 1;
    rq.lopa = 2;
    if (!bad) bad = lp_decode_run(&e, &rq, NULL, NULL, &r[2]) != LOPAD_OK ? -1 : 0;
    if (!bad) bad = lp_decode_start(&e, &rq, &d) != LOPAD_OK ? -1 : 0;
    if (!bad) {
        lp_lopa_set_serial(d, true);
        while (!bad && !lp_decode_done(d))
            bad = lp_decode_step(d, NULL) != LOPAD_OK ? -1 : 0;
        if (!bad) bad = lp_decode_finish(d, &r[3]) != LOPAD_OK ? -1 : 0;
    }
    lp_decode_free(d);
    if (!bad && (r[2].nfe != r[3].nfe || r[2].n_seq_evals != r[3].n_seq_evals ||
                 memcmp(r[2].canvas, r[3].canvas, sizeof(int32_t) * L) ||
                 r[2].n_winner_hist != r[3].n_winner_hist ||
                 (r[2].n_winner_hist &&
                  memcmp(r[2].winner_hist, r[3].winner_hist, sizeof(int) * r[2].n_winner_hist))))
        bad = 2;
    for (int i = 0; i < 4; i++)
        lp_decode_result_free(&r[i]);
    lopad_ctx_free(c);
    return bad;
}

#endif
