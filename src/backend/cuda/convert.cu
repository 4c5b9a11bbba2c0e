/*
 * convert.cu - f32 -> bf16 conversion of activations (the GEMM inputs) and the
 * broadcast bias add after a GEMM.
 */
#include "common.cuh"

/* ---------------------------------------------------------------- kernels */

__global__ void lp_k_f32_to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y,
                                 int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]); /* round to nearest even, as lp_f32_to_bf16 */
}

/* y (n_rows, n) += bias (n) */
__global__ void lp_k_add_bias(float *__restrict__ y, const float *__restrict__ bias, int64_t total,
                              int n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += bias[i % n];
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_f32_to_bf16(const float *x, uint16_t *y, int64_t n, lp_cuda_stream s) {
    if (n <= 0) return 0;
    lp_k_f32_to_bf16<<<lp_cuda_ew_blocks(n), LP_CUDA_EW_THREADS, 0, s>>>(
        x, reinterpret_cast<__nv_bfloat16 *>(y), n);
    return lp_cuda_launch_status();
}

extern "C" int lp_cuda_add_bias(float *y, const float *bias, int n_rows, int n, lp_cuda_stream s) {
    const int64_t total = (int64_t)n_rows * n;
    if (total <= 0) return 0;
    lp_k_add_bias<<<lp_cuda_ew_blocks(total), LP_CUDA_EW_THREADS, 0, s>>>(y, bias, total, n);
    return lp_cuda_launch_status();
}
