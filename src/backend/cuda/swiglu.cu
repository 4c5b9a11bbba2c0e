/*
 * swiglu.cu - the MLP gating: gate = silu(gate) * up, elementwise.
 */
#include "common.cuh"

/* ---------------------------------------------------------------- kernels */

__global__ void lp_k_silu_mul(float *__restrict__ gate, const float *__restrict__ up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_silu_mul(float *gate, const float *up, int64_t n, lp_cuda_stream s) {
    if (n <= 0) return 0;
    lp_k_silu_mul<<<lp_cuda_ew_blocks(n), LP_CUDA_EW_THREADS, 0, s>>>(gate, up, n);
    return lp_cuda_launch_status();
}
