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
#include <type_traits>

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

#define __align__(n) __attribute__((aligned(n)))

/* WMMA (<mma.h>): each emulated thread holds the whole 16x16 tile, so loads and
 * mma are per thread; a store is done by lane 0 and fenced with a warp barrier. */
void emu_warp_barrier();
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    float x[16][16]; /* [row][col] of the fragment's matrix */
};
static inline float emu_val(float v) {
    return v;
}
static inline float emu_val(__nv_bfloat16 v) {
    return __bfloat162float(v);
}
template <typename Use, typename T, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            f.x[i][j] =
                emu_val(std::is_same<L, row_major>::value ? p[i * ldm + j] : p[i + j * ldm]);
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                                    unsigned ldm, layout_t l) {
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            f.x[i][j] = l == mem_row_major ? p[i * ldm + j] : p[i + j * ldm];
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                                     unsigned ldm, layout_t l) {
    if (threadIdx.x % 32 == 0)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++)
                (l == mem_row_major ? p[i * ldm + j] : p[i + j * ldm]) = f.x[i][j];
    emu_warp_barrier();
}
static inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float v) {
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            f.x[i][j] = v;
}
template <typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
              const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    float r[16][16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.x[i][j];
            for (int k = 0; k < 16; k++)
                s += a.x[i][k] * b.x[k][j];
            r[i][j] = s;
        }
    memcpy(d.x, r, sizeof r);
}
} // namespace wmma
} // namespace nvcuda

/* Run fn on every thread of every block of grid (x, y); block.x threads (<= 1024). */
void emu_launch(dim3 grid, dim3 block, std::function<void()> fn);
