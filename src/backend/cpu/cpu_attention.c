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
 */
#include "cpu_internal.h"

#include <math.h>

/* per-thread scratch layout, in floats */
struct att_layout {
    size_t m, l, acc, s, total;
};

static struct att_layout att_layout(int head_dim, int group) {
    struct att_layout L;
    size_t nq = (size_t)LP_ATT_QT * group;
    L.m = 0;
    L.l = L.m + nq;
    L.acc = L.l + nq;
    L.s = L.acc + nq * head_dim;
    L.total = L.s + (size_t)LP_ATT_KT;
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
};

/* Find the sequence and first query of logical query tile `qt`. */
static void locate_tile(const struct lp_attn_desc *a, int qt, int *seq, int *q0) {
    for (int s = 0; s < a->n_seq; s++) {
        int len = a->seq_start[s + 1] - a->seq_start[s];
        int nt = (len + LP_ATT_QT - 1) / LP_ATT_QT;
        if (qt < nt) {
            *seq = s;
            *q0 = a->seq_start[s] + qt * LP_ATT_QT;
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
    locate_tile(a, task / a->n_head_kv, &seq, &q0);
    const int f0 = a->seq_start[seq], f1 = a->seq_start[seq + 1];
    const int nq = LP_MIN(LP_ATT_QT, f1 - q0);
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

void lp_cpu_attention(void *ctx, const struct lp_attn_desc *a) {
    struct lp_cpu *cpu = ctx;
    LP_ASSERT(a->n_head_kv > 0 && a->n_head % a->n_head_kv == 0);
    LP_ASSERT(a->head_dim <= cpu->lim.head_dim &&
              a->n_head / a->n_head_kv <= cpu->lim.n_head / cpu->lim.n_head_kv);
    LP_ASSERT(0 <= a->skip_begin && a->skip_begin <= a->skip_end && a->skip_end <= a->n_cache);
    struct att_job j = {.cpu = cpu, .a = a};
    j.dot = cpu->simd ? lp_cpu_dot_avx2 : lp_cpu_dot_scalar;
    j.axpby = cpu->simd ? lp_cpu_axpby_avx2 : lp_cpu_axpby_scalar;
    int n_tiles = 0;
    for (int s = 0; s < a->n_seq; s++) {
        int len = a->seq_start[s + 1] - a->seq_start[s];
        LP_ASSERT(len >= 1);
        n_tiles += (len + LP_ATT_QT - 1) / LP_ATT_QT;
    }
    const double work = (double)a->n_tokens * (a->n_cache + a->n_tokens) * a->n_head * a->head_dim;
    lp_cpu_run(cpu, n_tiles * a->n_head_kv, att_task, &j, work >= LP_PAR_MIN_MM);
}
