/*
 * lopa_impl.h - what LoPA's two decoders share (lopa.c): the branches of one
 * iteration fed as one batched forward (split into calls when the engine's batch is
 * smaller, still one NFE), branch parallelism across ranks (docs/DISTRIBUTED.md),
 * and the state both decoders' reporting reads. LoPA on D2F is lopa_d2f.c, LoPA on
 * Fast-dLLM lopa_fast.c.
 */
#ifndef LP_LOPA_IMPL_H
#define LP_LOPA_IMPL_H

#include "d2f_impl.h"
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

bool lp_lopa_is_lopa(const struct lp_decoder *d);
enum lopad_status lp_lopa_group_forward(struct lp_decoder *d, const struct lopad_batch *b,
                                        bool count);
enum lopad_status lp_lopa_feed_group(struct lp_decoder *d, const struct branch_feed *f, int j0,
                                     int j1, bool with_logits, bool count);
enum lopad_status lp_lopa_feed_branches(struct lp_decoder *d, const struct branch_feed *f, int jb,
                                        int je, int n, bool serial, int *last_j0, int *last_j1);
bool lp_lopa_dist_share(struct lopa_dist *ds, int nbr);
enum lopad_status lp_lopa_feed_share(struct lp_decoder *d, const struct branch_feed *f, int nbr,
                                     const struct lopa_dist *ds, bool serial, int *last_j0,
                                     int *last_j1);
void lp_lopa_prop_range(const int32_t *qb, int nq, int j0, int j1, int *i0, int *i1);
/* Both decoders' steps e-f: each branch of this rank's share gets C_j, the mean ranking
 * confidence of its proposals [i0, i1) (grouped by branch qb; 1.0 when it has none;
 * conf(ud, i) is proposal i's), all-gathered across ranks when spread; *w = the highest
 * C_j, ties to the earlier branch. */
enum lopad_status lp_lopa_winner(struct lopa_dist *ds, int nbr, bool spread, const int32_t *qb,
                                 int i0, int i1, double (*conf)(const void *ud, int i),
                                 const void *ud, int *w);
#define LP_LOPA_MAX_K 64 /* the option's range (src/gen/options.c) */

/* Steps e-f on the fused scores: each branch's mean of its proposals' confidence bounds
 * (bounds(ud, i, &lo, &hi) for proposal i < nq, grouped by branch qb; [1, 1] when it has
 * none); *w = the highest mean lower bound (ties to the earlier branch). True when that
 * winner holds over the bounds: its mean lower bound above every other branch's mean
 * upper bound (ties: in doubt). */
bool lp_lopa_winner_clear(int nbr, const int32_t *qb, int nq,
                          void (*bounds)(const void *ud, int i, double *lo, double *hi),
                          const void *ud, int *w);
enum lopad_status lp_lopa_dist_confs(struct lopa_dist *ds, int nbr, const double *mine);
unsigned char *lp_lopa_dist_msg(struct lopa_dist *ds, size_t n);
enum lopad_status lp_lopa_dist_start(struct lopa_common *cm, const struct lp_decoder *d,
                                     bool moves_kv);
void lp_lopa_dist_free(struct lopa_dist *ds);

#endif
