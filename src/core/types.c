/*
 * types.c - element types: IEEE half conversions and the traits table
 * (dequantisers for every supported type, reference quantisers for the types
 * lopad writes). Block formulas follow ggml's layouts (see types.h and
 * docs/research/peers.md 1.11) so GGUF files map without conversion.
 */
#include "types.h"

#include <math.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LP_TYPES_X86 1
/* Fast paths below give bitwise the results of the scalar loops they replace;
 * inputs they would treat differently (NaN / inf) take the scalar loop. */
static bool cpu_avx2_f16c(void) {
    static int have = -1;
    if (have < 0) {
        /* f16c through cpuid: clang 14 does not know the "f16c" feature string */
        unsigned a, b, c, d;
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    }
    return have;
}
#endif

/* ---- IEEE binary16 ---- */

float lp_f16_to_f32(lp_half h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;
    uint32_t u;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24 is exact in f32 */
        float f = (float)m * 0x1p-24f;
        memcpy(&u, &f, 4);
        u |= sign;
    } else if (e == 31) {
        u = sign | 0x7f800000u | (m << 13); /* inf, or NaN keeping its payload */
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* round to nearest, ties to even; overflow -> inf; NaN stays NaN (quiet) */
lp_half lp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (lp_half)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x47800000u) return (lp_half)(sign | 0x7c00u); /* >= 2^16 (or inf) */
    if (a < 0x38800000u) {
        /* result is a half subnormal (or zero): units of 2^-24 */
        if (a <= 0x33000000u) return (lp_half)sign; /* <= 2^-25 rounds to zero (tie -> even) */
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++; /* may carry into the smallest normal */
        return (lp_half)(sign | q);
    }
    uint32_t q = (a >> 13) - (112u << 10);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++; /* carry may reach inf: correct */
    return (lp_half)(sign | q);
}

/* ---- plain types ---- */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* sources in a mapping may be unaligned for 2-byte loads only in malformed
 * files; bind checks alignment, but memcpy keeps these safe regardless */
#ifdef LP_TYPES_X86
/* F16C, 8 at a time; a group with an inf/NaN (exponent 31) goes through
 * lp_f16_to_f32, which keeps NaN payloads unquieted */
__attribute__((target("avx2,f16c"))) static int64_t f16_to_float_f16c(const uint8_t *s, float *dst,
                                                                      int64_t n) {
    int64_t i = 0;
    const __m128i e31 = _mm_set1_epi16(0x7c00);
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, e31), e31))) {
            for (int k = 0; k < 8; k++) {
                lp_half v;
                memcpy(&v, s + 2 * (i + k), 2);
                dst[i + k] = lp_f16_to_f32(v);
            }
            continue;
        }
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    return i;
}
#endif

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    int64_t i0 = 0;
#ifdef LP_TYPES_X86
    if (cpu_avx2_f16c()) i0 = f16_to_float_f16c(s, dst, n);
#endif
    for (int64_t i = i0; i < n; i++) {
        lp_half h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = lp_f16_to_f32(h);
    }
}
static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *d = dst;
    for (int64_t i = 0; i < n; i++) {
        lp_half h = lp_f32_to_f16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < n; i++) {
        lp_bf16 h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = lp_bf16_to_f32(h);
    }
}
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *d = dst;
    for (int64_t i = 0; i < n; i++) {
        lp_bf16 h = lp_f32_to_bf16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* ---- Q8_0: y = d * q ---- */

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const lp_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / LP_QK8_0; i++) {
        float d = lp_f16_to_f32(b[i].d);
        for (int j = 0; j < LP_QK8_0; j++)
            dst[i * LP_QK8_0 + j] = d * b[i].qs[j];
    }
}

#ifdef LP_TYPES_X86
/* One block of q8_0_from_float with AVX2: the same amax, d, id and products;
 * roundf (half away from zero) as trunc + a +-1 step where |frac| >= 0.5, exact.
 * Returns false, writing nothing, for a block with an inf or NaN. */
__attribute__((target("avx2,fma"))) static bool q8_0_block_avx2(const float *x, lp_block_q8_0 *b) {
    __m256 v[4], am = _mm256_setzero_ps();
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(INFINITY);
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        const __m256 a = _mm256_and_ps(v[k], absm);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* inf or NaN */
        am = _mm256_max_ps(am, a);
    }
    if (bad) return false;
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!(id < INFINITY)) return false; /* 1/d overflows (tiny amax): 0 * inf = NaN there */
    b->d = lp_f32_to_f16(d);
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(127.0f);
    const __m256 sgn = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        const __m256 p = _mm256_mul_ps(v[k], vid);
        const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 fr = _mm256_and_ps(_mm256_sub_ps(p, t), absm);
        const __m256 step = _mm256_and_ps(_mm256_cmp_ps(fr, half, _CMP_GE_OQ),
                                          _mm256_or_ps(one, _mm256_and_ps(p, sgn)));
        __m256 r = _mm256_add_ps(t, step);
        r = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), _mm256_min_ps(lim, r));
        q[k] = _mm256_cvttps_epi32(r);
    }
    /* 32 int32 -> 32 int8 in order */
    __m256i w01 = _mm256_packs_epi32(q[0], q[1]), w23 = _mm256_packs_epi32(q[2], q[3]);
    __m256i bb = _mm256_packs_epi16(w01, w23);
    bb = _mm256_permutevar8x32_epi32(bb, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)b->qs, bb);
    return true;
}
#endif

/* scale = max|x| / 127, q = round(x / scale) */
static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    lp_block_q8_0 *b = dst;
#ifdef LP_TYPES_X86
    const bool fast = cpu_avx2_f16c();
#endif
    for (int64_t i = 0; i < n / LP_QK8_0; i++) {
        const float *x = src + i * LP_QK8_0;
#ifdef LP_TYPES_X86
        if (fast && q8_0_block_avx2(x, &b[i])) continue;
#endif
        float amax = 0.0f;
        for (int j = 0; j < LP_QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = lp_f32_to_f16(d);
        for (int j = 0; j < LP_QK8_0; j++) {
            float v = roundf(x[j] * id);
            b[i].qs[j] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
        }
    }
}

/* ---- Q4_0: y[j] = d*((qs[j]&15)-8), y[j+16] = d*((qs[j]>>4)-8) ---- */

static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const lp_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / LP_QK4_0; i++) {
        float d = lp_f16_to_f32(b[i].d);
        float *y = dst + i * LP_QK4_0;
        for (int j = 0; j < LP_QK4_0 / 2; j++) {
            y[j] = d * (float)((b[i].qs[j] & 15) - 8);
            y[j + LP_QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

/* The value of largest magnitude maps to -8 exactly (d = max / -8), so the
 * asymmetric range [-8, 7] is used fully on the side of that extreme. */
static void q4_0_from_float(const float *src, void *dst, int64_t n) {
    lp_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / LP_QK4_0; i++) {
        const float *x = src + i * LP_QK4_0;
        float amax = 0.0f, vmax = 0.0f;
        for (int j = 0; j < LP_QK4_0; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                vmax = x[j];
            }
        }
        float d = vmax / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = lp_f32_to_f16(d);
        for (int j = 0; j < LP_QK4_0 / 2; j++) {
            float v0 = x[j] * id + 8.5f, v1 = x[j + LP_QK4_0 / 2] * id + 8.5f;
            int q0 = (int)fminf(15.0f, fmaxf(0.0f, v0));
            int q1 = (int)fminf(15.0f, fmaxf(0.0f, v1));
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ---- Q4_K: 8 sub-blocks of 32 with 6-bit scale and min ---- */

/* scale and min of sub-block j (0..7) from the 12 packed bytes */
static void q4_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void q4_k_to_float(const void *src, float *dst, int64_t n) {
    const lp_block_q4_K *b = src;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float d = lp_f16_to_f32(b[i].d), dmin = lp_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        float *y = dst + i * LP_QK_K;
        for (int j = 0, is = 0; j < LP_QK_K; j += 64, is += 2) {
            uint8_t sc, m;
            q4_k_scale_min(is, b[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            q4_k_scale_min(is + 1, b[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++)
                y[j + l] = d1 * (q[l] & 15) - m1;
            for (int l = 0; l < 32; l++)
                y[j + 32 + l] = d2 * (q[l] >> 4) - m2;
            q += 32;
        }
    }
}

/* Reference quantiser (simple, not ggml's iterative search): per sub-block of
 * 32 an affine range [min(x, 0), max(x)] in 15 steps; the 6-bit sub-block
 * scales and mins are relative to the f16 super-block scales d and dmin. */
static void q4_k_from_float(const float *src, void *dst, int64_t n) {
    lp_block_q4_K *b = dst;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float *x = src + i * LP_QK_K;
        float scale[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
        for (int s = 0; s < 8; s++) {
            float lo = 0.0f, hi = 0.0f;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[s * 32 + l]);
                hi = fmaxf(hi, x[s * 32 + l]);
            }
            scale[s] = (hi - lo) / 15.0f;
            mins[s] = -lo;
            max_scale = fmaxf(max_scale, scale[s]);
            max_min = fmaxf(max_min, mins[s]);
        }
        b[i].d = lp_f32_to_f16(max_scale / 63.0f);
        b[i].dmin = lp_f32_to_f16(max_min / 63.0f);
        const float d = lp_f16_to_f32(b[i].d), dmin = lp_f16_to_f32(b[i].dmin);
        uint8_t sc[8], m[8];
        for (int s = 0; s < 8; s++) {
            /* round the scale up so the sub-block range stays within 15 steps */
            sc[s] = d > 0 ? (uint8_t)fminf(63.0f, ceilf(scale[s] / d)) : 0;
            m[s] = dmin > 0 ? (uint8_t)fminf(63.0f, roundf(mins[s] / dmin)) : 0;
        }
        for (int j = 0; j < 4; j++) {
            b[i].scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            b[i].scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
            b[i].scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
        }
        memset(b[i].qs, 0, sizeof b[i].qs);
        for (int k = 0; k < LP_QK_K; k++) {
            const int s = k / 32, c = k / 64, l = k % 64;
            const float step = d * sc[s];
            int q = step > 0 ? (int)roundf((x[k] + dmin * m[s]) / step) : 0;
            q = q < 0 ? 0 : q > 15 ? 15 : q;
            if (l < 32)
                b[i].qs[c * 32 + l] |= (uint8_t)q;
            else
                b[i].qs[c * 32 + l - 32] |= (uint8_t)(q << 4);
        }
    }
}

/* ---- Q6_K: 16 sub-blocks of 16 with int8 scales, 6-bit quants ---- */

static void q6_k_to_float(const void *src, float *dst, int64_t n) {
    const lp_block_q6_K *b = src;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float d = lp_f16_to_f32(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        float *y = dst + i * LP_QK_K;
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = (int)((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = (int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* Reference quantiser (simple): per sub-block of 16 a symmetric scale with
 * q in [-31, 31]; the int8 sub-block scales are relative to the f16 d. */
static void q6_k_from_float(const float *src, void *dst, int64_t n) {
    lp_block_q6_K *b = dst;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const float *x = src + i * LP_QK_K;
        float scale[16], max_scale = 0.0f;
        for (int j = 0; j < 16; j++) {
            float amax = 0.0f;
            for (int l = 0; l < 16; l++)
                amax = fmaxf(amax, fabsf(x[j * 16 + l]));
            scale[j] = amax / 31.0f;
            max_scale = fmaxf(max_scale, scale[j]);
        }
        b[i].d = lp_f32_to_f16(max_scale / 127.0f);
        const float d = lp_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++)
            b[i].scales[j] = d > 0 ? (int8_t)fminf(127.0f, ceilf(scale[j] / d)) : 0;
        memset(b[i].ql, 0, sizeof b[i].ql);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int k = 0; k < LP_QK_K; k++) {
            /* sub-block k/16 uses scale index k/16 (see q6_k_to_float) */
            const float step = d * b[i].scales[k / 16];
            int q = step > 0 ? (int)roundf(x[k] / step) : 0;
            q = (q < -32 ? -32 : q > 31 ? 31 : q) + 32;
            const int h = k / 128, r = k % 128, g = r / 32, l = r % 32;
            uint8_t *lo = &b[i].ql[h * 64 + l + (g & 1) * 32];
            *lo |= (uint8_t)(g < 2 ? (q & 15) : (q & 15) << 4);
            b[i].qh[h * 32 + l] |= (uint8_t)((q >> 4) << (2 * g));
        }
    }
}

/* ---- traits ---- */

static const struct lp_type_traits traits_f32 = {"F32", 1, 4, f32_to_float, f32_from_float};
static const struct lp_type_traits traits_f16 = {"F16", 1, 2, f16_to_float, f16_from_float};
static const struct lp_type_traits traits_bf16 = {"BF16", 1, 2, bf16_to_float, bf16_from_float};
static const struct lp_type_traits traits_q8_0 = {"Q8_0", LP_QK8_0, sizeof(lp_block_q8_0),
                                                  q8_0_to_float, q8_0_from_float};
static const struct lp_type_traits traits_q4_0 = {"Q4_0", LP_QK4_0, sizeof(lp_block_q4_0),
                                                  q4_0_to_float, q4_0_from_float};
static const struct lp_type_traits traits_q4_k = {"Q4_K", LP_QK_K, sizeof(lp_block_q4_K),
                                                  q4_k_to_float, q4_k_from_float};
static const struct lp_type_traits traits_q6_k = {"Q6_K", LP_QK_K, sizeof(lp_block_q6_K),
                                                  q6_k_to_float, q6_k_from_float};

const struct lp_type_traits *lp_type_traits(int type) {
    switch (type) {
    case LOPAD_TYPE_F32: return &traits_f32;
    case LOPAD_TYPE_F16: return &traits_f16;
    case LOPAD_TYPE_BF16: return &traits_bf16;
    case LOPAD_TYPE_Q8_0: return &traits_q8_0;
    case LOPAD_TYPE_Q4_0: return &traits_q4_0;
    case LOPAD_TYPE_Q4_K: return &traits_q4_k;
    case LOPAD_TYPE_Q6_K: return &traits_q6_k;
    }
    return NULL;
}

const char *lp_type_name(int type) {
    const struct lp_type_traits *t = lp_type_traits(type);
    return t ? t->name : "?";
}

size_t lp_row_size(int type, int64_t n) {
    const struct lp_type_traits *t = lp_type_traits(type);
    if (!t || n <= 0 || n % t->blck_size) return 0;
    uint64_t bytes;
    if (!lp_mul_ok((uint64_t)(n / t->blck_size), t->type_size, &bytes) || bytes > SIZE_MAX)
        return 0;
    return (size_t)bytes;
}
