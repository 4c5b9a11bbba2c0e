/*
 * lopa.c - what LoPA's two decoders share (lopa_impl.h): the window-attention names,
 * feeding an iteration's branches as one batched forward, branch parallelism across
 * ranks, and the reporting hooks (step events, the winner histogram). The decoders:
 * lopa_d2f.c (LoPA on D2F, as published) and lopa_fast.c (LoPA on Fast-dLLM).
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decode/dpad.h"
#include "lopa_impl.h"

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

bool lp_lopa_is_lopa(const struct lp_decoder *d) {
    return d && d->priv && (d->ops == &lp_lopa_ops || d->ops == &lp_lopa_fast_ops);
}

void lp_lopa_set_serial(struct lp_decoder *d, bool serial) {
    if (lp_lopa_is_lopa(d)) ((struct lopa_common *)d->priv)->serial = serial;
}

/* -------------------------------------------------------------- forward */

/* One forward of a group of branches. Only the first group of an iteration counts
 * as an NFE (count); the others (a batch split because the engine's is too small)
 * add time and sequence evaluations but not forwards. */
enum lopad_status lp_lopa_group_forward(struct lp_decoder *d, const struct lopad_batch *b,
                                        bool count) {
    if (count) return lp_dec_forward_batch(d, b);
    double t0 = lp_time();
    enum lopad_status st = d->eng.forward(d->eng.ud, b);
    d->t_forward += lp_time() - t0;
    if (st == LOPAD_OK) d->n_seq_evals += b->n_seq;
    return st == LOPAD_OK && b->logits ? lp_dec_check_logits(d, b->logits, b->n_out) : st;
}

/* Engine call over branches [j0, j1) of f (logits only when with_logits); the first
 * call of an iteration counts the NFE. */
enum lopad_status lp_lopa_feed_group(struct lp_decoder *d, const struct branch_feed *f, int j0,
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
                                              : lp_lopa_group_forward(d, &b, count);
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
enum lopad_status lp_lopa_feed_branches(struct lp_decoder *d, const struct branch_feed *f, int jb,
                                        int je, int n, bool serial, int *last_j0, int *last_j1) {
    enum lopad_status st = LOPAD_OK;
    int l0 = jb, l1 = je;
    if (!serial && n <= d->eng.n_batch_max) {
        st = lp_lopa_feed_group(d, f, jb, je, true, true);
    } else {
        for (int j0 = jb; j0 < je && st == LOPAD_OK;) {
            int j1 = j0 + 1, tot = f->len[j0];
            while (!serial && j1 < je && tot + f->len[j1] <= d->eng.n_batch_max)
                tot += f->len[j1++];
            st = lp_lopa_feed_group(d, f, j0, j1, true, j0 == jb);
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
bool lp_lopa_dist_share(struct lopa_dist *ds, int nbr) {
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
enum lopad_status lp_lopa_feed_share(struct lp_decoder *d, const struct branch_feed *f, int nbr,
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
    enum lopad_status st = lp_lopa_feed_branches(d, f, j0, j1, n, serial, last_j0, last_j1);
    if (st == LOPAD_OK) d->n_seq_evals += nbr - (j1 - j0);
    return st;
}

/* Proposals [*i0, *i1) of branches [j0, j1) (qb[nq] lists them in branch order). */
enum lopad_status lp_lopa_winner(struct lopa_dist *ds, int nbr, bool spread, const int32_t *qb,
                                 int i0, int i1, double (*conf)(const void *ud, int i),
                                 const void *ud, int *w) {
    for (int j = ds->j0, i = i0; j < ds->j1; j++) {
        double sum = 0;
        int cnt = 0;
        for (; i < i1 && qb[i] == j; i++, cnt++)
            sum += conf(ud, i);
        ds->conf[j] = cnt ? sum / cnt : 1.0;
    }
    enum lopad_status st = LOPAD_OK;
    if (spread && (st = lp_lopa_dist_confs(ds, nbr, ds->conf + ds->j0))) return st;
    double best = -INFINITY;
    *w = 0;
    for (int j = 0; j < nbr; j++)
        if (ds->conf[j] > best) { /* ties: the earlier branch */
            best = ds->conf[j];
            *w = j;
        }
    return LOPAD_OK;
}

bool lp_lopa_winner_clear(int nbr, const int32_t *qb, int nq,
                          void (*bounds)(const void *ud, int i, double *lo, double *hi),
                          const void *ud, int *w) {
    double lo[LP_LOPA_MAX_K + 1], hi[LP_LOPA_MAX_K + 1];
    LP_ASSERT(nbr <= LP_LOPA_MAX_K + 1);
    *w = 0;
    for (int j = 0, i = 0; j < nbr; j++) {
        double sl = 0, sh = 0;
        int cnt = 0;
        for (; i < nq && qb[i] == j; i++, cnt++) {
            double l, h;
            bounds(ud, i, &l, &h);
            sl += l;
            sh += h;
        }
        lo[j] = cnt ? sl / cnt : 1.0;
        hi[j] = cnt ? sh / cnt : 1.0;
        if (lo[j] > lo[*w]) *w = j;
    }
    for (int j = 0; j < nbr; j++)
        if (j != *w && !(lo[*w] > hi[j])) return false;
    return true;
}

void lp_lopa_prop_range(const int32_t *qb, int nq, int j0, int j1, int *i0, int *i1) {
    int i = 0;
    while (i < nq && qb[i] < j0)
        i++;
    *i0 = i;
    while (i < nq && qb[i] < j1)
        i++;
    *i1 = i;
}

/* Every branch's C_j into ds->conf, from each rank's share (mine = C_j of [j0, j1)). */
enum lopad_status lp_lopa_dist_confs(struct lopa_dist *ds, int nbr, const double *mine) {
    for (int r = 0; r < ds->R; r++)
        ds->each[r] = sizeof(double) * (size_t)(lp_dist_share_begin(nbr, ds->R, r + 1) -
                                                lp_dist_share_begin(nbr, ds->R, r));
    return lp_dist_allgather(ds->g, mine, ds->each, ds->conf, "the branch confidences");
}

unsigned char *lp_lopa_dist_msg(struct lopa_dist *ds, size_t n) {
    if (n > ds->cap_msg) {
        unsigned char *m = lp_realloc(ds->msg, n, "lopa winner message");
        if (!m) return NULL;
        ds->msg = m;
        ds->cap_msg = n;
    }
    return ds->msg ? ds->msg : (ds->msg = lp_malloc(1, "lopa winner message"));
}

/* Join the engine's communicator (if any): the ranks agree on the model, the request
 * and the prompt before anything else is exchanged. */
enum lopad_status lp_lopa_dist_start(struct lopa_common *cm, const struct lp_decoder *d,
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
    const uint64_t v[3] = {d->eng.model_hash, lp_dec_request_hash(d),
                           lp_dist_hash(LP_DIST_HASH0, d->prompt, sizeof(int32_t) * (size_t)d->P)};
    static const char *const names[3] = {"model (hyper-parameters, tensor directory, weights)",
                                         "decoding request (options, lengths)", "prompt"};
    return lp_dist_agree(ds->g, v, 3, names);
}

void lp_lopa_dist_free(struct lopa_dist *ds) {
    lp_free(ds->each);
    lp_free(ds->msg);
    ds->each = NULL;
    ds->msg = NULL;
}

/* ------------------------------------------------ reporting (decoder hooks) */

void lp_lopa_fill_event(const struct lp_decoder *d, struct lp_step_event *ev) {
    const struct lopa_common *s = d->priv;
    ev->n_branches = s->ev_nbr;
    ev->winner = s->ev_winner;
    ev->winner_pos = s->ev_pos;
}

enum lopad_status lp_lopa_finish(const struct lp_decoder *d, struct lp_decode_result *res) {
    const struct lopa_common *s = d->priv;
    if (d->rq.decoder == LP_DEC_D2F) res->tpf = res->tpf_nonpad; /* LoPA's own metric */
    res->winner_hist = lp_malloc(sizeof(int) * (size_t)(s->K + 1), "winner histogram");
    if (!res->winner_hist) return LOPAD_ERR_NOMEM;
    memcpy(res->winner_hist, s->hist, sizeof(int) * (size_t)(s->K + 1));
    res->n_winner_hist = s->K + 1;
    return LOPAD_OK;
}
