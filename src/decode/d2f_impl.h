/*
 * d2f_impl.h - what the D2F decoder (d2f.c) and LoPA (lopa.c, lopa_d2f.c, lopa_fast.c) share: the
 * block table of one decoding state (a "branch"), the D2F rules on it (add a block, activate, fill,
 * deactivate), proposals, and the hooks decode.c calls for the D2F / LoPA fields of step events and
 * results. Not for front ends.
 *
 * Block 0 is the prompt; generated block b (1..nb_max) covers canvas positions
 * [P + (b-1)B, P + bB). Positions of blocks not yet added stay MASK in the canvas
 * and are never fed.
 */
#ifndef LP_D2F_IMPL_H
#define LP_D2F_IMPL_H

#include "decoder_impl.h"

enum { LP_BLK_ACTIVE = 0, LP_BLK_TO_CACHE = 1, LP_BLK_IN_CACHE = 2 };

struct lp_d2f_blk {
    int start, end, masks;
    int state; /* LP_BLK_* */
    bool full; /* fully activated (sticky) */
};

/* One decoding state: canvas + block table (+ LoPA's lookahead token). */
struct lp_d2f_branch {
    int32_t *x;             /* [L] */
    struct lp_d2f_blk *blk; /* [nb_max + 1] */
    int n_blk;              /* blocks in the table, the prompt included */
    bool eos;               /* an EOS / EoT was committed: no more blocks */
    int la_pos;             /* LoPA: position of this branch's lookahead token, -1 = anchor */
    int32_t la_tok;
};

/* Settings of a D2F run (from the request and the model). */
struct lp_d2f_cfg {
    int P, B, nb_max, L, V;
    int32_t mask_id, eos_id, eot_id;
    bool shift;        /* Dream-family: prediction of q = raw output of q-1 */
    bool block_causal; /* window attention */
    double tau_add, tau_act, tau_conf;
    enum lp_confidence conf; /* resolved (never AUTO) */
};

/* A proposal: argmax token (MASK excluded), its probability, the ranking score. */
struct lp_d2f_prop {
    int32_t tok;
    float pmax;
    float conf;
};

void lp_d2f_cfg_from(struct lp_d2f_cfg *c, const struct lp_decoder *d);
enum lopad_status lp_d2f_check(const struct lp_decode_request *rq, const struct lopad_hparams *hp);

/* allocation of a branch ([L] canvas, [nb_max + 1] blocks); copy = deep copy */
bool lp_d2f_branch_alloc(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c);
void lp_d2f_branch_free(struct lp_d2f_branch *b);
void lp_d2f_branch_start(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c,
                         const int32_t *canvas);
void lp_d2f_branch_copy(struct lp_d2f_branch *dst, const struct lp_d2f_branch *src,
                        const struct lp_d2f_cfg *c);
static inline int lp_d2f_len(const struct lp_d2f_branch *b) {
    return b->blk[b->n_blk - 1].end;
}
static inline bool lp_d2f_is_end(const struct lp_d2f_cfg *c, int32_t t) {
    return (c->eos_id >= 0 && t == c->eos_id) || (c->eot_id >= 0 && t == c->eot_id);
}
/* Block of canvas position p (0 = prompt). */
static inline int lp_d2f_block_of(const struct lp_d2f_cfg *c, int p) {
    return p < c->P ? 0 : 1 + (p - c->P) / c->B;
}

/* Iteration start: maybe add a block (tau_add), update activation (tau_act).
 * Returns true when the branch is finished (nothing masked, no ACTIVE block). */
bool lp_d2f_prepare(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c);
/* Proposal from one prediction row (modified in place: MASK's logit -> -inf).
 * probs: [V] scratch. */
void lp_d2f_propose(const struct lp_d2f_cfg *c, float *logits, float *probs,
                    struct lp_d2f_prop *out);
/* Fused scores (decoder_impl.h): the proposal of a row from its scores, for the
 * softmax without MASK. With a = the argmax (not MASK) and p_MASK <= p2 = pmax - margin,
 * the MASK-free pmax lies in [*lo, *hi] ([pmax, pmax / (1 - p2)] widened by the scores'
 * error). Sets out->tok, out->pmax on the side of tau_conf that holds over the range
 * and out->conf = *lo (pmax confidence: ranks as the exact values do wherever the
 * ranges are apart). False when the argmax or the side of tau_conf is in doubt. */
bool lp_d2f_prop_bounds(const struct lp_d2f_cfg *c, const struct lp_row_scores *r,
                        struct lp_d2f_prop *out, double *lo, double *hi);
/* Whether lp_d2f_fill of b decides the same for every MASK-free pmax in the ranges
 * [lo[q], hi[q]] (by canvas position) of proposals made by lp_d2f_prop_bounds (or exact:
 * lo = hi): in a full block with no position above tau_conf, one position's range is
 * above all the others'. filled (may be NULL, [L]): set to 1 at the positions the fill
 * will write, 0 elsewhere. pmax confidence only. */
bool lp_d2f_fill_clear(const struct lp_d2f_branch *b, const struct lp_d2f_cfg *c,
                       const struct lp_d2f_prop *props, const double *lo, const double *hi,
                       uint8_t *filled);

/* D2F fill of the ACTIVE blocks of b: prop(ud, q) gives the proposal at canvas
 * position q (a masked position of an ACTIVE block). Each filled position is
 * written to b->x and reported through on_fill (may be NULL). Sets b->eos. */
typedef const struct lp_d2f_prop *(*lp_d2f_prop_fn)(void *ud, int q);
void lp_d2f_fill(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c, lp_d2f_prop_fn prop, void *ud,
                 void (*on_fill)(void *ud, int q, int32_t tok));
/* Recount the masks of the ACTIVE blocks. */
void lp_d2f_recount(struct lp_d2f_branch *b, const struct lp_d2f_cfg *c);
/* ACTIVE blocks without masks -> TO_CACHE when no earlier block is ACTIVE (in
 * increasing order); only blocks with allow[b] (NULL = all). */
void lp_d2f_deactivate(struct lp_d2f_branch *b, const bool *allow);

/* LoPA: decode.c's hooks (the decoder ops are lp_lopa_ops) */
extern const struct lp_decoder_ops lp_d2f_ops;
extern const struct lp_decoder_ops lp_lopa_ops;
extern const struct lp_decoder_ops lp_lopa_fast_ops; /* --decoder fast --lopa K */
/* decoder hooks: D2F reports non-pad tokens per forward as its TPF (as LoPA does) */
enum lopad_status lp_d2f_finish(const struct lp_decoder *d, struct lp_decode_result *res);
void lp_lopa_fill_event(const struct lp_decoder *d, struct lp_step_event *ev);
enum lopad_status lp_lopa_finish(const struct lp_decoder *d, struct lp_decode_result *res);
/* Tests: verify the branches one per forward instead of one batched forward. */
void lp_lopa_set_serial(struct lp_decoder *d, bool serial);

#endif
