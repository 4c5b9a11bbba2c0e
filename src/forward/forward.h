/*
 * forward.h - the inside of a lopad_ctx (internal): the backend, the KV cache,
 * the fed rows' K/V scratch and the activation buffers, all sized once in
 * lopad_ctx_new so that lopad_forward never allocates.
 */
#ifndef LP_FORWARD_H
#define LP_FORWARD_H

#include "../backend/backend.h"
#include "../model/model.h"

struct lp_tp;

struct lopad_ctx {
    const struct lopad_model *model;  /* the weights the forward runs: the loaded model, or
                                         this rank's shard of it (tensor parallelism) */
    const struct lopad_model *loaded; /* the model the context keeps alive */
    struct lp_tp *tp;                 /* tensor parallelism (tensor_parallel.h), NULL when alone */
    struct lp_backend be;
    int n_ctx, n_batch_max, n_threads;
    int64_t kv_dim; /* n_head_kv * head_dim: floats per cached row of one layer */

    int kv_len;      /* cached rows [0, kv_len) hold valid K/V */
    int last_n_fed;  /* fed rows of the last successful forward (0 = none) */
    int last_x_rows; /* fed rows whose final residual c->x holds (0 = none): the last
                        successful forward's, when it asked for output rows */

    /* backend memory */
    float *k_cache, *v_cache; /* (n_layer, n_ctx, kv_dim) */
    float *k_fed, *v_fed; /* (n_layer, n_batch_max, kv_dim): K (RoPE'd) / V of the last forward */
    float *x;             /* (n_batch_max, n_embd) residual stream */
    float *xn;            /* (n_batch_max, n_embd) normed input / projection output */
    float *q;             /* (n_batch_max, n_head*head_dim) */
    float *att;           /* (n_batch_max, n_head*head_dim) attention output */
    float *gate;       /* (n_batch_max, gate_cols): the MLP gate, then the fused head's scratch */
    int64_t gate_cols; /* n_ff, or more where the fused head needs it (a small shard) */
    float *up;         /* (n_batch_max, n_ff) */

    /* device backends (host_memory false): the output head writes logits here, in
     * chunks of logits_rows rows, and they are downloaded into the caller's array */
    float *logits_dev; /* (logits_rows, n_vocab) or NULL */
    int logits_rows;
    /* device backends: wait for the queued work, report its first error (or NULL) */
    enum lopad_status (*be_sync)(struct lp_backend *be);

    /* host memory */
    int32_t *seq_start; /* [n_batch_max + 1] */
};

/* K / V of layer l in the cache (row r at + r*kv_dim) and in the fed scratch. */
static inline float *lp_ctx_kcache(const struct lopad_ctx *c, int l) {
    return c->k_cache + (int64_t)l * c->n_ctx * c->kv_dim;
}
static inline float *lp_ctx_vcache(const struct lopad_ctx *c, int l) {
    return c->v_cache + (int64_t)l * c->n_ctx * c->kv_dim;
}
static inline float *lp_ctx_kfed(const struct lopad_ctx *c, int l) {
    return c->k_fed + (int64_t)l * c->n_batch_max * c->kv_dim;
}
static inline float *lp_ctx_vfed(const struct lopad_ctx *c, int l) {
    return c->v_fed + (int64_t)l * c->n_batch_max * c->kv_dim;
}

/* lopad_forward, but instead of the logits of the rows b->out_rows, their scores
 * (argmax, pmax, margin, negent, logsumexp; see struct lp_row_scores) go to
 * scores[n_out]: the output head runs fused with the softmax statistics, so no
 * vocabulary-sized row is written. b->logits is ignored (may be NULL). The
 * argmax is that of the logits lopad_forward would return (the same matmul). */
enum lopad_status lp_forward_scores(lopad_ctx *c, const struct lopad_batch *b,
                                    struct lp_row_scores *scores);

/* Whether lp_forward_scores works on this context (the backend has a fused head
 * and the context's scratch holds its partial results). */
bool lp_forward_has_scores(const lopad_ctx *c);

/* lp_forward_has_scores, and the fused head's logits are bitwise those lopad_forward
 * returns (so its argmax is theirs up to exact ties): true on the CPU backend, whose
 * head runs the same matmul. Not (yet) claimed for device backends: their head
 * computes logits in vocabulary chunks with other GEMM shapes, which need not round
 * alike; decoders use the fused head only where this holds. */
bool lp_forward_scores_exact(const lopad_ctx *c);

/* The logits of fed rows rows[n] of the last successful forward (lopad_forward or
 * lp_forward_scores with n_out > 0) into logits [n][V], from the residual stream it
 * left: the output head alone, no layer rerun. With the same rows in the same order
 * as that forward's out_rows, they are the logits lopad_forward would have written.
 * LOPAD_ERR_ARG when there is no such forward or a row is outside it. */
enum lopad_status lp_forward_last_logits(lopad_ctx *c, const int32_t *rows, int n, float *logits);

/* Check a batch against the context; LOPAD_ERR_ARG naming the bad field, index
 * and value. On success fills c->seq_start. */
enum lopad_status lp_batch_check(struct lopad_ctx *c, const struct lopad_batch *b);

/* The ranks that share LoPA's branches with this one: the job's communicator, or with
 * tensor parallelism the ranks at the same place of the other groups; NULL alone. */
struct lp_dist *lp_forward_branch_dist(const lopad_ctx *c);

/* The ranks computing each forward with this context (tensor parallelism), or NULL. */
struct lp_dist *lp_forward_tp_group(const lopad_ctx *c);

/* The context's worker pool when its backend has one (CPU), else NULL: the decoders
 * run their proposals on it (one thread budget per request). */
struct lp_pool;
struct lp_pool *lp_forward_pool(const lopad_ctx *c);

#endif
