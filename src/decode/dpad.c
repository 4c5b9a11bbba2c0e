/*
 * dpad.c - DPad suffix dropout: keep probabilities, the per-block draw and the
 * published presets (see dpad.h; the preset table is documented in docs/DECODERS.md).
 */
#include "decode/dpad.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include "core/common.h"

void lp_dpad_from_request(struct lp_dpad *p, const struct lp_decode_request *rq,
                          enum lopad_arch arch) {
    p->window = rq->dpad_window;
    p->sigma = rq->dpad_sigma;
    p->scale = rq->dpad_scale > 0 ? rq->dpad_scale : (arch == LOPAD_ARCH_DREAM ? 1.6 : 2.0);
}

enum lopad_status lp_dpad_check(const struct lp_decode_request *rq) {
    if (rq->dpad_window < 1)
        return lp_error(LOPAD_ERR_ARG, "--dpad-window must be at least 1, got %d", rq->dpad_window);
    if (!(rq->dpad_sigma >= 0) || !isfinite(rq->dpad_sigma))
        return lp_error(LOPAD_ERR_ARG, "--dpad-sigma must be a finite number >= 0, got %g",
                        rq->dpad_sigma);
    if (!(rq->dpad_scale >= 0) || !isfinite(rq->dpad_scale))
        return lp_error(LOPAD_ERR_ARG,
                        "--dpad-scale must be a finite number >= 0 (0 = default), got %g",
                        rq->dpad_scale);
    return LOPAD_OK;
}

double lp_dpad_keep_prob(const struct lp_dpad *p, int d) {
    if (d < 0 || d >= p->window) return 0.0;
    double x = p->window > 1 ? p->sigma * d / (p->window - 1) : 0.0;
    double pdf = p->scale * exp(-x * x / 2.0) / sqrt(2.0 * 3.14159265358979323846);
    return pdf < 1.0 ? pdf : 1.0;
}

int lp_dpad_draw(const struct lp_dpad *p, int first_pos, int n_suffix, struct lp_rng *rng,
                 int32_t *out) {
    int n = 0;
    for (int d = 0; d < n_suffix && d < p->window; d++) {
        double kp = lp_dpad_keep_prob(p, d);
        if (kp <= 0.0) continue;
        if (kp >= 1.0 || lp_rng_u01(rng) < kp) out[n++] = first_pos + d;
    }
    return n;
}

/* ---------------------------------------------------------------- presets */

/* docs/research/dpad_fastdllm.md 5.9 (the authors' run scripts): k, a, W per model / task;
 * generation lengths are the scripts' (the preset does not set --gen). */
static const struct {
    const char *name;
    double sigma, scale;
    int window;
} presets[] = {
    {"dpad-llada-gsm8k", 4, 2.0, 256},       {"dpad-llada-math", 4, 2.0, 256},
    {"dpad-llada-humaneval", 3, 2.3, 512},   {"dpad-llada-mbpp", 3, 2.3, 128},
    {"dpad-llada15-gsm8k", 3, 1.6, 256},     {"dpad-llada15-math", 3, 1.6, 256},
    {"dpad-llada15-humaneval", 3, 1.6, 128}, {"dpad-llada15-humaneval-parallel", 3, 2.3, 128},
    {"dpad-llada15-mbpp", 3, 1.6, 512},      {"dpad-llada15-long", 3, 1.6, 256},
    {"dpad-dream-gsm8k", 4, 1.6, 256},       {"dpad-dream-math", 4, 1.6, 128},
    {"dpad-dream-humaneval", 3, 2.3, 128},   {"dpad-dream-mbpp", 3, 1.6, 128},
    {"dpad-dream-long", 3, 2.3, 128},
};

enum lopad_status lp_dpad_preset_apply(const char *name, struct lp_decode_request *rq) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (name && !strcmp(name, presets[i].name)) {
            rq->dpad = true;
            rq->dpad_sigma = presets[i].sigma;
            rq->dpad_scale = presets[i].scale;
            rq->dpad_window = presets[i].window;
            return LOPAD_OK;
        }
    char list[1024];
    size_t o = 0;
    list[0] = 0;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0] && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", presets[i].name);
    return lp_error(LOPAD_ERR_ARG, "unknown preset '%s' (choices: %s)", name ? name : "", list);
}
