/*
 * decoder_impl.h - what decoder implementations share (not for front ends).
 *
 * Adding a decoder: write src/decode/<name>.c with a `const struct lp_decoder_ops`
 * (check / init / step / release), add its kind to enum lp_decoder_kind and its
 * ops to the table in decode.c. The common loop (decode.c) owns the canvas,
 * the PRNG, NFE counting, timings and the step events; a decoder's step runs
 * its forwards through lp_dec_forward() and commits through lp_dec_commit().
 */
#ifndef LP_DECODER_IMPL_H
#define LP_DECODER_IMPL_H

#include <math.h>
#include "decode.h"
#include "predict.h"

struct lp_decoder_ops {
    const char *name;
    /* decoder-specific request checks (after the common ones); LOPAD_ERR_ARG
     * with a message naming the option */
    enum lopad_status (*check)(const struct lp_decode_request *rq, const struct lopad_hparams *hp);
    /* allocate d->priv; d->n_steps may be set here */
    enum lopad_status (*init)(struct lp_decoder *d);
    /* one step: forwards + commits; set d->done when finished */
    enum lopad_status (*step)(struct lp_decoder *d);
    void (*release)(struct lp_decoder *d);
    /* optional: what the decoder adds to a step event (LoPA's branches and winner) and
     * to the result (D2F's non-pad TPF, LoPA's winner histogram) */
    void (*fill_event)(const struct lp_decoder *d, struct lp_step_event *ev);
    enum lopad_status (*finish)(const struct lp_decoder *d, struct lp_decode_result *res);
};

extern const struct lp_decoder_ops lp_llada_ops;
extern const struct lp_decoder_ops lp_dream_ops;

struct lp_decoder {
    const struct lp_decoder_ops *ops;
    struct lp_engine eng;
    struct lp_decode_request rq; /* rq.prompt points at `prompt` (owned copy) */
    int32_t *prompt;
    int P, G, L, V; /* prompt, generated, canvas length; vocabulary */
    int32_t mask_id;
    int32_t *canvas;    /* [L] */
    int32_t *pos;       /* [2L] position ids 0..L-1, twice (batches of 2 canvases) */
    int32_t *seq;       /* [2L] sequence ids: L zeros then L ones */
    int32_t *committed; /* [L] positions committed by the current step */
    int n_committed_step;
    int n_masked; /* generated positions still MASK */
    int step, n_steps;
    int nfe, n_seq_evals;
    bool done, cancelled;
    int max_steps; /* no request makes a decoder step past this (lp_dec_max_steps) */
    struct lp_rng rng;
    double t_start, t_first_forward, t_forward;
    struct lp_pool *pool;     /* proposal workers, NULL = serial */
    struct lp_pool *own_pool; /* pool when the engine lends none (freed with the decoder) */
    int nfe_scores;           /* forwards through the fused head */
    int nfe_scores_logits;    /* of them, steps too close to call that took their rows' logits */
    /* when most fused steps take their logits anyway, the scores only cost: then the
     * next sc_skip steps run on logits (lp_dec_scores_worth) */
    uint32_t sc_hist; /* outcomes of the recent fused steps, newest in bit 0, 1 = took logits */
    int sc_n, sc_skip, sc_skip_len;
    void *priv;
};

/* fn(ctx, task, thread_id) for every task in [0, n): on the pool when there is
 * one. Tasks must not depend on which thread runs them (determinism). */
typedef void (*lp_dec_task)(void *ctx, int task, int thread_id);
void lp_dec_parallel(struct lp_decoder *d, int n, lp_dec_task fn, void *ctx);
int lp_dec_n_threads(const struct lp_decoder *d);

/* Run one forward over n_seq canvases of length d->L each (tokens
 * [n_seq * L], sequences contiguous, positions 0..L-1 each, bidirectional, no
 * cache); logits for the fed rows out_rows [n_out] (indices into the n_seq * L
 * fed tokens) go to logits [n_out][V]. Counts one NFE and n_seq sequence
 * evaluations; splits into per-sequence calls when the engine's batch is too
 * small (still one NFE: the reference runs them as one batched call). */
enum lopad_status lp_dec_forward(struct lp_decoder *d, const int32_t *tokens, int n_seq,
                                 const int32_t *out_rows, int n_out, float *logits);

/* Run an arbitrary batch (cached / windowed / pruned feeds of later decoders):
 * the engine's forward plus timing, one NFE and b->n_seq sequence evaluations. */
enum lopad_status lp_dec_forward_batch(struct lp_decoder *d, const struct lopad_batch *b);

/* ----------------------------------------------------- fused scores
 * With an engine that has the fused head (lp_engine.forward_scores), a decoder whose
 * step needs only each row's argmax and a confidence runs the forward for scores, and
 * makes its decisions on them when every decision is clear by more than the scores'
 * error (LP_SCORE_TOL; the fused head accumulates in f32 in another order than
 * lp_softmax_f32, and LLaDA's confidence is an f64 probability); otherwise it takes
 * the exact logits of the same rows (lp_dec_last_logits: the head alone, no layer
 * rerun) and runs its logits code. Tokens are therefore those of the logits path. */

#include "backend/backend.h" /* struct lp_row_scores */

/* Error bound assumed for a confidence taken from a row's fused scores, against the
 * logits path's value (worst case of the CPU head: an f32 sum over a 1536-entry chunk
 * of the vocabulary, 9e-5 relative; f32 rounding of the logits path's probabilities;
 * LLaDA's f64 probability). Probabilities (pmax, margin) err relatively (they share
 * the row's log-sum-exp); the entropy sum p log p = Z/S - log S by LP_SCORE_TOL times
 * |Z/S| + 1 <= |negent| + |log pmax| + 1 (log S = -log pmax), plus the 1e-10 that
 * lp_prob_stats adds inside the log (at most V * 1e-10). */
#define LP_SCORE_TOL 2e-4
static inline double lp_conf_tol(const struct lp_row_scores *r, double conf, bool negent, int V) {
    if (!negent) return LP_SCORE_TOL * fabs(conf) + 2e-7;
    double lp = r->pmax > 0 ? -log((double)r->pmax) : 1e30;
    return LP_SCORE_TOL * (fabs((double)r->negent) + lp + 1.0) + 1e-10 * V;
}

/* The row's argmax is that of its logits: the fused head's argmax is the matmul's
 * (the same logits), so only an exact tie of the top two is in doubt. With f32_probs,
 * also the argmax of the f32 probabilities (Dream-family proposals, lp_prob_stats):
 * the top two logits more than ~LP_ARGMAX_REL apart, far above f32 rounding. */
#define LP_ARGMAX_REL 1e-5
static inline bool lp_scores_argmax_clear(const struct lp_row_scores *r, bool f32_probs) {
    return r->margin > (f32_probs ? LP_ARGMAX_REL * r->pmax : 0.0f);
}

static inline bool lp_dec_has_scores(const struct lp_decoder *d) {
    return d->eng.forward_scores && d->eng.last_logits;
}
/* Whether this step should use the fused head: the engine has it and not more than a
 * quarter of the recent fused steps took their logits (the last 4 at first and after
 * a pause, then the last 8; else the next 16, 32, ... 256 steps run on logits). Call
 * once per step that could use it. Tokens do not depend on it. */
bool lp_dec_scores_worth(struct lp_decoder *d);
/* lp_dec_forward_batch with the fused head: scores[b->n_out]; one NFE. */
enum lopad_status lp_dec_forward_scores(struct lp_decoder *d, const struct lopad_batch *b,
                                        struct lp_row_scores *scores);
/* Logits of fed rows rows[n] of the last lp_dec_forward_scores (pass that forward's
 * out_rows to get what lp_dec_forward_batch would have returned). No NFE. */
enum lopad_status lp_dec_last_logits(struct lp_decoder *d, const int32_t *rows, int n,
                                     float *logits);
/* Whether the set of the k largest of conf[n] is the same for every conf' within tol
 * of conf (the k-th and (k+1)-th largest more than 2 tol apart; exact -inf ties are
 * clear). scratch: [n] doubles. */
bool lp_dec_topk_clear(const double *conf, int n, int k, double tol, double *scratch);

/* The confidence `auto` means for Fast-dLLM, as its reference code ranks: the threshold
 * and factor rules by pmax on both families (Fast-dLLM's Dream code too); the top-k
 * schedule by negative entropy on Dream's grid (the Dream reference's alg entropy), by
 * pmax on LLaDA. */
static inline enum lp_confidence lp_conf_auto_fast(enum lp_commit_rule rule, bool dream_grid) {
    return rule == LP_RULE_TOPK && dream_grid ? LP_CONF_NEGENT : LP_CONF_PMAX;
}

/* One Fast-dLLM proposal from a prediction's logits lg (modified in place): the token
 * (never MASK), its pmax and the ranking confidence, as fast.c proposes (LLaDA: argmax
 * or Gumbel-max, pmax in f64; Dream: temperature, top-p / top-k, f32 probabilities,
 * categorical draw u). The fast decoder and LoPA on Fast-dLLM share it. */
struct lp_fast_prop {
    int V;
    int32_t mask, eos;
    bool dream;   /* Dream-family proposals (else LLaDA's) */
    bool eos_inf; /* LLaDA: --logits-eos-inf */
    enum lp_confidence conf;
    double temperature, top_p;
    int top_k;
    uint64_t key; /* LLaDA's Gumbel key of this forward */
};
void lp_fast_propose(const struct lp_fast_prop *c, float *lg, float *probs, int32_t *top_p_scratch,
                     float *top_k_scratch, uint64_t gumbel_base, double u, int32_t *tok,
                     double *pmax, double *conf);

/* Fast-dLLM's block end (both fast decoders): the next block; with early stop, a
 * finished block holding EOS fills the rest of the canvas with EOS and ends. */
void lp_fast_end_block(struct lp_decoder *d, int sb, int eb, int *b, int nb, bool early_stop);

/* A hash of every option of the request and the canvas length (ranks' agreement). */
uint64_t lp_dec_request_hash(const struct lp_decoder *d);

/* The most steps a request may take (fixed plans: the plan). */
int lp_dec_max_steps(const struct lp_decoder *d);
/* LOPAD_ERR_FORMAT naming the step and row when logits[n_out][V] hold inf / NaN. */
enum lopad_status lp_dec_check_logits(const struct lp_decoder *d, const float *logits, int n_out);

/* Write token `tok` at canvas position `p` (must be a masked generated position). */
void lp_dec_commit(struct lp_decoder *d, int p, int32_t tok);

/* The whole canvas as one sequence with outputs at rows[0..n_out) (no logits
 * buffer: for lp_dec_forward_scores). */
static inline struct lopad_batch lp_dec_canvas_batch(const struct lp_decoder *d, int n_out,
                                                     const int32_t *rows) {
    return (struct lopad_batch){.n_tokens = d->L,
                                .tokens = d->canvas,
                                .pos = d->pos,
                                .n_seq = 1,
                                .n_out = n_out,
                                .out_rows = rows};
}

/* A decoder state's heap arrays as one list, so that what is allocated and what
 * is released cannot drift apart. bytes 0 = not needed in this configuration
 * (left NULL). */
struct lp_dec_buf {
    void **p;
    size_t bytes;
    const char *what;
};

/* Allocate (zeroed) every array of the list; LOPAD_ERR_NOMEM at the first that
 * fails (the ones made stay set, for the release). */
static inline enum lopad_status lp_dec_alloc_all(const struct lp_dec_buf *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b[i].bytes && !(*b[i].p = lp_calloc(1, b[i].bytes, b[i].what))) return LOPAD_ERR_NOMEM;
    return LOPAD_OK;
}

static inline void lp_dec_free_all(const struct lp_dec_buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        lp_free(*b[i].p);
        *b[i].p = NULL;
    }
}

#endif
