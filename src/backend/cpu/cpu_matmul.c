/*
 * cpu_matmul.c - y = x W^T with W in its stored type, and embedding row gather.
 *
 * Work is split by output: a task owns a tile of weight rows, converts them to
 * f32 once into per-thread scratch (F32 weights are read in place) and
 * multiplies them against every activation row, so the conversion cost is
 * amortised over the 32-512 rows of a diffusion forward. Each output is one dot
 * product with a fixed lane order (see cpu_internal.h), whatever the tile, the
 * micro-kernel or the thread that computes it.
 */
#include "cpu_internal.h"

#include <string.h>
#include "../../core/types.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LP_HAVE_X86 1
#endif

/* ------------------------------------------------------------ primitives */

static inline float hsum8_scalar(const float *l) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

float lp_cpu_dot_scalar(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i + l < n; l++)
        acc[l] += a[i + l] * b[i + l];
    return hsum8_scalar(acc);
}

void lp_cpu_axpby_scalar(float *y, float c, float p, const float *x, int n) {
    if (c != 1.0f)
        for (int i = 0; i < n; i++)
            y[i] *= c;
    for (int i = 0; i < n; i++)
        y[i] += p * x[i];
}

/* rows [r0, r0+nr) of the tile at w (row stride ldw) against nt activation rows */
static void mm_tile_scalar(const float *w, int64_t ldw, int nr, const float *x, int64_t ldx, int nt,
                           int n, float *y, int64_t ldy, const float *bias) {
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) {
            float s = lp_cpu_dot_scalar(w + r * ldw, x + t * ldx, n);
            y[t * ldy + r] = bias ? s + bias[r] : s;
        }
}

#ifdef LP_HAVE_X86
__attribute__((target("avx2,fma"))) static inline float hsum8_avx(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static inline __m256i tail_mask(int rem) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2,fma"))) float lp_cpu_dot_avx2(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    if (i < n) {
        __m256i m = tail_mask(n - i);
        acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), acc);
    }
    return hsum8_avx(acc);
}

__attribute__((target("avx2,fma"))) void lp_cpu_axpby_avx2(float *y, float c, float p,
                                                           const float *x, int n) {
    __m256 vp = _mm256_set1_ps(p), vc = _mm256_set1_ps(c);
    int i = 0;
    if (c != 1.0f) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vp, _mm256_loadu_ps(x + i),
                                                    _mm256_mul_ps(vc, _mm256_loadu_ps(y + i))));
        for (; i < n; i++)
            y[i] = y[i] * c + p * x[i];
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i,
                             _mm256_fmadd_ps(vp, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        for (; i < n; i++)
            y[i] = __builtin_fmaf(p, x[i], y[i]);
    }
}

/* F16 rows converted with F16C (exact, like lp_f16_to_f32, ~10x faster) */
__attribute__((target("avx2,fma,f16c"))) static void f16_to_f32_f16c(const void *src, float *dst,
                                                                     int64_t n) {
    const lp_half *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++)
        dst[i] = lp_f16_to_f32(h[i]);
}

/* Q8_0 / Q4_0 rows: the same products as types.c (int -> float exact, one f32
 * multiply by the block scale), 8 lanes at a time */
__attribute__((target("avx2,fma,f16c"))) static void q8_0_to_f32_avx2(const void *src, float *dst,
                                                                      int64_t n) {
    const lp_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / LP_QK8_0; i++) {
        const __m256 d = _mm256_set1_ps(lp_f16_to_f32(b[i].d));
        for (int j = 0; j < LP_QK8_0; j += 8) {
            __m128i q = _mm_loadl_epi64((const __m128i *)(b[i].qs + j));
            __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(dst + i * LP_QK8_0 + j, _mm256_mul_ps(d, f));
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) static void q4_0_to_f32_avx2(const void *src, float *dst,
                                                                      int64_t n) {
    const lp_block_q4_0 *b = src;
    const __m128i low4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / LP_QK4_0; i++) {
        const __m256 d = _mm256_set1_ps(lp_f16_to_f32(b[i].d));
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, low4), eight); /* elements 0..15 */
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low4), eight); /* 16..31 */
        float *y = dst + i * LP_QK4_0;
        _mm256_storeu_ps(y, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
        _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(
                                                     _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
        _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
        _mm256_storeu_ps(
            y + 24,
            _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
    }
}

/* 4 weight rows x 2 activation rows per step; every output keeps the lane
 * order of lp_cpu_dot_avx2, so the remainder loops may use it directly. */
__attribute__((target("avx2,fma"))) static void mm_tile_avx2(const float *w, int64_t ldw, int nr,
                                                             const float *x, int64_t ldx, int nt,
                                                             int n, float *y, int64_t ldy,
                                                             const float *bias) {
    const int n8 = n & ~7;
    const __m256i m = tail_mask(n - n8);
    int t = 0;
    for (; t + 2 <= nt; t += 2) {
        const float *x0 = x + t * ldx, *x1 = x0 + ldx;
        int r = 0;
        for (; r + 4 <= nr; r += 4) {
            const float *w0 = w + r * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
            __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int i = 0; i < n8; i += 8) {
                __m256 v0 = _mm256_loadu_ps(x0 + i), v1 = _mm256_loadu_ps(x1 + i), wv;
                wv = _mm256_loadu_ps(w0 + i);
                a00 = _mm256_fmadd_ps(wv, v0, a00);
                a01 = _mm256_fmadd_ps(wv, v1, a01);
                wv = _mm256_loadu_ps(w1 + i);
                a10 = _mm256_fmadd_ps(wv, v0, a10);
                a11 = _mm256_fmadd_ps(wv, v1, a11);
                wv = _mm256_loadu_ps(w2 + i);
                a20 = _mm256_fmadd_ps(wv, v0, a20);
                a21 = _mm256_fmadd_ps(wv, v1, a21);
                wv = _mm256_loadu_ps(w3 + i);
                a30 = _mm256_fmadd_ps(wv, v0, a30);
                a31 = _mm256_fmadd_ps(wv, v1, a31);
            }
            if (n8 < n) {
                __m256 v0 = _mm256_maskload_ps(x0 + n8, m), v1 = _mm256_maskload_ps(x1 + n8, m);
                __m256 wv;
                wv = _mm256_maskload_ps(w0 + n8, m);
                a00 = _mm256_fmadd_ps(wv, v0, a00);
                a01 = _mm256_fmadd_ps(wv, v1, a01);
                wv = _mm256_maskload_ps(w1 + n8, m);
                a10 = _mm256_fmadd_ps(wv, v0, a10);
                a11 = _mm256_fmadd_ps(wv, v1, a11);
                wv = _mm256_maskload_ps(w2 + n8, m);
                a20 = _mm256_fmadd_ps(wv, v0, a20);
                a21 = _mm256_fmadd_ps(wv, v1, a21);
                wv = _mm256_maskload_ps(w3 + n8, m);
                a30 = _mm256_fmadd_ps(wv, v0, a30);
                a31 = _mm256_fmadd_ps(wv, v1, a31);
            }
            float b0 = bias ? bias[r] : 0, b1 = bias ? bias[r + 1] : 0;
            float b2 = bias ? bias[r + 2] : 0, b3 = bias ? bias[r + 3] : 0;
            float *y0 = y + t * ldy + r, *y1 = y0 + ldy;
            /* s + 0.0f is exact, so bias-free outputs equal the plain dot */
            y0[0] = hsum8_avx(a00) + b0;
            y0[1] = hsum8_avx(a10) + b1;
            y0[2] = hsum8_avx(a20) + b2;
            y0[3] = hsum8_avx(a30) + b3;
            y1[0] = hsum8_avx(a01) + b0;
            y1[1] = hsum8_avx(a11) + b1;
            y1[2] = hsum8_avx(a21) + b2;
            y1[3] = hsum8_avx(a31) + b3;
        }
        for (; r < nr; r++) {
            float b = bias ? bias[r] : 0;
            y[t * ldy + r] = lp_cpu_dot_avx2(w + r * ldw, x0, n) + b;
            y[(t + 1) * ldy + r] = lp_cpu_dot_avx2(w + r * ldw, x1, n) + b;
        }
    }
    for (; t < nt; t++)
        for (int r = 0; r < nr; r++)
            y[t * ldy + r] = lp_cpu_dot_avx2(w + r * ldw, x + t * ldx, n) + (bias ? bias[r] : 0);
}

/* The same 8-lane ymm arithmetic with 4 weight rows x 4 activation rows per step,
 * for CPUs with AVX-512VL: its 32 vector registers hold the 16 accumulators. Every
 * output sees exactly the instruction sequence of lp_cpu_dot_avx2, so results are
 * bitwise those of mm_tile_avx2. */
#define MM44_ROW(wrow, k, LOAD)                                                                    \
    wv = LOAD(wrow);                                                                               \
    a##k##0 = _mm256_fmadd_ps(wv, v0, a##k##0);                                                    \
    a##k##1 = _mm256_fmadd_ps(wv, v1, a##k##1);                                                    \
    a##k##2 = _mm256_fmadd_ps(wv, v2, a##k##2);                                                    \
    a##k##3 = _mm256_fmadd_ps(wv, v3, a##k##3);
#define LOADU(p) _mm256_loadu_ps(p)
#define LOADM(p) _mm256_maskload_ps(p, m)
#define MM44_STEP(off, LOAD)                                                                       \
    {                                                                                              \
        __m256 v0 = LOAD(x0 + (off)), v1 = LOAD(x1 + (off)), v2 = LOAD(x2 + (off));                \
        __m256 v3 = LOAD(x3 + (off)), wv;                                                          \
        MM44_ROW(w0 + (off), 0, LOAD)                                                              \
        MM44_ROW(w1 + (off), 1, LOAD)                                                              \
        MM44_ROW(w2 + (off), 2, LOAD)                                                              \
        MM44_ROW(w3 + (off), 3, LOAD)                                                              \
    }

__attribute__((target("avx2,fma,avx512f,avx512vl"))) static void
mm_tile_avx512vl(const float *w, int64_t ldw, int nr, const float *x, int64_t ldx, int nt, int n,
                 float *y, int64_t ldy, const float *bias) {
    const int n8 = n & ~7;
    const __m256i m = tail_mask(n - n8);
    const int nr4 = nr & ~3;
    int t = 0;
    for (; t + 4 <= nt; t += 4) {
        const float *x0 = x + t * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        for (int r = 0; r < nr4; r += 4) {
            const float *w0 = w + r * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m256 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (int i = 0; i < n8; i += 8)
                MM44_STEP(i, LOADU)
            if (n8 < n) MM44_STEP(n8, LOADM)
            const __m256 acc[4][4] = {{a00, a01, a02, a03},
                                      {a10, a11, a12, a13},
                                      {a20, a21, a22, a23},
                                      {a30, a31, a32, a33}};
            for (int k = 0; k < 4; k++) {
                const float b = bias ? bias[r + k] : 0;
                for (int q = 0; q < 4; q++)
                    y[(t + q) * ldy + r + k] = hsum8_avx(acc[k][q]) + b;
            }
        }
        if (nr4 < nr) /* leftover weight rows for these 4 activation rows */
            mm_tile_avx2(w + nr4 * ldw, ldw, nr - nr4, x0, ldx, 4, n, y + t * ldy + nr4, ldy,
                         bias ? bias + nr4 : NULL);
    }
    if (t < nt) mm_tile_avx2(w, ldw, nr, x + t * ldx, ldx, nt - t, n, y + t * ldy, ldy, bias);
}
#undef MM44_ROW
#undef MM44_STEP
#undef LOADU
#undef LOADM
#else
float lp_cpu_dot_avx2(const float *a, const float *b, int n) {
    return lp_cpu_dot_scalar(a, b, n);
}
void lp_cpu_axpby_avx2(float *y, float c, float p, const float *x, int n) {
    lp_cpu_axpby_scalar(y, c, p, x, n);
}
#endif

/* ---------------------------------------------------------------- matmul */

struct mm_job {
    struct lp_cpu *cpu;
    const struct lp_weight *w;
    const struct lp_type_traits *tt; /* NULL for F32 (read in place) */
    const float *bias, *x;
    int n_rows;
    int tile;
    float *y;
};

/* Weight rows per tile: more rows amortise the activation reads, fewer keep the
 * converted tile in L2. Depends only on the row length, never on threads. */
static int mm_tile_rows(int64_t n_in) {
    return n_in <= 4096 ? 16 : 8;
}

static void mm_task(void *arg, int task, int tid) {
    struct mm_job *j = arg;
    const struct lp_weight *w = j->w;
    int64_t r0 = (int64_t)task * j->tile;
    int nr = (int)LP_MIN((int64_t)j->tile, w->n_out - r0);
    int n = (int)w->n_in;
    const float *wt;
    int64_t ldw;
    if (!j->tt) {
        wt = (const float *)((const char *)w->data + r0 * w->row_bytes);
        ldw = (int64_t)(w->row_bytes / sizeof(float));
    } else {
        float *s = j->cpu->mm_scratch + (size_t)tid * j->cpu->mm_stride;
        lp_to_float_fn conv = j->tt->to_float;
#ifdef LP_HAVE_X86
        if (j->cpu->simd) {
            if (w->type == LOPAD_TYPE_F16)
                conv = f16_to_f32_f16c;
            else if (w->type == LOPAD_TYPE_Q8_0)
                conv = q8_0_to_f32_avx2;
            else if (w->type == LOPAD_TYPE_Q4_0)
                conv = q4_0_to_f32_avx2;
        }
#endif
        for (int r = 0; r < nr; r++)
            conv((const char *)w->data + (r0 + r) * w->row_bytes, s + (int64_t)r * n, n);
        wt = s;
        ldw = n;
    }
    const float *bias = j->bias ? j->bias + r0 : NULL;
    float *y = j->y + r0;
#ifdef LP_HAVE_X86
    if (j->cpu->simd) {
        if (j->cpu->wide)
            mm_tile_avx512vl(wt, ldw, nr, j->x, n, j->n_rows, n, y, w->n_out, bias);
        else
            mm_tile_avx2(wt, ldw, nr, j->x, n, j->n_rows, n, y, w->n_out, bias);
        return;
    }
#endif
    mm_tile_scalar(wt, ldw, nr, j->x, n, j->n_rows, n, y, w->n_out, bias);
}

void lp_cpu_matmul(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                   int n_rows, float *y) {
    struct lp_cpu *cpu = ctx;
    LP_ASSERT(w->n_in <= cpu->lim.max_n_in);
    struct mm_job j = {.cpu = cpu, .w = w, .bias = bias, .x = x, .n_rows = n_rows, .y = y};
    if (w->type != LOPAD_TYPE_F32) {
        j.tt = lp_type_traits(w->type);
        LP_ASSERT(j.tt && j.tt->to_float);
    }
    j.tile = mm_tile_rows(w->n_in);
    LP_ASSERT(j.tile <= LP_MM_TILE_MAX);
    int64_t n_tasks = (w->n_out + j.tile - 1) / j.tile;
    LP_ASSERT(n_tasks <= INT32_MAX);
    if (n_rows <= 0) return;
    lp_pool_run(cpu->pool, (int)n_tasks, mm_task, &j);
}

/* -------------------------------------------------------------- get_rows */

struct rows_job {
    const struct lp_weight *w;
    const struct lp_type_traits *tt;
    const int32_t *ids;
    float *out;
};

static void rows_task(void *arg, int task, int tid) {
    struct rows_job *j = arg;
    const struct lp_weight *w = j->w;
    int64_t id = j->ids[task];
    LP_ASSERT(id >= 0 && id < w->n_out);
    const void *src = (const char *)w->data + id * w->row_bytes;
    float *dst = j->out + (int64_t)task * w->n_in;
    if (j->tt)
        j->tt->to_float(src, dst, w->n_in);
    else
        memcpy(dst, src, (size_t)w->n_in * sizeof(float));
}

void lp_cpu_get_rows(void *ctx, const struct lp_weight *w, const int32_t *ids, int n, float *out) {
    struct lp_cpu *cpu = ctx;
    struct rows_job j = {.w = w, .ids = ids, .out = out};
    if (w->type != LOPAD_TYPE_F32) {
        j.tt = lp_type_traits(w->type);
        LP_ASSERT(j.tt && j.tt->to_float);
    }
    lp_pool_run(cpu->pool, n, rows_task, &j);
}
