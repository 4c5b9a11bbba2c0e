/*
 * cpu_attention.c - softmax(q K^T * scale) V over a cached prefix plus the fed
 * rows of the query's own sequence, with online softmax (no score matrix).
 *
 * A task is (sequence, tile of LP_ATT_QT queries, kv head): the kv head's keys
 * are read once for all query heads of its GQA group. Keys are visited as one
 * logical sequence (visible cache rows, then the sequence's fed rows) cut into
 * tiles of LP_ATT_KT at fixed logical offsets. So a query's result depends only
 * on its own visible keys, in order: the same whether its keys come from the
 * cache or were fed in this call, and whatever the batch or thread count.
 * Hidden (block-masked) keys add exactly zero.
 *
 * At kernel level >= 2 (AVX-512, head_dim a multiple of 16) a key tile is
 * transposed once and the scores of every query vector of the task against it
 * are one small GEMM (score = fma chain over d = 0..head_dim-1, then * scale);
 * the softmax uses a vectorised exp, and P V accumulates vectors over d, two
 * query vectors per pass over the value rows. Query tiles are sized so a task
 * holds ~32 query vectors (a query's result does not depend on its tile).
 */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LP_HAVE_X86 1
#endif

/* query vectors a level-2 task aims for */
#define ATT_NV 32

/* per-thread scratch layout, in floats */
struct att_layout {
    size_t m, l, acc, s, kt, total;
};

/* queries per tile: LP_ATT_QT, or about ATT_NV query vectors for the wide path */
static int att_qt(int group, bool wide) {
    return wide ? LP_MAX(LP_ATT_QT, ATT_NV / group) : LP_ATT_QT;
}

static struct att_layout att_layout(int head_dim, int group) {
    struct att_layout L;
    size_t nq = (size_t)LP_MAX(LP_ATT_QT * group, att_qt(group, true) * group);
    L.m = 0;
    L.l = L.m + nq;
    L.acc = L.l + nq;
    L.s = L.acc + nq * head_dim; /* scores [nq][KT] */
    L.kt = L.s + nq * LP_ATT_KT; /* transposed key tile [head_dim][KT] */
    L.total = L.kt + (size_t)head_dim * LP_ATT_KT + 16;
    return L;
}

size_t lp_cpu_att_scratch_floats(const struct lp_backend_limits *lim) {
    int group = lim->n_head_kv > 0 ? lim->n_head / lim->n_head_kv : 1;
    return att_layout(lim->head_dim, group < 1 ? 1 : group).total;
}

struct att_job {
    struct lp_cpu *cpu;
    const struct lp_attn_desc *a;
    lp_dot_fn dot;
    lp_axpby_fn axpby;
    int qt; /* queries per tile */
};

/* Find the sequence and first query of logical query tile `qt` (tiles of QT). */
static void locate_tile(const struct lp_attn_desc *a, int QT, int qt, int *seq, int *q0) {
    for (int s = 0; s < a->n_seq; s++) {
        int len = a->seq_start[s + 1] - a->seq_start[s];
        int nt = (len + QT - 1) / QT;
        if (qt < nt) {
            *seq = s;
            *q0 = a->seq_start[s] + qt * QT;
            return;
        }
        qt -= nt;
    }
    LP_ASSERT(!"query tile out of range");
}

static void att_task(void *arg, int task, int tid) {
    struct att_job *j = arg;
    const struct lp_attn_desc *a = j->a;
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    const int kvh = task % a->n_head_kv;
    int seq, q0;
    locate_tile(a, j->qt, task / a->n_head_kv, &seq, &q0);
    const int f0 = a->seq_start[seq], f1 = a->seq_start[seq + 1];
    const int nq = LP_MIN(j->qt, f1 - q0);
    const int nv = nq * group; /* query vectors: (query qi, head g) -> qi*group + g */
    const int64_t q_stride = (int64_t)a->n_head * hd, kv_stride = (int64_t)a->n_head_kv * hd;

    struct att_layout L = att_layout(hd, group);
    float *scr = j->cpu->att_scratch + (size_t)tid * j->cpu->att_stride;
    float *m = scr + L.m, *l = scr + L.l, *acc = scr + L.acc, *s = scr + L.s;
    for (int v = 0; v < nv; v++) {
        m[v] = -INFINITY;
        l[v] = 0.0f;
    }
    for (int64_t i = 0; i < (int64_t)nv * hd; i++)
        acc[i] = 0.0f;

    const int n_skip = a->skip_end - a->skip_begin;
    const int n_vis_cache = a->n_cache - n_skip;
    const int n_keys = n_vis_cache + (f1 - f0);

    for (int k0 = 0; k0 < n_keys; k0 += LP_ATT_KT) {
        const int nk = LP_MIN(LP_ATT_KT, n_keys - k0);
        const float *kp[LP_ATT_KT], *vp[LP_ATT_KT];
        int fed[LP_ATT_KT]; /* fed row of the key, or -1 for a cache row */
        for (int t = 0; t < nk; t++) {
            int idx = k0 + t;
            if (idx < n_vis_cache) {
                int row = idx < a->skip_begin ? idx : idx + n_skip;
                kp[t] = a->k_cache + row * kv_stride + (int64_t)kvh * hd;
                vp[t] = a->v_cache + row * kv_stride + (int64_t)kvh * hd;
                fed[t] = -1;
            } else {
                int row = f0 + (idx - n_vis_cache);
                kp[t] = a->k + row * kv_stride + (int64_t)kvh * hd;
                vp[t] = a->v + row * kv_stride + (int64_t)kvh * hd;
                fed[t] = row;
            }
        }
        for (int qi = 0; qi < nq; qi++) {
            const int qrow = q0 + qi;
            for (int g = 0; g < group; g++) {
                const int v = qi * group + g;
                const float *q = a->q + qrow * q_stride + (int64_t)(kvh * group + g) * hd;
                float mt = -INFINITY;
                for (int t = 0; t < nk; t++) {
                    if (a->block && fed[t] >= 0 && a->block[fed[t]] > a->block[qrow]) {
                        s[t] = -INFINITY;
                        continue;
                    }
                    s[t] = j->dot(q, kp[t], hd) * a->scale;
                    if (s[t] > mt) mt = s[t];
                }
                if (mt == -INFINITY) continue; /* whole tile hidden: adds exactly nothing */
                const float m_new = mt > m[v] ? mt : m[v];
                const float corr = expf(m[v] - m_new); /* exp(-inf) = 0 on the first tile */
                float *av = acc + (int64_t)v * hd;
                float lv = l[v] * corr;
                bool scaled = false;
                for (int t = 0; t < nk; t++) {
                    if (s[t] == -INFINITY) continue;
                    const float p = expf(s[t] - m_new);
                    lv += p;
                    j->axpby(av, scaled ? 1.0f : corr, p, vp[t], hd);
                    scaled = true;
                }
                l[v] = lv;
                m[v] = m_new;
            }
        }
    }
    for (int qi = 0; qi < nq; qi++)
        for (int g = 0; g < group; g++) {
            const int v = qi * group + g;
            float *o = a->out + (int64_t)(q0 + qi) * q_stride + (int64_t)(kvh * group + g) * hd;
            const float inv = 1.0f / l[v];
            for (int d = 0; d < hd; d++)
                o[d] = acc[(int64_t)v * hd + d] * inv;
        }
}

#ifdef LP_HAVE_X86
#define TA __attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq,avx512bw")))

TA static void att_task_512(void *arg, int task, int tid) {
    struct att_job *j = arg;
    const struct lp_attn_desc *a = j->a;
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    const int kvh = task % a->n_head_kv;
    int seq, q0;
    locate_tile(a, j->qt, task / a->n_head_kv, &seq, &q0);
    const int f0 = a->seq_start[seq], f1 = a->seq_start[seq + 1];
    const int nq = LP_MIN(j->qt, f1 - q0);
    const int nv = nq * group; /* query vectors: (query qi, head g) -> qi*group + g */
    const int64_t q_stride = (int64_t)a->n_head * hd, kv_stride = (int64_t)a->n_head_kv * hd;

    struct att_layout L = att_layout(hd, group);
    float *scr = j->cpu->att_scratch + (size_t)tid * j->cpu->att_stride;
    float *m = scr + L.m, *l = scr + L.l, *acc = scr + L.acc, *S = scr + L.s, *kt = scr + L.kt;
    const float *qv[ATT_NV + 256];
    float corrs[ATT_NV + 256];
    int active[ATT_NV + 256];
    LP_ASSERT(nv <= ATT_NV + 256);
    for (int v = 0; v < nv; v++) {
        m[v] = -INFINITY;
        l[v] = 0.0f;
        qv[v] =
            a->q + (int64_t)(q0 + v / group) * q_stride + (int64_t)(kvh * group + v % group) * hd;
    }
    memset(acc, 0, sizeof(float) * (size_t)nv * hd);

    const int n_skip = a->skip_end - a->skip_begin;
    const int n_vis_cache = a->n_cache - n_skip;
    const int n_keys = n_vis_cache + (f1 - f0);
    const __m512 vscale = _mm512_set1_ps(a->scale), ninf = _mm512_set1_ps(-INFINITY);

    for (int k0 = 0; k0 < n_keys; k0 += LP_ATT_KT) {
        const int nk = LP_MIN(LP_ATT_KT, n_keys - k0);
        const float *kp[LP_ATT_KT], *vp[LP_ATT_KT];
        int fed[LP_ATT_KT];
        for (int t = 0; t < nk; t++) {
            int idx = k0 + t;
            if (idx < n_vis_cache) {
                int row = idx < a->skip_begin ? idx : idx + n_skip;
                kp[t] = a->k_cache + row * kv_stride + (int64_t)kvh * hd;
                vp[t] = a->v_cache + row * kv_stride + (int64_t)kvh * hd;
                fed[t] = -1;
            } else {
                int row = f0 + (idx - n_vis_cache);
                kp[t] = a->k + row * kv_stride + (int64_t)kvh * hd;
                vp[t] = a->v + row * kv_stride + (int64_t)kvh * hd;
                fed[t] = row;
            }
        }
        /* K tile transposed: kt[d][t], keys past nk zero */
        for (int t0 = 0; t0 < LP_ATT_KT; t0 += 16) {
            for (int d0 = 0; d0 < hd; d0 += 16) {
                __m512 r[16];
                for (int t = 0; t < 16; t++)
                    r[t] = t0 + t < nk ? _mm512_loadu_ps(kp[t0 + t] + d0) : _mm512_setzero_ps();
                /* transpose 16x16 */
                __m512 x[16], y[16];
                for (int i = 0; i < 8; i++) {
                    x[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                    x[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
                }
                for (int i = 0; i < 4; i++) {
                    __m512d p0 = _mm512_castps_pd(x[4 * i]), p1 = _mm512_castps_pd(x[4 * i + 1]);
                    __m512d p2 = _mm512_castps_pd(x[4 * i + 2]),
                            p3 = _mm512_castps_pd(x[4 * i + 3]);
                    y[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(p0, p2));
                    y[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p0, p2));
                    y[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(p1, p3));
                    y[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(p1, p3));
                }
                for (int c = 0; c < 4; c++) {
                    __m512 u0 = _mm512_shuffle_f32x4(y[c], y[4 + c], 0x44);
                    __m512 u1 = _mm512_shuffle_f32x4(y[c], y[4 + c], 0xEE);
                    __m512 u2 = _mm512_shuffle_f32x4(y[8 + c], y[12 + c], 0x44);
                    __m512 u3 = _mm512_shuffle_f32x4(y[8 + c], y[12 + c], 0xEE);
                    _mm512_storeu_ps(kt + (d0 + c) * LP_ATT_KT + t0,
                                     _mm512_shuffle_f32x4(u0, u2, 0x88));
                    _mm512_storeu_ps(kt + (d0 + 4 + c) * LP_ATT_KT + t0,
                                     _mm512_shuffle_f32x4(u0, u2, 0xDD));
                    _mm512_storeu_ps(kt + (d0 + 8 + c) * LP_ATT_KT + t0,
                                     _mm512_shuffle_f32x4(u1, u3, 0x88));
                    _mm512_storeu_ps(kt + (d0 + 12 + c) * LP_ATT_KT + t0,
                                     _mm512_shuffle_f32x4(u1, u3, 0xDD));
                }
            }
        }
        /* scores S[v][t] = (sum_d q[d] k_t[d], fma chain in d order) * scale */
        for (int v0 = 0; v0 < nv; v0 += 8) {
            const int n = LP_MIN(8, nv - v0);
            __m512 s0[8], s1[8];
            for (int v = 0; v < 8; v++)
                s0[v] = s1[v] = _mm512_setzero_ps();
#define SCORE(NN)                                                                                  \
    for (int d = 0; d < hd; d++) {                                                                 \
        const __m512 k0v = _mm512_loadu_ps(kt + d * LP_ATT_KT);                                    \
        const __m512 k1v = _mm512_loadu_ps(kt + d * LP_ATT_KT + 16);                               \
        _Pragma("GCC unroll 8") for (int v = 0; v < NN; v++) {                                     \
            const __m512 b = _mm512_set1_ps(qv[v0 + v][d]);                                        \
            s0[v] = _mm512_fmadd_ps(b, k0v, s0[v]);                                                \
            s1[v] = _mm512_fmadd_ps(b, k1v, s1[v]);                                                \
        }                                                                                          \
    }
            switch (n) {
            case 8: SCORE(8) break;
            case 7: SCORE(7) break;
            case 6: SCORE(6) break;
            case 5: SCORE(5) break;
            case 4: SCORE(4) break;
            case 3: SCORE(3) break;
            case 2: SCORE(2) break;
            default: SCORE(1) break;
            }
#undef SCORE
            for (int v = 0; v < n; v++) {
                _mm512_storeu_ps(S + (v0 + v) * LP_ATT_KT, _mm512_mul_ps(s0[v], vscale));
                _mm512_storeu_ps(S + (v0 + v) * LP_ATT_KT + 16, _mm512_mul_ps(s1[v], vscale));
            }
        }
        /* visibility of the tile's keys per query (bit t) */
        int n_active = 0;
        uint32_t vis_all = nk == 32 ? 0xffffffffu : (1u << nk) - 1;
        for (int qi = 0; qi < nq; qi++) {
            const int qrow = q0 + qi;
            uint32_t vis = vis_all;
            if (a->block)
                for (int t = 0; t < nk; t++)
                    if (fed[t] >= 0 && a->block[fed[t]] > a->block[qrow]) vis &= ~(1u << t);
            if (!vis) continue; /* whole tile hidden: adds exactly nothing */
            const __mmask16 mk0 = (__mmask16)(vis & 0xffff), mk1 = (__mmask16)(vis >> 16);
            for (int g = 0; g < group; g++) {
                const int v = qi * group + g;
                float *sv = S + v * LP_ATT_KT;
                __m512 a0 = _mm512_mask_loadu_ps(ninf, mk0, sv);
                __m512 a1 = _mm512_mask_loadu_ps(ninf, mk1, sv + 16);
                const float mt = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
                const float m_new = mt > m[v] ? mt : m[v];
                const float corr = expf(m[v] - m_new); /* exp(-inf) = 0 on the first tile */
                const __m512 mn = _mm512_set1_ps(m_new);
                a0 = lp_exp512(_mm512_sub_ps(a0, mn)); /* hidden: exp(-inf) = 0 */
                a1 = lp_exp512(_mm512_sub_ps(a1, mn));
                a0 = _mm512_maskz_mov_ps(mk0, a0);
                a1 = _mm512_maskz_mov_ps(mk1, a1);
                l[v] = l[v] * corr + _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
                m[v] = m_new;
                _mm512_storeu_ps(sv, a0);
                _mm512_storeu_ps(sv + 16, a1);
                corrs[v] = corr;
                active[n_active++] = v;
            }
        }
        /* acc[v] = acc[v] * corr[v] + sum_t p_vt v_t, two query vectors per pass over
         * the value rows, 64 dims in registers at a time */
        for (int ia = 0; ia < n_active; ia += 2) {
            const int va = active[ia], vb = ia + 1 < n_active ? active[ia + 1] : -1;
            const float *pa = S + va * LP_ATT_KT, *pb = vb >= 0 ? S + vb * LP_ATT_KT : pa;
            float *oa = acc + (int64_t)va * hd, *ob = vb >= 0 ? acc + (int64_t)vb * hd : NULL;
            const __m512 ca = _mm512_set1_ps(corrs[va]);
            const __m512 cb = _mm512_set1_ps(vb >= 0 ? corrs[vb] : 0.0f);
            for (int d0 = 0; d0 < hd; d0 += 64) {
                if (d0 + 64 > hd) { /* 16-dim tail chunks */
                    for (int d1 = d0; d1 < hd; d1 += 16) {
                        __m512 x0 = _mm512_mul_ps(_mm512_loadu_ps(oa + d1), ca);
                        __m512 x1 = ob ? _mm512_mul_ps(_mm512_loadu_ps(ob + d1), cb) : x0;
                        for (int t = 0; t < nk; t++) {
                            const __m512 vv = _mm512_loadu_ps(vp[t] + d1);
                            x0 = _mm512_fmadd_ps(_mm512_set1_ps(pa[t]), vv, x0);
                            x1 = _mm512_fmadd_ps(_mm512_set1_ps(pb[t]), vv, x1);
                        }
                        _mm512_storeu_ps(oa + d1, x0);
                        if (ob) _mm512_storeu_ps(ob + d1, x1);
                    }
                    break;
                }
                __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(oa + d0), ca);
                __m512 a1 = _mm512_mul_ps(_mm512_loadu_ps(oa + d0 + 16), ca);
                __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(oa + d0 + 32), ca);
                __m512 a3 = _mm512_mul_ps(_mm512_loadu_ps(oa + d0 + 48), ca);
                __m512 b0 = a0, b1 = a1, b2 = a2, b3 = a3;
                if (ob) {
                    b0 = _mm512_mul_ps(_mm512_loadu_ps(ob + d0), cb);
                    b1 = _mm512_mul_ps(_mm512_loadu_ps(ob + d0 + 16), cb);
                    b2 = _mm512_mul_ps(_mm512_loadu_ps(ob + d0 + 32), cb);
                    b3 = _mm512_mul_ps(_mm512_loadu_ps(ob + d0 + 48), cb);
                }
                for (int t = 0; t < nk; t++) {
                    const float *vr = vp[t] + d0;
                    const __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16);
                    const __m512 v2 = _mm512_loadu_ps(vr + 32), v3 = _mm512_loadu_ps(vr + 48);
                    const __m512 p0 = _mm512_set1_ps(pa[t]), p1 = _mm512_set1_ps(pb[t]);
                    a0 = _mm512_fmadd_ps(p0, v0, a0);
                    a1 = _mm512_fmadd_ps(p0, v1, a1);
                    a2 = _mm512_fmadd_ps(p0, v2, a2);
                    a3 = _mm512_fmadd_ps(p0, v3, a3);
                    b0 = _mm512_fmadd_ps(p1, v0, b0);
                    b1 = _mm512_fmadd_ps(p1, v1, b1);
                    b2 = _mm512_fmadd_ps(p1, v2, b2);
                    b3 = _mm512_fmadd_ps(p1, v3, b3);
                }
                _mm512_storeu_ps(oa + d0, a0);
                _mm512_storeu_ps(oa + d0 + 16, a1);
                _mm512_storeu_ps(oa + d0 + 32, a2);
                _mm512_storeu_ps(oa + d0 + 48, a3);
                if (ob) {
                    _mm512_storeu_ps(ob + d0, b0);
                    _mm512_storeu_ps(ob + d0 + 16, b1);
                    _mm512_storeu_ps(ob + d0 + 32, b2);
                    _mm512_storeu_ps(ob + d0 + 48, b3);
                }
            }
        }
    }
    for (int qi = 0; qi < nq; qi++)
        for (int g = 0; g < group; g++) {
            const int v = qi * group + g;
            float *o = a->out + (int64_t)(q0 + qi) * q_stride + (int64_t)(kvh * group + g) * hd;
            const float inv = 1.0f / l[v];
            for (int d = 0; d < hd; d++)
                o[d] = acc[(int64_t)v * hd + d] * inv;
        }
}
#endif

void lp_cpu_attention(void *ctx, const struct lp_attn_desc *a) {
    struct lp_cpu *cpu = ctx;
    LP_ASSERT(a->n_head_kv > 0 && a->n_head % a->n_head_kv == 0);
    LP_ASSERT(a->head_dim <= cpu->lim.head_dim &&
              a->n_head / a->n_head_kv <= cpu->lim.n_head / cpu->lim.n_head_kv);
    LP_ASSERT(0 <= a->skip_begin && a->skip_begin <= a->skip_end && a->skip_end <= a->n_cache);
    struct att_job j = {.cpu = cpu, .a = a};
    j.dot = cpu->simd ? lp_cpu_dot_avx2 : lp_cpu_dot_scalar;
    j.axpby = cpu->simd ? lp_cpu_axpby_avx2 : lp_cpu_axpby_scalar;
    lp_task_fn fn = att_task;
    const int group = a->n_head / a->n_head_kv;
    bool wide = false;
#ifdef LP_HAVE_X86
    wide = cpu->wide && a->head_dim % 16 == 0;
    if (wide) fn = att_task_512;
#endif
    j.qt = att_qt(group, wide);
    int n_tiles = 0;
    for (int s = 0; s < a->n_seq; s++) {
        int len = a->seq_start[s + 1] - a->seq_start[s];
        LP_ASSERT(len >= 1);
        n_tiles += (len + j.qt - 1) / j.qt;
    }
    const double work = (double)a->n_tokens * (a->n_cache + a->n_tokens) * a->n_head * a->head_dim;
    lp_cpu_run(cpu, n_tiles * a->n_head_kv, fn, &j, work >= LP_PAR_MIN_MM);
}
