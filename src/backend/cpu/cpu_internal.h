/*
 * cpu_internal.h - what the CPU backend's source files share: the context, the
 * kernel levels, the small-op policy and the vector primitives (scalar and AVX2
 * flavours with one fixed reduction order each, so results never depend on
 * tiling or thread count).
 */
#ifndef LP_BACKEND_CPU_INTERNAL_H
#define LP_BACKEND_CPU_INTERNAL_H

#include "cpu.h"
#include "../../core/threadpool.h"

/* Matmul blocking: weight rows per task, K columns per block (a multiple of
 * every block size, 256 = QK_K), activation rows per accumulator chunk. */
#define LP_MM_MB 96
#define LP_MM_KC 256
#define LP_MM_TC 256
/* Tasks per thread below which a matmul uses narrower panels than LP_MM_MB. */
#define LP_MM_TASKS_PER_THREAD 4
/* Shortest weight row (elements) for the level-3 bf16 / int8 dot paths. */
#define LP_MM_DOT_MIN_K 256
/* Attention tiles: queries per task and keys per online-softmax step. */
#define LP_ATT_QT 4
#define LP_ATT_KT 32

/* Work below which an op runs on the calling thread only (waking the pool costs
 * more, and far more on a loaded machine). Results are the same either way. */
#define LP_PAR_MIN_MM (4.0 * 1024 * 1024) /* multiply-adds */
#define LP_PAR_MIN_EW (64.0 * 1024)       /* elements */

/* Kernel levels (lopad_ctx_params.kernels = ref|avx2|avx512f32|avx512). Levels 0-2 compute
 * every matmul output with the same f32 operations (bitwise equal); level 3
 * adds the bf16-dot (BF16 weights) and int8-dot (Q8_0/Q4_0/Q4_K/Q6_K) paths. */
enum { LP_LEVEL_REF = 0, LP_LEVEL_AVX2 = 1, LP_LEVEL_AVX512 = 2, LP_LEVEL_AVX512_DOT = 3 };

struct lp_cpu {
    lp_pool *pool;
    int n_threads;
    int level;               /* kernel level in use */
    bool simd;               /* level >= 1: AVX2+FMA+F16C small kernels */
    bool wide;               /* level >= 2 */
    bool has_bf16, has_vnni; /* the CPU has AVX512-BF16 / AVX512-VNNI (+BW) */
    struct lp_backend_limits lim;

    float *mm_scratch;  /* [n_threads][mm_stride] */
    size_t mm_stride;   /* floats per thread */
    float *xpk;         /* activations packed once per matmul (bf16 / int8 paths), or NULL */
    float *att_scratch; /* [n_threads][att_stride] */
    const struct lp_cpu_repack *repack; /* the bound model's repacked weights, or NULL */
    size_t att_stride;
};

/* Run fn over [0, n_tasks) on the pool, or on the calling thread when !parallel. */
static inline void lp_cpu_run(struct lp_cpu *cpu, int n_tasks, lp_task_fn fn, void *ctx,
                              bool parallel) {
    if (parallel && cpu->n_threads > 1) {
        lp_pool_run(cpu->pool, n_tasks, fn, ctx);
        return;
    }
    for (int t = 0; t < n_tasks; t++)
        fn(ctx, t, 0);
}

/* Floats of matmul / attention scratch one thread needs. */
size_t lp_cpu_mm_scratch_floats(void);
size_t lp_cpu_xpack_floats(int64_t max_n_in);
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

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* exp(x) for f32 lanes: 2^n * p(r), r = x - n ln2 in two parts, degree-6
 * polynomial (relative error ~2 ulp); exp(-inf) = 0, large x saturate to inf. */
__attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq,avx512bw"))) static inline __m512
lp_exp512(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.7228f), lo = _mm512_set1_ps(-104.0f);
    x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    /* 2^n in two steps so n down to -150 stays representable */
    const __m512 n1 = _mm512_roundscale_ps(_mm512_mul_ps(n, _mm512_set1_ps(0.5f)),
                                           _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return _mm512_scalef_ps(_mm512_scalef_ps(p, n1), _mm512_sub_ps(n, n1));
}
#endif

void lp_cpu_matmul(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                   int n_rows, float *y);
void lp_cpu_head_scores(void *ctx, const struct lp_weight *w, const float *x, int n_rows,
                        float *scratch, size_t scratch_floats, struct lp_row_scores *out);
size_t lp_cpu_scores_scratch_floats(int64_t n_vocab, int n_rows);
void lp_cpu_get_rows(void *ctx, const struct lp_weight *w, const int32_t *ids, int n, float *out);
void lp_cpu_attention(void *ctx, const struct lp_attn_desc *a);

#endif
