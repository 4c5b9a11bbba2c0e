/*
 * predict.h - from raw logits to proposals: the logit shift, softmax and
 * confidences, argmax, Gumbel-max and categorical sampling with top-p / top-k,
 * position selection, and the request's PRNG. No model, no state.
 *
 * Randomness (identical in tools/ref/decoders.py, so random paths have golden
 * fixtures too):
 *   - lp_rng: xoshiro256** seeded by splitmix64(seed); one per request, drawn in a
 *     fixed order by the decoders, never from worker threads.
 *   - bulk noise (LLaDA's Gumbel over the vocabulary) is counter based: one key
 *     from lp_rng per step, then u(c) = lp_counter_u01(key, c) for the c-th value,
 *     so it can be computed in any order or on any thread with the same result.
 */
#ifndef LP_PREDICT_H
#define LP_PREDICT_H

#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------------ PRNG */

struct lp_rng {
    uint64_t s[4];
};
void lp_rng_seed(struct lp_rng *r, uint64_t seed);
uint64_t lp_rng_u64(struct lp_rng *r);
/* uniform in the open interval (0, 1): ((x >> 11) + 0.5) / 2^53 */
double lp_rng_u01(struct lp_rng *r);
/* splitmix64's output function */
uint64_t lp_mix64(uint64_t z);
/* c-th value of splitmix64 started at key, mapped to (0, 1) as lp_rng_u01:
 * mix64(key + (c + 1) * 0x9E3779B97F4A7C15) */
double lp_counter_u01(uint64_t key, uint64_t c);

/* --------------------------------------------------------------- the shift */

/* Raw output row that predicts canvas position j: j, or j-1 (0 for j = 0) for
 * models with shift_logits. */
static inline int lp_pred_row(bool shift_logits, int j) {
    return shift_logits ? (j > 0 ? j - 1 : 0) : j;
}

/* ---------------------------------------------------------------- scoring */

/* Index of the largest value; ties go to the lower index. NaN never wins. */
int lp_argmax_f32(const float *x, int n);

/* p = softmax(x) in f32 (max-subtracted, sum in f64). Entries equal to
 * -FLT_MAX or -inf get probability 0. */
void lp_softmax_f32(float *p, const float *x, int n);

/* softmax(x)[v] in f64 (LLaDA's low_confidence, as Fast-dLLM computes it). */
double lp_softmax_prob_f64(const float *x, int n, int v);

/* Scores of a probability vector. */
struct lp_pstats {
    int argmax;   /* ties to the lower index */
    float pmax;   /* p[argmax] */
    float margin; /* top1 - top2 */
    float negent; /* sum p log(p + 1e-10) */
};
void lp_prob_stats(const float *p, int n, struct lp_pstats *st);

/* Gumbel-max in f64: argmax_v (x_v / temp - log(-log u_v)), u_v =
 * lp_counter_u01(key, base + v). One exact sample of softmax(x / temp). */
int lp_gumbel_argmax(const float *x, int n, double temp, uint64_t key, uint64_t base);

/* Dream's filters on logits (in place): removed entries become -FLT_MAX.
 * top_p: keep the most probable tokens while the mass before each is <= top_p
 * (the first token crossing is kept); top_k: remove entries strictly below the
 * k-th largest. scratch: [2 * n] floats / ints as documented in predict.c. */
void lp_top_p_filter(float *x, int n, double top_p, int32_t *scratch_idx);
void lp_top_k_filter(float *x, int n, int k, float *scratch);

/* Inverse-CDF draw: first v with cumsum_f64(p[0..v]) > u * sum(p). */
int lp_sample_categorical(const float *p, int n, double u);

/* Rank candidates: out[0..k) = indices (into conf / pos) of the k largest conf,
 * best first; ties: lower pos first. conf/pos have n entries; k <= n. scratch [n]. */
void lp_select_topk(const double *conf, const int32_t *pos, int n, int k, int32_t *out,
                    int32_t *scratch);

/* Sample k distinct entries without replacement with weights w (>= 0), drawing
 * one lp_rng_u01 per pick (inverse CDF over the remaining weights in index
 * order). When the remaining weight is 0 the rest are the largest `fallback`
 * values (ties to the lower index). out receives indices into w. w is consumed. */
void lp_sample_without_replacement(double *w, const double *fallback, int n, int k,
                                   struct lp_rng *rng, int32_t *out);

#endif
