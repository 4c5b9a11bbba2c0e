/*
 * lopa_d2f.c - LoPA lookahead parallel decoding on top of D2F (docs/ALGORITHMS.md 5;
 * docs/research/lopa_d2f.md 3-4): every iteration verifies K lookahead branches and
 * the anchor in ONE batched forward (n_seq = branches) that shares the committed
 * prefix K/V read-only; each branch's window K/V live in the forward's scratch
 * (pre-write) and only the winner's rows are copied into the cache
 * (commit-winner, lopad_kv_commit).
 *
 * One step = one iteration:
 *   a. per branch, the D2F add / activate rules on its own table; if a branch is
 *      finished (nothing masked, no ACTIVE block), the first such branch
 *      (lookahead order, then the anchor) is the result: stop;
 *   b. shared prefix end = min over branches of the end of the leading run of
 *      TO_CACHE / IN_CACHE blocks; TC = the anchor's TO_CACHE blocks inside it;
 *      the window starts at the cache end (the first TC block when there is one);
 *   c. branch order: lookahead branches in creation order, the anchor last;
 *   d. one forward: branch j feeds x_j[window start, len_j) as sequence j; window
 *      attention full (published) or block-causal; prediction rows of branch j's
 *      masked positions past the shared prefix, and of its last TC row (Dream);
 *   e. C_j = mean ranking confidence over those masked positions from branch j's
 *      own predictions (1.0 when none);
 *   f. winner = highest C_j, ties to the earlier branch in the order of c;
 *   g. commit the winner: its lookahead token, its TC rows' K/V, its last logit;
 *      then the D2F fill of its ACTIVE blocks from its predictions = next anchor;
 *   h. blocks of the anchor without masks may go TO_CACHE (only those the anchor
 *      completed; strictly left to right), in every new branch;
 *   i. lookahead candidates = the anchor's masked window positions ranked by the
 *      same confidence (ties: lower position); branch i = anchor + the argmax token
 *      at the i-th best position, i < K.
 * A batch larger than the engine's (or serial mode, for tests) runs as several
 * calls, still one NFE; when the winner's rows are not in the last call's scratch
 * its sequence is fed once more (no logits) before the commit.
 *
 * With the fused head (all branches in one call; decoder_impl.h) an iteration decides
 * on the rows' scores when the winner, its fill and the lookahead order hold over the
 * scores' bounds (lopa_scores: the MASK-free pmax, pmax confidence; lfast_scores: the
 * Fast-dLLM proposals), and otherwise takes its rows' logits: the same tokens and
 * winners.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decode/dpad.h"
#include "lopa_impl.h"

struct lopa {
    struct lopa_common cm;
    struct lp_d2f_cfg c;
    int nbr;                  /* branches of this iteration; the anchor is br[nbr-1] */
    struct lp_d2f_branch *br; /* [K+1] */
    struct lp_d2f_branch *nx; /* [K+1] */
    int cache_len;
    float *last;                  /* [V] staging of the winner's last logit */
    struct lp_d2f_prop last_prop; /* the proposal of the stored last logit */
    int qi0;                      /* first proposal of lp_dec_parallel's tasks */
    /* the batch */
    int32_t *tok, *pos, *seq, *blkid, *rows; /* [(K+1) L] */
    int *rowmap;                             /* [(K+1) L] fed row -> out index, -1 */
    int off[65], len[65];                    /* each branch's fed rows */
    int out0[66];                            /* each branch's out rows [out0[j], out0[j+1]) */
    float *logits;                           /* [cap_out][V] */
    size_t cap_out;
    int32_t *qb, *qq;            /* [(K+1) L] (branch, position) of each proposal */
    struct lp_d2f_prop *props;   /* [(K+1) L] by branch * L + position */
    float *scratch;              /* [n_threads][2V] */
    double *cconf;               /* [L] candidate scores */
    int32_t *cpos, *csel, *cscr; /* [L] */
    bool completed[4096 + 1];
    int in_start, n_fed;
    int iters;
    struct lp_decoder *d;
    /* fused scores (an engine with the fused head, pmax confidence) */
    bool fused;
    struct lp_row_scores *sc; /* [(K+1) L] */
    double *qlo, *qhi;        /* [(K+1) L] by branch * L + position: MASK-free pmax bounds */
    uint8_t *filled;          /* [L] */
    double *chi;              /* [L] candidates' upper bounds, suffix maxima */
};

static enum lopad_status lopa_check(const struct lp_decode_request *rq,
                                    const struct lopad_hparams *hp) {
    enum lopad_status st = lp_d2f_check(rq, hp);
    if (st != LOPAD_OK) return st;
    if (rq->gen_len / rq->block_len > 4096)
        return lp_error(LOPAD_ERR_ARG, "--lopa: at most 4096 blocks (--gen / --block)");
    return LOPAD_OK;
}

/* The state's arrays (sizes from d and s; the fused-score ones only when s->fused;
 * logits grow on demand, so they are only released here). */
#define LOPA_NBUF 24
static size_t lopa_bufs(const struct lp_decoder *d, struct lopa *s, struct lp_dec_buf *out) {
    const size_t nb = (size_t)s->cm.K + 1, L = (size_t)d->L, V = (size_t)d->V;
    const size_t nt = (size_t)lp_dec_n_threads(d), fb = s->fused ? 1 : 0;
    const struct lp_dec_buf b[] = {
        {(void **)&s->last, sizeof(float) * V, "lopa last logit"},
        {(void **)&s->tok, sizeof(int32_t) * nb * L, "lopa feed"},
        {(void **)&s->pos, sizeof(int32_t) * nb * L, "lopa positions"},
        {(void **)&s->seq, sizeof(int32_t) * nb * L, "lopa sequence ids"},
        {(void **)&s->blkid, sizeof(int32_t) * nb * L, "lopa block ids"},
        {(void **)&s->rows, sizeof(int32_t) * nb * L, "lopa rows"},
        {(void **)&s->rowmap, sizeof(int) * nb * L, "lopa row map"},
        {(void **)&s->logits, 0, "lopa logits"},
        {(void **)&s->qb, sizeof(int32_t) * nb * L, "lopa proposal branches"},
        {(void **)&s->qq, sizeof(int32_t) * nb * L, "lopa proposal positions"},
        {(void **)&s->props, sizeof(struct lp_d2f_prop) * nb * L, "lopa proposals"},
        {(void **)&s->scratch, sizeof(float) * 2 * nt * V, "lopa scratch"},
        {(void **)&s->cconf, sizeof(double) * L, "lopa candidates"},
        {(void **)&s->cpos, sizeof(int32_t) * L, "lopa candidates"},
        {(void **)&s->csel, sizeof(int32_t) * L, "lopa candidates"},
        {(void **)&s->cscr, sizeof(int32_t) * L, "lopa candidates"},
        {(void **)&s->cm.hist, sizeof(int) * nb, "lopa winner histogram"},
        {(void **)&s->sc, fb * sizeof *s->sc * nb * L, "lopa scores"},
        {(void **)&s->qlo, fb * sizeof(double) * nb * L, "lopa bounds"},
        {(void **)&s->qhi, fb * sizeof(double) * nb * L, "lopa bounds"},
        {(void **)&s->filled, fb * L, "lopa fill"},
        {(void **)&s->chi, fb * sizeof(double) * L, "lopa candidate bounds"},
        {(void **)&s->br, 0, "lopa branches"}, /* allocated first, see lopa_init */
        {(void **)&s->nx, 0, "lopa branches"},
    };
    _Static_assert(sizeof b / sizeof b[0] == LOPA_NBUF, "LOPA_NBUF");
    memcpy(out, b, sizeof b);
    return LOPA_NBUF;
}

static void lopa_release(struct lp_decoder *d) {
    struct lopa *s = d->priv;
    if (!s) return;
    for (int j = 0; j <= s->cm.K; j++) {
        if (s->br) lp_d2f_branch_free(&s->br[j]);
        if (s->nx) lp_d2f_branch_free(&s->nx[j]);
    }
    struct lp_dec_buf b[LOPA_NBUF];
    lp_dec_free_all(b, lopa_bufs(d, s, b));
    lp_lopa_dist_free(&s->cm.ds);
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status lopa_init(struct lp_decoder *d) {
    if (!d->eng.kv_commit)
        return lp_error(LOPAD_ERR_ARG, "decoder d2f --lopa: the engine has no KV cache operations");
    if (d->eng.n_batch_max < d->L)
        return lp_error(LOPAD_ERR_ARG,
                        "decoder d2f --lopa: the engine's batch (%d) is shorter than the canvas "
                        "(%d)",
                        d->eng.n_batch_max, d->L);
    struct lopa *s = lp_calloc(1, sizeof *s, "lopa state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    s->d = d;
    lp_d2f_cfg_from(&s->c, d);
    s->cm.K = d->rq.lopa;
    const size_t nb = (size_t)s->cm.K + 1;
    s->br = lp_calloc(nb, sizeof *s->br, "lopa branches");
    s->nx = lp_calloc(nb, sizeof *s->nx, "lopa branches");
    if (!s->br || !s->nx) return LOPAD_ERR_NOMEM;
    for (size_t j = 0; j < nb; j++)
        if (!lp_d2f_branch_alloc(&s->br[j], &s->c) || !lp_d2f_branch_alloc(&s->nx[j], &s->c))
            return LOPAD_ERR_NOMEM;
    s->fused = lp_dec_has_scores(d) && s->c.conf == LP_CONF_PMAX;
    struct lp_dec_buf b[LOPA_NBUF];
    enum lopad_status st = lp_dec_alloc_all(b, lopa_bufs(d, s, b));
    if (st) return st;
    lp_d2f_branch_start(&s->br[0], &s->c, d->canvas);
    s->nbr = 1;
    s->cm.ev_winner = -1;
    s->cm.ev_pos = -1;
    d->n_steps = -1;
    if (d->eng.kv_truncate) d->eng.kv_truncate(d->eng.ud, 0);
    return lp_lopa_dist_start(&s->cm, d, true);
}

static struct branch_feed lopa_feed(struct lopa *s) {
    struct branch_feed f = {
        .tok = s->tok,
        .pos = s->pos,
        .seq = s->seq,
        .rows = s->rows,
        .block = s->c.block_causal ? s->blkid : NULL,
        .off = s->off,
        .len = s->len,
        .out0 = s->out0,
        .logits = s->logits,
        .V = s->c.V,
        .cache = {.n_cache = s->cache_len},
    };
    return f;
}

/* ------------------------------------------------------------ proposals */

static int lopa_pred_out(const struct lopa *s, int j, int q) {
    int r = s->c.shift ? q - 1 - s->in_start : q - s->in_start;
    return r < 0 ? -1 : s->rowmap[s->off[j] + r];
}

static void lopa_propose_task(void *ctx, int i, int tid) {
    struct lopa *s = ctx;
    i += s->qi0;
    int j = s->qb[i], q = s->qq[i], o = lopa_pred_out(s, j, q);
    const size_t V = (size_t)s->c.V;
    struct lp_d2f_prop *out = &s->props[(size_t)j * s->c.L + q];
    if (o < 0) { /* the stored last logit's proposal */
        *out = s->last_prop;
        return;
    }
    float *buf = s->scratch + (size_t)tid * 2 * V;
    memcpy(buf, s->logits + (size_t)o * V, sizeof(float) * V);
    lp_d2f_propose(&s->c, buf, buf + V, out);
}

/* The winner's last logit (Dream family: the raw output of its last cached row) is
 * kept as its proposal, which is all the next iterations read from it. */
static void lopa_set_last(struct lopa *s, int w, int update) {
    const size_t V = (size_t)s->c.V;
    memcpy(s->last, s->logits + (size_t)s->rowmap[s->off[w] + update - 1] * V, sizeof(float) * V);
    lp_d2f_propose(&s->c, s->last, s->scratch, &s->last_prop);
}

/* Bring branch b's fed rows into the engine's scratch (feed it once more, without
 * logits, when the last call of the iteration held other branches). */
static enum lopad_status rows_in_scratch(struct lp_decoder *d, struct branch_feed *f, int b,
                                         int *last_j0, int *last_j1) {
    if (b >= *last_j0 && b < *last_j1) return LOPAD_OK;
    enum lopad_status st = lp_lopa_feed_group(d, f, b, b + 1, false, false);
    *last_j0 = b;
    *last_j1 = b + 1;
    return st;
}

/* Commit branch b's first n fed rows to the cache at cache_len. */
static enum lopad_status commit_rows(struct lopa *s, struct branch_feed *f, int b, int n,
                                     int *last_j0, int *last_j1) {
    struct lp_decoder *d = s->d;
    enum lopad_status st = rows_in_scratch(d, f, b, last_j0, last_j1);
    if (st != LOPAD_OK) return st;
    return d->eng.kv_commit(d->eng.ud, s->off[b] - s->off[*last_j0], n, s->cache_len);
}

/* Branch parallelism, D2F: after the confidences, the winner's rank sends its
 * proposals at its masked window positions, the proposal of its last logit (Dream
 * family, when the iteration caches rows) and, where another rank needs them (full
 * window attention, or a rank without a share), the K/V of the cached span, in one
 * message; each rank then commits them. With block-causal attention and a share on
 * every rank, the cached span's K/V are the same in every branch (the span precedes
 * every branch's differences, and no block sees a later one): each rank commits its
 * own. */
static enum lopad_status lopa_dist_winner(struct lopa *s, struct branch_feed *f, int w, int update,
                                          int nq, int *last_j0, int *last_j1) {
    struct lp_decoder *d = s->d;
    struct lopa_dist *ds = &s->cm.ds;
    const struct lp_d2f_cfg *c = &s->c;
    const int owner = lp_dist_owner(s->nbr, ds->R, w);
    const bool me = owner == ds->rank, with_last = update && c->shift;
    const bool with_kv = update && (!c->block_causal || s->nbr < ds->R);
    int i0, i1;
    lp_lopa_prop_range(s->qb, nq, w, w + 1, &i0, &i1);
    const size_t P = sizeof(struct lp_d2f_prop), np = (size_t)(i1 - i0) * P;
    const size_t nl = with_last ? P : 0;
    const size_t nkv = with_kv ? d->eng.kv_rows_bytes(d->eng.ud, update) : 0;
    unsigned char *m = lp_lopa_dist_msg(ds, np + nl + nkv);
    if (!m) return LOPAD_ERR_NOMEM;
    enum lopad_status st = LOPAD_OK;
    if (me) {
        for (int i = i0; i < i1; i++)
            memcpy(m + (size_t)(i - i0) * P, &s->props[(size_t)w * c->L + s->qq[i]], P);
        if (with_last) {
            lopa_set_last(s, w, update);
            memcpy(m + np, &s->last_prop, P);
        }
        if (update) st = rows_in_scratch(d, f, w, last_j0, last_j1);
        if (st == LOPAD_OK && with_kv)
            st = d->eng.kv_export(d->eng.ud, s->off[w] - s->off[*last_j0], update, m + np + nl);
    }
    /* the owner sends even after an error, so that no rank waits for it */
    enum lopad_status sb = lp_dist_bcast(ds->g, m, np + nl + nkv, owner, "the winner's message");
    if (st != LOPAD_OK || sb != LOPAD_OK) return st != LOPAD_OK ? st : sb;
    if (me) return update ? commit_rows(s, f, w, update, last_j0, last_j1) : LOPAD_OK;
    for (int i = i0; i < i1; i++)
        memcpy(&s->props[(size_t)w * c->L + s->qq[i]], m + (size_t)(i - i0) * P, P);
    if (with_last) memcpy(&s->last_prop, m + np, P);
    if (!update) return LOPAD_OK;
    if (with_kv) return d->eng.kv_import(d->eng.ud, m + np + nl, update, s->cache_len);
    return commit_rows(s, f, ds->j0, update, last_j0, last_j1);
}

struct fill_ctx {
    struct lopa *s;
    int j;
};

static const struct lp_d2f_prop *lopa_prop(void *ud, int q) {
    struct fill_ctx *f = ud;
    return &f->s->props[(size_t)f->j * f->s->c.L + q];
}

static void lopa_on_fill(void *ud, int q, int32_t tok) {
    struct fill_ctx *f = ud;
    lp_dec_commit(f->s->d, q, tok);
}

/* ---------------------------------------------------------------- step */

static void adopt(struct lopa *s, const struct lp_d2f_branch *b) {
    /* d->canvas is the anchor: a lookahead branch adds exactly its token */
    if (b->la_pos >= 0 && s->d->canvas[b->la_pos] == s->c.mask_id)
        lp_dec_commit(s->d, b->la_pos, b->la_tok);
}

/* An iteration on the fused scores (pmax confidence): the proposals with the bounds of
 * their MASK-free pmax (lp_d2f_prop_bounds; from the stored last logit: exact), then
 * whether every decision holds over them: the winner's mean range above every other
 * branch's, the winner's fill (lp_d2f_fill_clear), and the lookahead candidates'
 * order (each of the K best above all the later ones). True with the winner in *w;
 * false: the iteration needs its rows' logits. */
static void lopa_prop_bounds(const void *ud, int i, double *lo, double *hi) {
    const struct lopa *s = ud;
    const size_t id = (size_t)s->qb[i] * s->c.L + s->qq[i];
    *lo = s->qlo[id];
    *hi = s->qhi[id];
}

static bool lopa_scores(struct lopa *s, int nq, int spe, int *w_out) {
    const struct lp_d2f_cfg *c = &s->c;
    const int L = c->L;
    for (int i = 0; i < nq; i++) {
        int j = s->qb[i], q = s->qq[i], o = lopa_pred_out(s, j, q);
        size_t id = (size_t)j * L + q;
        if (o < 0) { /* the stored last logit */
            lopa_propose_task(s, i, 0);
            s->qlo[id] = s->qhi[id] = s->props[id].pmax;
        } else if (!lp_d2f_prop_bounds(c, &s->sc[o], &s->props[id], &s->qlo[id], &s->qhi[id])) {
            return false;
        }
    }
    /* f. the winner: its mean range above every other branch's */
    int w;
    if (!lp_lopa_winner_clear(s->nbr, s->qb, nq, lopa_prop_bounds, s, &w)) return false;
    /* g. the winner's fill */
    const struct lp_d2f_branch *win = &s->br[w];
    const struct lp_d2f_prop *props = s->props + (size_t)w * L;
    const double *wlo = s->qlo + (size_t)w * L, *whi = s->qhi + (size_t)w * L;
    if (!lp_d2f_fill_clear(win, c, props, wlo, whi, s->filled)) return false;
    /* i. the lookahead candidates left masked, in the order of their conf (= lower
     * bound): each of the first K above the upper bound of every later one */
    int nc = 0;
    for (int i = 1; i < win->n_blk; i++) {
        if (win->blk[i].state != LP_BLK_ACTIVE) continue;
        for (int q = LP_MAX(win->blk[i].start, spe); q < win->blk[i].end; q++)
            if (win->x[q] == c->mask_id && !s->filled[q]) {
                s->cpos[nc] = q;
                s->cconf[nc++] = props[q].conf;
            }
    }
    int k = LP_MIN(s->cm.K, nc);
    if (k > 0) {
        lp_select_topk(s->cconf, s->cpos, nc, nc, s->csel, s->cscr);
        double m = -INFINITY;
        for (int t = nc - 1; t >= 0; t--) {
            s->chi[t] = m; /* the largest upper bound after rank t */
            m = fmax(m, whi[s->cpos[s->csel[t]]]);
        }
        for (int t = 0; t < k; t++)
            if (!(wlo[s->cpos[s->csel[t]]] > s->chi[t])) return false;
    }
    *w_out = w;
    return true;
}

/* proposal i's ranking confidence (lp_lopa_winner) */
static double lopa_prop_conf(const void *ud, int i) {
    const struct lopa *s = ud;
    return s->props[(size_t)s->qb[i] * s->d->L + s->qq[i]].conf;
}

static enum lopad_status lopa_step(struct lp_decoder *d) {
    struct lopa *s = d->priv;
    const struct lp_d2f_cfg *c = &s->c;
    const int L = c->L;
    s->cm.ev_nbr = 0;
    s->cm.ev_winner = -1;
    s->cm.ev_pos = -1;
    if (++s->iters > 4 * (d->G + c->nb_max) + 16)
        return lp_error(LOPAD_ERR_ARG, "decoder d2f --lopa: no progress after %d iterations",
                        s->iters);
    /* a. per-branch add / activate; the first finished branch ends decoding */
    int fin = -1;
    for (int j = 0; j < s->nbr; j++)
        if (lp_d2f_prepare(&s->br[j], c) && fin < 0) fin = j;
    if (fin >= 0) {
        adopt(s, &s->br[fin]);
        d->done = true;
        return LOPAD_OK;
    }
    /* b. shared prefix, cache span, window start */
    int spe = INT_MAX;
    for (int j = 0; j < s->nbr; j++) {
        const struct lp_d2f_branch *b = &s->br[j];
        int e = 0;
        for (int i = 0; i < b->n_blk; i++) {
            if (b->blk[i].state == LP_BLK_ACTIVE || b->blk[i].masks != 0) break;
            e = b->blk[i].end;
        }
        spe = LP_MIN(spe, e);
    }
    struct lp_d2f_branch *anchor = &s->br[s->nbr - 1];
    int tc0 = -1, tc1 = -1;
    for (int i = 0; i < anchor->n_blk; i++)
        if (anchor->blk[i].state == LP_BLK_TO_CACHE && anchor->blk[i].end <= spe) {
            if (tc0 < 0) tc0 = i;
            tc1 = i;
        }
    const int update = tc0 >= 0 ? anchor->blk[tc1].end - anchor->blk[tc0].start : 0;
    const int in_start = s->in_start = update ? anchor->blk[tc0].start : spe;
    LP_ASSERT(in_start == s->cache_len);

    /* d. the batch: branch j = sequence j */
    int n = 0, n_out = 0, nq = 0;
    for (int j = 0; j < s->nbr; j++) {
        const struct lp_d2f_branch *b = &s->br[j];
        const int end = lp_d2f_len(b);
        LP_ASSERT(end > in_start);
        s->off[j] = n;
        s->len[j] = end - in_start;
        s->out0[j] = n_out;
        for (int p = in_start; p < end; p++, n++) {
            s->tok[n] = b->x[p];
            s->pos[n] = p;
            s->seq[n] = j;
            s->blkid[n] = lp_d2f_block_of(c, p);
            s->rowmap[n] = -1;
        }
        if (update && c->shift) {
            s->rowmap[s->off[j] + update - 1] = n_out;
            s->rows[n_out++] = s->off[j] + update - 1;
        }
        for (int q = spe; q < end; q++) {
            if (b->x[q] != c->mask_id) continue;
            s->qb[nq] = j;
            s->qq[nq++] = q;
            int r = c->shift ? q - 1 - in_start : q - in_start;
            if (r >= 0 && s->rowmap[s->off[j] + r] < 0) {
                s->rowmap[s->off[j] + r] = n_out;
                s->rows[n_out++] = s->off[j] + r;
            }
        }
    }
    s->out0[s->nbr] = n_out;
    s->n_fed = n;
    if ((size_t)n_out > s->cap_out) {
        size_t cap = LP_MAX((size_t)n_out, 2 * s->cap_out);
        float *nl = lp_realloc(s->logits, sizeof(float) * cap * (size_t)c->V, "lopa logits");
        if (!nl) return LOPAD_ERR_NOMEM;
        s->logits = nl;
        s->cap_out = cap;
    }
    /* one batched call, or groups of whole branches that fit the engine; the fused head
     * in one call, unless the stored last logit is renewed (Dream family) */
    int last_j0, last_j1;
    struct branch_feed feed = lopa_feed(s);
    struct lopa_dist *ds = &s->cm.ds;
    const bool spread = lp_lopa_dist_share(ds, s->nbr); /* branches over the ranks */
    bool use_sc = s->fused && !spread && !s->cm.serial && n <= d->eng.n_batch_max && n_out > 0 &&
                  !(update && c->shift) && lp_dec_scores_worth(d);
    if (use_sc) feed.scores = s->sc;
    enum lopad_status st =
        lp_lopa_feed_share(d, &feed, s->nbr, ds, s->cm.serial, &last_j0, &last_j1);
    if (st != LOPAD_OK) return st;
    feed.scores = NULL;

    /* e. proposals and branch confidences (on the scores when every decision of the
     * iteration is clear on them); across ranks, each of its share */
    int w = 0;
    bool on_scores = use_sc && lopa_scores(s, nq, spe, &w);
    if (use_sc && !on_scores && (st = lp_dec_last_logits(d, s->rows, n_out, s->logits))) return st;
    if (!on_scores) {
        int i0, i1;
        lp_lopa_prop_range(s->qb, nq, ds->j0, ds->j1, &i0, &i1);
        s->qi0 = i0;
        lp_dec_parallel(d, i1 - i0, lopa_propose_task, s);
        s->qi0 = 0;
        /* f. the winner: the highest C_j, ties to the earlier branch */
        st = lp_lopa_winner(ds, s->nbr, spread, s->qb, i0, i1, lopa_prop_conf, s, &w);
        if (st != LOPAD_OK) return st;
    }
    struct lp_d2f_branch *win = &s->br[w];

    /* g. commit the winner: token, K/V of the cached span, last logit; then its fill */
    if (spread) {
        st = lopa_dist_winner(s, &feed, w, update, nq, &last_j0, &last_j1);
    } else if (update) {
        st = commit_rows(s, &feed, w, update, &last_j0, &last_j1);
        if (c->shift) lopa_set_last(s, w, update);
    }
    if (st != LOPAD_OK) return st;
    if (update) {
        s->cache_len += update;
        for (int i = tc0; i <= tc1; i++)
            win->blk[i].state = LP_BLK_IN_CACHE;
    }
    s->cm.ev_nbr = s->nbr;
    s->cm.ev_winner = w;
    s->cm.ev_pos = win->la_pos;
    s->cm.hist[w == s->nbr - 1 ? s->cm.K : w]++;
    adopt(s, win);
    struct fill_ctx fc = {s, w};
    lp_d2f_fill(win, c, lopa_prop, &fc, lopa_on_fill);

    /* h. blocks the anchor completed */
    lp_d2f_recount(win, c);
    for (int i = 0; i < win->n_blk; i++)
        s->completed[i] = win->blk[i].state == LP_BLK_ACTIVE && win->blk[i].masks == 0;

    /* i. lookahead candidates from the winner's predictions */
    int nc = 0;
    for (int i = 1; i < win->n_blk; i++) {
        if (win->blk[i].state != LP_BLK_ACTIVE) continue;
        for (int q = LP_MAX(win->blk[i].start, spe); q < win->blk[i].end; q++)
            if (win->x[q] == c->mask_id) {
                s->cpos[nc] = q;
                s->cconf[nc++] = s->props[(size_t)w * L + q].conf;
            }
    }
    int k = LP_MIN(s->cm.K, nc);
    lp_select_topk(s->cconf, s->cpos, nc, k, s->csel, s->cscr);
    for (int i = 0; i <= k; i++) {
        struct lp_d2f_branch *b = &s->nx[i];
        lp_d2f_branch_copy(b, win, c);
        b->la_pos = -1;
        b->la_tok = -1;
        if (i < k) {
            int q = s->cpos[s->csel[i]];
            int32_t t = s->props[(size_t)w * L + q].tok;
            b->x[q] = t;
            b->la_pos = q;
            b->la_tok = t;
            if (lp_d2f_is_end(c, t)) b->eos = true;
        }
        lp_d2f_recount(b, c);
        lp_d2f_deactivate(b, s->completed);
    }
    struct lp_d2f_branch *tmp = s->br;
    s->br = s->nx;
    s->nx = tmp;
    s->nbr = k + 1;
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_lopa_ops = {
    .name = "d2f",
    .check = lopa_check,
    .init = lopa_init,
    .step = lopa_step,
    .release = lopa_release,
    .fill_event = lp_lopa_fill_event,
    .finish = lp_lopa_finish,
};
