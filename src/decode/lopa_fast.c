/*
 * lopa_fast.c - LoPA on Fast-dLLM (--decoder fast --lopa K).
 *
 * The Fast-dLLM decoder (fast.c) with the threshold rule, greedy: semi-AR blocks,
 * each block's first forward ("refresh") over the whole canvas (cache: prefix keeps
 * the K/V of [0, sb), dual of every row), later forwards over the block (+ suffix
 * with the prefix cache; the whole canvas without cache). With LoPA every later
 * forward verifies K lookahead variants of the current block and the anchor as one
 * batch; branch confidence = mean ranking confidence of the branch's masked block
 * positions (1.0 when none), winner ties to the earlier branch (lookahead order,
 * then the anchor); next anchor = winner + the threshold fill (pmax >= tau, else
 * the best confidence) from its predictions; lookahead = the anchor's masked block
 * positions ranked by the same confidence, branch i = anchor + the argmax token at
 * the i-th. The refresh forward has only the anchor (a block starts with no
 * branches), so every cached K/V row comes from the committed anchor: no commit-winner
 * copy is needed. Proposals are fast.c's (MASK never proposed; LLaDA pmax in f64).
 * K = 0 is the fast decoder with the threshold rule, token for token.
 *
 * DPad (--dpad): the kept suffix is drawn once per block at block start from the
 * request's PRNG (as fast.c does; the decoder is greedy, so nothing else draws) and
 * is the SAME for every branch of the block: each sequence of the batched forward
 * feeds [from, block end) ++ kept (dual-cache steps feed the block alone), at the
 * original position ids. The branches differ only inside the block, so the batch
 * stays one call, and --lopa 0 --dpad is fast --dpad --rule threshold token for token.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decode/dpad.h"
#include "lopa_impl.h"

struct lfast {
    struct lopa_common cm;
    bool dream, shift, early_stop, eos_inf;
    enum lp_cache_mode cache;
    enum lp_confidence conf;
    double tau;
    int B, nb, b, sb, eb, nbr, n_refresh;
    bool started, refreshed, have_last;
    bool use_dpad; /* DPad: kept suffix per block, shared by all branches */
    struct lp_dpad dp;
    int32_t *kept; /* [G] fed suffix positions of this block (all of them without DPad) */
    int n_kept;
    int32_t *bt, *nbt;               /* [(K+1) B] each branch's block tokens */
    int32_t *lap, *latok;            /* [K+1] lookahead position / token, -1 = anchor */
    int32_t *tok, *pos, *seq, *rows; /* [(K+1) L] */
    int *rowmap;                     /* [(K+1) L] */
    int off[65], len[65], out0[66], f0;
    int qi0;               /* first proposal of lp_dec_parallel's tasks */
    int32_t *qb, *qq;      /* [(K+1) B] proposals: branch, position */
    int32_t *ptok;         /* [(K+1) B] by branch * B + (q - sb) */
    double *ppmax, *pconf; /* [(K+1) B] */
    float *logits;         /* [cap_out][V] */
    size_t cap_out;
    float *last;    /* [V] raw output of row sb-1 (shift, cached steps) */
    float *scratch; /* [n_threads][2V] */
    double *cconf;
    int32_t *cpos, *csel, *cscr; /* [B] */
    struct lp_decoder *d;
    /* fused scores (an engine with the fused head, no logits_eos_inf) */
    bool fused;
    struct lp_row_scores *sc;      /* [(K+1) L] */
    double *plo, *phi, *clo, *chi; /* [(K+1) B] bounds of ppmax / pconf */
    double *suf;                   /* [B] */
};

static enum lopad_status lfast_check(const struct lp_decode_request *rq,
                                     const struct lopad_hparams *hp) {
    LP_UNUSED(hp);
    if (rq->block_len < 1 || rq->gen_len % rq->block_len)
        return lp_error(LOPAD_ERR_ARG, "--gen (%d) must be a multiple of --block (%d)", rq->gen_len,
                        rq->block_len);
    if (rq->lopa < 0 || rq->lopa > 64)
        return lp_error(LOPAD_ERR_ARG, "--lopa must be in 0..64 lookahead branches, got %d",
                        rq->lopa);
    if (rq->rule != LP_RULE_THRESHOLD)
        return lp_error(LOPAD_ERR_ARG, "--lopa with --decoder fast needs --rule threshold");
    if (!(rq->threshold > 0 && rq->threshold <= 1))
        return lp_error(LOPAD_ERR_ARG, "--threshold must be in (0, 1], got %g", rq->threshold);
    if (rq->temperature != 0 || rq->top_p < 1.0 || rq->top_k > 0)
        return lp_error(LOPAD_ERR_ARG, "--lopa decodes greedily: --temperature / --top-p / "
                                       "--top-k are not supported");
    if (rq->dream_first_token_commit || rq->cfg_scale != 0 ||
        rq->remasking != LP_REMASK_LOW_CONFIDENCE || rq->confidence_eos_eot_inf)
        return lp_error(LOPAD_ERR_ARG, "--lopa with --decoder fast does not support "
                                       "--dream-first-token-commit, --cfg-scale, --remasking, "
                                       "--confidence-eos-eot-inf");
    if (rq->dpad) {
        enum lopad_status st = lp_dpad_check(rq);
        if (st != LOPAD_OK) return st;
    }
    if ((unsigned)rq->cache > LP_CACHE_DUAL || (unsigned)rq->confidence > LP_CONF_NEGENT)
        return lp_error(LOPAD_ERR_ARG, "unknown cache mode or confidence id");
    if (rq->lopa_window != LP_WINDOW_FULL)
        return lp_error(LOPAD_ERR_ARG,
                        "--lopa-window-attention: Fast-dLLM attends its window fully (full only)");
    return LOPAD_OK;
}

/* The state's arrays (sizes from d and s; the fused-score ones only when s->fused;
 * logits grow on demand, so they are only released here). */
#define LFAST_NBUF 29
static size_t lfast_bufs(const struct lp_decoder *d, struct lfast *s, struct lp_dec_buf *out) {
    const size_t nb = (size_t)s->cm.K + 1, L = (size_t)d->L, V = (size_t)d->V, B = (size_t)s->B;
    const size_t nt = (size_t)lp_dec_n_threads(d), fb = s->fused ? 1 : 0;
    const struct lp_dec_buf b[] = {
        {(void **)&s->cm.hist, sizeof(int) * nb, "lopa winner histogram"},
        {(void **)&s->bt, sizeof(int32_t) * nb * B, "lopa block tokens"},
        {(void **)&s->nbt, sizeof(int32_t) * nb * B, "lopa block tokens"},
        {(void **)&s->lap, sizeof(int32_t) * nb, "lopa lookahead"},
        {(void **)&s->latok, sizeof(int32_t) * nb, "lopa lookahead"},
        {(void **)&s->tok, sizeof(int32_t) * nb * L, "lopa feed"},
        {(void **)&s->pos, sizeof(int32_t) * nb * L, "lopa positions"},
        {(void **)&s->seq, sizeof(int32_t) * nb * L, "lopa sequence ids"},
        {(void **)&s->rows, sizeof(int32_t) * nb * L, "lopa rows"},
        {(void **)&s->rowmap, sizeof(int) * nb * L, "lopa row map"},
        {(void **)&s->qb, sizeof(int32_t) * nb * B, "lopa proposals"},
        {(void **)&s->qq, sizeof(int32_t) * nb * B, "lopa proposals"},
        {(void **)&s->ptok, sizeof(int32_t) * nb * B, "lopa proposals"},
        {(void **)&s->ppmax, sizeof(double) * nb * B, "lopa proposals"},
        {(void **)&s->pconf, sizeof(double) * nb * B, "lopa proposals"},
        {(void **)&s->logits, 0, "lopa logits"},
        {(void **)&s->last, sizeof(float) * V, "lopa last logit"},
        {(void **)&s->scratch, sizeof(float) * 2 * nt * V, "lopa scratch"},
        {(void **)&s->cconf, sizeof(double) * B, "lopa candidates"},
        {(void **)&s->cpos, sizeof(int32_t) * B, "lopa candidates"},
        {(void **)&s->csel, sizeof(int32_t) * B, "lopa candidates"},
        {(void **)&s->cscr, sizeof(int32_t) * B, "lopa candidates"},
        {(void **)&s->kept, sizeof(int32_t) * (d->G ? (size_t)d->G : 1), "lopa kept suffix"},
        {(void **)&s->sc, fb * sizeof *s->sc * nb * L, "lopa scores"},
        {(void **)&s->plo, fb * sizeof(double) * nb * B, "lopa bounds"},
        {(void **)&s->phi, fb * sizeof(double) * nb * B, "lopa bounds"},
        {(void **)&s->clo, fb * sizeof(double) * nb * B, "lopa bounds"},
        {(void **)&s->chi, fb * sizeof(double) * nb * B, "lopa bounds"},
        {(void **)&s->suf, fb * sizeof(double) * B, "lopa bounds"},
    };
    _Static_assert(sizeof b / sizeof b[0] == LFAST_NBUF, "LFAST_NBUF");
    memcpy(out, b, sizeof b);
    return LFAST_NBUF;
}

static void lfast_release(struct lp_decoder *d) {
    struct lfast *s = d->priv;
    if (!s) return;
    struct lp_dec_buf b[LFAST_NBUF];
    lp_dec_free_all(b, lfast_bufs(d, s, b));
    lp_lopa_dist_free(&s->cm.ds);
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status lfast_init(struct lp_decoder *d) {
    const struct lp_decode_request *rq = &d->rq;
    struct lfast *s = lp_calloc(1, sizeof *s, "lopa fast state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    s->d = d;
    s->cm.K = rq->lopa;
    s->dream = d->eng.hp.arch == LOPAD_ARCH_DREAM;
    s->shift = d->eng.hp.shift_logits;
    s->early_stop = rq->early_stop;
    s->eos_inf = rq->logits_eos_inf;
    s->cache = rq->cache;
    s->conf = rq->confidence != LP_CONF_AUTO ? rq->confidence
                                             : lp_conf_auto_fast(LP_RULE_THRESHOLD, s->dream);
    s->tau = rq->threshold;
    s->B = rq->block_len;
    s->nb = d->G / s->B;
    s->use_dpad = rq->dpad;
    if (s->use_dpad) lp_dpad_from_request(&s->dp, rq, d->eng.hp.arch);
    if (s->cache != LP_CACHE_NONE && (!d->eng.kv_commit || !d->eng.kv_truncate))
        return lp_error(LOPAD_ERR_ARG, "--cache %s needs an engine with a KV cache",
                        lp_cache_mode_name(s->cache));
    if (d->eng.n_batch_max < d->L)
        return lp_error(LOPAD_ERR_ARG,
                        "--lopa: the engine's batch (%d) is shorter than the canvas (%d)",
                        d->eng.n_batch_max, d->L);
    s->fused = lp_dec_has_scores(d) && !s->eos_inf;
    struct lp_dec_buf b[LFAST_NBUF];
    enum lopad_status st = lp_dec_alloc_all(b, lfast_bufs(d, s, b));
    if (st) return st;
    s->cm.ev_winner = -1;
    s->cm.ev_pos = -1;
    d->n_steps = -1;
    return lp_lopa_dist_start(&s->cm, d, false);
}

/* fast.c's greedy proposal from one prediction row (buf: [2V] scratch, first V = row) */
/* fast.c's greedy proposal (lp_fast_propose) */
static void lfast_propose_row(const struct lfast *s, float *lg, float *probs, int32_t *tok,
                              double *pmax, double *conf) {
    const struct lp_decoder *d = s->d;
    const struct lp_fast_prop c = {.V = d->V,
                                   .mask = d->mask_id,
                                   .eos = d->eng.hp.eos_id,
                                   .dream = s->dream,
                                   .eos_inf = s->eos_inf,
                                   .conf = s->conf,
                                   .temperature = 0,
                                   .top_p = 1.0};
    lp_fast_propose(&c, lg, probs, NULL, NULL, 0, 0.5, tok, pmax, conf);
}

static void lfast_propose_task(void *ctx, int i, int tid) {
    struct lfast *s = ctx;
    i += s->qi0;
    const size_t V = (size_t)s->d->V;
    int j = s->qb[i], q = s->qq[i];
    int r = lp_pred_row(s->shift, q) - s->f0;
    const float *src = r < 0 ? s->last : s->logits + (size_t)s->rowmap[s->off[j] + r] * V;
    float *buf = s->scratch + (size_t)tid * 2 * V;
    memcpy(buf, src, sizeof(float) * V);
    size_t k = (size_t)j * s->B + (size_t)(q - s->sb);
    lfast_propose_row(s, buf, buf + V, &s->ptok[k], &s->ppmax[k], &s->pconf[k]);
}

/* block finished: early stop (fill the rest with EOS, not counted) or the next block */
static void lfast_block_end(struct lp_decoder *d, struct lfast *s) {
    s->started = false;
    lp_fast_end_block(d, s->sb, s->eb, &s->b, s->nb, s->early_stop);
}

static struct branch_feed lfast_feed(struct lfast *s, bool refresh) {
    struct branch_feed f = {
        .tok = s->tok,
        .pos = s->pos,
        .seq = s->seq,
        .rows = s->rows,
        .off = s->off,
        .len = s->len,
        .out0 = s->out0,
        .logits = s->logits,
        .V = s->d->V,
    };
    if (!refresh && s->cache == LP_CACHE_PREFIX) {
        f.cache.n_cache = s->sb;
    } else if (!refresh && s->cache == LP_CACHE_DUAL) {
        f.cache.n_cache = s->n_refresh;
        f.cache.cache_skip_begin = s->sb;
        f.cache.cache_skip_end = s->eb;
    }
    return f;
}

/* An iteration on the fused scores: fast.c's proposals (argmax without MASK, pmax and
 * the confidence of the full softmax) from the rows' scores, each with its error bound
 * (from the kept last logit: exact); true when every decision holds over the bounds:
 * the winner's mean confidence above every other branch's, the threshold fill (each
 * masked position surely on one side of tau; with none above, one surely the most
 * confident), and the K lookahead positions each above all later candidates. The
 * winner goes to *w_out. False: the iteration needs its rows' logits. */
static void lfast_prop_bounds(const void *ud, int i, double *lo, double *hi) {
    const struct lfast *s = ud;
    const size_t k = (size_t)s->qb[i] * s->B + (size_t)(s->qq[i] - s->sb);
    *lo = s->clo[k];
    *hi = s->chi[k];
}

static bool lfast_scores(struct lfast *s, int nq, int *w_out) {
    const struct lp_decoder *d = s->d;
    const int B = s->B, V = d->V;
    const int32_t mask = d->mask_id;
    for (int i = 0; i < nq; i++) {
        int j = s->qb[i], q = s->qq[i];
        int r = lp_pred_row(s->shift, q) - s->f0;
        size_t k = (size_t)j * B + (size_t)(q - s->sb);
        if (r < 0) { /* the kept last logit */
            lfast_propose_task(s, i, 0);
            s->plo[k] = s->phi[k] = s->ppmax[k];
            s->clo[k] = s->chi[k] = s->pconf[k];
            continue;
        }
        const struct lp_row_scores *sc = &s->sc[s->rowmap[s->off[j] + r]];
        if (sc->argmax == mask || !lp_scores_argmax_clear(sc, s->dream)) return false;
        double conf = s->conf == LP_CONF_MARGIN   ? sc->margin
                      : s->conf == LP_CONF_NEGENT ? sc->negent
                                                  : sc->pmax;
        double tp = lp_conf_tol(sc, sc->pmax, false, V);
        double tc = lp_conf_tol(sc, conf, s->conf == LP_CONF_NEGENT, V);
        s->ptok[k] = sc->argmax;
        s->ppmax[k] = sc->pmax;
        s->pconf[k] = conf;
        s->plo[k] = sc->pmax - tp;
        s->phi[k] = sc->pmax + tp;
        s->clo[k] = conf - tc;
        s->chi[k] = conf + tc;
    }
    /* the winner: its mean range above every other branch's */
    int w;
    if (!lp_lopa_winner_clear(s->nbr, s->qb, nq, lfast_prop_bounds, s, &w)) return false;
    /* the threshold fill of the winner's block */
    const int32_t *wb = s->bt + (size_t)w * B;
    const size_t wk = (size_t)w * B;
    int nc = 0, nm = 0, bestq = -1;
    for (int q = 0; q < B; q++) {
        if (wb[q] != mask) continue;
        nm++;
        if (s->plo[wk + q] >= s->tau)
            nc++;
        else if (!(s->phi[wk + q] < s->tau))
            return false;
        if (bestq < 0 || s->pconf[wk + q] > s->pconf[wk + bestq]) bestq = q;
    }
    if (nc == 0 && nm > 1)
        for (int q = 0; q < B; q++)
            if (wb[q] == mask && q != bestq && !(s->clo[wk + bestq] > s->chi[wk + q])) return false;
    /* the lookahead candidates left masked, in the order of their confidence */
    int ncand = 0;
    for (int q = 0; q < B; q++)
        if (wb[q] == mask && !(nc ? s->ppmax[wk + q] >= s->tau : q == bestq)) {
            s->cpos[ncand] = s->sb + q;
            s->cconf[ncand++] = s->pconf[wk + q];
        }
    int k = LP_MIN(s->cm.K, ncand);
    if (k > 0) {
        lp_select_topk(s->cconf, s->cpos, ncand, ncand, s->csel, s->cscr);
        double m = -INFINITY;
        for (int t = ncand - 1; t >= 0; t--) {
            s->suf[t] = m; /* the largest upper bound after rank t */
            m = fmax(m, s->chi[wk + (size_t)(s->cpos[s->csel[t]] - s->sb)]);
        }
        for (int t = 0; t < k; t++)
            if (!(s->clo[wk + (size_t)(s->cpos[s->csel[t]] - s->sb)] > s->suf[t])) return false;
    }
    *w_out = w;
    return true;
}

/* Branch parallelism, Fast-dLLM: the winner's rank sends its proposals (token, pmax,
 * confidence) at its masked block positions; nothing is cached by these forwards. */
static enum lopad_status lfast_dist_winner(struct lfast *s, int w) {
    struct lopa_dist *ds = &s->cm.ds;
    const int B = s->B, owner = lp_dist_owner(s->nbr, ds->R, w);
    const int32_t *wb = s->bt + (size_t)w * B;
    const size_t wk = (size_t)w * B, E = sizeof(int32_t) + 2 * sizeof(double);
    int nm = 0;
    for (int q = 0; q < B; q++)
        nm += wb[q] == s->d->mask_id;
    unsigned char *m = lp_lopa_dist_msg(ds, (size_t)nm * E);
    if (!m) return LOPAD_ERR_NOMEM;
    const bool me = owner == ds->rank;
    for (int q = 0, k = 0; q < B && me; q++)
        if (wb[q] == s->d->mask_id) {
            unsigned char *e = m + (size_t)k++ * E;
            memcpy(e, &s->ptok[wk + q], sizeof(int32_t));
            memcpy(e + sizeof(int32_t), &s->ppmax[wk + q], sizeof(double));
            memcpy(e + sizeof(int32_t) + sizeof(double), &s->pconf[wk + q], sizeof(double));
        }
    enum lopad_status st = lp_dist_bcast(ds->g, m, (size_t)nm * E, owner, "the winner's message");
    for (int q = 0, k = 0; q < B && !me && st == LOPAD_OK; q++)
        if (wb[q] == s->d->mask_id) {
            const unsigned char *e = m + (size_t)k++ * E;
            memcpy(&s->ptok[wk + q], e, sizeof(int32_t));
            memcpy(&s->ppmax[wk + q], e + sizeof(int32_t), sizeof(double));
            memcpy(&s->pconf[wk + q], e + sizeof(int32_t) + sizeof(double), sizeof(double));
        }
    return st;
}

/* proposal i's ranking confidence (lp_lopa_winner) */
static double lfast_prop_conf(const void *ud, int i) {
    const struct lfast *s = ud;
    return s->pconf[(size_t)s->qb[i] * s->B + (s->qq[i] - s->sb)];
}

static enum lopad_status lfast_step(struct lp_decoder *d) {
    struct lfast *s = d->priv;
    const int L = d->L, B = s->B;
    const int32_t mask = d->mask_id;
    s->cm.ev_nbr = 0;
    s->cm.ev_winner = -1;
    s->cm.ev_pos = -1;
    for (;;) {
        if (s->b >= s->nb) {
            d->done = true;
            return LOPAD_OK;
        }
        if (!s->started) {
            s->sb = d->P + s->b * B;
            s->eb = s->sb + B;
            s->started = true;
            s->refreshed = s->have_last = false;
            s->nbr = 1;
            memcpy(s->bt, d->canvas + s->sb, sizeof(int32_t) * B);
            s->lap[0] = s->latok[0] = -1;
            /* the suffix fed with this block: DPad's draw (one per block, shared by
             * every branch) or all of it */
            int n_suffix = L - s->eb;
            if (s->use_dpad) {
                s->n_kept = lp_dpad_draw(&s->dp, s->eb, n_suffix, &d->rng, s->kept);
            } else {
                for (int t = 0; t < n_suffix; t++)
                    s->kept[t] = s->eb + t;
                s->n_kept = n_suffix;
            }
        }
        int m = 0;
        for (int q = 0; q < B; q++)
            m += s->bt[(size_t)(s->nbr - 1) * B + q] == mask;
        if (m == 0 && s->nbr == 1) {
            lfast_block_end(d, s);
            if (d->done) return LOPAD_OK;
            continue;
        }
        break;
    }
    const bool refresh = !s->refreshed;
    LP_ASSERT(!refresh || s->nbr == 1);
    /* the feed of each branch: [from, eb) ++ the block's kept suffix (the same for every
     * branch); dual-cache steps feed the block alone */
    int from = 0;
    bool suffix = true;
    if (!refresh && s->cache == LP_CACHE_PREFIX) from = s->sb;
    if (!refresh && s->cache == LP_CACHE_DUAL) from = s->sb, suffix = false;
    const int n_suf = suffix ? s->n_kept : 0;
    s->f0 = from;
    int n = 0, n_out = 0, nq = 0;
    const bool want_last = refresh && s->shift && s->cache != LP_CACHE_NONE && s->sb > 0;
    for (int j = 0; j < s->nbr; j++) {
        const int32_t *blk = s->bt + (size_t)j * B;
        s->off[j] = n;
        s->len[j] = s->eb - from + n_suf;
        s->out0[j] = n_out;
        for (int i = 0; i < s->len[j]; i++, n++) {
            int p = i < s->eb - from ? from + i : s->kept[i - (s->eb - from)];
            s->tok[n] = p >= s->sb && p < s->eb ? blk[p - s->sb] : d->canvas[p];
            s->pos[n] = p;
            s->seq[n] = j;
            s->rowmap[n] = -1;
        }
        for (int q = s->sb; q < s->eb; q++) {
            if (blk[q - s->sb] != mask) continue;
            s->qb[nq] = j;
            s->qq[nq++] = q;
            int r = lp_pred_row(s->shift, q) - from;
            if (r >= 0 && s->rowmap[s->off[j] + r] < 0) {
                s->rowmap[s->off[j] + r] = n_out;
                s->rows[n_out++] = s->off[j] + r;
            }
        }
        if (want_last && s->rowmap[s->off[j] + s->sb - 1] < 0) {
            s->rowmap[s->off[j] + s->sb - 1] = n_out;
            s->rows[n_out++] = s->off[j] + s->sb - 1;
        }
    }
    s->out0[s->nbr] = n_out;
    if ((size_t)n_out > s->cap_out) {
        size_t cap = LP_MAX((size_t)n_out, 2 * s->cap_out);
        float *nl = lp_realloc(s->logits, sizeof(float) * cap * (size_t)d->V, "lopa logits");
        if (!nl) return LOPAD_ERR_NOMEM;
        s->logits = nl;
        s->cap_out = cap;
    }
    enum lopad_status st = LOPAD_OK;
    bool use_sc = false, spread = false;
    struct lopa_dist *ds = &s->cm.ds;
    if (n_out == 0 && !refresh) {
        /* every prediction is the kept last logit (only sb is masked): no forward, as in
         * fast.c; every rank proposes for every branch */
        ds->j0 = 0;
        ds->j1 = s->nbr;
    } else {
        /* across ranks, each its share (a refresh has the anchor alone: every rank runs
         * it, so every cached row is everywhere); the fused head in one call, unless this
         * refresh keeps the last logit */
        spread = lp_lopa_dist_share(ds, s->nbr);
        use_sc = s->fused && !spread && !want_last && n_out > 0 && !s->cm.serial &&
                 n <= d->eng.n_batch_max && lp_dec_scores_worth(d);
        struct branch_feed feed = lfast_feed(s, refresh);
        feed.scores = use_sc ? s->sc : NULL;
        st = lp_lopa_feed_share(d, &feed, s->nbr, ds, s->cm.serial, NULL, NULL);
    }
    if (st != LOPAD_OK) return st;
    if (refresh && s->cache != LP_CACHE_NONE) { /* one sequence: the anchor */
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
        memcpy(s->last, s->logits + (size_t)s->rowmap[s->sb - 1] * d->V,
               sizeof(float) * (size_t)d->V);
        s->have_last = true;
    }
    s->refreshed = true;

    /* proposals, branch confidences, the winner (on the scores when every decision of
     * the iteration is clear on them) */
    int w = 0;
    bool on_scores = use_sc && lfast_scores(s, nq, &w);
    if (use_sc && !on_scores && (st = lp_dec_last_logits(d, s->rows, n_out, s->logits))) return st;
    if (!on_scores) {
        int i0, i1;
        lp_lopa_prop_range(s->qb, nq, ds->j0, ds->j1, &i0, &i1);
        s->qi0 = i0;
        lp_dec_parallel(d, i1 - i0, lfast_propose_task, s);
        s->qi0 = 0;
        st = lp_lopa_winner(ds, s->nbr, spread, s->qb, i0, i1, lfast_prop_conf, s, &w);
        if (st != LOPAD_OK) return st;
        if (spread && (st = lfast_dist_winner(s, w))) return st;
    }
    s->cm.ev_nbr = s->nbr;
    s->cm.ev_winner = w;
    s->cm.ev_pos = s->lap[w];
    s->cm.hist[w == s->nbr - 1 ? s->cm.K : w]++;
    int32_t *wb = s->bt + (size_t)w * B;
    const size_t wk = (size_t)w * B;
    if (s->lap[w] >= 0) lp_dec_commit(d, s->lap[w], s->latok[w]);
    /* the threshold fill from the winner's predictions */
    int nc = 0, bestq = -1;
    for (int q = 0; q < B; q++) {
        if (wb[q] != mask) continue;
        if (s->ppmax[wk + q] >= s->tau) nc++;
        if (bestq < 0 || s->pconf[wk + q] > s->pconf[wk + bestq]) bestq = q;
    }
    for (int q = 0; q < B; q++) {
        if (wb[q] != mask || (nc ? !(s->ppmax[wk + q] >= s->tau) : q != bestq)) continue;
        wb[q] = s->ptok[wk + q];
        lp_dec_commit(d, s->sb + q, wb[q]);
    }
    /* lookahead candidates: the anchor's masked block positions */
    int ncand = 0;
    for (int q = 0; q < B; q++)
        if (wb[q] == mask) {
            s->cpos[ncand] = s->sb + q;
            s->cconf[ncand++] = s->pconf[wk + q];
        }
    int k = LP_MIN(s->cm.K, ncand);
    lp_select_topk(s->cconf, s->cpos, ncand, k, s->csel, s->cscr);
    for (int i = 0; i <= k; i++) {
        int32_t *nbk = s->nbt + (size_t)i * B;
        memcpy(nbk, wb, sizeof(int32_t) * B);
        if (i < k) {
            int q = s->cpos[s->csel[i]];
            nbk[q - s->sb] = s->ptok[wk + (q - s->sb)];
            s->lap[i] = q;
            s->latok[i] = nbk[q - s->sb];
        } else {
            s->lap[i] = s->latok[i] = -1;
        }
    }
    int32_t *tmp = s->bt;
    s->bt = s->nbt;
    s->nbt = tmp;
    s->nbr = k + 1;
    if (ncand == 0) lfast_block_end(d, s);
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_lopa_fast_ops = {
    .name = "fast",
    .check = lfast_check,
    .init = lfast_init,
    .step = lfast_step,
    .release = lfast_release,
    .fill_event = lp_lopa_fill_event,
    .finish = lp_lopa_finish,
};
