/*
 * attention.cu - attention of the fed queries over the cached prefix (minus the
 * skip range) and the fed keys of each query's own sequence (block-causal mask
 * optional), in one pass with an online softmax (f32 throughout).
 *
 * Work split: a block owns one KV head and ATT_WARPS consecutive (query, head)
 * pairs of that head's GQA group, one pair per warp, so K/V tiles of ATT_KT keys
 * staged in shared memory serve every warp of the block. Within a warp, lane j
 * scores key j of the tile (K rows padded to D+1 floats: conflict-free), then
 * every lane accumulates P V for the output dims lane, lane+32, ...
 * The fed keys a block stages are the union of its queries' sequences; each
 * warp masks the keys outside its own sequence or later in the block order.
 */
#include "common.cuh"
#include <mma.h>

#define ATT_WARPS 16
#define ATT_KT 32
#define ATT_MAXD LP_CUDA_ATTN_MAX_D
#define ATT_NC (ATT_MAXD / 32)

/* ---------------------------------------------------------------- kernels */

/* grid (ceil(n_tokens*group / ATT_WARPS), n_head_kv), block ATT_WARPS*32 */
__global__ void __launch_bounds__(ATT_WARPS * 32) lp_k_attention(const lp_cuda_attn_args a) {
    __shared__ float sK[ATT_KT][ATT_MAXD + 1]; /* (keys, D) padded */
    __shared__ float sV[ATT_KT][ATT_MAXD];     /* (keys, D) */
    __shared__ float sQ[ATT_WARPS][ATT_MAXD];  /* one query row per warp */

    const int D = a.head_dim;
    const int group = a.n_head / a.n_head_kv;
    const int hkv = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t kv_dim = (int64_t)a.n_head_kv * D;
    const int64_t q_dim = (int64_t)a.n_head * D;
    const int n_pairs = a.n_tokens * group;
    const int p0 = blockIdx.x * ATT_WARPS;
    const int p = p0 + warp;
    const bool active = p < n_pairs; /* warp-uniform */
    const int qi = active ? p / group : 0;
    const int h = hkv * group + (active ? p % group : 0);

    /* fed rows staged by this block: from the first query's sequence start to
     * the last query's sequence end (sequences are contiguous, in order) */
    const int i_first = p0 / group;
    const int i_last = min(a.n_tokens - 1, (p0 + ATT_WARPS - 1) / group);
    const int fed_lo = a.tok[3 * i_first], fed_hi = a.tok[3 * i_last + 1];
    const int skip = a.skip_end - a.skip_begin;
    const int n_vis = a.n_cache - skip; /* visible cache rows */
    const int n_keys = n_vis + (fed_hi - fed_lo);

    const int my_lo = a.tok[3 * qi], my_hi = a.tok[3 * qi + 1], my_blk = a.tok[3 * qi + 2];
    if (active)
        for (int d = lane; d < D; d += 32)
            sQ[warp][d] = a.q[(int64_t)qi * q_dim + (int64_t)h * D + d];

    float acc[ATT_NC];
#pragma unroll
    for (int c = 0; c < ATT_NC; c++)
        acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int t0 = 0; t0 < n_keys; t0 += ATT_KT) { /* trip count is block-uniform */
        __syncthreads(); /* the previous tile is consumed (and sQ written) */
        for (int e = threadIdx.x; e < ATT_KT * D; e += blockDim.x) {
            const int j = e / D, d = e - j * D;
            const int t = t0 + j;
            float kx = 0.0f, vx = 0.0f;
            if (t < n_keys) {
                const float *kr, *vr;
                if (t < n_vis) {
                    const int64_t r = t < a.skip_begin ? t : t + skip;
                    kr = a.kc + r * kv_dim;
                    vr = a.vc + r * kv_dim;
                } else {
                    const int64_t r = fed_lo + (t - n_vis);
                    kr = a.k + r * kv_dim;
                    vr = a.v + r * kv_dim;
                }
                kx = kr[(int64_t)hkv * D + d];
                vx = vr[(int64_t)hkv * D + d];
            }
            sK[j][d] = kx;
            sV[j][d] = vx;
        }
        __syncthreads();
        if (!active) continue;

        /* lane j scores key t0 + j */
        const int t = t0 + lane;
        bool vis = t < n_keys;
        if (vis && t >= n_vis) {
            const int r = fed_lo + (t - n_vis);
            vis = r >= my_lo && r < my_hi && a.tok[3 * r + 2] <= my_blk;
        }
        float sc = -INFINITY;
        if (vis) {
            float dot = 0.0f;
            for (int d = 0; d < D; d++)
                dot = fmaf(sQ[warp][d], sK[lane][d], dot);
            sc = dot * a.scale;
        }
        const float tile_max = lp_warp_max(sc);
        if (tile_max == -INFINITY) continue; /* nothing visible in this tile (warp-uniform) */
        const float m_new = fmaxf(m, tile_max);
        const float corr = expf(m - m_new); /* 0 on the first visible tile (m = -inf) */
        const float pj = vis ? expf(sc - m_new) : 0.0f;
        l = l * corr + lp_warp_sum(pj);
#pragma unroll
        for (int c = 0; c < ATT_NC; c++)
            acc[c] *= corr;
        for (int j = 0; j < ATT_KT; j++) {
            const float pb = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
            for (int c = 0; c < ATT_NC; c++) {
                const int d = lane + 32 * c;
                if (d < D) acc[c] = fmaf(pb, sV[j][d], acc[c]);
            }
        }
        m = m_new;
    }
    if (!active) return;
    /* every query sees at least itself, so l > 0 */
    const float inv = 1.0f / l;
    float *o = a.out + (int64_t)qi * q_dim + (int64_t)h * D;
#pragma unroll
    for (int c = 0; c < ATT_NC; c++) {
        const int d = lane + 32 * c;
        if (d < D) o[d] = acc[c] * inv;
    }
}

/* ---- tensor-core variant (head_dim a multiple of 16, <= 128) ----
 * A block owns one KV head and TC_ROWS = 16 (query, head) pairs of its group.
 * Per tile of TC_KT = 32 keys: S = Q K^T on bf16 tensor cores (f32 accumulate),
 * the online softmax in f32 by one lane per key, P rounded to bf16, and
 * O = O * corr + P V on tensor cores with O kept in shared memory (f32). Only
 * whole-fragment WMMA operations are used (no per-element fragment access),
 * so the code does not depend on the fragment layout. */
#define TC_ROWS 16
#define TC_KT 32
#define TC_WARPS 4
#define TC_MAXD 128

/* grid (ceil(n_tokens*group / TC_ROWS), n_head_kv), block TC_WARPS*32 */
__global__ void __launch_bounds__(TC_WARPS * 32) lp_k_attention_tc(const lp_cuda_attn_args a) {
    using namespace nvcuda;
    __shared__ __align__(32) __nv_bfloat16 sQ[TC_ROWS][TC_MAXD];
    __shared__ __align__(32) __nv_bfloat16 sK[TC_KT][TC_MAXD];
    __shared__ __align__(32) __nv_bfloat16 sV[TC_KT][TC_MAXD];
    __shared__ __align__(32) __nv_bfloat16 sP[TC_ROWS][TC_KT];
    __shared__ __align__(32) float sS[TC_ROWS][TC_KT];
    __shared__ __align__(32) float sO[TC_ROWS][TC_MAXD];
    __shared__ float sM[TC_ROWS], sL[TC_ROWS], sC[TC_ROWS];
    __shared__ int sLo[TC_ROWS], sHi[TC_ROWS], sBlk[TC_ROWS];

    const int D = a.head_dim;
    const int group = a.n_head / a.n_head_kv;
    const int hkv = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t kv_dim = (int64_t)a.n_head_kv * D;
    const int64_t q_dim = (int64_t)a.n_head * D;
    const int n_pairs = a.n_tokens * group;
    const int p0 = blockIdx.x * TC_ROWS;

    const int i_first = p0 / group;
    const int i_last = min(a.n_tokens - 1, (p0 + TC_ROWS - 1) / group);
    const int fed_lo = a.tok[3 * i_first], fed_hi = a.tok[3 * i_last + 1];
    const int skip = a.skip_end - a.skip_begin;
    const int n_vis = a.n_cache - skip;
    const int n_keys = n_vis + (fed_hi - fed_lo);

    /* rows: pair p0 + r = (query qi, head h); rows past the pairs stay zero */
    for (int e = threadIdx.x; e < TC_ROWS * TC_MAXD; e += blockDim.x) {
        const int r = e / TC_MAXD, d = e - r * TC_MAXD, p = p0 + r;
        float x = 0.0f;
        if (p < n_pairs && d < D) {
            const int qi = p / group, h = hkv * group + p % group;
            x = a.q[(int64_t)qi * q_dim + (int64_t)h * D + d];
        }
        sQ[r][d] = __float2bfloat16_rn(x);
        sO[r][d] = 0.0f;
    }
    if (threadIdx.x < TC_ROWS) {
        const int r = threadIdx.x, p = p0 + r;
        const int qi = p < n_pairs ? p / group : i_first;
        sM[r] = -INFINITY;
        sL[r] = 0.0f;
        sLo[r] = a.tok[3 * qi];
        sHi[r] = p < n_pairs ? a.tok[3 * qi + 1] : a.tok[3 * qi]; /* no fed keys */
        sBlk[r] = a.tok[3 * qi + 2];
    }

    for (int t0 = 0; t0 < n_keys; t0 += TC_KT) { /* block-uniform trip count */
        __syncthreads();                         /* previous tile consumed; setup visible */
        for (int e = threadIdx.x; e < TC_KT * TC_MAXD; e += blockDim.x) {
            const int j = e / TC_MAXD, d = e - j * TC_MAXD;
            const int t = t0 + j;
            float kx = 0.0f, vx = 0.0f;
            if (t < n_keys && d < D) {
                const float *kr, *vr;
                if (t < n_vis) {
                    const int64_t r = t < a.skip_begin ? t : t + skip;
                    kr = a.kc + r * kv_dim;
                    vr = a.vc + r * kv_dim;
                } else {
                    const int64_t r = fed_lo + (t - n_vis);
                    kr = a.k + r * kv_dim;
                    vr = a.v + r * kv_dim;
                }
                kx = kr[(int64_t)hkv * D + d];
                vx = vr[(int64_t)hkv * D + d];
            }
            sK[j][d] = __float2bfloat16_rn(kx);
            sV[j][d] = __float2bfloat16_rn(vx);
        }
        __syncthreads();

        /* S (TC_ROWS, TC_KT) = Q K^T: warp w computes keys [16w, 16w + 16) */
        if (warp < TC_KT / 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int k0 = 0; k0 < D; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, &sQ[0][k0], TC_MAXD);
                wmma::load_matrix_sync(fb, &sK[16 * warp][k0], TC_MAXD); /* K^T */
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(&sS[0][16 * warp], acc, TC_KT, wmma::mem_row_major);
        }
        __syncthreads();

        /* online softmax: warp w takes rows 4w..4w+3, lane j key t0 + j */
        for (int r = warp * (TC_ROWS / TC_WARPS); r < (warp + 1) * (TC_ROWS / TC_WARPS); r++) {
            const int t = t0 + lane;
            bool vis = t < n_keys;
            if (vis && t >= n_vis) {
                const int fr = fed_lo + (t - n_vis);
                vis = fr >= sLo[r] && fr < sHi[r] && a.tok[3 * fr + 2] <= sBlk[r];
            }
            const float sc = vis ? sS[r][lane] * a.scale : -INFINITY;
            const float tile_max = lp_warp_max(sc);
            const float m_old = sM[r];
            float corr = 1.0f, pj = 0.0f, m_new = m_old;
            if (tile_max != -INFINITY) {
                m_new = fmaxf(m_old, tile_max);
                corr = expf(m_old - m_new); /* 0 when m_old = -inf */
                if (vis) pj = expf(sc - m_new);
            }
            const __nv_bfloat16 pb = __float2bfloat16_rn(pj);
            sP[r][lane] = pb;
            const float sum = lp_warp_sum(__bfloat162float(pb)); /* the P that multiplies V */
            if (lane == 0) {
                sL[r] = sL[r] * corr + sum;
                sM[r] = m_new;
                sC[r] = corr;
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < TC_ROWS * TC_MAXD; e += blockDim.x) {
            const int r = e / TC_MAXD;
            sO[r][e - r * TC_MAXD] *= sC[r];
        }
        __syncthreads();

        /* O += P V: warp w takes the 16-column slices w, w + TC_WARPS, ... of D */
        for (int nt = warp; nt < D / 16; nt += TC_WARPS) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, &sO[0][16 * nt], TC_MAXD, wmma::mem_row_major);
            for (int k0 = 0; k0 < TC_KT; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, &sP[0][k0], TC_KT);
                wmma::load_matrix_sync(fb, &sV[k0][16 * nt], TC_MAXD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(&sO[0][16 * nt], acc, TC_MAXD, wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < TC_ROWS * TC_MAXD; e += blockDim.x) {
        const int r = e / TC_MAXD, d = e - r * TC_MAXD, p = p0 + r;
        if (p >= n_pairs || d >= D) continue;
        const int qi = p / group, h = hkv * group + p % group;
        /* every query sees at least itself, so sL > 0 */
        a.out[(int64_t)qi * q_dim + (int64_t)h * D + d] = sO[r][d] / sL[r];
    }
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_attention(const struct lp_cuda_attn_args *a, lp_cuda_stream s) {
    if (a->n_tokens <= 0) return 0;
    if (a->head_dim > ATT_MAXD || a->head_dim <= 0 || a->n_head_kv <= 0 ||
        a->n_head % a->n_head_kv != 0)
        return (int)cudaErrorInvalidValue;
    const int group = a->n_head / a->n_head_kv;
    const int64_t n_pairs = (int64_t)a->n_tokens * group;
    if (a->tensor_cores && a->head_dim % 16 == 0 && a->head_dim <= TC_MAXD) {
        dim3 grid_tc((unsigned)((n_pairs + TC_ROWS - 1) / TC_ROWS), (unsigned)a->n_head_kv);
        lp_k_attention_tc<<<grid_tc, TC_WARPS * 32, 0, s>>>(*a);
        return lp_cuda_launch_status();
    }
    dim3 grid((unsigned)((n_pairs + ATT_WARPS - 1) / ATT_WARPS), (unsigned)a->n_head_kv);
    lp_k_attention<<<grid, ATT_WARPS * 32, 0, s>>>(*a);
    return lp_cuda_launch_status();
}
