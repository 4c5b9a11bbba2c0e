/*
 * d2f.c - the D2F (discrete diffusion forcing) pipelined block decoder
 * (docs/ALGORITHMS.md 4; docs/research/lopa_d2f.md 2) and the block-table rules LoPA
 * (lopa.c) shares.
 *
 * One step = one iteration = at most one forward:
 *   1. add a block of B MASKs (ACTIVE, semi-activated) when fewer than G/B blocks
 *      exist, no EOS / EoT was committed and the last block's decoded ratio >= tau_add;
 *   2. block b's ratio >= tau_act makes block b+1 fully activated (sticky; block 1
 *      is full from the start: the prompt's ratio is 1);
 *   3. stop when nothing is masked and no block is ACTIVE;
 *   4. feed from the cache end: the TO_CACHE blocks (their K/V are committed to the
 *      cache by this forward) and every ACTIVE block, block-causal (a block sees the
 *      cache, earlier blocks and itself); Dream-family predictions are shifted: the
 *      prediction of the window's first position is the stored "last logit" (the raw
 *      output of the last cached row, from the forward that cached it), never a row
 *      of the window itself;
 *   5. per ACTIVE block: commit every masked position with pmax > tau_conf; a full
 *      block with none commits its single most confident position (ranking
 *      confidence, ties to the lower position); a semi-activated block may commit
 *      nothing;
 *   6. an ACTIVE block without masks becomes TO_CACHE when no earlier block is
 *      ACTIVE (the cache grows strictly left to right).
 * The MASK token is never proposed (its logit is dropped before the softmax), so a
 * full block always makes progress. Temperature 0 only (every published run).
 * --dpad is refused: no forward feeds a position past the last added block, so DPad's
 * suffix is always empty (docs/DECODERS.md, "DPad with D2F and LoPA").
 *
 * With the fused head (decoder_impl.h) a step decides on the rows' scores when the
 * fill's decisions hold over the bounds of the MASK-free pmax (d2f_scores), and
 * otherwise takes its rows' logits: the same tokens.
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "d2f_impl.h"

/* -------------------------------------------------------- shared rules */

void lp_d2f_cfg_from(struct lp_d2f_cfg *c, const struct lp_decoder *d) {
    const struct lp_decode_request *rq = &d->rq;
    memset(c, 0, sizeof *c);
    c->P = d->P;
    c->B = rq->block_len;
    c->nb_max = d->G / rq->block_len;
    c->L = d->L;
    c->V = d->V;
    c->mask_id = d->mask_id;
    c->eos_id = d->eng.hp.eos_id;
    c->eot_id = d->eng.hp.eot_id;
    c->shift = d->eng.hp.shift_logits;
    c->block_causal = rq->lopa < 0 || rq->lopa_window == LP_WINDOW_BLOCK_CAUSAL;
    c->tau_add = rq->tau_add;
    c->tau_act = rq->tau_act;
    c->tau_conf = rq->tau_conf;
    c->conf = rq->confidence;
    if (c->conf == LP_CONF_AUTO) c->conf = c->shift ? LP_CONF_NEGENT : LP_CONF_PMAX;
}

static bool unit_interval(double x) {
    return x >= 0 && x <= 1;
}

enum lopad_status lp_d2f_check(const struct lp_decode_request *rq, const struct lopad_hparams *hp) {
    LP_UNUSED(hp);
    if (rq->block_len < 1)
        return lp_error(LOPAD_ERR_ARG, "--block must be at least 1, got %d", rq->block_len);
    if (rq->gen_len % rq->block_len)
        return lp_error(LOPAD_ERR_ARG, "--gen (%d) must be a multiple of --block (%d) for d2f",
                        rq->gen_len, rq->block_len);
    if (!unit_interval(rq->tau_add))
        return lp_error(LOPAD_ERR_ARG, "--tau-add must be in [0, 1], got %g", rq->tau_add);
    if (!unit_interval(rq->tau_act))
        return lp_error(LOPAD_ERR_ARG, "--tau-act must be in [0, 1], got %g", rq->tau_act);
    if (!unit_interval(rq->tau_conf))
        return lp_error(LOPAD_ERR_ARG, "--tau-conf must be in [0, 1], got %g", rq->tau_conf);
    if (rq->temperature != 0 || rq->top_p < 1.0 || rq->top_k > 0)
        return lp_error(LOPAD_ERR_ARG, "d2f decodes greedily: --temperature / --top-p / --top-k "
                                       "are not supported");
    if (rq->cfg_scale != 0)
        return lp_error(LOPAD_ERR_ARG, "--cfg-scale is only supported by the llada decoder");
    /* DPad drops suffix positions past the current block from the forwards; D2F never
     * feeds a position past its last added block (docs/DECODERS.md), so the kept set
     * would always be empty and --dpad would change nothing: refused, not ignored */
    if (rq->dpad)
        return lp_error(LOPAD_ERR_ARG,
                        "--dpad has no effect with --decoder d2f%s: D2F never feeds the masked "
                        "positions after its last block, so there is no suffix to drop (DPad "
                        "composes with --decoder fast, also with --lopa K)",
                        rq->lopa >= 0 ? " --lopa" : "");
    if ((unsigned)rq->confidence > LP_CONF_NEGENT)
        return lp_error(LOPAD_ERR_ARG, "unknown confidence id %d", (int)rq->confidence);
    if (rq->lopa < -1 || rq->lopa > 64)
        return lp_error(LOPAD_ERR_ARG, "--lopa must be in 0..64 lookahead branches, got %d",
                        rq->lopa);
    if ((unsigned)rq->lopa_window > LP_WINDOW_BLOCK_CAUSAL)
        return lp_error(LOPAD_ERR_ARG, "unknown window attention id %d", (int)rq->lopa_window);
    return LOPAD_OK;
}

bool lp_d2f_branch_alloc(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c) {
    memset(b, 0, sizeof *b);
    b->x = lp_malloc(sizeof(int32_t) * (size_t)c->L, "d2f branch canvas");
    b->blk = lp_malloc(sizeof(struct lp_d2f_blk) * (size_t)(c->nb_max + 1), "d2f block table");
    return b->x && b->blk;
}

void lp_d2f_branch_free(struct lp_d2f_branch *b) {
    lp_free(b->x);
    lp_free(b->blk);
    b->x = NULL;
    b->blk = NULL;
}

void lp_d2f_branch_start(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c,
                         const int32_t *canvas) {
    memcpy(b->x, canvas, sizeof(int32_t) * (size_t)c->L);
    b->blk[0] = (struct lp_d2f_blk){
        .start = 0, .end = c->P, .masks = 0, .state = LP_BLK_TO_CACHE, .full = true};
    b->n_blk = 1;
    b->eos = false;
    b->la_pos = -1;
    b->la_tok = -1;
}

void lp_d2f_branch_copy(struct lp_d2f_branch *dst, const struct lp_d2f_branch *src,
                        const struct lp_d2f_cfg *c) {
    memcpy(dst->x, src->x, sizeof(int32_t) * (size_t)c->L);
    memcpy(dst->blk, src->blk, sizeof(struct lp_d2f_blk) * (size_t)src->n_blk);
    dst->n_blk = src->n_blk;
    dst->eos = src->eos;
    dst->la_pos = src->la_pos;
    dst->la_tok = src->la_tok;
}

static double ratio(const struct lp_d2f_blk *k) {
    int total = k->end - k->start;
    return total > 0 ? (double)(total - k->masks) / total : 1.0;
}

bool lp_d2f_prepare(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c) {
    if (b->n_blk - 1 < c->nb_max && !b->eos && ratio(&b->blk[b->n_blk - 1]) >= c->tau_add) {
        int s = b->blk[b->n_blk - 1].end;
        b->blk[b->n_blk++] = (struct lp_d2f_blk){
            .start = s, .end = s + c->B, .masks = c->B, .state = LP_BLK_ACTIVE, .full = false};
    }
    for (int i = 0; i + 1 < b->n_blk; i++)
        if (ratio(&b->blk[i]) >= c->tau_act) b->blk[i + 1].full = true;
    bool masked = false, active = false;
    for (int i = 0; i < b->n_blk; i++) {
        masked |= b->blk[i].masks > 0;
        active |= b->blk[i].state == LP_BLK_ACTIVE;
    }
    return !masked && !active;
}

void lp_d2f_propose(const struct lp_d2f_cfg *c, float *logits, float *probs,
                    struct lp_d2f_prop *out) {
    if (c->mask_id >= 0 && c->mask_id < c->V) logits[c->mask_id] = -INFINITY;
    lp_softmax_f32(probs, logits, c->V);
    struct lp_pstats ps;
    lp_prob_stats(probs, c->V, &ps);
    out->tok = ps.argmax;
    out->pmax = ps.pmax;
    out->conf = c->conf == LP_CONF_MARGIN   ? ps.margin
                : c->conf == LP_CONF_NEGENT ? ps.negent
                                            : ps.pmax;
}

void lp_d2f_fill(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c, lp_d2f_prop_fn prop, void *ud,
                 void (*on_fill)(void *ud, int q, int32_t tok)) {
    for (int i = 1; i < b->n_blk; i++) {
        struct lp_d2f_blk *k = &b->blk[i];
        if (k->state != LP_BLK_ACTIVE || k->masks == 0) continue;
        int best = -1, n_hi = 0;
        float best_c = 0;
        for (int q = k->start; q < k->end; q++) {
            if (b->x[q] != c->mask_id) continue;
            const struct lp_d2f_prop *p = prop(ud, q);
            if (p->pmax > c->tau_conf) n_hi++;
            if (best < 0 || p->conf > best_c) { /* ties: the lower position */
                best = q;
                best_c = p->conf;
            }
        }
        if (n_hi == 0 && !k->full) continue;
        for (int q = k->start; q < k->end; q++) {
            if (b->x[q] != c->mask_id) continue;
            const struct lp_d2f_prop *p = prop(ud, q);
            if (n_hi ? !(p->pmax > c->tau_conf) : q != best) continue;
            b->x[q] = p->tok;
            k->masks--;
            if (lp_d2f_is_end(c, p->tok)) b->eos = true;
            if (on_fill) on_fill(ud, q, p->tok);
        }
    }
}

void lp_d2f_recount(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c) {
    for (int i = 1; i < b->n_blk; i++) {
        struct lp_d2f_blk *k = &b->blk[i];
        if (k->state != LP_BLK_ACTIVE) continue;
        k->masks = 0;
        for (int q = k->start; q < k->end; q++)
            k->masks += b->x[q] == c->mask_id;
    }
}

void lp_d2f_deactivate(struct lp_d2f_branch *b, const bool *allow) {
    for (int i = 1; i < b->n_blk; i++) {
        if (b->blk[i].state != LP_BLK_ACTIVE || b->blk[i].masks != 0) continue;
        if (allow && !allow[i]) continue;
        bool earlier_active = false;
        for (int j = 0; j < i; j++)
            earlier_active |= b->blk[j].state == LP_BLK_ACTIVE;
        if (!earlier_active) b->blk[i].state = LP_BLK_TO_CACHE;
    }
}

/* ---------------------------------------------------------- the decoder */

struct d2f {
    struct lp_d2f_cfg c;
    struct lp_d2f_branch br;
    int cache_len;
    float *last;                       /* [V] raw output of the last cached row (shift models) */
    int32_t *tok, *pos, *blkid, *rows; /* [L] the window feed, out rows */
    int *rowmap;                       /* [L] window row -> out index, -1 */
    int32_t *qpos;                     /* [L] masked positions needing a proposal */
    float *logits;                     /* [cap_out][V], grown on demand (masked rows) */
    size_t cap_out;
    float *scratch;            /* [n_threads][2V] */
    struct lp_d2f_prop *props; /* [L] by canvas position */
    int s0;                    /* window start of this step */
    int iters;
    struct lp_decoder *d;
    /* fused scores (an engine with the fused head) */
    bool fused;
    struct lp_row_scores *sc; /* [L] */
    double *qlo, *qhi;        /* [L] by canvas position: bounds of the MASK-free pmax */
};

static enum lopad_status d2f_check(const struct lp_decode_request *rq,
                                   const struct lopad_hparams *hp) {
    return lp_d2f_check(rq, hp);
}

/* The state's arrays (sizes from d; the fused-score ones only when s->fused;
 * logits grow on demand, so they are only released here). */
#define D2F_NBUF 13
static size_t d2f_bufs(const struct lp_decoder *d, struct d2f *s, struct lp_dec_buf *out) {
    const size_t L = (size_t)d->L, V = (size_t)d->V, nt = (size_t)lp_dec_n_threads(d);
    const size_t fb = s->fused ? 1 : 0;
    const struct lp_dec_buf b[] = {
        {(void **)&s->last, sizeof(float) * V, "d2f last logit"},
        {(void **)&s->tok, sizeof(int32_t) * L, "d2f feed"},
        {(void **)&s->pos, sizeof(int32_t) * L, "d2f positions"},
        {(void **)&s->blkid, sizeof(int32_t) * L, "d2f block ids"},
        {(void **)&s->rows, sizeof(int32_t) * L, "d2f rows"},
        {(void **)&s->rowmap, sizeof(int) * L, "d2f row map"},
        {(void **)&s->qpos, sizeof(int32_t) * L, "d2f positions"},
        {(void **)&s->logits, 0, "d2f logits"},
        {(void **)&s->scratch, sizeof(float) * 2 * nt * V, "d2f scratch"},
        {(void **)&s->props, sizeof(struct lp_d2f_prop) * L, "d2f proposals"},
        {(void **)&s->sc, fb * sizeof *s->sc * L, "d2f scores"},
        {(void **)&s->qlo, fb * sizeof(double) * L, "d2f bounds"},
        {(void **)&s->qhi, fb * sizeof(double) * L, "d2f bounds"},
    };
    _Static_assert(sizeof b / sizeof b[0] == D2F_NBUF, "D2F_NBUF");
    memcpy(out, b, sizeof b);
    return D2F_NBUF;
}

static void d2f_release(struct lp_decoder *d) {
    struct d2f *s = d->priv;
    if (!s) return;
    lp_d2f_branch_free(&s->br);
    struct lp_dec_buf b[D2F_NBUF];
    lp_dec_free_all(b, d2f_bufs(d, s, b));
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status d2f_init(struct lp_decoder *d) {
    if (!d->eng.kv_commit)
        return lp_error(LOPAD_ERR_ARG, "decoder d2f: the engine has no KV cache operations");
    if (d->eng.n_batch_max < d->L)
        return lp_error(LOPAD_ERR_ARG,
                        "decoder d2f: the engine's batch (%d) is shorter than the "
                        "canvas (%d)",
                        d->eng.n_batch_max, d->L);
    struct d2f *s = lp_calloc(1, sizeof *s, "d2f state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    s->d = d;
    lp_d2f_cfg_from(&s->c, d);
    if (!lp_d2f_branch_alloc(&s->br, &s->c)) return LOPAD_ERR_NOMEM;
    s->fused = lp_dec_has_scores(d);
    struct lp_dec_buf b[D2F_NBUF];
    enum lopad_status st = lp_dec_alloc_all(b, d2f_bufs(d, s, b));
    if (st) return st;
    lp_d2f_branch_start(&s->br, &s->c, d->canvas);
    d->n_steps = -1;
    if (d->eng.kv_truncate) d->eng.kv_truncate(d->eng.ud, 0);
    return LOPAD_OK;
}

/* out index of the prediction for canvas position q (-1 = the stored last logit) */
static int d2f_pred_out(const struct d2f *s, int q) {
    int r = s->c.shift ? q - 1 - s->s0 : q - s->s0;
    return r < 0 ? -1 : s->rowmap[r];
}

static void d2f_propose_task(void *ctx, int i, int tid) {
    struct d2f *s = ctx;
    int q = s->qpos[i], o = d2f_pred_out(s, q);
    const size_t V = (size_t)s->c.V;
    float *buf = s->scratch + (size_t)tid * 2 * V;
    memcpy(buf, o < 0 ? s->last : s->logits + (size_t)o * V, sizeof(float) * V);
    lp_d2f_propose(&s->c, buf, buf + V, &s->props[q]);
}

static const struct lp_d2f_prop *d2f_prop(void *ud, int q) {
    return &((struct d2f *)ud)->props[q];
}

static void d2f_on_fill(void *ud, int q, int32_t tok) {
    lp_dec_commit(((struct d2f *)ud)->d, q, tok);
}

bool lp_d2f_prop_bounds(const struct lp_d2f_cfg *c, const struct lp_row_scores *r,
                        struct lp_d2f_prop *out, double *lo, double *hi) {
    if (r->argmax == c->mask_id || !lp_scores_argmax_clear(r, true)) return false;
    double p2 = fmax(0.0, (double)r->pmax - r->margin);
    if (!(p2 < 0.5)) return false;
    double h = fmin(1.0, r->pmax / (1.0 - p2));
    double tol = 2.0 * LP_SCORE_TOL * h / (1.0 - p2) + 2e-7;
    *lo = r->pmax - tol;
    *hi = h + tol;
    out->tok = r->argmax;
    out->conf = (float)*lo;
    if (*lo > c->tau_conf)
        out->pmax = r->pmax; /* above tau_conf */
    else if (*hi <= c->tau_conf)
        out->pmax = (float)h; /* not above */
    else
        return false;
    return true;
}

bool lp_d2f_fill_clear(const struct lp_d2f_branch *b, const struct lp_d2f_cfg *c,
                       const struct lp_d2f_prop *props, const double *lo, const double *hi,
                       uint8_t *filled) {
    if (filled) memset(filled, 0, (size_t)c->L);
    for (int i = 1; i < b->n_blk; i++) {
        const struct lp_d2f_blk *k = &b->blk[i];
        if (k->state != LP_BLK_ACTIVE || k->masks == 0) continue;
        int n_masked = 0, n_hi = 0, best = -1;
        for (int q = k->start; q < k->end; q++)
            if (b->x[q] == c->mask_id) {
                n_masked++;
                n_hi += props[q].pmax > c->tau_conf;
                if (best < 0 || props[q].conf > props[best].conf) best = q;
            }
        if (n_hi == 0 && !k->full) continue;
        if (n_hi == 0 && n_masked > 1) { /* the most confident: apart from every other one */
            if (c->conf != LP_CONF_PMAX) return false;
            for (int q = k->start; q < k->end; q++)
                if (b->x[q] == c->mask_id && q != best && !(lo[best] > hi[q])) return false;
        }
        for (int q = k->start; q < k->end && filled; q++)
            if (b->x[q] == c->mask_id) filled[q] = n_hi ? props[q].pmax > c->tau_conf : q == best;
    }
    return true;
}

/* Proposals of a step from the fused scores (lp_d2f_prop_bounds; predictions from the
 * stored last logit are exact). True when they and the fill are clear; false: the
 * step needs its rows' logits. */
static bool d2f_scores(struct d2f *s, int nq) {
    for (int i = 0; i < nq; i++) {
        int q = s->qpos[i], o = d2f_pred_out(s, q);
        if (o < 0) { /* the stored last logit */
            d2f_propose_task(s, i, 0);
            s->qlo[q] = s->qhi[q] = s->props[q].pmax;
        } else if (!lp_d2f_prop_bounds(&s->c, &s->sc[o], &s->props[q], &s->qlo[q], &s->qhi[q])) {
            return false;
        }
    }
    return lp_d2f_fill_clear(&s->br, &s->c, s->props, s->qlo, s->qhi, NULL);
}

static enum lopad_status d2f_step(struct lp_decoder *d) {
    struct d2f *s = d->priv;
    const struct lp_d2f_cfg *c = &s->c;
    struct lp_d2f_branch *b = &s->br;
    if (++s->iters > 4 * (d->G + c->nb_max) + 16)
        return lp_error(LOPAD_ERR_ARG, "decoder d2f: no progress after %d iterations", s->iters);
    if (lp_d2f_prepare(b, c)) {
        d->done = true;
        return LOPAD_OK;
    }
    int tc0 = -1, tc1 = -1;
    bool active = false;
    for (int i = 0; i < b->n_blk; i++) {
        if (b->blk[i].state == LP_BLK_TO_CACHE) {
            if (tc0 < 0) tc0 = i;
            tc1 = i;
        }
        active |= b->blk[i].state == LP_BLK_ACTIVE;
    }
    int update = tc0 >= 0 ? b->blk[tc1].end - b->blk[tc0].start : 0;
    if (!update && !active) {
        d->done = true;
        return LOPAD_OK;
    }
    LP_ASSERT(tc0 < 0 || b->blk[tc0].start == s->cache_len);
    const int s0 = s->s0 = s->cache_len, n = lp_d2f_len(b) - s0;
    for (int i = 0; i < n; i++) {
        s->tok[i] = b->x[s0 + i];
        s->pos[i] = s0 + i;
        s->blkid[i] = lp_d2f_block_of(c, s0 + i);
        s->rowmap[i] = -1;
    }
    int n_out = 0, nq = 0;
    if (update && c->shift) {
        s->rowmap[update - 1] = n_out;
        s->rows[n_out++] = update - 1;
    }
    for (int i = 1; i < b->n_blk; i++) {
        if (b->blk[i].state != LP_BLK_ACTIVE) continue;
        for (int q = b->blk[i].start; q < b->blk[i].end; q++) {
            if (b->x[q] != c->mask_id) continue;
            s->qpos[nq++] = q;
            int r = c->shift ? q - 1 - s0 : q - s0;
            if (r >= 0 && s->rowmap[r] < 0) {
                s->rowmap[r] = n_out;
                s->rows[n_out++] = r;
            }
        }
    }
    if ((size_t)n_out > s->cap_out) {
        size_t cap = LP_MAX((size_t)n_out, 2 * s->cap_out);
        float *nl = lp_realloc(s->logits, sizeof(float) * cap * (size_t)c->V, "d2f logits");
        if (!nl) return LOPAD_ERR_NOMEM;
        s->logits = nl;
        s->cap_out = cap;
    }
    struct lopad_batch bt = {
        .n_tokens = n,
        .tokens = s->tok,
        .pos = s->pos,
        .n_seq = 1,
        .block = c->block_causal ? s->blkid : NULL,
        .n_cache = s->cache_len,
        .n_out = n_out,
        .out_rows = s->rows,
        .logits = s->logits,
    };
    /* the fused head, except when the stored last logit is renewed (Dream family) */
    bool use_sc = s->fused && n_out > 0 && !(update && c->shift) && lp_dec_scores_worth(d);
    enum lopad_status st =
        use_sc ? lp_dec_forward_scores(d, &bt, s->sc) : lp_dec_forward_batch(d, &bt);
    if (st != LOPAD_OK) return st;
    if (update) {
        st = d->eng.kv_commit(d->eng.ud, 0, update, s->cache_len);
        if (st != LOPAD_OK) return st;
        s->cache_len += update;
        for (int i = tc0; i <= tc1; i++)
            b->blk[i].state = LP_BLK_IN_CACHE;
        if (c->shift)
            memcpy(s->last, s->logits + (size_t)s->rowmap[update - 1] * c->V,
                   sizeof(float) * (size_t)c->V);
    }
    bool on_scores = use_sc && d2f_scores(s, nq);
    if (use_sc && !on_scores && (st = lp_dec_last_logits(d, s->rows, n_out, s->logits))) return st;
    if (!on_scores) lp_dec_parallel(d, nq, d2f_propose_task, s);
    lp_d2f_fill(b, c, d2f_prop, s, d2f_on_fill);
    lp_d2f_deactivate(b, NULL);
    return LOPAD_OK;
}

enum lopad_status lp_d2f_finish(const struct lp_decoder *d, struct lp_decode_result *res) {
    LP_UNUSED(d);
    res->tpf = res->tpf_nonpad;
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_d2f_ops = {
    .name = "d2f",
    .check = d2f_check,
    .init = d2f_init,
    .step = d2f_step,
    .release = d2f_release,
    .finish = lp_d2f_finish,
};
