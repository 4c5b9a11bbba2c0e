/* predict.c - proposals from logits: PRNG, softmax, confidences, sampling, selection. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
#include "predict.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ PRNG */

#define LP_GOLDEN 0x9E3779B97F4A7C15ull

uint64_t lp_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lp_rng_seed(struct lp_rng *r, uint64_t seed) {
    /* the four state words are splitmix64's first four outputs from `seed` */
    for (int i = 0; i < 4; i++) {
        seed += LP_GOLDEN;
        r->s[i] = lp_mix64(seed);
    }
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t lp_rng_u64(struct lp_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static inline double to_u01(uint64_t x) {
    return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* 2^-53 */
}

double lp_rng_u01(struct lp_rng *r) {
    return to_u01(lp_rng_u64(r));
}

double lp_counter_u01(uint64_t key, uint64_t c) {
    return to_u01(lp_mix64(key + (c + 1) * LP_GOLDEN));
}

/* ---------------------------------------------------------------- scoring */

int lp_argmax_f32(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;
    return best;
}

static float max_f32(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

void lp_softmax_f32(float *p, const float *x, int n) {
    float mx = max_f32(x, n);
    if (mx == -INFINITY) { /* nothing allowed: put all mass on token 0 */
        for (int i = 0; i < n; i++)
            p[i] = i == 0;
        return;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float e = x[i] == -FLT_MAX ? 0.0f : expf(x[i] - mx);
        p[i] = e;
        sum += e;
    }
    double inv = 1.0 / sum;
    for (int i = 0; i < n; i++)
        p[i] = (float)(p[i] * inv);
}

double lp_softmax_prob_f64(const float *x, int n, int v) {
    double mx = max_f32(x, n);
    if (mx == -INFINITY) return v == 0;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    return exp((double)x[v] - mx) / sum;
}

void lp_prob_stats(const float *p, int n, struct lp_pstats *st) {
    int a = 0;
    float top2 = -1.0f;
    double ne = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            if (p[i] > p[a]) {
                top2 = p[a];
                a = i;
            } else if (p[i] > top2) {
                top2 = p[i];
            }
        }
        ne += (double)p[i] * log((double)p[i] + 1e-10);
    }
    st->argmax = a;
    st->pmax = p[a];
    st->margin = n > 1 ? p[a] - top2 : p[a];
    st->negent = (float)ne;
}

int lp_gumbel_argmax(const float *x, int n, double temp, uint64_t key, uint64_t base) {
    int best = 0;
    double bs = -INFINITY;
    for (int v = 0; v < n; v++) {
        double u = lp_counter_u01(key, base + (uint64_t)v);
        double s = (double)x[v] / temp - log(-log(u));
        if (s > bs) {
            bs = s;
            best = v;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- filters */

static int cmp_idx_by_val_desc(const void *a, const void *b, void *ctx) {
    const float *x = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (x[i] > x[j]) return -1;
    if (x[i] < x[j]) return 1;
    return (i > j) - (i < j);
}

/* scratch_idx: [2 * n] int32 */
void lp_top_p_filter(float *x, int n, double top_p, int32_t *scratch_idx) {
    if (top_p >= 1.0 || n <= 1) return;
    float mx = max_f32(x, n);
    if (mx == -INFINITY) return;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    /* Only the head of the sorted order matters: gather candidates above a
     * probability floor until they hold more than top_p of the mass, so the
     * cut lies among them; then sort just those. */
    int32_t *idx = scratch_idx, *keep = scratch_idx + n;
    int m = 0;
    for (double tau = 1e-3;; tau = tau > 1e-200 ? tau * 1e-4 : 0.0) {
        double mass = 0;
        m = 0;
        for (int i = 0; i < n; i++) {
            double pi = exp((double)x[i] - mx) / sum;
            if (pi >= tau) {
                idx[m++] = i;
                mass += pi;
            }
        }
        if (mass > top_p || m == n || tau == 0.0) break;
    }
    qsort_r(idx, m, sizeof idx[0], cmp_idx_by_val_desc, x);
    for (int i = 0; i < n; i++)
        keep[i] = 0;
    double cum = 0;
    for (int i = 0; i < m; i++) {
        if (i > 0 && cum > top_p) break; /* mass before this one already exceeds p */
        keep[idx[i]] = 1;
        cum += exp((double)x[idx[i]] - mx) / sum;
    }
    for (int i = 0; i < n; i++)
        if (!keep[i]) x[i] = -FLT_MAX;
}

/* k-th largest (0-based) of a[0..n), reordering a: quickselect, descending */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv)
                i++;
            while (a[j] < piv)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

void lp_top_k_filter(float *x, int n, int k, float *scratch) {
    if (k <= 0 || k >= n) return;
    for (int i = 0; i < n; i++)
        scratch[i] = x[i];
    float kth = kth_largest(scratch, n, k - 1);
    for (int i = 0; i < n; i++)
        if (x[i] < kth) x[i] = -FLT_MAX;
}

int lp_sample_categorical(const float *p, int n, double u) {
    double total = 0;
    for (int i = 0; i < n; i++)
        total += p[i];
    double target = u * total, cum = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0) continue;
        cum += p[i];
        last = i;
        if (cum > target) return i;
    }
    return last; /* rounding: u * total at the very top */
}

/* ------------------------------------------------------------- selection */

struct conf_ctx {
    const double *conf;
    const int32_t *pos;
};

static int cmp_conf_desc(const void *a, const void *b, void *ctx) {
    const struct conf_ctx *c = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (c->conf[i] > c->conf[j]) return -1;
    if (c->conf[i] < c->conf[j]) return 1;
    return (c->pos[i] > c->pos[j]) - (c->pos[i] < c->pos[j]);
}

void lp_select_topk(const double *conf, const int32_t *pos, int n, int k, int32_t *out,
                    int32_t *scratch) {
    for (int i = 0; i < n; i++)
        scratch[i] = i;
    struct conf_ctx c = {conf, pos};
    qsort_r(scratch, n, sizeof scratch[0], cmp_conf_desc, &c);
    for (int i = 0; i < k && i < n; i++)
        out[i] = scratch[i];
}

void lp_sample_without_replacement(double *w, const double *fallback, int n, int k,
                                   struct lp_rng *rng, int32_t *out) {
    for (int t = 0; t < k; t++) {
        double total = 0;
        for (int i = 0; i < n; i++)
            if (w[i] > 0) total += w[i];
        int pick = -1;
        if (total > 0) {
            double target = lp_rng_u01(rng) * total, cum = 0;
            for (int i = 0; i < n; i++) {
                if (w[i] <= 0) continue;
                cum += w[i];
                pick = i;
                if (cum > target) break;
            }
        } else {
            /* all remaining weight underflowed: take the best remaining by fallback */
            for (int i = 0; i < n; i++) {
                bool taken = false;
                for (int j = 0; j < t; j++)
                    taken |= out[j] == i;
                if (!taken && (pick < 0 || fallback[i] > fallback[pick])) pick = i;
            }
        }
        if (pick < 0) break; /* fewer than k candidates */
        out[t] = pick;
        w[pick] = 0.0; /* taken: never drawn again */
    }
}
