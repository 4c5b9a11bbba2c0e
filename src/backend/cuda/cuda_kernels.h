/*
 * cuda_kernels.h - launchers of the CUDA backend's kernels (one .cu file per
 * op, kernels first, launchers after). Plain C declarations so that the host
 * side (cuda_backend.c, compiled as C) can call them; every launcher enqueues
 * on `stream` and returns the launch error (cudaSuccess = 0) as an int.
 *
 * Layouts are those of backend.h: row-major, contiguous, f32 activations;
 * weight matrices on the device are bf16 (n_out, n_in).
 */
#ifndef LP_CUDA_KERNELS_H
#define LP_CUDA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *lp_cuda_stream;

/* convert.cu: y[i] = bf16(x[i]), i < n. y is uint16 bf16 bits. */
int lp_cuda_f32_to_bf16(const float *x, uint16_t *y, int64_t n, lp_cuda_stream s);
/* convert.cu: y (n_rows, n) += bias (n) broadcast over rows. */
int lp_cuda_add_bias(float *y, const float *bias, int n_rows, int n, lp_cuda_stream s);

/* embedding.cu: out[i] = f32(w[ids[i]]): w (n_vocab, n) bf16, ids device [n_ids],
 * out (n_ids, n). */
int lp_cuda_get_rows(const uint16_t *w, int64_t n, const int32_t *ids, int n_ids, float *out,
                     lp_cuda_stream s);

/* rmsnorm.cu: y = x * rsqrt(mean(x^2) + eps) * w per row; y may be x. */
int lp_cuda_rmsnorm(const float *x, const float *w, float eps, int n_rows, int n, float *y,
                    lp_cuda_stream s);

/* rope.cu: in place on x (n_rows, n_head*head_dim) at device positions pos[n_rows].
 * neox != 0: pairs (i, i + d/2); else pairs (2i, 2i+1). */
int lp_cuda_rope(float *x, int n_rows, int n_head, int head_dim, const int32_t *pos, float theta,
                 int neox, lp_cuda_stream s);

/* swiglu.cu: gate[i] = silu(gate[i]) * up[i], i < n. */
int lp_cuda_silu_mul(float *gate, const float *up, int64_t n, lp_cuda_stream s);

/* residual.cu: y[i] += x[i], i < n. */
int lp_cuda_add(float *y, const float *x, int64_t n, lp_cuda_stream s);

/* attention.cu: tiled attention with online softmax over
 *   cache rows [0, skip_begin) ++ [skip_end, n_cache) ++ fed rows of the query's sequence,
 * a fed key j hidden from query i when blk[j] > blk[i].
 * tok: device (n_tokens, 3) int32: [lo, hi) = fed rows of the token's sequence, block id
 * (all block ids 0 = bidirectional). head_dim <= LP_CUDA_ATTN_MAX_D. */
#define LP_CUDA_ATTN_MAX_D 128
struct lp_cuda_attn_args {
    const float *q;       /* (n_tokens, n_head*head_dim) */
    const float *k, *v;   /* (n_tokens, n_head_kv*head_dim) */
    const float *kc, *vc; /* (n_cache, n_head_kv*head_dim) */
    const int32_t *tok;   /* (n_tokens, 3) */
    float *out;           /* (n_tokens, n_head*head_dim) */
    int n_tokens, n_head, n_head_kv, head_dim;
    int n_cache, skip_begin, skip_end;
    float scale;
    int tensor_cores; /* bf16 WMMA variant when head_dim % 16 == 0 (Q, K, V, P rounded to bf16) */
};
int lp_cuda_attention(const struct lp_cuda_attn_args *a, lp_cuda_stream s);

/* head_scores.cu: the fused output head's per-row scores (struct lp_row_scores's
 * layout; cuda_backend.c checks they match). */
typedef struct lp_cuda_row_scores {
    int32_t argmax;
    float pmax, margin, negent, logsumexp, top1, top2;
} lp_cuda_row_scores;
#define LP_CUDA_SCORES_STATE 8 /* floats of per-row state */
/* Fold the logits z (n_rows, vc) of vocabulary ids [v0, v0 + vc) into state
 * (n_rows, LP_CUDA_SCORES_STATE), initialising it when first. */
int lp_cuda_scores_chunk(const float *z, int n_rows, int vc, int v0, int first, float *state,
                         lp_cuda_stream s);
/* out[t] = the scores of state row t, t < n_rows (device memory). */
int lp_cuda_scores_final(const float *state, int n_rows, lp_cuda_row_scores *out, lp_cuda_stream s);

#ifdef __cplusplus
}
#endif
#endif
