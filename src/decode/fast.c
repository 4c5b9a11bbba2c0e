/*
 * fast.c - the Fast-dLLM decoder (docs/ALGORITHMS.md 2; docs/research/dpad_fastdllm.md 4) with
 * optional DPad suffix dropout (docs/ALGORITHMS.md 3, dpad.h). Also serves `llada --dpad`
 * (cache none, the llada top-k schedule) and `dream --dpad` (Dream by blocks, the DPad
 * paper's Dream baseline: cache none, the Dream grid per block, positions ranked by
 * --alg's confidence); decode.c routes them here.
 *
 * Semi-autoregressive over blocks [sb, eb) of B positions. Each lp_decode_step is one
 * forward plus its commits among the block's masked positions:
 *   - the block's first forward ("refresh") feeds the whole (kept) canvas
 *     [0, eb) ++ kept suffix with explicit position ids; with a cache it then commits
 *     K/V: prefix mode rows [0, sb), dual mode every fed row;
 *   - later forwards: cache none feeds the refresh feed again; prefix feeds the block +
 *     kept suffix over the cached prefix; dual feeds the block alone over the whole
 *     cache, hiding the cached block rows (cache_skip = [sb, eb)): suffix K/V stay
 *     frozen until the next block.
 * Logits are asked only for the predictions of the masked block positions. For
 * shift_logits models the prediction of j is the raw output of j-1; for j = sb in a
 * cached step (j-1 not fed) it is the output of sb-1 kept from the refresh forward
 * ("last logit"). --dream-first-token-commit instead commits sb from the refresh
 * forward unconditionally (the reference's behaviour) and runs the rule afterwards.
 *
 * Rules (pmax = probability of the proposed token; conf = --confidence):
 *   threshold: every masked block position with pmax >= tau; none: the best conf;
 *   factor:    sort by pmax (desc, ties lower position), commit the longest prefix whose
 *              n-th member (n >= 2) has (n+1)(1 - pmax) < f; at least one;
 *   topk:      LLaDA family: k_i = floor(M/S) + (i < M mod S), S = steps / blocks;
 *              Dream family: grid linspace(1, eps, S+1) per block, step i commits
 *              int(N (1 - t_{i+1}/t_i)) (all on i = S-1); top by conf. A step whose
 *              count is 0 is skipped without a forward (as the vanilla decoders do),
 *              so `--cache none --rule topk` is the vanilla llada decoder, and for one
 *              block the vanilla dream decoder, token for token.
 * A block ends when it holds no MASK (no step cap). Early stop (default on): a
 * finished block holding EOS fills the rest of the canvas with EOS and ends decoding;
 * the filled positions are not counted as committed (TPF counts decoded tokens).
 *
 * Proposals are the vanilla decoders' (LLaDA: argmax / Gumbel-max, pmax in f64;
 * Dream: temperature, top-p, top-k, f32 softmax, categorical), except that the MASK
 * token is never proposed (a MASK proposal would leave its position masked and could
 * stall the uncapped block loop): the best other token is taken instead.
 *
 * PRNG order: at a block start the DPad draw (dpad.h); per forward the Gumbel key
 * (LLaDA, T > 0) or one uniform per proposal in increasing position (Dream, T > 0).
 *
 * With the fused head (T = 0, no top-p / top-k / logits_eos_inf; decoder_impl.h) a
 * forward returns the rows' scores; the step decides on them when no proposal is MASK,
 * every argmax is clear and the rule's commits are clear by more than the scores'
 * error (fast_scores), and otherwise takes the rows' logits: the same tokens. A
 * refresh that keeps the last logit runs on logits.
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decode/dpad.h"
#include "decoder_impl.h"

struct fast {
    bool dream_grid;  /* Dream time grid for topk, Dream-style proposals */
    bool grid_from_1; /* dream --dpad: DPad's Dream _sample runs grid steps 1 .. S-1 */
    bool shift;       /* predictions from the previous raw row */
    bool first_token; /* --dream-first-token-commit */
    enum lp_cache_mode cache;
    enum lp_commit_rule rule;
    enum lp_confidence conf_kind;
    bool use_dpad;
    struct lp_dpad dp;
    int B, nb, S;
    /* current block */
    int b, sb, eb;
    bool started, refreshed, have_last;
    int i;         /* schedule index within the block */
    int *k;        /* [S] llada schedule */
    int n_kept;    /* fed suffix positions */
    int n_refresh; /* rows fed by the refresh forward (= cached rows in dual mode) */
    int32_t *kept; /* [G] fed suffix positions of this block */
    /* feeds */
    int32_t *ftok, *fpos;   /* [L] */
    int32_t *rows;          /* [B + 1] out rows */
    int32_t *mpos;          /* [B] masked block positions proposed this step */
    int32_t *src;           /* [B] logits row of each proposal (-1 = last logit) */
    float *logits;          /* [(B + 1) V] */
    float *last;            /* [V] raw output of row sb - 1 (shift models, cached steps) */
    float *plg;             /* [B][V] per-proposal logits copies */
    float *probs;           /* [n_threads][V] */
    float *fscratch;        /* [n_threads][V] */
    int32_t *iscratch;      /* [n_threads][2V] */
    double *u;              /* [B] draws */
    int32_t *x0;            /* [B] */
    double *conf, *pmax;    /* [B] */
    int32_t *sel, *scratch; /* [B] */
    uint64_t key;
    /* fused scores (T = 0, no top-p / top-k / logits_eos_inf, an engine with the fused head) */
    bool fused;
    struct lp_row_scores *sc; /* [B + 1] */
    double *dscratch;         /* [B] */
};

/* ------------------------------------------------------------------ names */

static const char *const cache_names[] = {"none", "prefix", "dual"};
static const char *const rule_names[] = {"threshold", "factor", "topk"};
static const char *const conf_names[] = {"auto", "pmax", "margin", "negent"};

const char *lp_cache_mode_name(enum lp_cache_mode m) {
    return (unsigned)m < 3 ? cache_names[m] : "?";
}
enum lopad_status lp_cache_mode_parse(const char *s, enum lp_cache_mode *out) {
    for (int k = 0; k < 3; k++)
        if (s && !strcmp(s, cache_names[k])) return *out = (enum lp_cache_mode)k, LOPAD_OK;
    return lp_error(LOPAD_ERR_ARG, "unknown cache mode '%s' (choices: none, prefix, dual)",
                    s ? s : "");
}
const char *lp_commit_rule_name(enum lp_commit_rule r) {
    return (unsigned)r < 3 ? rule_names[r] : "?";
}
enum lopad_status lp_commit_rule_parse(const char *s, enum lp_commit_rule *out) {
    for (int k = 0; k < 3; k++)
        if (s && !strcmp(s, rule_names[k])) return *out = (enum lp_commit_rule)k, LOPAD_OK;
    return lp_error(LOPAD_ERR_ARG, "unknown rule '%s' (choices: threshold, factor, topk)",
                    s ? s : "");
}
const char *lp_confidence_name(enum lp_confidence c) {
    return (unsigned)c < 4 ? conf_names[c] : "?";
}
enum lopad_status lp_confidence_parse(const char *s, enum lp_confidence *out) {
    for (int k = 0; k < 4; k++)
        if (s && !strcmp(s, conf_names[k])) return *out = (enum lp_confidence)k, LOPAD_OK;
    return lp_error(LOPAD_ERR_ARG, "unknown confidence '%s' (choices: auto, pmax, margin, negent)",
                    s ? s : "");
}

/* ------------------------------------------------------------------ setup */

static enum lopad_status fast_check(const struct lp_decode_request *rq,
                                    const struct lopad_hparams *hp) {
    bool via_llada = rq->decoder == LP_DEC_LLADA;
    bool via_dream = rq->decoder == LP_DEC_DREAM;
    bool dream_grid = via_dream || (!via_llada && hp->arch == LOPAD_ARCH_DREAM);
    const char *name = via_llada ? "llada --dpad" : via_dream ? "dream --dpad" : "fast";
    if (via_dream && rq->alg == LP_ALG_ORIGIN)
        return lp_error(LOPAD_ERR_ARG,
                        "dream --dpad: --alg origin has no per-position confidence to rank a "
                        "block's positions by (use maskgit_plus, topk_margin or entropy)");
    if (rq->block_len < 1)
        return lp_error(LOPAD_ERR_ARG, "--block must be at least 1, got %d", rq->block_len);
    if (rq->gen_len % rq->block_len)
        return lp_error(LOPAD_ERR_ARG, "--gen (%d) must be a multiple of --block (%d)", rq->gen_len,
                        rq->block_len);
    int nb = rq->gen_len / rq->block_len;
    enum lp_commit_rule rule = via_llada || via_dream ? LP_RULE_TOPK : rq->rule;
    if ((unsigned)rq->cache > LP_CACHE_DUAL)
        return lp_error(LOPAD_ERR_ARG, "unknown cache mode id %d", (int)rq->cache);
    if ((unsigned)rq->rule > LP_RULE_TOPK)
        return lp_error(LOPAD_ERR_ARG, "unknown rule id %d", (int)rq->rule);
    if ((unsigned)rq->confidence > LP_CONF_NEGENT)
        return lp_error(LOPAD_ERR_ARG, "unknown confidence id %d", (int)rq->confidence);
    if (rule == LP_RULE_TOPK && rq->steps % nb)
        return lp_error(LOPAD_ERR_ARG,
                        "--steps (%d) must be divisible by the number of blocks (%d = --gen %d / "
                        "--block %d) for --rule topk",
                        rq->steps, nb, rq->gen_len, rq->block_len);
    if (rule == LP_RULE_THRESHOLD && !(rq->threshold > 0 && rq->threshold <= 1))
        return lp_error(LOPAD_ERR_ARG, "--threshold must be in (0, 1], got %g", rq->threshold);
    if (rule == LP_RULE_FACTOR && (!(rq->factor > 0) || !isfinite(rq->factor)))
        return lp_error(LOPAD_ERR_ARG, "--factor must be a finite number > 0, got %g", rq->factor);
    if (rq->cfg_scale != 0)
        return lp_error(LOPAD_ERR_ARG, "--cfg-scale is not supported by the %s decoder", name);
    if (rq->remasking != LP_REMASK_LOW_CONFIDENCE)
        return lp_error(LOPAD_ERR_ARG, "--remasking random is not supported by the %s decoder",
                        name);
    if (rq->confidence_eos_eot_inf)
        return lp_error(LOPAD_ERR_ARG,
                        "--confidence-eos-eot-inf is not supported by the %s decoder", name);
    if (rq->alg_temp != 0)
        return lp_error(LOPAD_ERR_ARG, "--alg-temp is not supported by the %s decoder", name);
    if (!dream_grid && (rq->top_p < 1.0 || rq->top_k > 0))
        return lp_error(LOPAD_ERR_ARG, "--top-p / --top-k are only used with Dream models (LLaDA "
                                       "samples with Gumbel-max over the full softmax)");
    if (dream_grid && rule == LP_RULE_TOPK && !(rq->eps > 0 && rq->eps < 1))
        return lp_error(LOPAD_ERR_ARG, "--eps must be in (0, 1), got %g", rq->eps);
    if (rq->dream_first_token_commit && !hp->shift_logits)
        return lp_error(LOPAD_ERR_ARG,
                        "--dream-first-token-commit only applies to models with shifted logits "
                        "(Dream)");
    if (rq->dream_first_token_commit && (via_llada || via_dream))
        return lp_error(LOPAD_ERR_ARG, "--dream-first-token-commit needs --decoder fast");
    if (rq->dpad) {
        enum lopad_status st = lp_dpad_check(rq);
        if (st != LOPAD_OK) return st;
    }
    return LOPAD_OK;
}

/* The state's arrays (sizes from d and s; the fused-head ones only when s->fused). */
#define FAST_NBUF 21
static size_t fast_bufs(const struct lp_decoder *d, struct fast *s, struct lp_dec_buf *out) {
    const size_t B = (size_t)s->B, V = (size_t)d->V, L = (size_t)d->L;
    const size_t nt = (size_t)lp_dec_n_threads(d), fb = s->fused ? 1 : 0;
    const struct lp_dec_buf b[] = {
        {(void **)&s->k, sizeof(int) * (size_t)s->S, "fast schedule"},
        {(void **)&s->kept, sizeof(int32_t) * (d->G ? (size_t)d->G : 1), "fast kept suffix"},
        {(void **)&s->ftok, sizeof(int32_t) * L, "fast feed tokens"},
        {(void **)&s->fpos, sizeof(int32_t) * L, "fast feed positions"},
        {(void **)&s->rows, sizeof(int32_t) * (B + 1), "fast rows"},
        {(void **)&s->mpos, sizeof(int32_t) * B, "fast positions"},
        {(void **)&s->src, sizeof(int32_t) * B, "fast sources"},
        {(void **)&s->logits, sizeof(float) * (B + 1) * V, "fast logits"},
        {(void **)&s->last, sizeof(float) * V, "fast last logit"},
        {(void **)&s->plg, sizeof(float) * B * V, "fast proposal logits"},
        {(void **)&s->probs, sizeof(float) * nt * V, "fast probs"},
        {(void **)&s->fscratch, sizeof(float) * nt * V, "fast top-k scratch"},
        {(void **)&s->iscratch, sizeof(int32_t) * 2 * nt * V, "fast top-p scratch"},
        {(void **)&s->u, sizeof(double) * B, "fast draws"},
        {(void **)&s->x0, sizeof(int32_t) * B, "fast proposals"},
        {(void **)&s->conf, sizeof(double) * B, "fast confidences"},
        {(void **)&s->pmax, sizeof(double) * B, "fast pmax"},
        {(void **)&s->sel, sizeof(int32_t) * B, "fast selection"},
        {(void **)&s->scratch, sizeof(int32_t) * B, "fast scratch"},
        {(void **)&s->sc, fb * sizeof *s->sc * (B + 1), "fast scores"},
        {(void **)&s->dscratch, fb * sizeof(double) * B, "fast scratch"},
    };
    _Static_assert(sizeof b / sizeof b[0] == FAST_NBUF, "FAST_NBUF");
    memcpy(out, b, sizeof b);
    return FAST_NBUF;
}

static void fast_release(struct lp_decoder *d) {
    struct fast *s = d->priv;
    if (!s) return;
    struct lp_dec_buf b[FAST_NBUF];
    lp_dec_free_all(b, fast_bufs(d, s, b));
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status fast_init(struct lp_decoder *d) {
    const struct lp_decode_request *rq = &d->rq;
    bool via_llada = rq->decoder == LP_DEC_LLADA;
    bool via_dream = rq->decoder == LP_DEC_DREAM; /* Dream by blocks: --alg ranks */
    struct fast *s = lp_calloc(1, sizeof *s, "fast decoder state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    s->dream_grid = via_dream || (!via_llada && d->eng.hp.arch == LOPAD_ARCH_DREAM);
    s->grid_from_1 = via_dream;
    s->shift = d->eng.hp.shift_logits;
    s->first_token = rq->dream_first_token_commit;
    s->cache = via_llada || via_dream ? LP_CACHE_NONE : rq->cache;
    s->rule = via_llada || via_dream ? LP_RULE_TOPK : rq->rule;
    s->conf_kind = via_llada                        ? LP_CONF_PMAX
                   : via_dream                      ? (rq->alg == LP_ALG_MASKGIT_PLUS  ? LP_CONF_PMAX
                                                       : rq->alg == LP_ALG_TOPK_MARGIN ? LP_CONF_MARGIN
                                                                                       : LP_CONF_NEGENT)
                   : rq->confidence != LP_CONF_AUTO ? rq->confidence
                                                    : lp_conf_auto_fast(rq->rule, s->dream_grid);
    s->use_dpad = rq->dpad;
    if (s->use_dpad) lp_dpad_from_request(&s->dp, rq, d->eng.hp.arch);
    s->B = rq->block_len;
    s->nb = d->G / s->B;
    s->S = rq->steps / s->nb;
    if (s->S < 1) s->S = 1;
    if (s->cache != LP_CACHE_NONE && (!d->eng.kv_commit || !d->eng.kv_truncate))
        return lp_error(LOPAD_ERR_ARG, "--cache %s needs an engine with a KV cache",
                        lp_cache_mode_name(s->cache));
    if (d->eng.n_batch_max < d->L)
        return lp_error(LOPAD_ERR_ARG,
                        "the fast decoder needs a batch of the whole canvas (%d tokens), the "
                        "engine allows %d",
                        d->L, d->eng.n_batch_max);
    s->fused = lp_dec_has_scores(d) && rq->temperature == 0 && rq->top_p >= 1.0 && rq->top_k == 0 &&
               !rq->logits_eos_inf;
    struct lp_dec_buf b[FAST_NBUF];
    return lp_dec_alloc_all(b, fast_bufs(d, s, b));
}

/* -------------------------------------------------------------- proposals */

/* argmax of p over v != mask (ties to the lower index) */
static int argmax_no_mask(const float *p, int n, int mask) {
    int best = -1;
    for (int v = 0; v < n; v++)
        if (v != mask && (best < 0 || p[v] > p[best])) best = v;
    return best < 0 ? 0 : best;
}

void lp_fast_propose(const struct lp_fast_prop *c, float *lg, float *probs, int32_t *top_p_scratch,
                     float *top_k_scratch, uint64_t gumbel_base, double u, int32_t *tok,
                     double *pmax, double *conf) {
    const int V = c->V, mask = c->mask;
    struct lp_pstats ps;
    if (!c->dream) {
        /* LLaDA: logits_eos_inf, argmax / Gumbel-max without MASK, pmax in f64 */
        if (c->eos_inf && c->eos >= 0 && c->eos < V) lg[c->eos] = -INFINITY;
        float keep = lg[mask];
        lg[mask] = -INFINITY;
        int x0 = c->temperature > 0 ? lp_gumbel_argmax(lg, V, c->temperature, c->key, gumbel_base)
                                    : lp_argmax_f32(lg, V);
        lg[mask] = keep;
        *tok = x0;
        *pmax = lp_softmax_prob_f64(lg, V, x0);
        if (c->conf == LP_CONF_PMAX) {
            *conf = *pmax;
            return;
        }
        lp_softmax_f32(probs, lg, V);
        lp_prob_stats(probs, V, &ps);
        *conf = c->conf == LP_CONF_MARGIN ? ps.margin : ps.negent;
        return;
    }
    /* Dream: temperature, top-p, top-k, f32 softmax, argmax / categorical */
    if (c->temperature > 0) {
        float T = (float)c->temperature;
        for (int v = 0; v < V; v++)
            lg[v] = lg[v] / T;
    }
    if (c->top_p < 1.0) lp_top_p_filter(lg, V, c->top_p, top_p_scratch);
    if (c->top_k > 0) lp_top_k_filter(lg, V, c->top_k, top_k_scratch);
    lp_softmax_f32(probs, lg, V);
    lp_prob_stats(probs, V, &ps);
    int t = ps.argmax == mask ? argmax_no_mask(probs, V, mask) : ps.argmax;
    if (c->temperature > 0) {
        float pm = probs[mask];
        probs[mask] = 0.0f;
        t = lp_sample_categorical(probs, V, u);
        probs[mask] = pm;
    }
    *tok = t;
    *pmax = probs[t];
    *conf = c->conf == LP_CONF_MARGIN   ? ps.margin
            : c->conf == LP_CONF_NEGENT ? ps.negent
                                        : probs[t];
}

/* Proposal q: s->plg row q holds the prediction's logits (modified in place). */
static void fast_propose(void *ctx, int q, int tid) {
    struct lp_decoder *d = ctx;
    struct fast *s = d->priv;
    const struct lp_decode_request *rq = &d->rq;
    const int V = d->V;
    const struct lp_fast_prop c = {.V = V,
                                   .mask = d->mask_id,
                                   .eos = d->eng.hp.eos_id,
                                   .dream = s->dream_grid,
                                   .eos_inf = rq->logits_eos_inf,
                                   .conf = s->conf_kind,
                                   .temperature = rq->temperature,
                                   .top_p = rq->top_p,
                                   .top_k = rq->top_k,
                                   .key = s->key};
    lp_fast_propose(&c, s->plg + (size_t)q * V, s->probs + (size_t)tid * V,
                    s->iscratch ? s->iscratch + (size_t)tid * 2 * V : NULL,
                    s->fscratch ? s->fscratch + (size_t)tid * V : NULL, (uint64_t)s->mpos[q] * V,
                    s->u ? s->u[q] : 0.5, &s->x0[q], &s->pmax[q], &s->conf[q]);
}

/* Proposals of a step from the fused scores (T = 0): x0 = argmax, pmax, conf;
 * proposals from the kept last logit (src -1) are computed exactly from it. Returns
 * true when the proposals and the rule's commits are clear on the scores (the same
 * as on the logits), false when the step needs its rows' logits. k: topk count. */
static bool fast_scores(struct lp_decoder *d, struct fast *s, int m, int k, bool first_only) {
    const struct lp_decode_request *rq = &d->rq;
    bool clear = true;
    double tolc = 0, tol1 = 0; /* error bounds of the confidences and of pmax */
    for (int q = 0; q < m && clear; q++) {
        if (s->src[q] < 0) { /* the kept last logit: exact */
            memcpy(s->plg + (size_t)q * d->V, s->last, sizeof(float) * d->V);
            fast_propose(d, q, 0);
        } else {
            const struct lp_row_scores *r = &s->sc[s->src[q]];
            /* MASK is never proposed (the next best needs the logits); the argmax of the
             * logits (Dream family: of the f32 probabilities) must be clear */
            clear = r->argmax != d->mask_id && lp_scores_argmax_clear(r, s->dream_grid);
            s->x0[q] = r->argmax;
            s->pmax[q] = r->pmax;
            s->conf[q] = s->conf_kind == LP_CONF_MARGIN   ? r->margin
                         : s->conf_kind == LP_CONF_NEGENT ? r->negent
                                                          : r->pmax;
            tolc = fmax(tolc, lp_conf_tol(r, s->conf[q], s->conf_kind == LP_CONF_NEGENT, d->V));
            tol1 = fmax(tol1, lp_conf_tol(r, s->pmax[q], false, d->V));
        }
    }
    if (!clear || first_only) return clear;
    if (s->rule == LP_RULE_TOPK) return lp_dec_topk_clear(s->conf, m, k, tolc, s->dscratch);
    if (s->rule == LP_RULE_THRESHOLD) {
        int nc = 0;
        for (int q = 0; q < m; q++) {
            if (fabs(s->pmax[q] - rq->threshold) <= tol1) return false;
            nc += s->pmax[q] >= rq->threshold;
        }
        return nc > 0 || lp_dec_topk_clear(s->conf, m, 1, tolc, s->dscratch);
    }
    /* factor: the tests on the sorted pmax and the cut */
    lp_select_topk(s->pmax, s->mpos, m, m, s->sel, s->scratch);
    int nc = 1;
    for (;; nc++) {
        if (nc >= m) return true;
        double lhs = (double)(nc + 2) * (1.0 - s->pmax[s->sel[nc]]);
        if (fabs(lhs - rq->factor) <= (nc + 2) * tol1) return false;
        if (!(lhs < rq->factor)) break;
    }
    return s->pmax[s->sel[nc - 1]] - s->pmax[s->sel[nc]] > 2.0 * tol1;
}

/* ------------------------------------------------------------------ steps */

static void block_begin(struct lp_decoder *d, struct fast *s) {
    s->sb = d->P + s->b * s->B;
    s->eb = s->sb + s->B;
    s->started = true;
    s->refreshed = false;
    s->have_last = false;
    s->i = s->grid_from_1 ? 1 : 0;
    int n_suffix = d->L - s->eb;
    if (s->use_dpad) {
        s->n_kept = lp_dpad_draw(&s->dp, s->eb, n_suffix, &d->rng, s->kept);
    } else {
        for (int j = 0; j < n_suffix; j++)
            s->kept[j] = s->eb + j;
        s->n_kept = n_suffix;
    }
    int M = 0;
    for (int j = s->sb; j < s->eb; j++)
        M += d->canvas[j] == d->mask_id;
    for (int i = 0; i < s->S; i++)
        s->k[i] = M / s->S + (i < M % s->S);
}

/* Dream grid t_i of linspace(1, eps, S + 1) */
static double grid_t(int i, int S, double eps) {
    return 1.0 - i * ((1.0 - eps) / S);
}

/* Block finished: early stop or next block. */
void lp_fast_end_block(struct lp_decoder *d, int sb, int eb, int *b, int nb, bool early_stop) {
    (*b)++;
    const int32_t eos = d->eng.hp.eos_id;
    bool has_eos = false;
    for (int j = sb; j < eb && eos >= 0; j++)
        has_eos |= d->canvas[j] == eos;
    if (early_stop && has_eos && *b < nb) {
        /* fill, not decode: n_masked keeps counting undecoded positions */
        for (int j = eb; j < d->L; j++)
            if (d->canvas[j] == d->mask_id) d->canvas[j] = eos;
        *b = nb;
    }
    if (*b >= nb) d->done = true;
}

static void block_end(struct lp_decoder *d, struct fast *s) {
    s->started = false;
    lp_fast_end_block(d, s->sb, s->eb, &s->b, s->nb, d->rq.early_stop);
}

/* Feed for this step into s->ftok / s->fpos; returns the fed count and sets the
 * batch's cache fields. */
static int build_feed(struct lp_decoder *d, struct fast *s, bool refresh, struct lopad_batch *b) {
    int n = 0, from = 0;
    b->n_cache = b->cache_skip_begin = b->cache_skip_end = 0;
    if (!refresh && s->cache == LP_CACHE_PREFIX) {
        from = s->sb;
        b->n_cache = s->sb;
    } else if (!refresh && s->cache == LP_CACHE_DUAL) {
        for (int j = s->sb; j < s->eb; j++, n++) {
            s->ftok[n] = d->canvas[j];
            s->fpos[n] = j;
        }
        b->n_cache = s->n_refresh;
        b->cache_skip_begin = s->sb;
        b->cache_skip_end = s->eb;
        return n;
    }
    for (int j = from; j < s->eb; j++, n++) {
        s->ftok[n] = d->canvas[j];
        s->fpos[n] = j;
    }
    for (int t = 0; t < s->n_kept; t++, n++) {
        s->ftok[n] = d->canvas[s->kept[t]];
        s->fpos[n] = s->kept[t];
    }
    return n;
}

static enum lopad_status fast_step(struct lp_decoder *d) {
    struct fast *s = d->priv;
    const struct lp_decode_request *rq = &d->rq;
    for (;;) {
        if (s->b >= s->nb) {
            d->done = true;
            return LOPAD_OK;
        }
        if (!s->started) block_begin(d, s);
        int m = 0;
        for (int j = s->sb; j < s->eb; j++)
            if (d->canvas[j] == d->mask_id) s->mpos[m++] = j;
        if (m == 0) {
            block_end(d, s);
            if (d->done) return LOPAD_OK;
            continue;
        }
        bool refresh = !s->refreshed;
        bool first_only = refresh && s->first_token;
        int k = 0; /* topk count */
        if (first_only) {
            /* the reference's refresh step: position sb alone (it is masked: blocks are
             * decoded in order and MASK is never proposed) */
            m = 1;
        } else if (s->rule == LP_RULE_TOPK) {
            if (s->dream_grid) {
                if (s->i >= s->S - 1) {
                    k = m;
                } else {
                    double t = grid_t(s->i, s->S, rq->eps), sn = grid_t(s->i + 1, s->S, rq->eps);
                    k = (int)((double)m * (1.0 - sn / t));
                }
            } else {
                k = s->i < s->S ? s->k[s->i] : m;
            }
            if (k > m) k = m;
            if (k == 0) {
                s->i++;
                continue; /* nothing to commit: no forward */
            }
        }

        /* the forward */
        struct lopad_batch bt;
        memset(&bt, 0, sizeof bt);
        int n = build_feed(d, s, refresh, &bt);
        int f0 = s->fpos[0]; /* fed rows are [f0, eb) then the kept suffix */
        int n_out = 0;
        for (int q = 0; q < m; q++) {
            int j = s->mpos[q];
            int r = lp_pred_row(s->shift, j);
            if (r < f0) {
                s->src[q] = -1; /* sb in a cached step: the kept last logit */
                continue;
            }
            s->src[q] = n_out;
            s->rows[n_out++] = r - f0;
        }
        bool want_last = refresh && s->shift && s->cache != LP_CACHE_NONE && s->sb > 0;
        int last_row = -1;
        if (want_last) {
            /* sb is masked at the refresh, so row sb-1 is requested already */
            for (int q = 0; q < m; q++)
                if (s->mpos[q] == s->sb) last_row = s->src[q];
            if (last_row < 0) {
                last_row = n_out;
                s->rows[n_out++] = s->sb - 1 - f0;
            }
        }
        bt.n_tokens = n;
        bt.tokens = s->ftok;
        bt.pos = s->fpos;
        bt.n_seq = 1;
        bt.n_out = n_out;
        bt.out_rows = s->rows;
        bt.logits = s->logits;
        /* the fused head, except for a refresh that keeps the last logit */
        bool use_sc = s->fused && !want_last && (n_out > 0 || refresh) && lp_dec_scores_worth(d);
        enum lopad_status st = LOPAD_OK;
        if (n_out > 0 || refresh)
            st = use_sc ? lp_dec_forward_scores(d, &bt, s->sc) : lp_dec_forward_batch(d, &bt);
        if (st != LOPAD_OK) return st;
        if (refresh && s->cache != LP_CACHE_NONE) {
            if (s->cache == LP_CACHE_PREFIX) {
                st = d->eng.kv_commit(d->eng.ud, 0, s->sb, 0);
                d->eng.kv_truncate(d->eng.ud, s->sb);
            } else {
                st = d->eng.kv_commit(d->eng.ud, 0, n, 0);
                d->eng.kv_truncate(d->eng.ud, n);
                s->n_refresh = n;
            }
            if (st != LOPAD_OK) return st;
        }
        if (want_last) {
            memcpy(s->last, s->logits + (size_t)last_row * d->V, sizeof(float) * d->V);
            s->have_last = true;
        }
        s->refreshed = true;

        /* proposals: on the scores when every decision is clear on them; else on the
         * logits (a fused step takes its rows' logits now: the head alone) */
        bool on_scores = use_sc && fast_scores(d, s, m, k, first_only);
        if (use_sc && !on_scores && n_out > 0 &&
            (st = lp_dec_last_logits(d, s->rows, n_out, s->logits)) != LOPAD_OK)
            return st;
        for (int q = 0; q < m && !on_scores; q++) {
            const float *srcrow;
            if (s->src[q] >= 0) {
                srcrow = s->logits + (size_t)s->src[q] * d->V;
            } else {
                LP_ASSERT(s->have_last);
                srcrow = s->last;
            }
            memcpy(s->plg + (size_t)q * d->V, srcrow, sizeof(float) * d->V);
        }
        if (!on_scores) {
            if (!s->dream_grid && rq->temperature > 0) s->key = lp_rng_u64(&d->rng);
            for (int q = 0; q < m; q++)
                s->u[q] = s->dream_grid && rq->temperature > 0 ? lp_rng_u01(&d->rng) : 0.5;
            lp_dec_parallel(d, m, fast_propose, d);
        }

        /* commits */
        int nc = 0;
        if (first_only) {
            s->sel[0] = 0;
            nc = 1;
        } else if (s->rule == LP_RULE_TOPK) {
            lp_select_topk(s->conf, s->mpos, m, k, s->sel, s->scratch);
            nc = k;
        } else if (s->rule == LP_RULE_THRESHOLD) {
            for (int q = 0; q < m; q++)
                if (s->pmax[q] >= rq->threshold) s->sel[nc++] = q;
            if (nc == 0) {
                lp_select_topk(s->conf, s->mpos, m, 1, s->sel, s->scratch);
                nc = 1;
            }
        } else {
            lp_select_topk(s->pmax, s->mpos, m, m, s->sel, s->scratch);
            nc = 1;
            while (nc < m && (double)(nc + 2) * (1.0 - s->pmax[s->sel[nc]]) < rq->factor)
                nc++;
        }
        for (int t = 0; t < nc; t++)
            lp_dec_commit(d, s->mpos[s->sel[t]], s->x0[s->sel[t]]);
        if (!first_only)
            s->i++;
        else
            s->i = 1;

        bool left = false;
        for (int j = s->sb; j < s->eb && !left; j++)
            left = d->canvas[j] == d->mask_id;
        if (!left) block_end(d, s);
        return LOPAD_OK;
    }
}

const struct lp_decoder_ops lp_fast_ops = {
    .name = "fast",
    .check = fast_check,
    .init = fast_init,
    .step = fast_step,
    .release = fast_release,
};
