/*
 * tensor_parallel.h - one forward computed by T ranks together (internal;
 * docs/DISTRIBUTED.md, "Tensor parallelism").
 *
 * Rank t of a group of T holds a shard of the model: the attention heads
 * [t nh/T, (t+1) nh/T) with their K/V heads, the FFN columns [t F/T, (t+1) F/T),
 * and the vocabulary rows [t V/T, (t+1) V/T) of the output head. Each layer's
 * attention output projection and FFN down projection then give partial sums,
 * added across the group (one all-reduce each); the output head's slices are
 * gathered (logits) or their softmax statistics combined (fused scores). Every
 * rank of the group ends a forward with the same bits, so the decoders above run
 * the same decisions everywhere without any message of their own.
 */
#ifndef LP_TENSOR_PARALLEL_H
#define LP_TENSOR_PARALLEL_H

#include "forward.h"

struct lp_dist;
struct lp_dist_dev;

struct lp_tp {
    int T, t;                  /* group size, this rank's place in it */
    struct lp_dist *group;     /* the T ranks of this forward */
    struct lp_dist *branches;  /* the ranks with the same t in the other groups (LoPA's
                                  branch parallelism), NULL when there is one group */
    struct lopad_model *shard; /* the slices; weights are views or owned copies */
    float *host;               /* host staging: all-reduce of a device buffer, head slices */
    size_t host_floats;
    float *gathered; /* host: every rank's head slice of one chunk of rows */
    size_t gathered_floats;
    struct lp_dist_dev *dev; /* NCCL over the group for a CUDA context (src/dist/nccl.h),
                                NULL: device buffers go through host staging */
};

/* Join a tensor-parallel group of T ranks (collective over the job: every rank
 * calls it with the same T) and build this rank's shard of m into c->tp.
 * LOPAD_ERR_ARG naming the reason when T does not fit the job or the model. */
enum lopad_status lp_tp_new(struct lopad_ctx *c, const struct lopad_model *m, int T);
void lp_tp_free(struct lp_tp *tp);

/* Buffers the forward needs once the backend is up (n_batch_max rows). */
enum lopad_status lp_tp_alloc(struct lopad_ctx *c);

/* Rows of the output head per lp_tp_head call. */
int lp_tp_head_rows(const struct lopad_ctx *c);

/* buf[n] (backend memory) = its sum over the group. */
enum lopad_status lp_tp_allreduce(struct lopad_ctx *c, float *buf, int64_t n, const char *what);

/* The output head of the no rows normed in c->xn: logits [no][V] (host) or scores
 * [no], from this rank's vocabulary slice and the others'. */
enum lopad_status lp_tp_head(struct lopad_ctx *c, int no, float *logits,
                             struct lp_row_scores *scores);

#endif
