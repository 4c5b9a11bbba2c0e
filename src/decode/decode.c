/*
 * decode.c - the common decoding loop: request defaults and validation, the
 * engine binding, canvas / PRNG / NFE / timing bookkeeping, step events and
 * the blocking wrapper. The decoders themselves live in llada.c, dream.c, ...
 */
#include "decoder_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/common.h"
#include "core/threadpool.h"
#include "forward/forward.h" /* the fused head: lp_forward_scores, lp_forward_last_logits */
#include "d2f_impl.h"        /* D2F / LoPA */
#include "dist/dist.h"       /* branch parallelism: the job's communicator */
#include "forward/kv_rows.h" /* K/V rows between ranks */

/* Fast-dLLM */
extern const struct lp_decoder_ops lp_fast_ops;

static const struct lp_decoder_ops *const decoder_table[LP_DEC_COUNT] = {
    [LP_DEC_LLADA] = &lp_llada_ops,
    [LP_DEC_DREAM] = &lp_dream_ops,
    [LP_DEC_FAST] = &lp_fast_ops,
    [LP_DEC_D2F] = &lp_d2f_ops,
};

/* DPad: `llada --dpad` and `dream --dpad` run on the fast decoder's code (cache none,
 * top-k: the llada decoder token for token, and the dream decoder by blocks;
 * tests/unit/test_fast.c), which owns the pruned feeds */
static const struct lp_decoder_ops *ops_for(const struct lp_decode_request *rq) {
    if (rq->dpad && (rq->decoder == LP_DEC_LLADA || rq->decoder == LP_DEC_DREAM))
        return &lp_fast_ops;
    if (rq->decoder == LP_DEC_D2F && rq->lopa >= 0) return &lp_lopa_ops; /* D2F / LoPA */
    if (rq->decoder == LP_DEC_FAST && rq->lopa >= 0) return &lp_lopa_fast_ops;
    return decoder_table[rq->decoder];
}

/* ----------------------------------------------------------------- names */

static const char *const remask_names[] = {"low_confidence", "random"};
static const char *const alg_names[] = {"origin", "maskgit_plus", "topk_margin", "entropy"};

const char *lp_decoder_name(enum lp_decoder_kind k) {
    return (unsigned)k < LP_DEC_COUNT ? decoder_table[k]->name : "?";
}

enum lopad_status lp_decoder_parse(const char *s, enum lp_decoder_kind *out) {
    for (int k = 0; k < LP_DEC_COUNT; k++)
        if (s && !strcmp(s, decoder_table[k]->name)) {
            *out = (enum lp_decoder_kind)k;
            return LOPAD_OK;
        }
    char list[128]; /* the table's names (Fast-dLLM: no longer a fixed pair) */
    size_t o = 0;
    for (int k = 0; k < LP_DEC_COUNT && o < sizeof list; k++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", k ? ", " : "",
                              decoder_table[k]->name);
    return lp_error(LOPAD_ERR_ARG, "unknown decoder '%s' (choices: %s)", s ? s : "", list);
}

const char *lp_remasking_name(enum lp_remasking r) {
    return (unsigned)r < 2 ? remask_names[r] : "?";
}

enum lopad_status lp_remasking_parse(const char *s, enum lp_remasking *out) {
    for (int k = 0; k < 2; k++)
        if (s && !strcmp(s, remask_names[k])) {
            *out = (enum lp_remasking)k;
            return LOPAD_OK;
        }
    return lp_error(LOPAD_ERR_ARG, "unknown remasking '%s' (choices: low_confidence, random)",
                    s ? s : "");
}

const char *lp_dream_alg_name(enum lp_dream_alg a) {
    return (unsigned)a < 4 ? alg_names[a] : "?";
}

enum lopad_status lp_dream_alg_parse(const char *s, enum lp_dream_alg *out) {
    for (int k = 0; k < 4; k++)
        if (s && !strcmp(s, alg_names[k])) {
            *out = (enum lp_dream_alg)k;
            return LOPAD_OK;
        }
    return lp_error(LOPAD_ERR_ARG,
                    "unknown algorithm '%s' (choices: origin, maskgit_plus, topk_margin, entropy)",
                    s ? s : "");
}

enum lp_decoder_kind lp_decoder_default(enum lopad_arch arch) {
    return arch == LOPAD_ARCH_LLADA ? LP_DEC_LLADA : LP_DEC_DREAM;
}

/* --------------------------------------------------------------- request */

void lp_decode_request_init(struct lp_decode_request *rq, enum lp_decoder_kind kind, int gen_len) {
    memset(rq, 0, sizeof *rq);
    rq->decoder = kind;
    rq->gen_len = gen_len;
    rq->steps = gen_len;
    if (kind == LP_DEC_LLADA)
        rq->block_len = gen_len > 0 && gen_len % 32 == 0 ? 32 : gen_len;
    else
        rq->block_len = gen_len;
    rq->remasking = LP_REMASK_LOW_CONFIDENCE;
    rq->cfg_scale = 0;
    rq->temperature = 0;
    rq->eps = 1e-3;
    rq->alg = LP_ALG_ENTROPY;
    rq->alg_temp = 0;
    rq->top_p = 1.0;
    rq->top_k = 0;
    rq->seed = 0;
    /* Fast-dLLM */
    if (kind == LP_DEC_FAST) rq->block_len = gen_len > 0 && gen_len % 32 == 0 ? 32 : gen_len;
    rq->cache = LP_CACHE_PREFIX;
    rq->rule = LP_RULE_THRESHOLD;
    rq->threshold = 0.9;
    rq->factor = 1.0;
    rq->confidence = LP_CONF_AUTO;
    rq->early_stop = true;
    /* DPad */
    rq->dpad_window = 256;
    rq->dpad_sigma = 4.0;
    rq->dpad_scale = 0.0;
    /* D2F / LoPA */
    if (kind == LP_DEC_D2F) rq->block_len = gen_len > 0 && gen_len % 32 == 0 ? 32 : gen_len;
    rq->tau_add = 0.1;
    rq->tau_act = 0.95;
    rq->tau_conf = 0.9;
    rq->lopa = -1;
    rq->lopa_window = LP_WINDOW_FULL;
}

enum lopad_status lp_decode_validate(const struct lp_decode_request *rq,
                                     const struct lopad_hparams *hp, int n_ctx) {
    if ((unsigned)rq->decoder >= LP_DEC_COUNT)
        return lp_error(LOPAD_ERR_ARG, "unknown decoder id %d", (int)rq->decoder);
    const char *dn = decoder_table[rq->decoder]->name;
    if (!rq->prompt || rq->n_prompt < 1)
        return lp_error(LOPAD_ERR_ARG, "empty prompt: at least one prompt token is needed");
    if (rq->gen_len < 1)
        return lp_error(LOPAD_ERR_ARG, "--gen must be at least 1, got %d", rq->gen_len);
    if ((int64_t)rq->n_prompt + rq->gen_len > n_ctx)
        return lp_error(LOPAD_ERR_ARG,
                        "prompt (%d tokens) + --gen (%d) = %lld positions exceed the context "
                        "length %d",
                        rq->n_prompt, rq->gen_len, (long long)rq->n_prompt + rq->gen_len, n_ctx);
    if (hp->mask_id < 0 || hp->mask_id >= hp->n_vocab)
        return lp_error(LOPAD_ERR_ARG, "the model has no valid mask token id (mask_id = %d)",
                        (int)hp->mask_id);
    for (int i = 0; i < rq->n_prompt; i++) {
        if (rq->prompt[i] < 0 || rq->prompt[i] >= hp->n_vocab)
            return lp_error(LOPAD_ERR_ARG,
                            "prompt token %d at index %d is outside the vocabulary [0, %d)",
                            (int)rq->prompt[i], i, hp->n_vocab);
        if (rq->prompt[i] == hp->mask_id)
            return lp_error(LOPAD_ERR_ARG, "prompt token at index %d is the mask token (%d)", i,
                            (int)hp->mask_id);
    }
    if (rq->steps < 1)
        return lp_error(LOPAD_ERR_ARG, "--steps must be at least 1, got %d", rq->steps);
    if (!(rq->temperature >= 0) || !isfinite(rq->temperature))
        return lp_error(LOPAD_ERR_ARG, "--temperature must be a finite number >= 0, got %g",
                        rq->temperature);
    if (!(rq->top_p > 0 && rq->top_p <= 1))
        return lp_error(LOPAD_ERR_ARG, "--top-p must be in (0, 1], got %g", rq->top_p);
    if (rq->top_k < 0)
        return lp_error(LOPAD_ERR_ARG, "--top-k must be >= 0 (0 = off), got %d", rq->top_k);
    if (!(rq->cfg_scale >= 0) || !isfinite(rq->cfg_scale))
        return lp_error(LOPAD_ERR_ARG, "--cfg-scale must be a finite number >= 0, got %g",
                        rq->cfg_scale);
    if (!(rq->alg_temp >= 0) || !isfinite(rq->alg_temp))
        return lp_error(LOPAD_ERR_ARG, "--alg-temp must be a finite number >= 0, got %g",
                        rq->alg_temp);
    if ((unsigned)rq->remasking > LP_REMASK_RANDOM)
        return lp_error(LOPAD_ERR_ARG, "unknown remasking id %d", (int)rq->remasking);
    if ((unsigned)rq->alg > LP_ALG_ENTROPY)
        return lp_error(LOPAD_ERR_ARG, "unknown algorithm id %d", (int)rq->alg);
    enum lopad_status st = ops_for(rq)->check(rq, hp);
    if (st != LOPAD_OK) return st;
    LP_UNUSED(dn);
    return LOPAD_OK;
}

/* ---------------------------------------------------------------- engine */

static enum lopad_status ctx_forward(void *ud, const struct lopad_batch *b) {
    return lopad_forward((lopad_ctx *)ud, b);
}
static enum lopad_status ctx_kv_commit(void *ud, int src, int n, int dst) {
    return lopad_kv_commit((lopad_ctx *)ud, src, n, dst);
}
static void ctx_kv_truncate(void *ud, int n) {
    lopad_kv_truncate((lopad_ctx *)ud, n);
}

static size_t ctx_kv_rows_bytes(void *ud, int n) {
    return lp_kv_rows_bytes((lopad_ctx *)ud, n);
}
static enum lopad_status ctx_kv_export(void *ud, int src, int n, void *buf) {
    return lp_kv_export((lopad_ctx *)ud, src, n, buf);
}
static enum lopad_status ctx_kv_import(void *ud, const void *buf, int n, int dst) {
    return lp_kv_import((lopad_ctx *)ud, buf, n, dst);
}

static enum lopad_status ctx_forward_scores(void *ud, const struct lopad_batch *b,
                                            struct lp_row_scores *scores) {
    return lp_forward_scores((lopad_ctx *)ud, b, scores);
}
static enum lopad_status ctx_last_logits(void *ud, const int32_t *rows, int n, float *logits) {
    return lp_forward_last_logits((lopad_ctx *)ud, rows, n, logits);
}

void lp_engine_from_ctx(struct lp_engine *e, const lopad_model *m, lopad_ctx *c, int n_ctx,
                        int n_batch_max) {
    memset(e, 0, sizeof *e);
    e->ud = c;
    e->forward = ctx_forward;
    e->kv_commit = ctx_kv_commit;
    e->kv_truncate = ctx_kv_truncate;
    /* only where the fused head's logits are bitwise the logits path's: the decoders'
     * argmax test trusts it (lp_scores_argmax_clear) */
    if (c && lp_forward_scores_exact(c)) {
        e->forward_scores = ctx_forward_scores;
        e->last_logits = ctx_last_logits;
    }
    e->hp = *lopad_model_hparams(m);
    e->n_ctx = n_ctx;
    e->n_batch_max = n_batch_max;
    e->n_threads = lopad_ctx_n_threads(c);
    e->pool = c ? lp_forward_pool(c) : NULL;
    /* branch parallelism: K/V rows between ranks, the job's communicator */
    e->kv_rows_bytes = ctx_kv_rows_bytes;
    e->kv_export = ctx_kv_export;
    e->kv_import = ctx_kv_import;
    e->dist = lp_forward_branch_dist(c);
    e->tp_group = lp_forward_tp_group(c);
    if (e->dist) e->model_hash = lp_dist_model_hash(m);
}

/* ------------------------------------------------------------ the helpers */

/* Non-finite model outputs (a corrupt or absurd file, an adapter that overflows)
 * would make every proposal the mask token or token 0: the same rule for every
 * decoder and both head paths is to stop with an error naming the step and row. */
static enum lopad_status nonfinite(const struct lp_decoder *d, const char *what, int row) {
    return lp_error(LOPAD_ERR_FORMAT,
                    "the model produced non-finite %s at step %d (output row %d of the forward): "
                    "the weights or the adapter hold values that overflow",
                    what, d->step, row);
}

enum lopad_status lp_dec_check_logits(const struct lp_decoder *d, const float *logits, int n_out) {
    for (int r = 0; r < n_out; r++) {
        const float *row = logits + (size_t)r * d->V;
        float acc = 0.0f; /* x * 0 is NaN exactly when x is inf or NaN */
        for (int v = 0; v < d->V; v++)
            acc += row[v] * 0.0f;
        if (acc != acc) return nonfinite(d, "logits", r);
    }
    return LOPAD_OK;
}

static enum lopad_status check_scores(const struct lp_decoder *d, const struct lp_row_scores *sc,
                                      int n) {
    for (int r = 0; r < n; r++)
        if (!isfinite(sc[r].pmax) || !isfinite(sc[r].negent) || !isfinite(sc[r].margin))
            return nonfinite(d, "scores", r);
    return LOPAD_OK;
}

/* Book one forward that started at t0 (lp_time): its time, and when it
 * succeeded, one more forward (NFE) over n_seq sequences. */
static enum lopad_status count_forward(struct lp_decoder *d, double t0, enum lopad_status st,
                                       int n_seq) {
    double dt = lp_time() - t0;
    d->t_forward += dt;
    if (d->nfe == 0) d->t_first_forward += dt; /* the first forward (both CFG calls) */
    if (st != LOPAD_OK) return st;
    d->nfe += 1;
    d->n_seq_evals += n_seq;
    return LOPAD_OK;
}

enum lopad_status lp_dec_forward(struct lp_decoder *d, const int32_t *tokens, int n_seq,
                                 const int32_t *out_rows, int n_out, float *logits) {
    LP_ASSERT(n_seq >= 1 && n_seq <= 2);
    double t0 = lp_time();
    enum lopad_status st = LOPAD_OK;
    if ((int64_t)n_seq * d->L <= d->eng.n_batch_max || n_seq == 1) {
        struct lopad_batch b = {
            .n_tokens = n_seq * d->L,
            .tokens = tokens,
            .pos = d->pos,
            .n_seq = n_seq,
            .seq = n_seq > 1 ? d->seq : NULL,
            .n_out = n_out,
            .out_rows = out_rows,
            .logits = logits,
        };
        st = d->eng.forward(d->eng.ud, &b);
    } else {
        /* one call per canvas; out_rows must be grouped by sequence */
        int o = 0;
        for (int s = 0; s < n_seq && st == LOPAD_OK; s++) {
            int o0 = o;
            while (o < n_out && out_rows[o] / d->L == s)
                o++;
            int32_t rows_buf[256];
            int32_t *rows =
                o - o0 <= 256 ? rows_buf : lp_malloc(sizeof(int32_t) * (o - o0), "rows");
            if (!rows) return LOPAD_ERR_NOMEM;
            for (int i = o0; i < o; i++)
                rows[i - o0] = out_rows[i] - s * d->L;
            struct lopad_batch b = {
                .n_tokens = d->L,
                .tokens = tokens + (size_t)s * d->L,
                .pos = d->pos,
                .n_seq = 1,
                .n_out = o - o0,
                .out_rows = rows,
                .logits = logits + (size_t)o0 * d->V,
            };
            st = d->eng.forward(d->eng.ud, &b);
            if (rows != rows_buf) lp_free(rows);
        }
        LP_ASSERT(st != LOPAD_OK || o == n_out);
    }
    /* one forward even when split: the reference runs the canvases as one batched call */
    st = count_forward(d, t0, st, n_seq);
    return st == LOPAD_OK ? lp_dec_check_logits(d, logits, n_out) : st;
}

enum lopad_status lp_dec_forward_batch(struct lp_decoder *d, const struct lopad_batch *b) {
    double t0 = lp_time();
    enum lopad_status st = count_forward(d, t0, d->eng.forward(d->eng.ud, b), b->n_seq);
    return st == LOPAD_OK && b->logits ? lp_dec_check_logits(d, b->logits, b->n_out) : st;
}

bool lp_dec_scores_worth(struct lp_decoder *d) {
    if (!lp_dec_has_scores(d)) return false;
    if (d->sc_skip > 0) {
        d->sc_skip--;
        return false;
    }
    /* a step that takes its logits runs the output head twice, which costs about ten
     * times what a step decided on the scores saves (CPU): pause when more than a
     * quarter of the recent fused steps (the last 4 at first and after a pause, then
     * the last 8) took their logits */
    int window = d->sc_skip_len || d->sc_n < 8 ? 4 : 8;
    if (d->sc_n >= window) {
        if (__builtin_popcount(d->sc_hist & ((1u << window) - 1)) * 4 > window) {
            d->sc_skip_len = d->sc_skip_len ? LP_MIN(2 * d->sc_skip_len, 256) : 16;
            d->sc_skip = d->sc_skip_len - 1; /* this step is the first of the pause */
            d->sc_n = 0;
            d->sc_hist = 0;
            return false;
        }
        d->sc_skip_len = 0; /* worth it again */
    }
    return true;
}

enum lopad_status lp_dec_forward_scores(struct lp_decoder *d, const struct lopad_batch *b,
                                        struct lp_row_scores *scores) {
    LP_ASSERT(lp_dec_has_scores(d));
    double t0 = lp_time();
    enum lopad_status st =
        count_forward(d, t0, d->eng.forward_scores(d->eng.ud, b, scores), b->n_seq);
    if (st != LOPAD_OK) return st;
    d->nfe_scores++;
    d->sc_hist <<= 1;
    d->sc_n++;
    return check_scores(d, scores, b->n_out);
}

enum lopad_status lp_dec_last_logits(struct lp_decoder *d, const int32_t *rows, int n,
                                     float *logits) {
    LP_ASSERT(lp_dec_has_scores(d));
    double t0 = lp_time();
    enum lopad_status st = d->eng.last_logits(d->eng.ud, rows, n, logits);
    double dt = lp_time() - t0;
    d->t_forward += dt;
    if (st != LOPAD_OK) return st;
    if (d->nfe <= 1) d->t_first_forward += dt; /* the first step's head-only call */
    d->nfe_scores_logits++;
    d->sc_hist |= 1;
    return lp_dec_check_logits(d, logits, n);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y ? 1 : 0;
}

bool lp_dec_topk_clear(const double *conf, int n, int k, double tol, double *scratch) {
    if (k <= 0 || k >= n) return true; /* nothing or everything: no boundary */
    memcpy(scratch, conf, sizeof(double) * (size_t)n);
    qsort(scratch, (size_t)n, sizeof(double), cmp_desc);
    double a = scratch[k - 1], b = scratch[k];
    if (a == -INFINITY) return true; /* exact -inf on both sides (EOS / EoT ranked last) */
    return a - b > 2.0 * tol;
}

void lp_dec_parallel(struct lp_decoder *d, int n, lp_dec_task fn, void *ctx) {
    if (d->pool && n > 1) {
        lp_pool_run(d->pool, n, fn, ctx);
        return;
    }
    for (int i = 0; i < n; i++)
        fn(ctx, i, 0);
}

int lp_dec_n_threads(const struct lp_decoder *d) {
    return d->pool ? lp_pool_n_threads(d->pool) : 1;
}

void lp_dec_commit(struct lp_decoder *d, int p, int32_t tok) {
    LP_ASSERT(p >= d->P && p < d->L && d->canvas[p] == d->mask_id);
    /* a proposal of the mask token itself leaves the position masked, as writing
     * it does in the references (it is proposed again by a later step) */
    if (tok == d->mask_id) return;
    d->canvas[p] = tok;
    d->committed[d->n_committed_step++] = p;
    d->n_masked--;
}

/* -------------------------------------------------------------- the loop */

/* Every option of the request and the canvas length: ranks that must decode together
 * compare it at start (LoPA's branch groups, tensor parallelism's groups). */
uint64_t lp_dec_request_hash(const struct lp_decoder *d) {
    const struct lp_decode_request *q = &d->rq;
    const int64_t iv[] = {q->decoder,
                          q->gen_len,
                          q->block_len,
                          q->steps,
                          q->cache,
                          q->rule,
                          q->confidence,
                          q->early_stop,
                          q->logits_eos_inf,
                          q->dpad,
                          q->dpad_window,
                          q->lopa,
                          q->lopa_window,
                          (int64_t)q->seed,
                          d->L,
                          q->remasking,
                          q->dream_first_token_commit,
                          q->confidence_eos_eot_inf};
    const double dv[] = {q->temperature, q->threshold, q->factor,   q->dpad_sigma, q->dpad_scale,
                         q->tau_add,     q->tau_act,   q->tau_conf, q->top_p,      q->cfg_scale};
    uint64_t h = lp_dist_hash(LP_DIST_HASH0, iv, sizeof iv);
    return lp_dist_hash(h, dv, sizeof dv);
}

/* The ranks of a tensor-parallel group compute each forward together: they must run the
 * same request on the same prompt, or their partial sums would mix two decodes. */
static enum lopad_status tp_agree(const struct lp_decoder *d) {
    const uint64_t v[2] = {lp_dec_request_hash(d),
                           lp_dist_hash(LP_DIST_HASH0, d->prompt, sizeof(int32_t) * (size_t)d->P)};
    static const char *const names[2] = {"decoding request (options, lengths)", "prompt"};
    return lp_dist_agree(d->eng.tp_group, v, 2, names);
}

enum lopad_status lp_decode_start(const struct lp_engine *e, const struct lp_decode_request *rq,
                                  lp_decoder **out) {
    *out = NULL;
    if (!e || !e->forward) return lp_error(LOPAD_ERR_ARG, "decoder: no engine");
    enum lopad_status st = lp_decode_validate(rq, &e->hp, e->n_ctx);
    if (st != LOPAD_OK) return st;
    lp_decoder *d = lp_calloc(1, sizeof *d, "decoder");
    if (!d) return LOPAD_ERR_NOMEM;
    d->ops = ops_for(rq);
    d->eng = *e;
    d->rq = *rq;
    d->P = rq->n_prompt;
    d->G = rq->gen_len;
    d->L = d->P + d->G;
    d->V = e->hp.n_vocab;
    d->mask_id = e->hp.mask_id;
    d->prompt = lp_malloc(sizeof(int32_t) * d->P, "prompt copy");
    d->canvas = lp_malloc(sizeof(int32_t) * d->L, "canvas");
    d->pos = lp_malloc(sizeof(int32_t) * 2 * d->L, "position ids");
    d->seq = lp_malloc(sizeof(int32_t) * 2 * d->L, "sequence ids");
    d->committed = lp_malloc(sizeof(int32_t) * d->L, "committed list");
    if (!d->prompt || !d->canvas || !d->pos || !d->seq || !d->committed) {
        lp_decode_free(d);
        return LOPAD_ERR_NOMEM;
    }
    memcpy(d->prompt, rq->prompt, sizeof(int32_t) * d->P);
    d->rq.prompt = d->prompt;
    for (int i = 0; i < d->L; i++) {
        d->canvas[i] = i < d->P ? d->prompt[i] : d->mask_id;
        d->pos[i] = d->pos[d->L + i] = i;
        d->seq[i] = 0;
        d->seq[d->L + i] = 1;
    }
    if (e->pool) {
        d->pool = e->pool; /* one thread budget: the forward's workers */
    } else if (e->n_threads > 1) {
        if (!(d->pool = d->own_pool = lp_pool_new(e->n_threads))) {
            lp_decode_free(d);
            return LOPAD_ERR_NOMEM;
        }
    }
    d->n_masked = d->G;
    d->n_steps = -1;
    lp_rng_seed(&d->rng, rq->seed);
    d->t_start = lp_time();
    st = e->tp_group ? tp_agree(d) : LOPAD_OK;
    if (!st) st = d->ops->init(d);
    if (st != LOPAD_OK) {
        lp_decode_free(d);
        return st;
    }
    d->max_steps = lp_dec_max_steps(d);
    *out = d;
    return LOPAD_OK;
}

/* Fixed-step decoders run their plan; the others commit at least one position per
 * step, except a step per block that only refreshes a cache or pipelines blocks:
 * twice the positions plus two per block is far above any real run (tested). */
int lp_dec_max_steps(const struct lp_decoder *d) {
    if (d->n_steps >= 0) return d->n_steps;
    int block = d->rq.block_len > 0 ? d->rq.block_len : d->G;
    return 2 * d->G + 2 * (d->G / block + 1) + 8;
}

static int final_prefix(const lp_decoder *d) {
    int f = 0;
    while (f < d->G && d->canvas[d->P + f] != d->mask_id)
        f++;
    return f;
}

static void fill_event(const lp_decoder *d, struct lp_step_event *ev) {
    ev->canvas = d->canvas;
    ev->n_canvas = d->L;
    ev->n_prompt = d->P;
    ev->mask_id = d->mask_id;
    ev->committed = d->committed;
    ev->n_committed = d->n_committed_step;
    ev->step = d->step - 1;
    ev->n_steps = d->n_steps;
    ev->nfe = d->nfe;
    ev->n_masked = d->n_masked;
    ev->final_prefix = final_prefix(d);
    ev->done = d->done;
    ev->n_branches = 0; /* LoPA's (its fill_event hook) */
    ev->winner = ev->winner_pos = -1;
    if (d->ops->fill_event) d->ops->fill_event(d, ev);
}

enum lopad_status lp_decode_step(lp_decoder *d, struct lp_step_event *ev) {
    if (d->done) {
        d->n_committed_step = 0;
        if (ev) fill_event(d, ev);
        return LOPAD_OK;
    }
    d->n_committed_step = 0;
    if (d->step >= d->max_steps) /* the one bound every decoder runs under */
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s decoder stopped after %d steps with %d of %d positions still masked: "
                        "the model keeps proposing the mask token",
                        d->ops->name, d->step, d->n_masked, d->G);
    enum lopad_status st = d->ops->step(d);
    if (st != LOPAD_OK) return st;
    d->step++;
    if (d->n_steps >= 0 && d->step >= d->n_steps) d->done = true; /* fixed-step decoders */
    if (ev) fill_event(d, ev);
    return LOPAD_OK;
}

bool lp_decode_done(const lp_decoder *d) {
    return d->done;
}

void lp_decode_cancel(lp_decoder *d) {
    if (d->done) return;
    d->done = d->cancelled = true;
}

enum lopad_status lp_decode_finish(lp_decoder *d, struct lp_decode_result *res) {
    memset(res, 0, sizeof *res);
    res->canvas = lp_malloc(sizeof(int32_t) * d->L, "result canvas");
    res->ids = lp_malloc(sizeof(int32_t) * (d->G ? d->G : 1), "result ids");
    if (!res->canvas || !res->ids) {
        lp_decode_result_free(res);
        return LOPAD_ERR_NOMEM;
    }
    memcpy(res->canvas, d->canvas, sizeof(int32_t) * d->L);
    res->n_canvas = d->L;
    res->n_prompt = d->P;
    int32_t eos = d->eng.hp.eos_id, eot = d->eng.hp.eot_id;
    int n = 0;
    for (; n < d->G; n++) {
        int32_t t = d->canvas[d->P + n];
        if (t == d->mask_id || (eos >= 0 && t == eos) || (eot >= 0 && t == eot)) break;
        res->ids[n] = t;
    }
    res->n_ids = n;
    res->n_committed = d->G - d->n_masked;
    res->nfe = d->nfe;
    res->n_seq_evals = d->n_seq_evals;
    res->tpf = d->nfe ? (double)res->n_committed / d->nfe : 0.0;
    res->t_total = lp_time() - d->t_start;
    res->t_first_forward = d->t_first_forward;
    res->t_forward = d->t_forward;
    res->nfe_scores = d->nfe_scores;
    res->nfe_scores_logits = d->nfe_scores_logits;
    res->cancelled = d->cancelled;
    /* D2F / LoPA: non-pad tokens (LoPA's TPF numerator); d2f reports it as tpf */
    int32_t pad = d->eng.hp.pad_id;
    for (int i = d->P; i < d->L; i++)
        res->n_nonpad += d->canvas[i] != d->mask_id && !(pad >= 0 && d->canvas[i] == pad);
    res->tpf_nonpad = d->nfe ? (double)res->n_nonpad / d->nfe : 0.0;
    enum lopad_status st = d->ops->finish ? d->ops->finish(d, res) : LOPAD_OK;
    if (st != LOPAD_OK) {
        lp_decode_result_free(res);
        return st;
    }
    return LOPAD_OK;
}

void lp_decode_free(lp_decoder *d) {
    if (!d) return;
    if (d->ops && d->ops->release) d->ops->release(d);
    lp_pool_free(d->own_pool);
    lp_free(d->prompt);
    lp_free(d->canvas);
    lp_free(d->pos);
    lp_free(d->seq);
    lp_free(d->committed);
    lp_free(d);
}

void lp_decode_result_free(struct lp_decode_result *r) {
    if (!r) return;
    lp_free(r->ids);
    lp_free(r->canvas);
    lp_free(r->winner_hist); /* D2F / LoPA */
    r->winner_hist = NULL;
    r->n_winner_hist = 0;
    r->ids = r->canvas = NULL;
    r->n_ids = r->n_canvas = 0;
}

enum lopad_status lp_decode_run(const struct lp_engine *e, const struct lp_decode_request *rq,
                                lp_step_cb cb, void *ud, struct lp_decode_result *res) {
    memset(res, 0, sizeof *res);
    lp_decoder *d;
    enum lopad_status st = lp_decode_start(e, rq, &d);
    if (st != LOPAD_OK) return st;
    while (!d->done) {
        struct lp_step_event ev;
        st = lp_decode_step(d, &ev);
        if (st != LOPAD_OK) break;
        if (cb && cb(ud, &ev) && !d->done) {
            d->cancelled = true;
            break;
        }
    }
    if (st == LOPAD_OK) st = lp_decode_finish(d, res);
    lp_decode_free(d);
    return st;
}
