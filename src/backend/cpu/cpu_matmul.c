/*
 * cpu_matmul.c - y = x W^T with W in its stored type, the output head fused with
 * the confidence scores, and embedding row gather.
 *
 * GEMM layout (all kernel levels): a task owns up to LP_MM_MB (96) consecutive
 * weight rows (fewer when that leaves threads idle; split by output, so threads
 * never share an output). For each K block of LP_MM_KC (256) columns it stages
 * its weight rows row-major (converted to f32; for the int8 path u8 quants plus
 * scales, see prep_w_i8; read in place for BF16 and repacked Q8_0), and the
 * activation rows are packed transposed in groups of 16 ([k][16 rows]). The
 * register-blocked micro-kernels broadcast one weight element per weight row and
 * multiply it into 1-2 activation vectors: 12 weight rows x 32 activation rows
 * (24 zmm accumulators) for f32 / bf16, 6 x 32 for int8. Accumulators for up to
 * LP_MM_TC (256) activation rows stay in per-thread scratch across K blocks and
 * go to y (+ bias) at the end. The f32 path packs activations per task (cheap
 * next to 96 weight rows); the bf16 / int8 paths round / quantise and pack each
 * 256-row chunk of activations once per call into a shared buffer first.
 * Small windows (32 rows) read each weight byte once, straight from memory, 96
 * rows far apart: software prefetch of the next tile (in-place BF16) or of the
 * next K block's rows (staged paths) keeps that at the streaming rate.
 *
 * Numerics, per output (t, o), identical whatever the tiling, the thread count
 * or the other rows fed:
 *  - f32 path (levels 0-2, and level 3 for F32/F16): weights converted
 *    exactly to f32 (the values of to_float); acc = fmaf(w[o][k], x[t][k], acc)
 *    for k = 0, 1, ..., n_in-1 from acc = 0, then + bias. Scalar, AVX2 and
 *    AVX-512 kernels are bitwise equal.
 *  - bf16 path (level 3, BF16 weights with n_in >= LP_MM_DOT_MIN_K, AVX512-BF16):
 *    activations rounded to bf16 (nearest-even); vdpbf16ps accumulates the
 *    exact products of pairs (k, k+1) into an f32 accumulator in k order; + bias.
 *    Error bound per output: sum_k |w_k x_k| 2^-9 (tested).
 *  - int8 path (level 3, Q8_0/Q4_0/Q4_K/Q6_K weights with n_in >= LP_MM_DOT_MIN_K,
 *    AVX512-VNNI): each activation row is quantised per 32-block like llama.cpp's
 *    q8_0 (d = amax/127, q = rne(x/d)), each weight scale block's integer dot
 *    product is exact, and acc = fmaf((float)isum, d_x * d_w, acc) block after
 *    block (Q6_K: two 16-blocks per activation block; Q4_K also adds the block's
 *    min term -m_w d_x sum q_x); + bias. (vpdpbusd multiplies u8 by s8: signed
 *    weights go in as q_w + 128, and each block sum starts at -128 sum q_x,
 *    computed once per activation row and block.)
 *    Error bound: sum over blocks of (amax_b / 254) sum_k |w_k| (tested).
 */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "../../core/types.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LP_HAVE_X86 1
#endif

#define PW 16 /* weight rows per panel */

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

/* one f16 scale with F16C (exact, the value of lp_f16_to_f32) */
#define h2f(h) _cvtsh_ss(h)

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

/* BF16 rows: a 16-bit shift, exact */
__attribute__((target("avx2,fma"))) static void bf16_to_f32_avx2(const void *src, float *dst,
                                                                 int64_t n) {
    const lp_bf16 *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++)
        dst[i] = lp_bf16_to_f32(h[i]);
}

/* Q8_0 / Q4_0 rows: the same products as types.c (int -> float exact, one f32
 * multiply by the block scale), 8 lanes at a time */
__attribute__((target("avx2,fma,f16c"))) static void q8_0_to_f32_avx2(const void *src, float *dst,
                                                                      int64_t n) {
    const lp_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / LP_QK8_0; i++) {
        const __m256 d = _mm256_set1_ps(h2f(b[i].d));
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
        const __m256 d = _mm256_set1_ps(h2f(b[i].d));
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
/* no a*b+c -> fma contraction in a function (gcc: attribute; clang: pragma) */
#if defined(__clang__)
#define LP_NO_CONTRACT
#define LP_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#else
#define LP_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define LP_NO_CONTRACT_BODY
#endif

/* Q4_K / Q6_K rows: the operations of types.c in the same order, 8 lanes at a time
 * (no FMA contraction: d1 * q - m1 is a rounded product, then a subtraction) */
__attribute__((target("avx2,fma,f16c"))) LP_NO_CONTRACT static void
q4_k_to_f32_avx2(const void *src, float *dst, int64_t n) {
    LP_NO_CONTRACT_BODY
    const lp_block_q4_K *b = src;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs, *s = b[i].scales;
        float *y = dst + i * LP_QK_K;
        for (int j = 0, is = 0; j < LP_QK_K; j += 64, is += 2) {
            float dd[2], mm[2];
            for (int h = 0; h < 2; h++) {
                const int k = is + h;
                const uint8_t sc =
                    k < 4 ? s[k] & 63 : (uint8_t)((s[k + 4] & 15) | ((s[k - 4] >> 6) << 4));
                const uint8_t m =
                    k < 4 ? s[k + 4] & 63 : (uint8_t)((s[k + 4] >> 4) | ((s[k] >> 6) << 4));
                dd[h] = d * sc;
                mm[h] = dmin * m;
            }
            const __m256 d1 = _mm256_set1_ps(dd[0]), m1 = _mm256_set1_ps(mm[0]);
            const __m256 d2 = _mm256_set1_ps(dd[1]), m2 = _mm256_set1_ps(mm[1]);
            for (int l = 0; l < 32; l += 8) {
                __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + l)));
                __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
                __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
                _mm256_storeu_ps(y + j + l, _mm256_sub_ps(_mm256_mul_ps(d1, lo), m1));
                _mm256_storeu_ps(y + j + 32 + l, _mm256_sub_ps(_mm256_mul_ps(d2, hi), m2));
            }
            q += 32;
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) LP_NO_CONTRACT static void
q6_k_to_f32_avx2(const void *src, float *dst, int64_t n) {
    LP_NO_CONTRACT_BODY
    const lp_block_q6_K *b = src;
    const __m256i m15 = _mm256_set1_epi32(15), m3 = _mm256_set1_epi32(3),
                  c32 = _mm256_set1_epi32(32);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float d = h2f(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        float *y = dst + i * LP_QK_K;
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l += 8) {
                const int is = l / 16;
                const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l)));
                const __m256i c =
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l + 32)));
                const __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + l)));
                __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, m15),
                                             _mm256_slli_epi32(_mm256_and_si256(h, m3), 4));
                __m256i q2 = _mm256_or_si256(
                    _mm256_and_si256(c, m15),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), m3), 4));
                __m256i q3 = _mm256_or_si256(
                    _mm256_srli_epi32(a, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), m3), 4));
                __m256i q4 = _mm256_or_si256(
                    _mm256_srli_epi32(c, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), m3), 4));
                const __m256i qs[4] = {q1, q2, q3, q4};
                for (int k = 0; k < 4; k++) {
                    const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(qs[k], c32));
                    const __m256 ds = _mm256_set1_ps(d * sc[is + 2 * k]);
                    _mm256_storeu_ps(y + l + 32 * k, _mm256_mul_ps(ds, f));
                }
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}
#else
float lp_cpu_dot_avx2(const float *a, const float *b, int n) {
    return lp_cpu_dot_scalar(a, b, n);
}
void lp_cpu_axpby_avx2(float *y, float c, float p, const float *x, int n) {
    lp_cpu_axpby_scalar(y, c, p, x, n);
}
#endif

/* ------------------------------------------------------------ the job */

enum mm_path { MM_F32, MM_BF16, MM_I8 };

struct mm_job {
    struct lp_cpu *cpu;
    const struct lp_weight *w;
    lp_to_float_fn conv; /* row segment -> f32 (f32 path; NULL for F32 weights) */
    enum mm_path path;
    int i8kind; /* int8 path: I8_OFF, I8_MIN or I8_OFF16 (see mk_i8_512) */
    int mb;     /* weight rows per task (panel), <= MB; results do not depend on it */
    /* int8 path on a repacked weight: u8 rows [kb][n_out][KC], scales [kb][n_out][KC/32] */
    const uint8_t *rq;
    const float *rd;
    int level;
    const float *bias, *x;
    int n_rows;
    float *y;
    /* bf16 / int8 paths: activations packed once per call, shared by every task:
     * [kb][group of 16 rows][KC/2 or KC/4][16] and, int8, scales [kb][group][KC/32][16] */
    float *xpk, *xpks;
};

#define KC LP_MM_KC
#define MB LP_MM_MB
#define TC LP_MM_TC
#define XG_FLOATS ((size_t)KC * PW) /* one packed activation group (16 rows x KC) */

/* per-thread scratch layout, in floats */
#define SC_W ((size_t)MB * (KC + 16)) /* weight rows of the task, row-major */
#define SC_WS ((size_t)MB * 24)       /* int8 path: weight scales (WS_ROW per row) */
#define SC_X (2 * XG_FLOATS)          /* two packed activation groups */
/* int8 path, per group of 16 activation rows: scales [blk][16] (f32), then
 * offsets [blk][16] (int32, -128 * sum of the row's quants in the block), then
 * the same offsets per 16-half [2 blk][16] */
#define XS_GROUP ((size_t)4 * (KC / 32) * PW)
#define SC_XS (2 * XS_GROUP)           /* int8 path: activation scales of two groups */
#define SC_XR ((size_t)PW * (KC + 32)) /* activation rows staged for packing */
#define SC_C ((size_t)MB * TC)         /* accumulators [row][activation] */

size_t lp_cpu_mm_scratch_floats(void) {
    return SC_W + SC_WS + SC_X + SC_XS + SC_XR + SC_C + 64;
}

/* Shared packed activations: TC rows (TC/16 groups) of up to max_n_in columns. */
#define XP_GROUPS (TC / PW)
static size_t xpk_main_floats(int64_t max_n_in) {
    return (size_t)((max_n_in + KC - 1) / KC) * XP_GROUPS * XG_FLOATS;
}
size_t lp_cpu_xpack_floats(int64_t max_n_in) {
    const size_t nkb = (size_t)((max_n_in + KC - 1) / KC);
    return xpk_main_floats(max_n_in) + nkb * XP_GROUPS * XS_GROUP;
}

struct mm_scr {
    float *w, *ws, *x, *xs, *xr, *c;
};

static struct mm_scr mm_scr(struct lp_cpu *cpu, int tid) {
    struct mm_scr s;
    s.w = cpu->mm_scratch + (size_t)tid * cpu->mm_stride;
    s.ws = s.w + SC_W;
    s.x = s.ws + SC_WS;
    s.xs = s.x + SC_X;
    s.xr = s.xs + SC_XS;
    s.c = s.xr + SC_XR;
    return s;
}

/* Convert row segment [k0, k0+kc) of weight row r to f32 in dst (kc valid values). */
static void conv_segment(const struct mm_job *j, int64_t r, int k0, int kc, float *dst) {
    const struct lp_weight *w = j->w;
    const char *row = (const char *)w->data + r * w->row_bytes;
    if (!j->conv) {
        memcpy(dst, (const float *)row + k0, (size_t)kc * sizeof(float));
        return;
    }
    const struct lp_type_traits *tt = lp_type_traits(w->type);
    j->conv(row + (size_t)(k0 / tt->blck_size) * tt->type_size, dst, kc);
}

/* ------------------------------------------------ scalar / generic path */

/* Activation rows (nrow <= 16, row stride ldx) columns [0, kc) as [k][16], zero padded. */
static void pack_x_scalar(const float *x, int64_t ldx, int nrow, int kc, float *xp) {
    for (int k = 0; k < kc; k++)
        for (int l = 0; l < PW; l++)
            xp[(size_t)k * PW + l] = l < nrow ? x[l * ldx + k] : 0.0f;
}

/* nw weight rows (w, row stride ldw) x ng packed groups; accumulators in c
 * ([row][activation], row stride TC). */
static void kern_f32_scalar(int nw, int ng, const float *w, int64_t ldw, const float *xp, int kc,
                            float *c, bool first) {
    for (int o = 0; o < nw; o++)
        for (int g = 0; g < ng; g++)
            for (int l = 0; l < PW; l++) {
                float acc = first ? 0.0f : c[o * TC + g * PW + l];
                for (int k = 0; k < kc; k++)
                    acc = fmaf(w[o * ldw + k], xp[g * XG_FLOATS + (size_t)k * PW + l], acc);
                c[o * TC + g * PW + l] = acc;
            }
}

#ifdef LP_HAVE_X86
/* ------------------------------------------------------------ AVX2 path */

__attribute__((target("avx2,fma"))) static void kern_f32_avx2(int nw, int ng, const float *w,
                                                              int64_t ldw, const float *xp, int kc,
                                                              float *c, bool first) {
    /* up to 6 weight rows x one group (2 ymm): 12 accumulators */
    for (int g = 0; g < ng; g++)
        for (int o0 = 0; o0 < nw; o0 += 6) {
            const int n = LP_MIN(6, nw - o0);
            __m256 a[6][2];
            for (int o = 0; o < 6; o++) {
                float *cr = c + (o0 + o) * TC + g * PW;
                a[o][0] = o < n && !first ? _mm256_loadu_ps(cr) : _mm256_setzero_ps();
                a[o][1] = o < n && !first ? _mm256_loadu_ps(cr + 8) : _mm256_setzero_ps();
            }
            const float *xg = xp + g * XG_FLOATS, *wr = w + o0 * ldw;
#define K6(NN)                                                                                     \
    for (int k = 0; k < kc; k++) {                                                                 \
        const __m256 x0 = _mm256_loadu_ps(xg + k * PW), x1 = _mm256_loadu_ps(xg + k * PW + 8);     \
        _Pragma("GCC unroll 6") for (int o = 0; o < NN; o++) {                                     \
            const __m256 b = _mm256_broadcast_ss(wr + o * ldw + k);                                \
            a[o][0] = _mm256_fmadd_ps(b, x0, a[o][0]);                                             \
            a[o][1] = _mm256_fmadd_ps(b, x1, a[o][1]);                                             \
        }                                                                                          \
    }
            switch (n) {
            case 6: K6(6) break;
            case 5: K6(5) break;
            case 4: K6(4) break;
            case 3: K6(3) break;
            case 2: K6(2) break;
            default: K6(1) break;
            }
#undef K6
            for (int o = 0; o < n; o++) {
                float *cr = c + (o0 + o) * TC + g * PW;
                _mm256_storeu_ps(cr, a[o][0]);
                _mm256_storeu_ps(cr + 8, a[o][1]);
            }
        }
}

/* ---------------------------------------------------------- AVX-512 path */

#define T512 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq")))

/* In-place transpose of a 16x16 matrix of 32-bit elements held in 16 zmm. */
T512 static inline void tr16(__m512 *r) {
    __m512 a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d p0 = _mm512_castps_pd(a[4 * i]), p1 = _mm512_castps_pd(a[4 * i + 1]);
        __m512d p2 = _mm512_castps_pd(a[4 * i + 2]), p3 = _mm512_castps_pd(a[4 * i + 3]);
        b[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(p0, p2));
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p0, p2));
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(p1, p3));
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(p1, p3));
    }
    for (int c = 0; c < 4; c++) {
        __m512 u0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x44);
        __m512 u1 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xEE);
        __m512 u2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x44);
        __m512 u3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
}

/* nr rows of 32-bit elements (row stride ld elements) -> [col][16] for n32
 * columns; rows past nr are zero. */
T512 static void pack_dw_512(const void *base, int64_t ld, int nr, int n32, float *pk) {
    const float *src = base;
    for (int c0 = 0; c0 < n32; c0 += 16) {
        const int nc = LP_MIN(16, n32 - c0);
        const __mmask16 m = (__mmask16)((1u << nc) - 1);
        __m512 v[16];
        for (int r = 0; r < 16; r++)
            v[r] = r < nr ? _mm512_maskz_loadu_ps(m, src + r * ld + c0) : _mm512_setzero_ps();
        tr16(v);
        for (int c = 0; c < nc; c++)
            _mm512_storeu_ps(pk + (size_t)(c0 + c) * PW, v[c]);
    }
}

static inline uint32_t ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* f32 micro-kernel: NW weight rows (broadcast) x NG groups of 16 activation rows. */
T512 static inline __attribute__((always_inline)) void mk_f32_512(const int NW, const int NG,
                                                                  const float *w, int64_t ldw,
                                                                  const float *xp, int kc, float *c,
                                                                  bool first) {
    __m512 a[12][2];
#pragma GCC unroll 12
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            a[o][g] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + o * TC + g * PW);
    for (int k = 0; k < kc; k++) {
        __m512 xv[2];
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            xv[g] = _mm512_loadu_ps(xp + g * XG_FLOATS + (size_t)k * PW);
#pragma GCC unroll 12
        for (int o = 0; o < NW; o++) {
            const __m512 b = _mm512_set1_ps(w[o * ldw + k]);
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++)
                a[o][g] = _mm512_fmadd_ps(b, xv[g], a[o][g]);
        }
    }
#pragma GCC unroll 12
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            _mm512_storeu_ps(c + o * TC + g * PW, a[o][g]);
}

/* bf16 micro-kernel: weights as bf16 pairs (w: uint32 rows, stride ldw), xp
 * [pair][16] bf16 pairs. */
#define TBF __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512bf16")))
TBF static inline __attribute__((always_inline)) void mk_bf16_512(const int NW, const int NG,
                                                                  const uint32_t *w, int64_t ldw,
                                                                  const float *xp, int npair,
                                                                  float *c, bool first) {
    __m512 a[12][2];
#pragma GCC unroll 12
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            a[o][g] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + o * TC + g * PW);
    for (int k = 0; k < npair; k++) {
        __m512bh xv[2];
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            xv[g] = (__m512bh)_mm512_loadu_ps(xp + g * XG_FLOATS + (size_t)k * PW);
#pragma GCC unroll 12
        for (int o = 0; o < NW; o++) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)ld32(w + o * ldw + k));
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++)
                a[o][g] = _mm512_dpbf16_ps(a[o][g], b, xv[g]);
        }
    }
#pragma GCC unroll 12
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            _mm512_storeu_ps(c + o * TC + g * PW, a[o][g]);
}

/* int8 micro-kernel: weights u8 rows (w, stride ldw bytes) with their scales wd
 * [row][WS_ROW] (stride ldws); xp [k/4][16] s8x4 activation quants, xd per group
 * (stride XS_GROUP): scales [blk][16], then offsets -128 * sum(quants) per 32-block
 * [blk][16] and per 16-half [2 blk][16] (int32). How a block's integer sum becomes
 * a float depends on the weight type (KIND):
 *   I8_OFF   Q8_0/Q4_0: u8 = q + 128, one scale per 32-block; the sum starts at the
 *            32-block offset, so it is sum q x; acc += sum * (d_x d_w).
 *   I8_MIN   Q4_K: u8 = q in [0, 16), value d_w q - m_w; the sum starts at 0;
 *            acc += sum * (d_x d_w) + (offset d_x) (m_w / 128), the second term
 *            being -m_w d_x sum q_x (wd[row][WS_MIN + blk] holds m_w / 128).
 *   I8_OFF16 Q6_K: u8 = q + 128, one scale per 16-half; two sums per 32-block,
 *            each starting at its half's offset. */
enum { I8_OFF, I8_MIN, I8_OFF16 };
#define WS_ROW 24 /* per weight row: up to KC/16 scales, then KC/32 (Q4_K) mins / 128 */
#define WS_MIN 16
#define XS_OFF ((KC / 32) * PW)       /* offsets per 32-block, after the scales */
#define XS_OFF16 (2 * (KC / 32) * PW) /* offsets per 16-half */
#define TI8 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
TI8 static inline __attribute__((always_inline)) void
mk_i8_512(const int NW, const int NG, const int KIND, const uint8_t *w, int64_t ldw,
          const float *wd, int64_t ldws, const float *xp, const float *xd, int nblk, float *c,
          bool first) {
    __m512 a[6][2];
#pragma GCC unroll 6
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            a[o][g] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + o * TC + g * PW);
    const int nsub = KIND == I8_OFF16 ? 2 : 1; /* scale blocks per 32-block */
    for (int b = 0; b < nblk; b++) {
        __m512 dx[2];
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            dx[g] = _mm512_loadu_ps(xd + g * XS_GROUP + b * PW);
#pragma GCC unroll 2
        for (int h = 0; h < nsub; h++) {
            /* sum (w+128) x = sum w x + 128 sum x: the block sums start at -128 sum x */
            __m512i s[6][2], x0[2];
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++)
                x0[g] = KIND == I8_MIN ? _mm512_setzero_si512()
                        : KIND == I8_OFF
                            ? _mm512_loadu_si512(xd + g * XS_GROUP + XS_OFF + b * PW)
                            : _mm512_loadu_si512(xd + g * XS_GROUP + XS_OFF16 + (2 * b + h) * PW);
#pragma GCC unroll 6
            for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
                for (int g = 0; g < NG; g++)
                    s[o][g] = x0[g];
#ifdef __OPTIMIZE__ /* the bounds are constants only once KIND is inlined */
#pragma GCC unroll 8
#endif
            for (int q = h * (8 / nsub); q < (h + 1) * (8 / nsub); q++) {
                __m512i xv[2];
#pragma GCC unroll 2
                for (int g = 0; g < NG; g++)
                    xv[g] = _mm512_loadu_si512(xp + g * XG_FLOATS + ((size_t)b * 8 + q) * PW);
#pragma GCC unroll 6
                for (int o = 0; o < NW; o++) {
                    const __m512i wb = _mm512_set1_epi32((int)ld32(w + o * ldw + b * 32 + q * 4));
#pragma GCC unroll 2
                    for (int g = 0; g < NG; g++)
                        s[o][g] = _mm512_dpbusd_epi32(s[o][g], wb, xv[g]);
                }
            }
            __m512 xm[2];
            if (KIND == I8_MIN)
#pragma GCC unroll 2
                for (int g = 0; g < NG; g++)
                    xm[g] = _mm512_mul_ps(
                        _mm512_cvtepi32_ps(_mm512_loadu_si512(xd + g * XS_GROUP + XS_OFF + b * PW)),
                        dx[g]);
#pragma GCC unroll 6
            for (int o = 0; o < NW; o++) {
                const __m512 dw = _mm512_set1_ps(wd[o * ldws + b * nsub + h]);
#pragma GCC unroll 2
                for (int g = 0; g < NG; g++)
                    a[o][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[o][g]), _mm512_mul_ps(dx[g], dw),
                                              a[o][g]);
                if (KIND == I8_MIN) {
                    const __m512 mw = _mm512_set1_ps(wd[o * ldws + WS_MIN + b]);
#pragma GCC unroll 2
                    for (int g = 0; g < NG; g++)
                        a[o][g] = _mm512_fmadd_ps(xm[g], mw, a[o][g]);
                }
            }
        }
    }
#pragma GCC unroll 6
    for (int o = 0; o < NW; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            _mm512_storeu_ps(c + o * TC + g * PW, a[o][g]);
}

/* dispatchers: instantiate the micro-kernels for every (NW, NG) */
#define CASES12(M, NG)                                                                             \
    M(1, NG)                                                                                       \
    M(2, NG)                                                                                       \
    M(3, NG) M(4, NG) M(5, NG) M(6, NG) M(7, NG) M(8, NG) M(9, NG) M(10, NG) M(11, NG) M(12, NG)
#define CASES6(M, NG) M(1, NG) M(2, NG) M(3, NG) M(4, NG) M(5, NG) M(6, NG)

#define F32C(nw, ng)                                                                               \
    case nw: mk_f32_512(nw, ng, w, ldw, xp, kc, c, first); break;
T512 static void kern_f32_512(int nw, int ng, const float *w, int64_t ldw, const float *xp, int kc,
                              float *c, bool first) {
    if (ng == 2) {
        switch (nw) { CASES12(F32C, 2) }
    } else {
        switch (nw) { CASES12(F32C, 1) }
    }
}
#define BFC(nw, ng)                                                                                \
    case nw: mk_bf16_512(nw, ng, w, ldw, xp, npair, c, first); break;
TBF static void kern_bf16_512(int nw, int ng, const uint32_t *w, int64_t ldw, const float *xp,
                              int npair, float *c, bool first) {
    if (ng == 2) {
        switch (nw) { CASES12(BFC, 2) }
    } else {
        switch (nw) { CASES12(BFC, 1) }
    }
}
#define I8C(nw, ng)                                                                                \
    case nw: mk_i8_512(nw, ng, KIND, w, ldw, wd, ldws, xp, xd, nblk, c, first); break;
/* KIND is a constant in each branch, so each kind gets its own inlined kernels */
#define I8KIND(K)                                                                                  \
    {                                                                                              \
        const int KIND = K;                                                                        \
        if (ng == 2) {                                                                             \
            switch (nw) { CASES6(I8C, 2) }                                                         \
        } else {                                                                                   \
            switch (nw) { CASES6(I8C, 1) }                                                         \
        }                                                                                          \
    }
TI8 static void kern_i8_512(int kind, int nw, int ng, const uint8_t *w, int64_t ldw,
                            const float *wd, int64_t ldws, const float *xp, const float *xd,
                            int nblk, float *c, bool first) {
    if (kind == I8_OFF)
        I8KIND(I8_OFF)
    else if (kind == I8_MIN)
        I8KIND(I8_MIN)
    else
        I8KIND(I8_OFF16)
}

/* Activation rows (nrow <= 16) columns [k0, k0+kc) as bf16 pairs (nearest-even)
 * packed [pair][16]; an odd tail is padded with zero. */
TBF static void pack_x_bf16(const float *x, int64_t ldx, int nrow, int kc, float *stage,
                            float *xp) {
    const int64_t lds = KC / 2 + 16;
    uint32_t *st = (uint32_t *)stage;
    for (int t = 0; t < nrow; t++) {
        const float *xr = x + t * ldx;
        for (int k = 0; k < kc; k += 32) {
            const int n = LP_MIN(32, kc - k);
            const __mmask16 ml = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
            const __mmask16 mh = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
            __m512 lo = _mm512_maskz_loadu_ps(ml, xr + k);
            __m512 hi = _mm512_maskz_loadu_ps(mh, xr + k + 16);
            _mm512_storeu_si512(st + t * lds + k / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
    pack_dw_512(st, lds, nrow, (kc + 1) / 2, xp);
}

/* Activation rows quantised per 32-block like q8_0 (d = amax/127, q = rne(x/d)),
 * stored as s8 packed [k/4][16]; scales to xd [blk][16], offsets -128 * sum(q)
 * to xd + XS_OFF as int32 [blk][16] and per 16-half to xd + XS_OFF16 as
 * [2 blk][16] (0 for padding rows). */
TI8 static void pack_x_i8(const float *x, int64_t ldx, int nrow, int kc, float *stage, float *xp,
                          float *xd) {
    const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i lim = _mm512_set1_epi32(127);
    const int64_t lds = KC / 4 + 16;
    uint8_t *st = (uint8_t *)stage;
    int32_t *xc = (int32_t *)(xd + (KC / 32) * PW), *xh = (int32_t *)(xd + 2 * (KC / 32) * PW);
    for (int t = 0; t < PW; t++)
        for (int b = 0; b < kc / 32; b++) {
            if (t >= nrow) {
                xd[b * PW + t] = 0.0f;
                xc[b * PW + t] = xh[2 * b * PW + t] = xh[(2 * b + 1) * PW + t] = 0;
                continue;
            }
            const float *xr = x + t * ldx + b * 32;
            __m512 v0 = _mm512_loadu_ps(xr), v1 = _mm512_loadu_ps(xr + 16);
            float amax = _mm512_reduce_max_ps(
                _mm512_max_ps(_mm512_and_ps(v0, absm), _mm512_and_ps(v1, absm)));
            const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            const __m512 vid = _mm512_set1_ps(id);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(
                _mm512_mul_ps(v0, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(
                _mm512_mul_ps(v1, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            q0 = _mm512_max_epi32(_mm512_min_epi32(q0, lim),
                                  _mm512_sub_epi32(_mm512_setzero_si512(), lim));
            q1 = _mm512_max_epi32(_mm512_min_epi32(q1, lim),
                                  _mm512_sub_epi32(_mm512_setzero_si512(), lim));
            uint8_t *dst = st + (t * lds + b * 8) * 4;
            _mm_storeu_si128((__m128i *)dst, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(dst + 16), _mm512_cvtepi32_epi8(q1));
            xd[b * PW + t] = d;
            const int s0 = _mm512_reduce_add_epi32(q0), s1 = _mm512_reduce_add_epi32(q1);
            xc[b * PW + t] = -128 * (s0 + s1);
            xh[2 * b * PW + t] = -128 * s0;
            xh[(2 * b + 1) * PW + t] = -128 * s1;
        }
    pack_dw_512(st, lds, nrow, kc / 4, xp);
}

/* Weight rows [r0, r0+nr) columns [k0, k0+kc) as the int8 kernel's u8 rows
 * (stride KC bytes) and scales wd [row][WS_ROW] (see mk_i8_512):
 *   Q8_0 / Q4_0  q + 128, d per 32-block;
 *   Q4_K         q (0..15), d sc per 32-block, dmin m / 128 at WS_MIN;
 *   Q6_K         q - 32 + 128, d sc per 16-block.
 * The scales are the products types.c forms (d * sc, dmin * m), so each weight's
 * value is exactly the to_float value. K-quants: k0 is a multiple of 256 = QK_K. */
TI8 static void prep_w_i8(const struct mm_job *j, int64_t r0, int nr, int k0, int kc, uint8_t *wq,
                          float *wd) {
    const struct lp_weight *w = j->w;
    const int nblk = kc / 32;
    const __m256i x80 = _mm256_set1_epi8((char)0x80), low4 = _mm256_set1_epi8(15);
    for (int r = 0; r < nr; r++) {
        const char *row = (const char *)w->data + (r0 + r) * w->row_bytes;
        uint8_t *dq = wq + (size_t)r * KC;
        float *ds = wd + (size_t)r * WS_ROW;
        if (w->type == LOPAD_TYPE_Q4_K) {
            const lp_block_q4_K *qb = (const lp_block_q4_K *)row + k0 / LP_QK_K;
            const float d = h2f(qb->d), dmin = h2f(qb->dmin);
            /* the 6-bit packing of types.c q4_k_scale_min, four bytes at a time:
             * scales 0-3 / mins 0-3 are the low 6 bits of bytes 0-3 / 4-7; scales
             * 4-7 / mins 4-7 take the low / high nibble of bytes 8-11 and the top
             * 2 bits of bytes 0-3 / 4-7 */
            const uint32_t u0 = ld32(qb->scales), u1 = ld32(qb->scales + 4),
                           u2 = ld32(qb->scales + 8);
            const uint64_t sc = (uint64_t)(u0 & 0x3f3f3f3fu) |
                                (uint64_t)((u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4))
                                    << 32;
            const uint64_t mn =
                (uint64_t)(u1 & 0x3f3f3f3fu) |
                (uint64_t)(((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4)) << 32;
            const __m256 fs =
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(0, (long long)sc)));
            const __m256 fm =
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(0, (long long)mn)));
            _mm256_storeu_ps(ds, _mm256_mul_ps(_mm256_set1_ps(d), fs));
            _mm256_storeu_ps(ds + WS_MIN, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), fm),
                                                        _mm256_set1_ps(1.0f / 128)));
            for (int c = 0; c < 4; c++) { /* 32 bytes: low nibbles, then high nibbles */
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qb->qs + 32 * c));
                _mm256_storeu_si256((__m256i *)(dq + 64 * c), _mm256_and_si256(v, low4));
                _mm256_storeu_si256((__m256i *)(dq + 64 * c + 32),
                                    _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
            }
            continue;
        }
        if (w->type == LOPAD_TYPE_Q6_K) {
            const lp_block_q6_K *qb = (const lp_block_q6_K *)row + k0 / LP_QK_K;
            const float d = h2f(qb->d);
            const __m128i sc = _mm_loadu_si128((const __m128i *)qb->scales); /* 16 x s8 */
            _mm256_storeu_ps(
                ds, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
            _mm256_storeu_ps(
                ds + 8,
                _mm256_mul_ps(_mm256_set1_ps(d),
                              _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
            const __m256i three = _mm256_set1_epi8(3), c96 = _mm256_set1_epi8(96);
            for (int half = 0; half < 2; half++) { /* element order of q6_k_to_float */
                const uint8_t *ql = qb->ql + 64 * half, *qh = qb->qh + 32 * half;
                const __m256i a = _mm256_loadu_si256((const __m256i *)ql);
                const __m256i c = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
                const __m256i lo[4] = {_mm256_and_si256(a, low4), _mm256_and_si256(c, low4),
                                       _mm256_and_si256(_mm256_srli_epi16(a, 4), low4),
                                       _mm256_and_si256(_mm256_srli_epi16(c, 4), low4)};
                for (int k = 0; k < 4; k++) {
                    const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(h, 2 * k), three);
                    const __m256i q = _mm256_or_si256(lo[k], _mm256_slli_epi16(hb, 4));
                    _mm256_storeu_si256((__m256i *)(dq + 128 * half + 32 * k),
                                        _mm256_add_epi8(q, c96));
                }
            }
            continue;
        }
        for (int b = 0; b < nblk; b++) {
            const int blk = k0 / 32 + b;
            __m256i q;
            float d;
            if (w->type == LOPAD_TYPE_Q8_0) {
                const lp_block_q8_0 *qb = (const lp_block_q8_0 *)row + blk;
                q = _mm256_loadu_si256((const __m256i *)qb->qs);
                d = h2f(qb->d);
            } else {
                const lp_block_q4_0 *qb = (const lp_block_q4_0 *)row + blk;
                __m128i v = _mm_loadu_si128((const __m128i *)qb->qs);
                const __m128i l4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
                __m128i lo = _mm_sub_epi8(_mm_and_si128(v, l4), eight);
                __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), l4), eight);
                q = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
                d = h2f(qb->d);
            }
            _mm256_storeu_si256((__m256i *)(dq + b * 32), _mm256_xor_si256(q, x80));
            ds[b] = d;
        }
    }
}
#endif /* LP_HAVE_X86 */

/* ---------------------------------------------------------------- matmul */

/* Software prefetch of the stored bytes of weight rows [r, r+n) in K block k0
 * (locality 3: into L1, 2: into L2). With 32-row windows a K block of a panel
 * is used once, straight from memory: the rows of a panel are far apart (the
 * hardware prefetcher does not follow 96 streams), so without this the kernels
 * wait on DRAM latency. Rows past the matrix are skipped. */
static inline void pf_rows(const struct lp_weight *w, int64_t r, int n, int k0, int far) {
    if (r >= w->n_out || k0 >= w->n_in || n <= 0) return;
    n = (int)LP_MIN((int64_t)n, w->n_out - r);
    const struct lp_type_traits *tt = w->type == LOPAD_TYPE_F32 ? NULL : lp_type_traits(w->type);
    const int bs = tt ? tt->blck_size : 1;
    const size_t ts = tt ? tt->type_size : sizeof(float);
    const int kc = (int)LP_MIN((int64_t)KC, w->n_in - k0);
    const size_t off = (size_t)(k0 / bs) * ts, seg = (size_t)((kc + bs - 1) / bs) * ts;
    const char *p = (const char *)w->data + r * (int64_t)w->row_bytes + off;
    for (int i = 0; i < n; i++, p += w->row_bytes) {
        for (size_t b = 0; b < seg; b += 64)
            far ? __builtin_prefetch(p + b, 0, 2) : __builtin_prefetch(p + b, 0, 3);
        far ? __builtin_prefetch(p + seg - 1, 0, 2) : __builtin_prefetch(p + seg - 1, 0, 3);
    }
}

/* Software prefetch of n contiguous bytes into L2. */
static inline void pf_span(const void *p, size_t n) {
    for (size_t b = 0; b < n; b += 64)
        __builtin_prefetch((const char *)p + b, 0, 2);
}

/* Accumulators s->c[r][t] = sum_k w[r0+r][k] x[tc0+t][k] for r < nr (<= MB),
 * t < tcn (<= TC); lanes of padding rows hold finite junk. */
static void mm_tile(const struct mm_job *j, const struct mm_scr *sp, int64_t r0, int nr, int tc0,
                    int tcn) {
    const struct lp_weight *w = j->w;
    const int K = (int)w->n_in;
    const struct mm_scr s = *sp;
    const int nw_max = j->path == MM_I8 ? 6 : 12;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = LP_MIN(KC, K - k0);
        const bool first = k0 == 0;
        /* ---- this task's weight rows, columns [k0, k0+kc) */
        const void *wb = s.w;
        int64_t ldw = KC;        /* elements of the path's unit */
        const float *wsb = s.ws; /* int8 path: weight scales, ldws per row */
        int64_t ldws = WS_ROW;
#ifdef LP_HAVE_X86
        if (j->path == MM_BF16) {
            if (kc % 2 == 0) { /* bf16 pairs read in place */
                wb = (const char *)w->data + r0 * w->row_bytes + (size_t)k0 * 2;
                ldw = (int64_t)(w->row_bytes / 4);
            } else { /* odd tail: staged with a zero pad */
                ldw = KC / 2 + 16;
                for (int r = 0; r < nr; r++) {
                    uint32_t *d = (uint32_t *)s.w + r * ldw;
                    memset(d, 0, sizeof(uint32_t) * ((kc + 1) / 2));
                    memcpy(d, (const char *)w->data + (r0 + r) * w->row_bytes + (size_t)k0 * 2,
                           (size_t)kc * 2);
                }
            }
            if (ldw * 4 != (int64_t)w->row_bytes && kc % 2 == 0) LP_ASSERT(0);
        } else if (j->path == MM_I8 && j->rq) { /* repacked at bind: read in place */
            wb = j->rq + ((size_t)(k0 / KC) * w->n_out + r0) * KC;
            wsb = j->rd + ((size_t)(k0 / KC) * w->n_out + r0) * (KC / 32);
            ldws = KC / 32;
        } else if (j->path == MM_I8) {
            prep_w_i8(j, r0, nr, k0, kc, (uint8_t *)s.w, s.ws);
        } else
#endif
        {
            for (int r = 0; r < nr; r++)
                conv_segment(j, r0 + r, k0, kc, s.w + (size_t)r * KC);
        }
        /* ---- activation rows, two groups of 16 at a time */
        for (int t0 = 0; t0 < tcn; t0 += 2 * PW) {
            const int nt = LP_MIN(2 * PW, tcn - t0);
            const int ng = (nt + PW - 1) / PW;
            const float *x = j->x + (int64_t)(tc0 + t0) * K + k0;
            const float *xpg = s.x, *xdg = s.xs;
            if (j->xpk) { /* packed once for the call */
                const size_t gi = (size_t)(k0 / KC) * XP_GROUPS + (size_t)(tc0 + t0) / PW;
                xpg = j->xpk + gi * XG_FLOATS;
                xdg = j->xpks + gi * XS_GROUP;
            }
            for (int g = 0; g < ng && !j->xpk; g++) {
                const int nrow = LP_MIN(PW, nt - g * PW);
                const float *xg = x + (int64_t)g * PW * K;
                float *xp = s.x + g * XG_FLOATS;
#ifdef LP_HAVE_X86
                if (j->path == MM_BF16)
                    pack_x_bf16(xg, K, nrow, kc, s.xr, xp);
                else if (j->path == MM_I8)
                    pack_x_i8(xg, K, nrow, kc, s.xr, xp, s.xs + g * XS_GROUP);
                else if (j->level >= LP_LEVEL_AVX512)
                    pack_dw_512(xg, K, nrow, kc, xp);
                else
#endif
                    pack_x_scalar(xg, K, nrow, kc, xp);
            }
            float *c = s.c + t0;
            for (int o0 = 0; o0 < nr; o0 += nw_max) {
                const int nw = LP_MIN(nw_max, nr - o0);
                float *co = c + (size_t)o0 * TC;
                if (t0 == 0 && j->path == MM_BF16) { /* read in place: the next tile */
                    if (o0 + nw < nr)
                        pf_rows(w, r0 + o0 + nw, LP_MIN(nw_max, nr - o0 - nw), k0, 0);
                    else if (k0 + KC < K)
                        pf_rows(w, r0, nw_max, k0 + KC, 0);
                    else
                        pf_rows(w, r0 + j->mb, nw_max, 0, 0);
                } else if (t0 == 0 && j->rq) { /* repacked: these rows in the next K block */
                    if (k0 + KC < K) {
                        const size_t at = ((size_t)(k0 / KC + 1) * w->n_out + r0 + o0);
                        pf_span(j->rq + at * KC, (size_t)nw * KC);
                        pf_span(j->rd + at * (KC / 32), (size_t)nw * (KC / 32) * sizeof(float));
                    }
                } else if (t0 == 0) { /* staged: these rows in the next K block (or panel) */
                    if (k0 + KC < K)
                        pf_rows(w, r0 + o0, nw, k0 + KC, 1);
                    else
                        pf_rows(w, r0 + j->mb + o0, nw, 0, 1);
                }
#ifdef LP_HAVE_X86
                if (j->path == MM_BF16) {
                    kern_bf16_512(nw, ng, (const uint32_t *)wb + o0 * ldw, ldw, xpg, (kc + 1) / 2,
                                  co, first);
                    continue;
                }
                if (j->path == MM_I8) {
                    kern_i8_512(j->i8kind, nw, ng, (const uint8_t *)wb + (size_t)o0 * KC, KC,
                                wsb + o0 * ldws, ldws, xpg, xdg, kc / 32, co, first);
                    continue;
                }
                if (j->level >= LP_LEVEL_AVX512) {
                    kern_f32_512(nw, ng, s.w + (size_t)o0 * KC, KC, s.x, kc, co, first);
                    continue;
                }
                if (j->level == LP_LEVEL_AVX2) {
                    kern_f32_avx2(nw, ng, s.w + (size_t)o0 * KC, KC, s.x, kc, co, first);
                    continue;
                }
#endif
                kern_f32_scalar(nw, ng, s.w + (size_t)o0 * KC, KC, s.x, kc, co, first);
            }
        }
    }
}

static void mm_task(void *arg, int task, int tid) {
    struct mm_job *j = arg;
    const struct lp_weight *w = j->w;
    const int64_t r0 = (int64_t)task * j->mb;
    const int nr = (int)LP_MIN((int64_t)j->mb, w->n_out - r0);
    const int T = j->n_rows;
    const int64_t ldy = w->n_out;
    const struct mm_scr s = mm_scr(j->cpu, tid);
    for (int tc0 = 0; tc0 < T; tc0 += TC) {
        const int tcn = LP_MIN(TC, T - tc0);
        mm_tile(j, &s, r0, nr, tc0, tcn);
        /* ---- accumulators (+ bias) to y */
        for (int t = 0; t < tcn; t++) {
            float *yr = j->y + (int64_t)(tc0 + t) * ldy + r0;
            if (j->bias)
                for (int r = 0; r < nr; r++)
                    yr[r] = s.c[(size_t)r * TC + t] + j->bias[r0 + r];
            else
                for (int r = 0; r < nr; r++)
                    yr[r] = s.c[(size_t)r * TC + t];
        }
    }
}

/* Pack task: (K block, group of 16 activation rows) of the call's x. */
static void xpack_task(void *arg, int task, int tid) {
    struct mm_job *j = arg;
    const int K = (int)j->w->n_in, ng = (j->n_rows + PW - 1) / PW;
    const int b = task / ng, g = task % ng;
    const int k0 = b * KC, kc = LP_MIN(KC, K - k0), nrow = LP_MIN(PW, j->n_rows - g * PW);
    const struct mm_scr s = mm_scr(j->cpu, tid);
    const size_t gi = (size_t)b * XP_GROUPS + g;
    const float *x = j->x + (int64_t)g * PW * K + k0;
#ifdef LP_HAVE_X86
    if (j->path == MM_BF16)
        pack_x_bf16(x, K, nrow, kc, s.xr, j->xpk + gi * XG_FLOATS);
    else
        pack_x_i8(x, K, nrow, kc, s.xr, j->xpk + gi * XG_FLOATS, j->xpks + gi * XS_GROUP);
#else
    (void)x, (void)kc, (void)nrow, (void)gi, (void)s;
#endif
}

/* Run fn over the tasks of j for activation rows in chunks of TC; the dot paths
 * first pack each chunk's activations once (a parallel pass of their own). */
static void mm_run_chunks(struct mm_job *j, int n_tasks, lp_task_fn fn, bool parallel,
                          void (*on_chunk)(struct mm_job *j, int r, void *ud), void *ud) {
    struct lp_cpu *cpu = j->cpu;
    if (j->path == MM_F32) {
        on_chunk(j, 0, ud);
        lp_cpu_run(cpu, n_tasks, fn, j, parallel);
        return;
    }
    const float *x0 = j->x;
    const int T = j->n_rows, K = (int)j->w->n_in;
    const int nkb = (K + KC - 1) / KC;
    j->xpk = cpu->xpk;
    j->xpks = cpu->xpk + xpk_main_floats(cpu->lim.max_n_in);
    for (int r = 0; r < T; r += TC) {
        j->x = x0 + (int64_t)r * K;
        j->n_rows = LP_MIN(TC, T - r);
        on_chunk(j, r, ud);
        const int ng = (j->n_rows + PW - 1) / PW;
        lp_cpu_run(cpu, nkb * ng, xpack_task, j, (double)j->n_rows * K >= LP_PAR_MIN_EW);
        lp_cpu_run(cpu, n_tasks, fn, j, parallel);
    }
}

static void mm_chunk_y(struct mm_job *j, int r, void *ud) {
    float *y0 = ud;
    j->y = y0 + (int64_t)r * j->w->n_out;
}

/* ------------------------------------------------------ repacked weights */

/* A model's Q8_0 matrices whose n_in is a multiple of KC, in the int8 kernel's
 * layout: u8 quants (q + 128) as [K block][output row][KC] and, in a second
 * array, their scales as [K block][output row][KC/32]. A task then reads its
 * rows of a block contiguously instead of staging them (about a quarter of a
 * 32-row Q8_0 matmul). The bytes are those prep_w_i8 stages, so results are
 * bitwise the same. Other types stay as stored: a u8 copy would double the bytes
 * a forward streams for Q4_0/Q4_K and make them 1.5x for Q6_K. Keyed by the
 * weight's data pointer and shape (fixed for the model's life). */
struct rp_entry {
    const void *key;     /* lp_weight.data */
    int64_t n_out, n_in; /* and its shape: a crafted file may give two tensors one offset */
    uint8_t *q;
    float *d;
};
struct lp_cpu_repack {
    struct rp_entry *slots; /* open addressing, power-of-two capacity */
    int cap;
    size_t bytes;
};

static const struct rp_entry *repack_find(const struct lp_cpu_repack *rp,
                                          const struct lp_weight *w) {
    if (!rp || w->type != LOPAD_TYPE_Q8_0) return NULL;
    for (uint64_t h = ((uintptr_t)w->data >> 4) * 0x9E3779B97F4A7C15ull;; h++) {
        const struct rp_entry *e = &rp->slots[h & (uint64_t)(rp->cap - 1)];
        if (e->key == w->data && e->n_out == w->n_out && e->n_in == w->n_in) return e;
        if (!e->key) return NULL;
    }
}

static void repack_free(void *data) {
    struct lp_cpu_repack *rp = data;
    if (!rp) return;
    for (int i = 0; i < rp->cap && rp->slots; i++) {
        lp_free(rp->slots[i].q);
        lp_free(rp->slots[i].d);
    }
    lp_free(rp->slots);
    lp_free(rp);
}

/* Whether [p, p+n) lies in a file mapping the model owns. The loaders map files
 * read-only and private (gguf.c, safetensors.c), so dropping such pages loses
 * nothing: a later read faults them in again from the file. Heap weights (LoRA
 * merges, synthetic models) are never dropped. */
static bool in_file_mapping(const struct lopad_model *m, const void *p, size_t n) {
    for (int i = 0; i < m->n_owned; i++) {
        const struct lp_owned *o = &m->owned[i];
        const uintptr_t b = (uintptr_t)o->ptr, a = (uintptr_t)p;
        if (o->mapped && a >= b && a - b <= o->size && n <= o->size - (a - b)) return true;
    }
    return false;
}

/* Release the whole pages of [p, p+n) from this process (they stay in the page
 * cache, which the kernel may reclaim). */
static void drop_pages(const void *p, size_t n) {
#ifdef MADV_DONTNEED
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), e = ((uintptr_t)p + n) & ~(pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
#endif
}

struct repack_job {
    struct mm_job j;
    struct rp_entry *e;
    bool drop; /* release the source rows once repacked (file-mapped weights) */
};

/* One panel of MB rows, every K block, through prep_w_i8. */
static void repack_task(void *arg, int task, int tid) {
    struct repack_job *rj = arg;
    const struct lp_weight *w = rj->j.w;
    const int64_t r0 = (int64_t)task * MB;
    const int nr = (int)LP_MIN((int64_t)MB, w->n_out - r0);
    const struct mm_scr s = mm_scr(rj->j.cpu, tid);
    for (int64_t k0 = 0; k0 < w->n_in; k0 += KC) {
        const size_t at = (size_t)(k0 / KC) * w->n_out + r0;
#ifdef LP_HAVE_X86
        prep_w_i8(&rj->j, r0, nr, (int)k0, KC, rj->e->q + at * KC, s.ws);
#endif
        for (int r = 0; r < nr; r++)
            memcpy(rj->e->d + (at + r) * (KC / 32), s.ws + (size_t)r * WS_ROW,
                   sizeof(float) * (KC / 32));
    }
    /* the panel's source rows are not read again: only one panel per thread is
     * resident beside the copy while a matrix is repacked */
    if (rj->drop) drop_pages((const char *)w->data + r0 * w->row_bytes, (size_t)nr * w->row_bytes);
}

static bool repackable(const struct lp_weight *w) {
    return w->data && w->type == LOPAD_TYPE_Q8_0 && w->n_in % KC == 0 && w->n_out > 0;
}

/* MemAvailable of /proc/meminfo in bytes, or 0 when unknown. */
static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

struct repack_arg {
    struct lp_cpu *cpu;
    bool force; /* whatever the memory available */
};

static enum lopad_status repack_make(const struct lopad_model *m, void *arg, void **out) {
    struct lp_cpu *cpu = ((struct repack_arg *)arg)->cpu;
    const bool force = ((struct repack_arg *)arg)->force;
    *out = NULL;
    const struct lp_weight **mats = lp_malloc(
        sizeof *mats * (1 + LP_N_LAYER_MATRICES * (size_t)LP_MAX(m->hp.n_layer, 0)), "repack list");
    if (!mats) return LOPAD_ERR_NOMEM;
    int n = 0;
    if (repackable(&m->output)) mats[n++] = &m->output;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const struct lp_layer *L = &m->layers[l];
        const struct lp_weight *lw[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (int i = 0; i < LP_N_LAYER_MATRICES; i++)
            if (repackable(lw[i])) mats[n++] = lw[i];
    }
    /* the copy is anonymous memory beside the mapped file: by default made only
     * when it takes at most half of the memory available now */
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        total += (uint64_t)mats[i]->n_out * (uint64_t)mats[i]->n_in * (1 + 4 / 32.0);
    const uint64_t avail = mem_available();
    if (!force && avail && total > avail / 2) n = 0;
    struct lp_cpu_repack *rp = NULL;
    enum lopad_status st = LOPAD_OK;
    if (n > 0 && !(rp = lp_calloc(1, sizeof *rp, "repacked weights"))) st = LOPAD_ERR_NOMEM;
    if (rp) {
        rp->cap = 16;
        while (rp->cap < 2 * n)
            rp->cap *= 2;
        if (!(rp->slots = lp_calloc((size_t)rp->cap, sizeof *rp->slots, "repacked weights")))
            st = LOPAD_ERR_NOMEM;
    }
    for (int i = 0; i < n && !st; i++) {
        const struct lp_weight *w = mats[i];
        if (repack_find(rp, w)) continue; /* the same data twice (tied) */
        uint64_t h = ((uintptr_t)w->data >> 4) * 0x9E3779B97F4A7C15ull;
        while (rp->slots[h & (uint64_t)(rp->cap - 1)].key)
            h++;
        struct rp_entry *e = &rp->slots[h & (uint64_t)(rp->cap - 1)];
        const size_t nq = (size_t)w->n_out * (size_t)w->n_in;
        e->key = w->data; /* the slot is taken: its arrays go with the table from here on */
        e->n_out = w->n_out;
        e->n_in = w->n_in;
        e->q = lp_malloc(nq, w->name ? w->name : "repacked weight");
        e->d = lp_malloc(nq / 32 * sizeof(float), w->name ? w->name : "repacked weight");
        if (!e->q || !e->d) {
            st = LOPAD_ERR_NOMEM;
            break;
        }
        rp->bytes += nq + nq / 32 * sizeof(float);
        const size_t src_bytes = (size_t)w->n_out * w->row_bytes;
        struct repack_job rj = {.j = {.cpu = cpu, .w = w, .mb = MB},
                                .e = e,
                                .drop = in_file_mapping(m, w->data, src_bytes)};
        lp_cpu_run(cpu, (int)((w->n_out + MB - 1) / MB), repack_task, &rj, true);
        if (rj.drop) drop_pages(w->data, src_bytes); /* the pages panels shared */
    }
    lp_free(mats);
    if (st) {
        repack_free(rp);
        return st;
    }
    *out = rp; /* NULL when there was nothing to repack */
    return LOPAD_OK;
}

bool lp_backend_cpu_int8_dot(const struct lp_backend *b) {
    const struct lp_cpu *cpu = b->ctx;
    return cpu->level >= LP_LEVEL_AVX512_DOT && cpu->has_vnni;
}

size_t lp_backend_cpu_repacked_bytes(const struct lp_backend *b) {
    const struct lp_cpu *cpu = b->ctx;
    return cpu->repack ? cpu->repack->bytes : 0;
}

enum lopad_status lp_backend_cpu_bind_model(struct lp_backend *b, const struct lopad_model *m,
                                            enum lopad_repack mode) {
    struct lp_cpu *cpu = b->ctx;
    cpu->repack = NULL;
    if (mode != LOPAD_REPACK_AUTO && mode != LOPAD_REPACK_OFF && mode != LOPAD_REPACK_ON)
        return lp_error(LOPAD_ERR_ARG, "cpu backend: repack mode %d (auto 0, off 1, on 2)",
                        (int)mode);
    if (cpu->level < LP_LEVEL_AVX512_DOT || !cpu->has_vnni || mode == LOPAD_REPACK_OFF)
        return LOPAD_OK;
    struct repack_arg arg = {cpu, mode == LOPAD_REPACK_ON};
    void *rp;
    enum lopad_status st =
        lp_model_cache_get(m, "cpu-int8-repack", repack_make, &arg, repack_free, &rp);
    if (!st) cpu->repack = rp;
    return st;
}

/* The job for w: kernel level, weight conversion and path. */
static struct mm_job mm_job_for(struct lp_cpu *cpu, const struct lp_weight *w) {
    LP_ASSERT(w->n_in <= cpu->lim.max_n_in);
    struct mm_job j = {.cpu = cpu, .w = w, .mb = MB};
    j.level = cpu->level;
    j.path = MM_F32;
    if (w->type != LOPAD_TYPE_F32) {
        const struct lp_type_traits *tt = lp_type_traits(w->type);
        LP_ASSERT(tt && tt->to_float);
        j.conv = tt->to_float;
#ifdef LP_HAVE_X86
        if (j.level >= LP_LEVEL_AVX2) {
            if (w->type == LOPAD_TYPE_F16)
                j.conv = f16_to_f32_f16c;
            else if (w->type == LOPAD_TYPE_BF16)
                j.conv = bf16_to_f32_avx2;
            else if (w->type == LOPAD_TYPE_Q8_0)
                j.conv = q8_0_to_f32_avx2;
            else if (w->type == LOPAD_TYPE_Q4_0)
                j.conv = q4_0_to_f32_avx2;
            else if (w->type == LOPAD_TYPE_Q4_K)
                j.conv = q4_k_to_f32_avx2;
            else if (w->type == LOPAD_TYPE_Q6_K)
                j.conv = q6_k_to_f32_avx2;
        }
        /* the dot paths only from one full K block on: small matrices (test models)
         * keep the f32 path, whose results equal those of pre-converted weights */
        const bool dot =
            j.level >= LP_LEVEL_AVX512_DOT && w->n_in >= LP_MM_DOT_MIN_K && cpu->xpk != NULL;
        if (dot && w->type == LOPAD_TYPE_BF16 && cpu->has_bf16 && w->row_bytes % 4 == 0)
            j.path = MM_BF16;
        const bool i8 = w->type == LOPAD_TYPE_Q8_0 || w->type == LOPAD_TYPE_Q4_0 ||
                        w->type == LOPAD_TYPE_Q4_K || w->type == LOPAD_TYPE_Q6_K;
        if (dot && i8 && cpu->has_vnni) {
            j.path = MM_I8;
            j.i8kind = w->type == LOPAD_TYPE_Q4_K   ? I8_MIN
                       : w->type == LOPAD_TYPE_Q6_K ? I8_OFF16
                                                    : I8_OFF;
            const struct rp_entry *e = repack_find(cpu->repack, w);
            if (e) {
                j.rq = e->q;
                j.rd = e->d;
            }
        }
#endif
    }
    return j;
}

/* Panel height for n_out weight rows on n_threads: MB, or fewer rows (a
 * multiple of 12, the micro-kernels' tile heights, at least 24) when MB-row
 * panels would leave fewer than LP_MM_TASKS_PER_THREAD tasks per thread, so
 * that narrow matrices (k/v: 512 rows, q/o/down: 3584) keep every core of a
 * large machine busy. The result does not depend on it (each output's
 * reduction is the same). */
static int mm_panel_rows(int64_t n_out, int n_threads) {
    const int64_t want = (int64_t)LP_MM_TASKS_PER_THREAD * n_threads;
    if (n_threads <= 1 || (n_out + MB - 1) / MB >= want) return MB;
    const int64_t rows = (n_out + want - 1) / want;
    return (int)LP_MIN((int64_t)MB, LP_MAX((int64_t)24, (rows + 11) / 12 * 12));
}

void lp_cpu_matmul(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                   int n_rows, float *y) {
    struct lp_cpu *cpu = ctx;
    if (n_rows <= 0 || w->n_out <= 0) return;
    struct mm_job j = mm_job_for(cpu, w);
    j.bias = bias;
    j.x = x;
    j.n_rows = n_rows;
    j.y = y;
    /* small products are not worth waking the pool (same result either way) */
    const double work = (double)w->n_out * (double)w->n_in * n_rows;
    const bool parallel = work >= LP_PAR_MIN_MM && cpu->n_threads > 1;
    j.mb = mm_panel_rows(w->n_out, parallel ? cpu->n_threads : 1);
    int64_t n_tasks = (w->n_out + j.mb - 1) / j.mb;
    LP_ASSERT(n_tasks <= INT32_MAX);
    mm_run_chunks(&j, (int)n_tasks, mm_task, parallel, mm_chunk_y, y);
}

/* ------------------------------------------------------------ head scores */

/* Vocabulary rows per scores task; a task leaves one partial state per fed row:
 * m (max logit), S = sum exp(z - m), Z = sum exp(z - m) (z - m), top-2 values and
 * ids. Centring Z at m keeps negent = Z/S - log S free of cancellation. */
#define SC_CHUNK (16 * MB)
#define SC_PART 8

size_t lp_cpu_scores_scratch_floats(int64_t n_vocab, int n_rows) {
    return (size_t)((n_vocab + SC_CHUNK - 1) / SC_CHUNK) * SC_PART * (size_t)n_rows;
}

struct sc_job {
    struct mm_job mm; /* first member: tasks get the sc_job through it */
    int n_chunks;
    float *part;  /* [row][chunk][SC_PART] of the current activation chunk */
    float *part0; /* the same for row 0 */
};

static void sc_chunk(struct mm_job *j, int r, void *ud) {
    struct sc_job *sj = (struct sc_job *)j;
    sj->part = sj->part0 + (size_t)r * sj->n_chunks * SC_PART;
    (void)ud;
}

struct fold_state {
    float m[TC], S[TC], Z[TC], v1[TC], v2[TC];
    int32_t i1[TC], i2[TC];
};

/* Fold logits z (stride TC, vocab ids id0, id0+1, ...) of row t into its state:
 * one rescale per tile to the tile's max, then exp(z - m) summed in order. */
static void fold_scalar(const float *z, int n, int id0, struct fold_state *f, int t) {
    float m = f->m[t], S = f->S[t], Z = f->Z[t], v1 = f->v1[t], v2 = f->v2[t];
    int32_t i1 = f->i1[t], i2 = f->i2[t];
    float mt = -INFINITY;
    for (int r = 0; r < n; r++)
        if (z[(size_t)r * TC] > mt) mt = z[(size_t)r * TC];
    if (mt > m) {
        const float c = expf(m - mt);
        if (S > 0) Z = c * fmaf(m - mt, S, Z);
        S *= c;
        m = mt;
    }
    for (int r = 0; r < n; r++) {
        const float v = z[(size_t)r * TC];
        if (v > v1) {
            v2 = v1, i2 = i1;
            v1 = v, i1 = id0 + r;
        } else if (v > v2) {
            v2 = v, i2 = id0 + r;
        }
        if (m == -INFINITY) continue; /* every logit so far is -inf */
        const float e = expf(v - m);
        S += e;
        Z = fmaf(e, v - m, Z);
    }
    f->m[t] = m, f->S[t] = S, f->Z[t] = Z, f->v1[t] = v1, f->v2[t] = v2;
    f->i1[t] = i1, f->i2[t] = i2;
}

#ifdef LP_HAVE_X86
/* fold_scalar for 16 rows at once (lanes t0..t0+15 of the accumulators); the
 * same comparisons, exp by lp_exp512 */
T512 static void fold_512(const float *c, int nr, int id0, struct fold_state *f, int t0) {
    __m512 m = _mm512_loadu_ps(f->m + t0), S = _mm512_loadu_ps(f->S + t0);
    __m512 Z = _mm512_loadu_ps(f->Z + t0), v1 = _mm512_loadu_ps(f->v1 + t0);
    __m512 v2 = _mm512_loadu_ps(f->v2 + t0);
    __m512i i1 = _mm512_loadu_si512(f->i1 + t0), i2 = _mm512_loadu_si512(f->i2 + t0);
    __m512 mt = _mm512_set1_ps(-INFINITY);
    for (int r = 0; r < nr; r++) /* NaN never wins: max_ps keeps its second operand */
        mt = _mm512_max_ps(_mm512_loadu_ps(c + (size_t)r * TC), mt);
    const __mmask16 up = _mm512_cmp_ps_mask(mt, m, _CMP_GT_OQ);
    if (up) {
        const __mmask16 live = up & _mm512_cmp_ps_mask(S, _mm512_setzero_ps(), _CMP_GT_OQ);
        const __m512 cf = lp_exp512(_mm512_sub_ps(m, mt));
        Z = _mm512_mask_mul_ps(_mm512_maskz_mov_ps(~up | live, Z), live, cf,
                               _mm512_fmadd_ps(_mm512_sub_ps(m, mt), S, Z));
        S = _mm512_mask_mul_ps(S, up, S, cf);
        m = _mm512_mask_mov_ps(m, up, mt);
    }
    const __mmask16 fin = _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    for (int r = 0; r < nr; r++) {
        const __m512 z = _mm512_loadu_ps(c + (size_t)r * TC);
        const __m512i id = _mm512_set1_epi32(id0 + r);
        const __mmask16 g1 = _mm512_cmp_ps_mask(z, v1, _CMP_GT_OQ);
        const __mmask16 g2 = ~g1 & _mm512_cmp_ps_mask(z, v2, _CMP_GT_OQ);
        v2 = _mm512_mask_mov_ps(_mm512_mask_mov_ps(v2, g1, v1), g2, z);
        i2 = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(i2, g1, i1), g2, id);
        v1 = _mm512_mask_mov_ps(v1, g1, z);
        i1 = _mm512_mask_mov_epi32(i1, g1, id);
        const __m512 d = _mm512_sub_ps(z, m);
        const __m512 e = _mm512_maskz_mov_ps(fin, lp_exp512(d));
        S = _mm512_mask_add_ps(S, fin, S, e);
        Z = _mm512_mask3_fmadd_ps(e, d, Z, fin);
    }
    _mm512_storeu_ps(f->m + t0, m), _mm512_storeu_ps(f->S + t0, S);
    _mm512_storeu_ps(f->Z + t0, Z), _mm512_storeu_ps(f->v1 + t0, v1);
    _mm512_storeu_ps(f->v2 + t0, v2);
    _mm512_storeu_si512(f->i1 + t0, i1), _mm512_storeu_si512(f->i2 + t0, i2);
}
#endif

static void sc_task(void *arg, int task, int tid) {
    struct sc_job *sj = arg;
    const struct mm_job *j = &sj->mm;
    const struct mm_scr s = mm_scr(j->cpu, tid);
    struct fold_state f;
    const int64_t v0 = (int64_t)task * SC_CHUNK, v1 = LP_MIN(j->w->n_out, v0 + SC_CHUNK);
    for (int tc0 = 0; tc0 < j->n_rows; tc0 += TC) {
        const int tcn = LP_MIN(TC, j->n_rows - tc0);
        const int tpad = (tcn + PW - 1) / PW * PW;
        for (int t = 0; t < tpad; t++) {
            f.m[t] = f.v1[t] = f.v2[t] = -INFINITY;
            f.S[t] = f.Z[t] = 0.0f;
            f.i1[t] = f.i2[t] = -1;
        }
        for (int64_t r0 = v0; r0 < v1; r0 += MB) {
            const int nr = (int)LP_MIN((int64_t)MB, v1 - r0);
            mm_tile(j, &s, r0, nr, tc0, tcn);
#ifdef LP_HAVE_X86
            if (j->level >= LP_LEVEL_AVX512) {
                for (int t0 = 0; t0 < tcn; t0 += PW)
                    fold_512(s.c + t0, nr, (int)r0, &f, t0);
                continue;
            }
#endif
            for (int t = 0; t < tcn; t++)
                fold_scalar(s.c + t, nr, (int)r0, &f, t);
        }
        for (int t = 0; t < tcn; t++) {
            float *st = sj->part + ((size_t)(tc0 + t) * sj->n_chunks + task) * SC_PART;
            st[0] = f.m[t], st[1] = f.S[t], st[2] = f.Z[t], st[3] = f.v1[t], st[4] = f.v2[t];
            memcpy(st + 5, &f.i1[t], 4);
            memcpy(st + 6, &f.i2[t], 4);
        }
    }
}

void lp_cpu_head_scores(void *ctx, const struct lp_weight *w, const float *x, int n_rows,
                        float *scratch, size_t scratch_floats, struct lp_row_scores *out) {
    struct lp_cpu *cpu = ctx;
    if (n_rows <= 0) return;
    LP_ASSERT(w->n_out > 0 && w->n_out <= INT32_MAX);
    LP_ASSERT(lp_cpu_scores_scratch_floats(w->n_out, n_rows) <= scratch_floats);
    struct sc_job sj = {.mm = mm_job_for(cpu, w)};
    sj.mm.x = x;
    sj.mm.n_rows = n_rows;
    sj.n_chunks = (int)((w->n_out + SC_CHUNK - 1) / SC_CHUNK);
    sj.part0 = scratch;
    double work = (double)w->n_out * (double)w->n_in * n_rows;
    mm_run_chunks(&sj.mm, sj.n_chunks, sc_task, work >= LP_PAR_MIN_MM, sc_chunk, NULL);
    /* merge the chunks in vocabulary order (ties keep the lower id) */
    for (int t = 0; t < n_rows; t++) {
        double m = -INFINITY, S = 0, Z = 0;
        float v1 = -INFINITY, v2 = -INFINITY;
        int32_t i1 = -1, i2 = -1;
        for (int c = 0; c < sj.n_chunks; c++) {
            const float *st = scratch + ((size_t)t * sj.n_chunks + c) * SC_PART;
            int32_t a1, a2;
            memcpy(&a1, st + 5, 4);
            memcpy(&a2, st + 6, 4);
            if (st[0] > -INFINITY) {
                const double mn = st[0] > m ? st[0] : m;
                const double ca = S > 0 ? exp(m - mn) : 0, cb = exp(st[0] - mn);
                Z = ca * (Z + (S > 0 ? (m - mn) * S : 0)) + cb * (st[2] + (st[0] - mn) * st[1]);
                S = ca * S + cb * st[1];
                m = mn;
            }
            const float cand[2] = {st[3], st[4]};
            const int32_t cid[2] = {a1, a2};
            for (int q = 0; q < 2; q++) {
                if (cid[q] < 0) continue;
                if (cand[q] > v1 || i1 < 0) {
                    v2 = v1, i2 = i1;
                    v1 = cand[q], i1 = cid[q];
                } else if (cand[q] > v2 || i2 < 0) {
                    v2 = cand[q], i2 = cid[q];
                }
            }
        }
        struct lp_row_scores *o = out + t;
        const double lse = m + log(S);
        o->argmax = i1 < 0 ? 0 : i1;
        o->logsumexp = (float)lse;
        o->pmax = (float)exp(v1 - lse);
        o->margin = (float)(exp(v1 - lse) - (i2 < 0 ? 0.0 : exp(v2 - lse)));
        o->negent = (float)(Z / S - log(S));
        o->top1 = v1;
        o->top2 = i2 < 0 ? -INFINITY : v2;
    }
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
    lp_cpu_run(cpu, n, rows_task, &j, (double)n * w->n_in >= LP_PAR_MIN_EW);
}
