/*
 * dream.c - the vanilla Dream decoder (docs/ALGORITHMS.md 1; docs/research/dpad_fastdllm.md 3):
 * the whole canvas every step, `steps` steps, time grid t_i = 1 - i (1 - eps) / steps
 * (linspace(1, eps, steps + 1)), step i going from t = t_i to s = t_{i+1}.
 *
 * Proposal at a masked position j (prediction = raw row j-1 for shift_logits
 * models): logits / T (T > 0), top-p, top-k (removed entries -FLT_MAX), softmax
 * in f32; x0 = a categorical draw (T > 0, conf = p[x0]) or the argmax (conf =
 * pmax); topk_margin replaces conf by top1 - top2, entropy by sum p log(p+1e-10).
 *   origin: each masked position transfers with probability 1 - s/t (1 on the
 *           last step) and takes its x0;
 *   others: n = int(N (1 - s/t)) (N = masked count; all N on the last step)
 *           positions of highest conf (ties: lower position), or, with
 *           alg_temp > 0, n draws without replacement from softmax(conf / alg_temp).
 * The grid and n are computed in f64 (the reference uses f32 tensors; they
 * differ only when N (1 - s/t) lies within an f32 rounding of an integer).
 *
 * PRNG order per step that runs a forward: origin: one uniform per masked
 * position (increasing), then one per transferring position for the categorical
 * draw (T > 0); others: one per masked position for the categorical draw (T > 0),
 * then one per pick of the alg_temp draw. A step that can commit nothing (n = 0,
 * or no origin transfer) is skipped without a forward (the reference runs one
 * and discards it), so NFE <= steps.
 *
 * With the fused head (T = 0, no top-p / top-k, alg_temp 0; decoder_impl.h) a step
 * decides on the rows' scores (x0 = argmax, conf = pmax / margin / negent) when the
 * argmax and the top-n set are clear by more than the scores' error, and otherwise
 * takes its rows' logits and runs the code above: the same tokens.
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decoder_impl.h"

struct dream {
    float *logits;     /* [G][V] predictions of the rows asked for */
    float *probs;      /* [n_threads][V] */
    float *fscratch;   /* [n_threads][V] top-k scratch */
    int32_t *iscratch; /* [n_threads][2V] top-p scratch */
    double *u;         /* [G] categorical draws of this step */
    int32_t *rows;     /* [G] */
    int32_t *mpos;     /* [G] masked positions */
    int32_t *tpos;     /* [G] positions whose proposal is needed */
    int32_t *x0;       /* [G] */
    double *conf;      /* [G] */
    double *w;         /* [G] alg_temp weights */
    int32_t *sel;      /* [G] */
    int32_t *scratch;  /* [G] */
    /* fused scores (T = 0, no top-p / top-k, alg_temp 0, an engine with the fused head) */
    bool fused;
    struct lp_row_scores *sc; /* [G] */
};

static enum lopad_status dream_check(const struct lp_decode_request *rq,
                                     const struct lopad_hparams *hp) {
    LP_UNUSED(hp);
    if (rq->block_len != 0 && rq->block_len != rq->gen_len)
        return lp_error(LOPAD_ERR_ARG,
                        "--block (%d) is not used by the dream decoder (it decodes the whole "
                        "canvas); leave it unset or equal to --gen (%d)",
                        rq->block_len, rq->gen_len);
    if (rq->cfg_scale != 0)
        return lp_error(LOPAD_ERR_ARG, "--cfg-scale is only supported by the llada decoder");
    if (!(rq->eps > 0 && rq->eps < 1))
        return lp_error(LOPAD_ERR_ARG, "--eps must be in (0, 1), got %g", rq->eps);
    if (rq->remasking != LP_REMASK_LOW_CONFIDENCE)
        return lp_error(LOPAD_ERR_ARG,
                        "--remasking is not used by the dream decoder (choose --alg instead)");
    return LOPAD_OK;
}

static void dream_release(struct lp_decoder *d) {
    struct dream *s = d->priv;
    if (!s) return;
    lp_free(s->logits);
    lp_free(s->probs);
    lp_free(s->fscratch);
    lp_free(s->iscratch);
    lp_free(s->u);
    lp_free(s->rows);
    lp_free(s->mpos);
    lp_free(s->tpos);
    lp_free(s->x0);
    lp_free(s->conf);
    lp_free(s->w);
    lp_free(s->sel);
    lp_free(s->scratch);
    lp_free(s->sc);
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status dream_init(struct lp_decoder *d) {
    struct dream *s = lp_calloc(1, sizeof *s, "dream state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    d->n_steps = d->rq.steps;
    size_t G = (size_t)d->G, V = (size_t)d->V;
    s->logits = lp_malloc(sizeof(float) * G * V, "dream logits");
    size_t nt = (size_t)lp_dec_n_threads(d);
    s->probs = lp_malloc(sizeof(float) * nt * V, "dream probs");
    s->fscratch = lp_malloc(sizeof(float) * nt * V, "dream top-k scratch");
    s->iscratch = lp_malloc(sizeof(int32_t) * 2 * nt * V, "dream top-p scratch");
    s->u = lp_malloc(sizeof(double) * G, "dream draws");
    s->rows = lp_malloc(sizeof(int32_t) * G, "dream rows");
    s->mpos = lp_malloc(sizeof(int32_t) * G, "dream masked positions");
    s->tpos = lp_malloc(sizeof(int32_t) * G, "dream transfer positions");
    s->x0 = lp_malloc(sizeof(int32_t) * G, "dream proposals");
    s->conf = lp_malloc(sizeof(double) * G, "dream confidences");
    s->w = lp_malloc(sizeof(double) * G, "dream weights");
    s->sel = lp_malloc(sizeof(int32_t) * G, "dream selection");
    s->scratch = lp_malloc(sizeof(int32_t) * G, "dream scratch");
    if (!s->logits || !s->probs || !s->fscratch || !s->iscratch || !s->u || !s->rows || !s->mpos ||
        !s->tpos || !s->x0 || !s->conf || !s->w || !s->sel || !s->scratch)
        return LOPAD_ERR_NOMEM;
    const struct lp_decode_request *rq = &d->rq;
    s->fused = lp_dec_has_scores(d) && rq->temperature == 0 && rq->top_p >= 1.0 && rq->top_k == 0 &&
               (rq->alg == LP_ALG_ORIGIN || rq->alg_temp == 0);
    if (s->fused && !(s->sc = lp_malloc(sizeof *s->sc * G, "dream scores"))) return LOPAD_ERR_NOMEM;
    return LOPAD_OK;
}

/* t_i of the grid linspace(1, eps, steps + 1) */
static double dream_t(int i, int steps, double eps) {
    return 1.0 - i * ((1.0 - eps) / steps);
}

/* Proposal for row q of s->logits (in place): token and confidence, using the
 * pre-drawn s->u[q] and thread tid's scratch. */
static void dream_propose(void *ctx, int q, int tid) {
    struct lp_decoder *d = ctx;
    struct dream *s = d->priv;
    const struct lp_decode_request *rq = &d->rq;
    const int V = d->V;
    float *lg = s->logits + (size_t)q * V; /* (V) */
    float *probs = s->probs + (size_t)tid * V;
    double u = s->u[q];
    if (rq->temperature > 0) {
        float T = (float)rq->temperature;
        for (int v = 0; v < V; v++)
            lg[v] = lg[v] / T;
    }
    if (rq->top_p < 1.0) lp_top_p_filter(lg, V, rq->top_p, s->iscratch + (size_t)tid * 2 * V);
    if (rq->top_k > 0) lp_top_k_filter(lg, V, rq->top_k, s->fscratch + (size_t)tid * V);
    lp_softmax_f32(probs, lg, V);
    struct lp_pstats ps;
    lp_prob_stats(probs, V, &ps);
    int tok = ps.argmax;
    double c = ps.pmax;
    if (rq->temperature > 0) {
        tok = lp_sample_categorical(probs, V, u);
        c = probs[tok];
    }
    if (rq->alg == LP_ALG_TOPK_MARGIN)
        c = ps.margin;
    else if (rq->alg == LP_ALG_ENTROPY)
        c = ps.negent;
    s->x0[q] = tok;
    s->conf[q] = c;
}

/* The fused forward of a step (T = 0): x0 = argmax, conf by the algorithm. Returns 1
 * when x0 (the argmax of the f32 probabilities) and the top-n_commit set are clear on
 * the scores, 0 when the step needs its rows' logits, -1 on an error (in *st). */
static int dream_scores(struct lp_decoder *d, struct dream *s, int nt, int n_commit,
                        enum lopad_status *st) {
    const struct lp_decode_request *rq = &d->rq;
    const struct lopad_batch b = lp_dec_canvas_batch(d, nt, s->rows);
    *st = lp_dec_forward_scores(d, &b, s->sc);
    if (*st != LOPAD_OK) return -1;
    bool clear = true;
    double tol = 0; /* error bound of the confidences */
    for (int q = 0; q < nt; q++) {
        const struct lp_row_scores *r = &s->sc[q];
        /* the argmax of the f32 probabilities */
        clear &= lp_scores_argmax_clear(r, true);
        s->x0[q] = r->argmax;
        s->conf[q] = rq->alg == LP_ALG_TOPK_MARGIN ? r->margin
                     : rq->alg == LP_ALG_ENTROPY   ? r->negent
                                                   : r->pmax;
        tol = fmax(tol, lp_conf_tol(r, s->conf[q], rq->alg == LP_ALG_ENTROPY, d->V));
    }
    if (clear && rq->alg != LP_ALG_ORIGIN)
        clear = lp_dec_topk_clear(s->conf, nt, n_commit, tol, s->w);
    return clear ? 1 : 0;
}

static enum lopad_status dream_step(struct lp_decoder *d) {
    struct dream *s = d->priv;
    const struct lp_decode_request *rq = &d->rq;
    const int i = d->step, steps = rq->steps;
    const bool last = i == steps - 1;
    const double t = dream_t(i, steps, rq->eps), sn = dream_t(i + 1, steps, rq->eps);
    const double p_transfer = last ? 1.0 : 1.0 - sn / t;
    const bool shift = d->eng.hp.shift_logits;

    int N = 0;
    for (int j = d->P; j < d->L; j++)
        if (d->canvas[j] == d->mask_id) s->mpos[N++] = j;
    if (N == 0) return LOPAD_OK;

    /* which positions need a proposal */
    int nt = 0, n_commit = 0;
    if (rq->alg == LP_ALG_ORIGIN) {
        for (int q = 0; q < N; q++)
            if (lp_rng_u01(&d->rng) < p_transfer) s->tpos[nt++] = s->mpos[q];
    } else {
        n_commit = last ? N : (int)((double)N * (1.0 - sn / t));
        if (n_commit > 0) {
            memcpy(s->tpos, s->mpos, sizeof(int32_t) * N);
            nt = N;
        }
    }
    if (nt == 0) return LOPAD_OK;

    for (int q = 0; q < nt; q++)
        s->rows[q] = lp_pred_row(shift, s->tpos[q]);
    int on_scores = 0; /* decided on the fused scores */
    enum lopad_status st = LOPAD_OK;
    bool fused = s->fused && lp_dec_scores_worth(d);
    if (fused && (on_scores = dream_scores(d, s, nt, n_commit, &st)) < 0) return st;
    if (!on_scores) {
        /* without the fused head: the forward's logits; with it, a step too close to
         * call on the scores: the same rows' logits */
        st = fused ? lp_dec_last_logits(d, s->rows, nt, s->logits)
                   : lp_dec_forward(d, d->canvas, 1, s->rows, nt, s->logits);
        if (st != LOPAD_OK) return st;
        for (int q = 0; q < nt; q++)
            s->u[q] = rq->temperature > 0 ? lp_rng_u01(&d->rng) : 0.5;
        lp_dec_parallel(d, nt, dream_propose, d);
    }
    if (rq->alg == LP_ALG_ORIGIN) {
        for (int q = 0; q < nt; q++)
            lp_dec_commit(d, s->tpos[q], s->x0[q]);
        return LOPAD_OK;
    }
    if (rq->alg_temp > 0) {
        double cmax = -INFINITY;
        for (int q = 0; q < nt; q++)
            cmax = s->conf[q] > cmax ? s->conf[q] : cmax;
        for (int q = 0; q < nt; q++)
            s->w[q] = exp((s->conf[q] - cmax) / rq->alg_temp);
        lp_sample_without_replacement(s->w, s->conf, nt, n_commit, &d->rng, s->sel);
    } else {
        lp_select_topk(s->conf, s->tpos, nt, n_commit, s->sel, s->scratch);
    }
    for (int k = 0; k < n_commit; k++)
        lp_dec_commit(d, s->tpos[s->sel[k]], s->x0[s->sel[k]]);
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_dream_ops = {
    .name = "dream",
    .check = dream_check,
    .init = dream_init,
    .step = dream_step,
    .release = dream_release,
};
