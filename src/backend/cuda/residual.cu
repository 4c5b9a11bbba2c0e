/*
 * residual.cu - the residual add y += x, elementwise.
 */
#include "common.cuh"

/* ---------------------------------------------------------------- kernels */

__global__ void lp_k_add(float *__restrict__ y, const float *__restrict__ x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_add(float *y, const float *x, int64_t n, lp_cuda_stream s) {
    if (n <= 0) return 0;
    lp_k_add<<<lp_cuda_ew_blocks(n), LP_CUDA_EW_THREADS, 0, s>>>(y, x, n);
    return lp_cuda_launch_status();
}
