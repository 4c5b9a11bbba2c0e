/*
 * emu.h - a CPU emulation of the small CUDA subset the lopad kernels use, so the
 * kernel sources (src/backend/cuda/*.cu, their kernels sections) can run and be
 * checked against the CPU backend on a machine without a GPU (see emu_check.c,
 * driven by tests/cli/test_cuda_build.sh).
 *
 * One pthread per CUDA thread of a block; the threads of a launch walk the grid's
 * blocks together, with a barrier between blocks, so __shared__ (= static) arrays
 * hold one block at a time. Warp shuffles exchange through a per-warp array with
 * per-warp barriers: they need every lane of the warp, as the kernels do.
 * C++ (the kernels use C++ casts); not part of any build of the library.
 */
#pragma once
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <functional>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
#define __restrict__
using std::max;
using std::min;

void __syncthreads();
float __shfl_sync(unsigned mask, float v, int lane);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);

typedef uint16_t __nv_bfloat16; /* bits */
static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { /* round to nearest even */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Run fn on every thread of every block of grid (x, y); block.x threads (<= 1024). */
void emu_launch(dim3 grid, dim3 block, std::function<void()> fn);
