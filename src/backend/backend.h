/*
 * backend.h - the compute interface between the forward pass and a device.
 *
 * A backend is a table of kernels plus an opaque context (thread pool, scratch,
 * later a CUDA stream). The forward pass talks to the device only through this
 * table, so a second backend (CUDA) can slot in behind the same calls.
 *
 * Memory: activation / KV buffers come from ops->alloc and live on the device;
 * arrays of ids (tokens, positions, seq starts, block ids) are always host
 * memory. Weights are lp_weight views in their stored type (F32, F16, BF16,
 * Q8_0, Q4_0, Q4_K, Q6_K); kernels convert them on the fly.
 *
 * Matrices are row-major and contiguous: (rows, cols) below means `rows`
 * consecutive runs of `cols` floats.
 *
 * Determinism contract: every kernel's result is bitwise independent of the
 * number of threads (work is split by output; each output's reduction order is
 * fixed), and a matmul row's result does not depend on the other rows fed.
 */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include "../core/common.h"
#include "../model/model.h"

/* One attention call: every fed query attends to the logical key sequence
 *   cache rows [0, skip_begin) ++ cache rows [skip_end, n_cache)
 *   ++ the fed rows of its own sequence,
 * where a fed key j is hidden from query i when block && block[j] > block[i].
 * Softmax scale is `scale`; GQA: query head h reads kv head h / (n_head/n_head_kv). */
struct lp_attn_desc {
    int n_tokens; /* fed queries */
    int n_head, n_head_kv, head_dim;
    const float *q;       /* (n_tokens, n_head*head_dim), RoPE applied */
    const float *k, *v;   /* (n_tokens, n_head_kv*head_dim) fed keys / values */
    const float *k_cache; /* (n_cache, n_head_kv*head_dim) this layer's cache */
    const float *v_cache;
    int n_cache;
    int skip_begin, skip_end; /* hidden cache rows; begin == end = none */
    int n_seq;
    const int32_t *seq_start; /* host [n_seq+1]: fed rows of seq s are [start[s], start[s+1]) */
    const int32_t *block;     /* host [n_tokens] block ids, or NULL = bidirectional */
    float scale;
    float *out; /* (n_tokens, n_head*head_dim) */
};

/* Confidence scores of one output row, from its logits z over the vocabulary
 * (no temperature): p = softmax(z). */
struct lp_row_scores {
    int32_t argmax;   /* most likely id; ties go to the lower id, NaN never wins */
    float pmax;       /* p[argmax] */
    float margin;     /* p[argmax] - p[second] (pmax when the vocabulary has one entry) */
    float negent;     /* sum p log p (<= 0; predict.c adds 1e-10 inside the log) */
    float logsumexp;  /* log sum exp z: log p[v] = z[v] - logsumexp */
    float top1, top2; /* z[argmax] and the runner-up's logit (-inf when none): what
                         combines slices of the vocabulary (tensor parallelism) */
};

struct lp_backend_ops {
    const char *name;
    bool host_memory; /* buffers from alloc are plain host memory (CPU) */
    void (*free)(void *ctx);

    /* ---- memory ---- */
    void *(*alloc)(void *ctx, size_t bytes, const char *what); /* zeroed; NULL + lp_error on OOM */
    void (*release)(void *ctx, void *buf);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes); /* device to device */
    void (*upload)(void *ctx, void *dst, const void *host, size_t bytes);
    void (*download)(void *ctx, void *host, const void *src, size_t bytes);

    /* ---- kernels ---- */
    /* out[i] = row ids[i] of w, as f32. out: (n, w->n_in); ids host, each in [0, n_out). */
    void (*get_rows)(void *ctx, const struct lp_weight *w, const int32_t *ids, int n, float *out);
    /* y = x W^T (+ bias): x (n_rows, w->n_in), y (n_rows, w->n_out), bias (n_out) or NULL. */
    void (*matmul)(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                   int n_rows, float *y);
    /* y = x * rsqrt(mean(x^2) + eps) * weight, per row: x, y (n_rows, n); y may be x. */
    void (*rmsnorm)(void *ctx, const float *x, const float *weight, float eps, int n_rows, int n,
                    float *y);
    /* RoPE in place on x (n_rows, n_head*head_dim) at host positions pos[n_rows];
     * inv_freq_i = theta^(-2i/head_dim). NEOX pairs (i, i+d/2), NORM pairs (2i, 2i+1). */
    void (*rope)(void *ctx, float *x, int n_rows, int n_head, int head_dim, const int32_t *pos,
                 float theta, enum lopad_rope mode);
    void (*attention)(void *ctx, const struct lp_attn_desc *a);
    /* The output head fused with the scores: out[t] = scores of x[t] W^T for
     * t < n_rows, without writing the logits (the logits are those matmul would
     * give). scratch: at least head_scores_scratch(w->n_out, n_rows) floats. */
    void (*head_scores)(void *ctx, const struct lp_weight *w, const float *x, int n_rows,
                        float *scratch, size_t scratch_floats, struct lp_row_scores *out);
    size_t (*head_scores_scratch)(int64_t n_vocab, int n_rows);
    /* gate[i] = silu(gate[i]) * up[i], i < n */
    void (*silu_mul)(void *ctx, float *gate, const float *up, int64_t n);
    /* y[i] += x[i], i < n */
    void (*add)(void *ctx, float *y, const float *x, int64_t n);
};

struct lp_backend {
    const struct lp_backend_ops *ops;
    void *ctx;
};

/* Sizes a backend needs to pre-allocate its scratch (from the model). */
struct lp_backend_limits {
    int64_t max_n_in; /* longest weight row (elements) any matmul / get_rows sees */
    int head_dim;
    int n_head, n_head_kv;
};

static inline void lp_backend_free(struct lp_backend *b) {
    if (b && b->ops) b->ops->free(b->ctx);
    if (b) {
        b->ops = NULL;
        b->ctx = NULL;
    }
}

#endif
