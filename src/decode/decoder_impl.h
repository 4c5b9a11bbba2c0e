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
    struct lp_rng rng;
    double t_start, t_first_forward, t_forward;
    struct lp_pool *pool; /* proposal workers, NULL = serial */
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

/* Write token `tok` at canvas position `p` (must be a masked generated position). */
void lp_dec_commit(struct lp_decoder *d, int p, int32_t tok);

#endif
