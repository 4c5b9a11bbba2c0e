/*
 * common.cuh - small helpers shared by the CUDA kernel files (grid sizing for
 * grid-stride loops, warp reductions).
 */
#ifndef LP_CUDA_COMMON_CUH
#define LP_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include "cuda_kernels.h"

#define LP_CUDA_EW_THREADS 256

/* blocks for a grid-stride loop over n elements (capped: the loop covers the rest) */
static inline unsigned lp_cuda_ew_blocks(int64_t n) {
    int64_t b = (n + LP_CUDA_EW_THREADS - 1) / LP_CUDA_EW_THREADS;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)b;
}

static inline int lp_cuda_launch_status(void) {
    return (int)cudaGetLastError();
}

__device__ __forceinline__ float lp_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lp_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
