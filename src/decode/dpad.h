/*
 * dpad.h - DPad suffix dropout (docs/ALGORITHMS.md 3; docs/research/dpad_fastdllm.md 5): which
 * suffix positions after the current block a forward feeds. A small API any block
 * decoder can call (fast.c today; D2F / LoPA later).
 *
 *   keep(d) = min(1, a exp(-x^2 / 2) / sqrt(2 pi)),  x = k d / (W - 1)  (x = 0 when W = 1)
 *   for suffix offset d < W (d = 0 is the first position after the block), 0 for d >= W.
 *
 * Drawing (once per block, from the request's PRNG): for d = 0, 1, ... while d < W and
 * d < n_suffix, offsets with 0 < keep(d) < 1 draw one lp_rng_u01 u and are kept iff
 * u < keep(d); offsets with keep(d) >= 1 are kept without a draw (so a setting that
 * keeps everything consumes no randomness and reproduces the decoder without DPad).
 * tools/ref/dpad.py draws the same way.
 */
#ifndef LP_DPAD_H
#define LP_DPAD_H

#include <stdint.h>
#include "decode/decode.h"
#include "decode/predict.h"

struct lp_dpad {
    int window;   /* W >= 1 */
    double sigma; /* k >= 0 */
    double scale; /* a >= 0 */
};

/* The request's settings (scale 0 = the architecture's default: 1.6 Dream, 2.0 LLaDA). */
void lp_dpad_from_request(struct lp_dpad *p, const struct lp_decode_request *rq,
                          enum lopad_arch arch);
/* LOPAD_ERR_ARG naming the option when a setting is out of range. */
enum lopad_status lp_dpad_check(const struct lp_decode_request *rq);
/* keep(d) as above (f64). */
double lp_dpad_keep_prob(const struct lp_dpad *p, int d);
/* Draw the kept suffix: suffix positions first_pos + d for d in [0, n_suffix); writes
 * the kept canvas positions ascending to out (capacity n_suffix) and returns their
 * count. */
int lp_dpad_draw(const struct lp_dpad *p, int first_pos, int n_suffix, struct lp_rng *rng,
                 int32_t *out);

#endif
