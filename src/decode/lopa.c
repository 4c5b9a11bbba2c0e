/*
 * lopa.c - LoPA lookahead parallel decoding on top of D2F (ALGORITHMS.md 5;
 * research/lopa_d2f.md 3-4): every iteration verifies K lookahead branches and
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
#include "d2f_impl.h"
#include "decode/dpad.h"
#include "dist/dist.h"

/* Branch parallelism (docs/DISTRIBUTED.md): with the engine's communicator, an
 * iteration of more than one branch spreads them over the R ranks in contiguous shares
 * (lp_dist_share_begin); each rank runs its share as it would run them all, the ranks
 * all-gather the branch confidences C_j and the winner's rank sends its proposals
 * (and, where needed, the committed K/V rows and the last logit's proposal) in one
 * message; every rank then decides alike. One branch runs on every rank (no message). */
struct lopa_dist {
    struct lp_dist *g; /* NULL = one process */
    int R, rank;
    int j0, j1;         /* this iteration's share */
    size_t *each;       /* [R] bytes per rank of the confidence exchange */
    double conf[65];    /* C_j of every branch */
    unsigned char *msg; /* the winner's message */
    size_t cap_msg;
};

/* What the reporting hooks read: the first member of both decoders' states. */
struct lopa_common {
    int K;
    int *hist; /* [K+1] wins: lookahead 0..K-1, the anchor K */
    int ev_nbr, ev_winner, ev_pos;
    bool serial;
    struct lopa_dist ds;
};
static enum lopad_status dist_start(struct lopa_common *cm, const struct lp_decoder *d,
                                    bool moves_kv);
static void dist_free(struct lopa_dist *ds);

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

/* ------------------------------------------------------------- names */

static const char *const window_names[] = {"full", "block-causal"};

const char *lp_window_attn_name(enum lp_window_attn a) {
    return (unsigned)a <= LP_WINDOW_BLOCK_CAUSAL ? window_names[a] : "?";
}

enum lopad_status lp_window_attn_parse(const char *s, enum lp_window_attn *out) {
    for (int k = 0; k < 2; k++)
        if (s && !strcmp(s, window_names[k])) {
            *out = (enum lp_window_attn)k;
            return LOPAD_OK;
        }
    return lp_error(LOPAD_ERR_ARG, "unknown window attention '%s' (choices: full, block-causal)",
                    s ? s : "");
}

/* ---------------------------------------------------------- lifecycle */

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
    dist_free(&s->cm.ds);
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
    return dist_start(&s->cm, d, true);
}

static bool is_lopa(const struct lp_decoder *d) {
    return d && d->priv && (d->ops == &lp_lopa_ops || d->ops == &lp_lopa_fast_ops);
}

void lp_lopa_set_serial(struct lp_decoder *d, bool serial) {
    if (is_lopa(d)) ((struct lopa_common *)d->priv)->serial = serial;
}

/* -------------------------------------------------------------- forward */

/* One forward of a group of branches. Only the first group of an iteration counts
 * as an NFE (count); the others (a batch split because the engine's is too small)
 * add time and sequence evaluations but not forwards. */
static enum lopad_status group_forward(struct lp_decoder *d, const struct lopad_batch *b,
                                       bool count) {
    if (count) return lp_dec_forward_batch(d, b);
    double t0 = lp_time();
    enum lopad_status st = d->eng.forward(d->eng.ud, b);
    d->t_forward += lp_time() - t0;
    if (st == LOPAD_OK) d->n_seq_evals += b->n_seq;
    return st == LOPAD_OK && b->logits ? lp_dec_check_logits(d, b->logits, b->n_out) : st;
}

/* The fed rows of one iteration's branches, concatenated (both LoPA decoders):
 * branch j feeds rows [off[j], off[j] + len[j]) as sequence j and asks for out rows
 * [out0[j], out0[j+1]), whose logits go to logits + out0[j] * V. */
struct branch_feed {
    int32_t *tok, *pos, *seq, *rows;
    const int32_t *block; /* block ids, NULL = bidirectional */
    const int *off, *len, *out0;
    float *logits;
    struct lp_row_scores *scores; /* non-NULL: one call through the fused head (scores) */
    int V;
    struct lopad_batch cache; /* n_cache, cache_skip_begin / end of every call */
};

/* Engine call over branches [j0, j1) of f (logits only when with_logits); the first
 * call of an iteration counts the NFE. */
static enum lopad_status feed_group(struct lp_decoder *d, const struct branch_feed *f, int j0,
                                    int j1, bool with_logits, bool count) {
    const int r0 = f->off[j0], n = f->off[j1 - 1] + f->len[j1 - 1] - r0;
    const int o0 = f->out0[j0], no = with_logits ? f->out0[j1] - o0 : 0;
    for (int i = r0; i < r0 + n; i++)
        f->seq[i] -= j0; /* sequence ids from 0 inside the call */
    for (int o = o0; o < o0 + no; o++)
        f->rows[o] -= r0;
    struct lopad_batch b = {
        .n_tokens = n,
        .tokens = f->tok + r0,
        .pos = f->pos + r0,
        .n_seq = j1 - j0,
        .seq = f->seq + r0,
        .block = f->block ? f->block + r0 : NULL,
        .n_cache = f->cache.n_cache,
        .cache_skip_begin = f->cache.cache_skip_begin,
        .cache_skip_end = f->cache.cache_skip_end,
        .n_out = no,
        .out_rows = f->rows + o0,
        .logits = f->logits + (size_t)o0 * f->V,
    };
    enum lopad_status st = f->scores && count ? lp_dec_forward_scores(d, &b, f->scores + o0)
                                              : group_forward(d, &b, count);
    for (int i = r0; i < r0 + n; i++)
        f->seq[i] += j0;
    for (int o = o0; o < o0 + no; o++)
        f->rows[o] += r0;
    return st;
}

/* The iteration's forward over branches [jb, je) (n fed rows in all): one batched
 * call, or groups of whole branches that fit the engine (one branch per call in
 * serial mode), still one NFE. *last_j0 / *last_j1 (may be NULL): the branches of
 * the last call, whose rows are in the engine's scratch. */
static enum lopad_status feed_branches(struct lp_decoder *d, const struct branch_feed *f, int jb,
                                       int je, int n, bool serial, int *last_j0, int *last_j1) {
    enum lopad_status st = LOPAD_OK;
    int l0 = jb, l1 = je;
    if (!serial && n <= d->eng.n_batch_max) {
        st = feed_group(d, f, jb, je, true, true);
    } else {
        for (int j0 = jb; j0 < je && st == LOPAD_OK;) {
            int j1 = j0 + 1, tot = f->len[j0];
            while (!serial && j1 < je && tot + f->len[j1] <= d->eng.n_batch_max)
                tot += f->len[j1++];
            st = feed_group(d, f, j0, j1, true, j0 == jb);
            l0 = j0;
            l1 = j1;
            j0 = j1;
        }
    }
    if (last_j0) *last_j0 = l0;
    if (last_j1) *last_j1 = l1;
    return st;
}

/* ------------------------------------------------------ branch parallelism */

/* This iteration's share of nbr branches: all of them in one process and for a single
 * branch (every rank runs it: no message); true when the iteration is spread. */
static bool dist_share(struct lopa_dist *ds, int nbr) {
    if (!ds->g || nbr <= 1) {
        ds->j0 = 0;
        ds->j1 = nbr;
        return false;
    }
    ds->j0 = lp_dist_share_begin(nbr, ds->R, ds->rank);
    ds->j1 = lp_dist_share_begin(nbr, ds->R, ds->rank + 1);
    return true;
}

/* The iteration's forward over this rank's share (every branch in one process). A rank
 * with no share still counts the NFE, and every rank counts every branch's sequence,
 * so that NFE and n_seq_evals read as in one process. */
static enum lopad_status feed_share(struct lp_decoder *d, const struct branch_feed *f, int nbr,
                                    const struct lopa_dist *ds, bool serial, int *last_j0,
                                    int *last_j1) {
    const int j0 = ds->j0, j1 = ds->j1;
    if (j1 == j0) {
        d->nfe++;
        d->n_seq_evals += nbr;
        if (last_j0) *last_j0 = *last_j1 = j0;
        return LOPAD_OK;
    }
    const int n = f->off[j1 - 1] + f->len[j1 - 1] - f->off[j0];
    enum lopad_status st = feed_branches(d, f, j0, j1, n, serial, last_j0, last_j1);
    if (st == LOPAD_OK) d->n_seq_evals += nbr - (j1 - j0);
    return st;
}

/* Proposals [*i0, *i1) of branches [j0, j1) (qb[nq] lists them in branch order). */
static void prop_range(const int32_t *qb, int nq, int j0, int j1, int *i0, int *i1) {
    int i = 0;
    while (i < nq && qb[i] < j0)
        i++;
    *i0 = i;
    while (i < nq && qb[i] < j1)
        i++;
    *i1 = i;
}

/* Every branch's C_j into ds->conf, from each rank's share (mine = C_j of [j0, j1)). */
static enum lopad_status dist_confs(struct lopa_dist *ds, int nbr, const double *mine) {
    for (int r = 0; r < ds->R; r++)
        ds->each[r] = sizeof(double) * (size_t)(lp_dist_share_begin(nbr, ds->R, r + 1) -
                                                lp_dist_share_begin(nbr, ds->R, r));
    return lp_dist_allgather(ds->g, mine, ds->each, ds->conf, "the branch confidences");
}

static unsigned char *dist_msg(struct lopa_dist *ds, size_t n) {
    if (n > ds->cap_msg) {
        unsigned char *m = lp_realloc(ds->msg, n, "lopa winner message");
        if (!m) return NULL;
        ds->msg = m;
        ds->cap_msg = n;
    }
    return ds->msg ? ds->msg : (ds->msg = lp_malloc(1, "lopa winner message"));
}

/* What must be the same on every rank for the ranks to decode as one process: the
 * decoding options, the canvas length and the prompt. */
static uint64_t request_hash(const struct lp_decoder *d) {
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

/* Join the engine's communicator (if any): the ranks agree on the model, the request
 * and the prompt before anything else is exchanged. */
static enum lopad_status dist_start(struct lopa_common *cm, const struct lp_decoder *d,
                                    bool moves_kv) {
    struct lopa_dist *ds = &cm->ds;
    ds->g = d->eng.dist;
    if (!ds->g) return LOPAD_OK;
    ds->R = lp_dist_size(ds->g);
    ds->rank = lp_dist_rank(ds->g);
    if (moves_kv && (!d->eng.kv_export || !d->eng.kv_import || !d->eng.kv_rows_bytes))
        return lp_error(LOPAD_ERR_ARG, "--lopa across ranks: the engine cannot move K/V rows");
    ds->each = lp_calloc((size_t)ds->R, sizeof *ds->each, "lopa rank counts");
    if (!ds->each) return LOPAD_ERR_NOMEM;
    const uint64_t v[3] = {d->eng.model_hash, request_hash(d),
                           lp_dist_hash(LP_DIST_HASH0, d->prompt, sizeof(int32_t) * (size_t)d->P)};
    static const char *const names[3] = {"model (hyper-parameters, tensor directory, weights)",
                                         "decoding request (options, lengths)", "prompt"};
    return lp_dist_agree(ds->g, v, 3, names);
}

static void dist_free(struct lopa_dist *ds) {
    lp_free(ds->each);
    lp_free(ds->msg);
    ds->each = NULL;
    ds->msg = NULL;
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
    enum lopad_status st = feed_group(d, f, b, b + 1, false, false);
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
    prop_range(s->qb, nq, w, w + 1, &i0, &i1);
    const size_t P = sizeof(struct lp_d2f_prop), np = (size_t)(i1 - i0) * P;
    const size_t nl = with_last ? P : 0;
    const size_t nkv = with_kv ? d->eng.kv_rows_bytes(d->eng.ud, update) : 0;
    unsigned char *m = dist_msg(ds, np + nl + nkv);
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
    /* f. the winner: its mean range above every other branch's (ties: in doubt) */
    double lo[65], hi[65];
    int w = 0;
    for (int j = 0, i = 0; j < s->nbr; j++) {
        double sl = 0, sh = 0;
        int cnt = 0;
        for (; i < nq && s->qb[i] == j; i++, cnt++) {
            sl += s->qlo[(size_t)j * L + s->qq[i]];
            sh += s->qhi[(size_t)j * L + s->qq[i]];
        }
        lo[j] = cnt ? sl / cnt : 1.0;
        hi[j] = cnt ? sh / cnt : 1.0;
        if (lo[j] > lo[w]) w = j;
    }
    for (int j = 0; j < s->nbr; j++)
        if (j != w && !(lo[w] > hi[j])) return false;
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
    const bool spread = dist_share(ds, s->nbr); /* branches over the ranks */
    bool use_sc = s->fused && !spread && !s->cm.serial && n <= d->eng.n_batch_max && n_out > 0 &&
                  !(update && c->shift) && lp_dec_scores_worth(d);
    if (use_sc) feed.scores = s->sc;
    enum lopad_status st = feed_share(d, &feed, s->nbr, ds, s->cm.serial, &last_j0, &last_j1);
    if (st != LOPAD_OK) return st;
    feed.scores = NULL;

    /* e. proposals and branch confidences (on the scores when every decision of the
     * iteration is clear on them); across ranks, each of its share */
    int w = 0;
    bool on_scores = use_sc && lopa_scores(s, nq, spe, &w);
    if (use_sc && !on_scores && (st = lp_dec_last_logits(d, s->rows, n_out, s->logits))) return st;
    if (!on_scores) {
        int i0, i1;
        prop_range(s->qb, nq, ds->j0, ds->j1, &i0, &i1);
        s->qi0 = i0;
        lp_dec_parallel(d, i1 - i0, lopa_propose_task, s);
        s->qi0 = 0;
        for (int j = ds->j0, i = i0; j < ds->j1; j++) {
            double sum = 0;
            int cnt = 0;
            for (; i < i1 && s->qb[i] == j; i++, cnt++)
                sum += s->props[(size_t)j * L + s->qq[i]].conf;
            ds->conf[j] = cnt ? sum / cnt : 1.0;
        }
        if (spread && (st = dist_confs(ds, s->nbr, ds->conf + ds->j0))) return st;
        double best = -INFINITY;
        for (int j = 0; j < s->nbr; j++)
            if (ds->conf[j] > best) { /* f. ties: the earlier branch */
                best = ds->conf[j];
                w = j;
            }
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

/* ===================================================== LoPA on Fast-dLLM
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
    dist_free(&s->cm.ds);
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
    return dist_start(&s->cm, d, false);
}

/* fast.c's greedy proposal from one prediction row (buf: [2V] scratch, first V = row) */
static void lfast_propose_row(const struct lfast *s, float *lg, float *probs, int32_t *tok,
                              double *pmax, double *conf) {
    const struct lp_decoder *d = s->d;
    const int V = d->V, mask = d->mask_id;
    struct lp_pstats ps;
    if (!s->dream) {
        const int32_t eos = d->eng.hp.eos_id;
        if (s->eos_inf && eos >= 0 && eos < V) lg[eos] = -INFINITY;
        float keep = lg[mask];
        lg[mask] = -INFINITY;
        int x0 = lp_argmax_f32(lg, V);
        lg[mask] = keep;
        *tok = x0;
        *pmax = lp_softmax_prob_f64(lg, V, x0);
        if (s->conf == LP_CONF_PMAX) {
            *conf = *pmax;
            return;
        }
        lp_softmax_f32(probs, lg, V);
        lp_prob_stats(probs, V, &ps);
        *conf = s->conf == LP_CONF_MARGIN ? ps.margin : ps.negent;
        return;
    }
    lp_softmax_f32(probs, lg, V);
    lp_prob_stats(probs, V, &ps);
    int t = ps.argmax;
    if (t == mask) { /* the best other token, ties to the lower index */
        t = -1;
        for (int v = 0; v < V; v++)
            if (v != mask && (t < 0 || probs[v] > probs[t])) t = v;
        if (t < 0) t = 0;
    }
    *tok = t;
    *pmax = probs[t];
    *conf = s->conf == LP_CONF_MARGIN   ? ps.margin
            : s->conf == LP_CONF_NEGENT ? ps.negent
                                        : probs[t];
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
    s->b++;
    const int32_t eos = d->eng.hp.eos_id;
    bool has_eos = false;
    for (int j = s->sb; j < s->eb && eos >= 0; j++)
        has_eos |= d->canvas[j] == eos;
    if (s->early_stop && has_eos && s->b < s->nb) {
        for (int j = s->eb; j < d->L; j++)
            if (d->canvas[j] == d->mask_id) d->canvas[j] = eos;
        s->b = s->nb;
    }
    if (s->b >= s->nb) d->done = true;
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
    /* the winner: its mean range above every other branch's (ties: in doubt) */
    double lo[65], hi[65];
    int w = 0;
    for (int j = 0, i = 0; j < s->nbr; j++) {
        double sl = 0, sh = 0;
        int cnt = 0;
        for (; i < nq && s->qb[i] == j; i++, cnt++) {
            size_t k = (size_t)j * B + (size_t)(s->qq[i] - s->sb);
            sl += s->clo[k];
            sh += s->chi[k];
        }
        lo[j] = cnt ? sl / cnt : 1.0;
        hi[j] = cnt ? sh / cnt : 1.0;
        if (lo[j] > lo[w]) w = j;
    }
    for (int j = 0; j < s->nbr; j++)
        if (j != w && !(lo[w] > hi[j])) return false;
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
    unsigned char *m = dist_msg(ds, (size_t)nm * E);
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
        spread = dist_share(ds, s->nbr);
        use_sc = s->fused && !spread && !want_last && n_out > 0 && !s->cm.serial &&
                 n <= d->eng.n_batch_max && lp_dec_scores_worth(d);
        struct branch_feed feed = lfast_feed(s, refresh);
        feed.scores = use_sc ? s->sc : NULL;
        st = feed_share(d, &feed, s->nbr, ds, s->cm.serial, NULL, NULL);
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
        prop_range(s->qb, nq, ds->j0, ds->j1, &i0, &i1);
        s->qi0 = i0;
        lp_dec_parallel(d, i1 - i0, lfast_propose_task, s);
        s->qi0 = 0;
        for (int j = ds->j0, i = i0; j < ds->j1; j++) {
            double sum = 0;
            int cnt = 0;
            for (; i < i1 && s->qb[i] == j; i++, cnt++)
                sum += s->pconf[(size_t)j * B + (s->qq[i] - s->sb)];
            ds->conf[j] = cnt ? sum / cnt : 1.0;
        }
        if (spread && (st = dist_confs(ds, s->nbr, ds->conf + ds->j0))) return st;
        double best = -INFINITY;
        for (int j = 0; j < s->nbr; j++)
            if (ds->conf[j] > best) {
                best = ds->conf[j];
                w = j;
            }
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
};

/* ------------------------------------------------------------ reporting */

void lp_lopa_fill_event(const struct lp_decoder *d, struct lp_step_event *ev) {
    ev->n_branches = 0;
    ev->winner = -1;
    ev->winner_pos = -1;
    if (!is_lopa(d)) return;
    const struct lopa_common *s = d->priv;
    ev->n_branches = s->ev_nbr;
    ev->winner = s->ev_winner;
    ev->winner_pos = s->ev_pos;
}

enum lopad_status lp_lopa_finish(const struct lp_decoder *d, struct lp_decode_result *res) {
    if (!is_lopa(d)) return LOPAD_OK;
    const struct lopa_common *s = d->priv;
    res->winner_hist = lp_malloc(sizeof(int) * (size_t)(s->K + 1), "winner histogram");
    if (!res->winner_hist) return LOPAD_ERR_NOMEM;
    memcpy(res->winner_hist, s->hist, sizeof(int) * (size_t)(s->K + 1));
    res->n_winner_hist = s->K + 1;
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_lopa_ops = {
    .name = "d2f",
    .check = lopa_check,
    .init = lopa_init,
    .step = lopa_step,
    .release = lopa_release,
};
