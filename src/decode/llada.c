/*
 * llada.c - the vanilla LLaDA decoder (docs/ALGORITHMS.md 1; docs/research/dpad_fastdllm.md 2):
 * semi-autoregressive over blocks of B positions, S = steps / n_blocks steps per
 * block, the full canvas fed every step, no cache.
 *
 * Step i of block b (positions [s_b, e_b)):
 *   k_i  = floor(M / S) + (i < M mod S), M = masked count at block start;
 *   x0   = argmax of the prediction (T = 0) or Gumbel-max in f64 (T > 0), after
 *          CFG (un + (s+1)(cond - un), prompt masked in the unconditional
 *          canvas) and logits_eos_inf;
 *   conf = softmax(prediction)[x0] in f64 (low_confidence) or U(0,1) (random);
 *          with confidence_eos_eot_inf an EOS/EoT proposal gets -inf (ranks last:
 *          the reference's intent, see dpad_fastdllm.md 2.6);
 *   commit the k_i masked block positions of highest conf (ties: lower position).
 * Positions past the block are never candidates.
 *
 * PRNG order per step that runs a forward: the Gumbel key (T > 0), then one
 * uniform per masked block position in increasing order (random remasking).
 * A step whose k_i is 0 commits nothing whatever the model says; it is skipped
 * without a forward (the reference runs one and discards it), so NFE <= steps.
 *
 * With the fused head (T = 0, no CFG, no logits_eos_inf; decoder_impl.h) a step
 * decides on the rows' scores (x0 = argmax, conf = pmax for the f64 probability)
 * when the argmax and the top-k set are clear by more than the scores' error, and
 * otherwise takes its rows' logits and runs the code above: the same tokens.
 */
#include <math.h>
#include <string.h>
#include "core/common.h"
#include "decoder_impl.h"

struct llada {
    int B, S, n_blocks;
    int *k;           /* [S] schedule of the current block */
    float *logits;    /* [2 * B][V]: conditional rows, then unconditional rows */
    int32_t *tok2;    /* [2L]: canvas, then the unconditional canvas (CFG) */
    int32_t *rows;    /* [2B] out rows */
    int32_t *mpos;    /* [B] masked block positions */
    int32_t *x0;      /* [B] */
    double *conf;     /* [B] */
    int32_t *sel;     /* [B] */
    int32_t *scratch; /* [B] */
    /* fused scores (T = 0, no CFG, no logits_eos_inf, an engine with the fused head) */
    bool fused;
    struct lp_row_scores *sc; /* [B] */
    double *dscratch;         /* [B] */
};

static enum lopad_status llada_check(const struct lp_decode_request *rq,
                                     const struct lopad_hparams *hp) {
    LP_UNUSED(hp);
    if (rq->block_len < 1)
        return lp_error(LOPAD_ERR_ARG, "--block must be at least 1, got %d", rq->block_len);
    if (rq->gen_len % rq->block_len)
        return lp_error(LOPAD_ERR_ARG, "--gen (%d) must be a multiple of --block (%d)", rq->gen_len,
                        rq->block_len);
    int nb = rq->gen_len / rq->block_len;
    if (rq->steps % nb)
        return lp_error(LOPAD_ERR_ARG,
                        "--steps (%d) must be divisible by the number of blocks (%d = --gen %d / "
                        "--block %d)",
                        rq->steps, nb, rq->gen_len, rq->block_len);
    if (rq->top_p < 1.0 || rq->top_k > 0)
        return lp_error(LOPAD_ERR_ARG, "--top-p / --top-k are not used by the llada decoder (it "
                                       "samples with Gumbel-max over the full softmax)");
    return LOPAD_OK;
}

static void llada_release(struct lp_decoder *d) {
    struct llada *s = d->priv;
    if (!s) return;
    lp_free(s->k);
    lp_free(s->logits);
    lp_free(s->tok2);
    lp_free(s->rows);
    lp_free(s->mpos);
    lp_free(s->x0);
    lp_free(s->conf);
    lp_free(s->sel);
    lp_free(s->scratch);
    lp_free(s->sc);
    lp_free(s->dscratch);
    lp_free(s);
    d->priv = NULL;
}

static enum lopad_status llada_init(struct lp_decoder *d) {
    struct llada *s = lp_calloc(1, sizeof *s, "llada state");
    if (!s) return LOPAD_ERR_NOMEM;
    d->priv = s;
    s->B = d->rq.block_len;
    s->n_blocks = d->G / s->B;
    s->S = d->rq.steps / s->n_blocks;
    d->n_steps = d->rq.steps;
    bool cfg = d->rq.cfg_scale > 0;
    size_t nrow = (size_t)s->B * (cfg ? 2 : 1);
    s->k = lp_malloc(sizeof(int) * s->S, "llada schedule");
    s->logits = lp_malloc(sizeof(float) * nrow * (size_t)d->V, "llada logits");
    s->tok2 = cfg ? lp_malloc(sizeof(int32_t) * 2 * d->L, "cfg canvas") : NULL;
    s->rows = lp_malloc(sizeof(int32_t) * nrow, "llada rows");
    s->mpos = lp_malloc(sizeof(int32_t) * s->B, "llada positions");
    s->x0 = lp_malloc(sizeof(int32_t) * s->B, "llada proposals");
    s->conf = lp_malloc(sizeof(double) * s->B, "llada confidences");
    s->sel = lp_malloc(sizeof(int32_t) * s->B, "llada selection");
    s->scratch = lp_malloc(sizeof(int32_t) * s->B, "llada scratch");
    if (!s->k || !s->logits || (cfg && !s->tok2) || !s->rows || !s->mpos || !s->x0 || !s->conf ||
        !s->sel || !s->scratch)
        return LOPAD_ERR_NOMEM; /* lp_decode_start frees through release */
    s->fused = lp_dec_has_scores(d) && !cfg && d->rq.temperature == 0 && !d->rq.logits_eos_inf;
    if (s->fused) {
        s->sc = lp_malloc(sizeof *s->sc * (size_t)s->B, "llada scores");
        s->dscratch = lp_malloc(sizeof(double) * (size_t)s->B, "llada scratch");
        if (!s->sc || !s->dscratch) return LOPAD_ERR_NOMEM;
    }
    return LOPAD_OK;
}

/* get_num_transfer_tokens: M tokens over S steps, the first M mod S steps get one more */
static void llada_schedule(int M, int S, int *k) {
    for (int i = 0; i < S; i++)
        k[i] = M / S + (i < M % S);
}

struct llada_job {
    struct lp_decoder *d;
    struct llada *s;
    int m;        /* masked block positions this step */
    uint64_t key; /* Gumbel noise key of this step (T > 0) */
};

/* Proposal for masked block position q: guidance, EOS ban, x0, confidence. */
static void llada_propose(void *ctx, int q, int thread_id) {
    LP_UNUSED(thread_id);
    const struct llada_job *job = ctx;
    struct lp_decoder *d = job->d;
    const struct lp_decode_request *rq = &d->rq;
    const int V = d->V;
    const int32_t eos = d->eng.hp.eos_id;
    float *lg = job->s->logits + (size_t)q * V; /* (V) prediction for mpos[q] */
    if (rq->cfg_scale > 0) {
        const float *un = job->s->logits + (size_t)(job->m + q) * V;
        float w = (float)(rq->cfg_scale + 1.0);
        for (int v = 0; v < V; v++)
            lg[v] = un[v] + w * (lg[v] - un[v]);
    }
    if (rq->logits_eos_inf && eos >= 0 && eos < V) lg[eos] = -INFINITY;
    int x0 = rq->temperature > 0
                 ? lp_gumbel_argmax(lg, V, rq->temperature, job->key, (uint64_t)job->s->mpos[q] * V)
                 : lp_argmax_f32(lg, V);
    job->s->x0[q] = x0;
    job->s->conf[q] =
        rq->remasking == LP_REMASK_LOW_CONFIDENCE ? lp_softmax_prob_f64(lg, V, x0) : 0.0;
}

/* The fused forward of a step (T = 0, no CFG): x0 = argmax, conf = pmax (f32 for
 * the f64 probability). Returns 1 when x0 and the top-k set are clear on the scores,
 * 0 when the step needs its rows' logits, -1 on an error (in *st). */
static int llada_scores(struct lp_decoder *d, struct llada *s, int m, int k,
                        enum lopad_status *st) {
    const struct lp_decode_request *rq = &d->rq;
    const struct lopad_batch b = lp_dec_canvas_batch(d, m, s->rows);
    *st = lp_dec_forward_scores(d, &b, s->sc);
    if (*st != LOPAD_OK) return -1;
    const int32_t eos = d->eng.hp.eos_id, eot = d->eng.hp.eot_id;
    bool clear = true;
    double tol = 0; /* error bound of the confidences */
    for (int q = 0; q < m; q++) {
        /* the argmax of the logits; an exact tie of the top two: the logits decide */
        clear &= lp_scores_argmax_clear(&s->sc[q], false);
        tol = fmax(tol, lp_conf_tol(&s->sc[q], s->sc[q].pmax, false, d->V));
        s->x0[q] = s->sc[q].argmax;
        s->conf[q] = rq->remasking == LP_REMASK_LOW_CONFIDENCE ? s->sc[q].pmax : 0.0;
        if (rq->confidence_eos_eot_inf &&
            ((eos >= 0 && s->x0[q] == eos) || (eot >= 0 && s->x0[q] == eot)))
            s->conf[q] = -INFINITY;
    }
    if (clear && rq->remasking == LP_REMASK_LOW_CONFIDENCE)
        clear = lp_dec_topk_clear(s->conf, m, k, tol, s->dscratch);
    return clear ? 1 : 0;
}

static enum lopad_status llada_step(struct lp_decoder *d) {
    struct llada *s = d->priv;
    const struct lp_decode_request *rq = &d->rq;
    int b = d->step / s->S, i = d->step % s->S;
    int sb = d->P + b * s->B, eb = sb + s->B;
    int m = 0;
    for (int j = sb; j < eb; j++)
        if (d->canvas[j] == d->mask_id) s->mpos[m++] = j;
    if (i == 0) llada_schedule(m, s->S, s->k);
    int k = s->k[i];
    if (k == 0 || m == 0) return LOPAD_OK;
    LP_ASSERT(k <= m);

    bool cfg = rq->cfg_scale > 0;
    bool shift = d->eng.hp.shift_logits;
    const int32_t *tokens = d->canvas;
    for (int q = 0; q < m; q++) {
        s->rows[q] = lp_pred_row(shift, s->mpos[q]);
        if (cfg) s->rows[m + q] = d->L + s->rows[q];
    }
    if (cfg) {
        memcpy(s->tok2, d->canvas, sizeof(int32_t) * d->L);
        memcpy(s->tok2 + d->L, d->canvas, sizeof(int32_t) * d->L);
        for (int j = 0; j < d->P; j++)
            s->tok2[d->L + j] = d->mask_id;
        tokens = s->tok2;
    }
    const int32_t eos = d->eng.hp.eos_id, eot = d->eng.hp.eot_id;
    int on_scores = 0; /* decided on the fused scores */
    enum lopad_status st = LOPAD_OK;
    bool fused = s->fused && lp_dec_scores_worth(d);
    if (fused && (on_scores = llada_scores(d, s, m, k, &st)) < 0) return st;
    if (!on_scores) {
        /* without the fused head: the forward's logits; with it, a step too close to
         * call on the scores: the same rows' logits */
        st = fused ? lp_dec_last_logits(d, s->rows, m, s->logits)
                   : lp_dec_forward(d, tokens, cfg ? 2 : 1, s->rows, cfg ? 2 * m : m, s->logits);
        if (st != LOPAD_OK) return st;
        struct llada_job job = {d, s, m, rq->temperature > 0 ? lp_rng_u64(&d->rng) : 0};
        lp_dec_parallel(d, m, llada_propose, &job);
    }
    for (int q = 0; q < m; q++) {
        if (rq->remasking == LP_REMASK_RANDOM) s->conf[q] = lp_rng_u01(&d->rng);
        if (rq->confidence_eos_eot_inf &&
            ((eos >= 0 && s->x0[q] == eos) || (eot >= 0 && s->x0[q] == eot)))
            s->conf[q] = -INFINITY;
    }
    lp_select_topk(s->conf, s->mpos, m, k, s->sel, s->scratch);
    for (int t = 0; t < k; t++)
        lp_dec_commit(d, s->mpos[s->sel[t]], s->x0[s->sel[t]]);
    return LOPAD_OK;
}

const struct lp_decoder_ops lp_llada_ops = {
    .name = "llada",
    .check = llada_check,
    .init = llada_init,
    .step = llada_step,
    .release = llada_release,
};
