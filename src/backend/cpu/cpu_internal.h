/*
 * cpu_internal.h - what the CPU backend's source files share: the context and
 * the vector primitives (scalar and AVX2 flavours with one fixed reduction
 * order each, so results never depend on tiling or thread count).
 */
#ifndef LP_BACKEND_CPU_INTERNAL_H
#define LP_BACKEND_CPU_INTERNAL_H

#include "cpu.h"
#include "../../core/threadpool.h"

/* Matmul: weight rows dequantised together into per-thread scratch. */
#define LP_MM_TILE_MAX 16
/* Attention tiles: queries per task and keys per online-softmax step. */
#define LP_ATT_QT 4
#define LP_ATT_KT 32

struct lp_cpu {
    lp_pool *pool;
    int n_threads;
    bool simd; /* AVX2+FMA+F16C kernels in use */
    bool wide; /* ... with AVX-512VL's 32 registers (same arithmetic, bigger tiles) */
    struct lp_backend_limits lim;

    float *mm_scratch;  /* [n_threads][LP_MM_TILE_MAX * max_n_in] */
    size_t mm_stride;   /* floats per thread */
    float *att_scratch; /* [n_threads][att_stride] */
    size_t att_stride;
};

/* Floats of attention scratch one thread needs. */
size_t lp_cpu_att_scratch_floats(const struct lp_backend_limits *lim);

/* Vector primitives. dot: sum a[i]*b[i] accumulated in 8 lanes (lane l takes
 * i = l, l+8, ...), lanes summed pairwise ((0+4)+(2+6))+((1+5)+(3+7)). */
typedef float (*lp_dot_fn)(const float *a, const float *b, int n);
float lp_cpu_dot_scalar(const float *a, const float *b, int n);
float lp_cpu_dot_avx2(const float *a, const float *b, int n);
/* y[i] = y[i]*c + p*x[i] (c == 1 skips the scale) */
typedef void (*lp_axpby_fn)(float *y, float c, float p, const float *x, int n);
void lp_cpu_axpby_scalar(float *y, float c, float p, const float *x, int n);
void lp_cpu_axpby_avx2(float *y, float c, float p, const float *x, int n);

void lp_cpu_matmul(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                   int n_rows, float *y);
void lp_cpu_get_rows(void *ctx, const struct lp_weight *w, const int32_t *ids, int n, float *out);
void lp_cpu_attention(void *ctx, const struct lp_attn_desc *a);

#endif
