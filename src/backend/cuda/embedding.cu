/*
 * embedding.cu - the token embedding gather: rows of a bf16 table widened to f32.
 */
#include "common.cuh"

/* ---------------------------------------------------------------- kernels */

/* one block per id; out (n_ids, n) */
__global__ void lp_k_get_rows(const __nv_bfloat16 *__restrict__ w, int64_t n,
                              const int32_t *__restrict__ ids, float *__restrict__ out) {
    const int64_t r = ids[blockIdx.x];
    const __nv_bfloat16 *src = w + r * n;
    float *dst = out + (int64_t)blockIdx.x * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_get_rows(const uint16_t *w, int64_t n, const int32_t *ids, int n_ids,
                                float *out, lp_cuda_stream s) {
    if (n_ids <= 0) return 0;
    lp_k_get_rows<<<n_ids, 256, 0, s>>>(reinterpret_cast<const __nv_bfloat16 *>(w), n, ids, out);
    return lp_cuda_launch_status();
}
