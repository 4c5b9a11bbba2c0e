/*
 * decode.h - the decoders: from model predictions to committed tokens.
 *
 * A decoder is pure logic. It sees the model only through struct lp_engine (a
 * table of function pointers with the lopad_forward / lopad_kv_* semantics of
 * include/lopad.h), so tests can replace the transformer by a fake predictor and
 * later decoders (Fast-dLLM caches, DPad, D2F, LoPA) use the same door.
 *
 * Use:
 *     struct lp_decode_request rq;
 *     lp_decode_request_init(&rq, LP_DEC_LLADA, gen_len);  // reference defaults
 *     rq.prompt = ids; rq.n_prompt = n; rq.temperature = ...;
 *     lp_engine_from_ctx(&eng, model, ctx, n_ctx, n_batch_max);
 *     lp_decode_run(&eng, &rq, on_step, ud, &res);        // blocking, streams
 *     ... res.ids[0..res.n_ids) ...
 *     lp_decode_result_free(&res);
 * or the stepped form: lp_decode_start / lp_decode_step (one iteration: its
 * forwards plus its commits) / lp_decode_finish / lp_decode_free.
 *
 * Counting: NFE is the number of denoiser evaluations as the references count
 * them: one per step. A classifier-free-guidance step runs the conditional and
 * the unconditional canvas as ONE batched model call (n_seq = 2), as the LLaDA
 * reference does, so it counts one NFE; n_seq_evals counts sequences (2 there).
 * TPF = committed generated positions / NFE.
 */
#ifndef LP_DECODE_H
#define LP_DECODE_H

#include <stdbool.h>
#include <stdint.h>
#include "lopad.h"

/* ------------------------------------------------------------ the engine */

struct lp_row_scores;
struct lp_dist;

/* What a decoder needs from the model. lp_engine_from_ctx() binds a real
 * context; tests fill it with a fake. Semantics as in include/lopad.h. */
struct lp_engine {
    void *ud;
    enum lopad_status (*forward)(void *ud, const struct lopad_batch *b);
    /* cache operations; NULL where the engine has no cache (vanilla decoders
     * never call them) */
    enum lopad_status (*kv_commit)(void *ud, int src, int n, int dst);
    void (*kv_truncate)(void *ud, int n);
    /* Optional fused output head (NULL on fake engines): forward_scores is forward, but
     * b->logits is unused and the scores of the rows b->out_rows (argmax, pmax, margin,
     * negent; struct lp_row_scores in src/backend/backend.h) go to scores[n_out], no
     * vocabulary-sized row written. last_logits then gives the exact logits of fed
     * rows rows[n] of that forward (the head alone, as forward would have written them
     * for the same rows). Decoders use them where they need only the argmax and a
     * confidence, and take the logits of a step's rows when a decision is too close to
     * call on the scores (docs/DECODERS.md, "Fused scores"); without them they run on
     * logits throughout. Both or neither. */
    enum lopad_status (*forward_scores)(void *ud, const struct lopad_batch *b,
                                        struct lp_row_scores *scores);
    enum lopad_status (*last_logits)(void *ud, const int32_t *rows, int n, float *logits);
    struct lopad_hparams hp; /* n_vocab, mask/eos/eot ids, shift_logits */
    int n_ctx;               /* longest canvas the engine accepts */
    int n_batch_max;         /* most fed tokens in one forward (all sequences) */
    int n_threads;           /* threads for the proposals (<= 1: the caller only);
                                results never depend on it */
    struct lp_pool *pool;    /* the forward's pool, shared by the proposals (not owned);
                                NULL: the decoder makes one of n_threads */
    /* Branch parallelism across ranks (src/dist, docs/DISTRIBUTED.md): the job's
     * communicator (NULL = one process), the model's fingerprint for the ranks' start-up
     * agreement, and K/V rows as one flat buffer (src/forward/kv_rows.h; NULL on fakes). */
    struct lp_dist *dist;
    struct lp_dist *tp_group; /* the ranks computing each forward with this one, or NULL */
    uint64_t model_hash;
    size_t (*kv_rows_bytes)(void *ud, int n);
    enum lopad_status (*kv_export)(void *ud, int src, int n, void *buf);
    enum lopad_status (*kv_import)(void *ud, const void *buf, int n, int dst);
};

/* Bind a lopad context (created with n_ctx / n_batch_max) as an engine; with the fused
 * head when its backend has one (clear forward_scores / last_logits for the logits path:
 * the same tokens; lopad_session_params.no_fused_scores does). */
void lp_engine_from_ctx(struct lp_engine *e, const lopad_model *m, lopad_ctx *c, int n_ctx,
                        int n_batch_max);

/* ----------------------------------------------------------- the request */

enum lp_decoder_kind {
    LP_DEC_LLADA = 0, /* semi-AR blocks, full canvas every step (docs/ALGORITHMS.md 1) */
    LP_DEC_DREAM = 1, /* whole canvas, Dream time grid (docs/ALGORITHMS.md 1) */
    LP_DEC_FAST = 2, /* Fast-dLLM: blocks, KV cache, parallel commit rules (docs/ALGORITHMS.md 2) */
    LP_DEC_D2F = 3,  /* D2F block pipeline (docs/ALGORITHMS.md 4); + LoPA with rq.lopa >= 0 (5) */
    LP_DEC_COUNT
};

enum lp_remasking {
    LP_REMASK_LOW_CONFIDENCE = 0, /* rank by the probability of the chosen token */
    LP_REMASK_RANDOM = 1,         /* rank by uniform noise */
};

enum lp_dream_alg {
    LP_ALG_ORIGIN = 0,       /* each mask unmasked independently with prob 1 - s/t */
    LP_ALG_MASKGIT_PLUS = 1, /* rank by pmax */
    LP_ALG_TOPK_MARGIN = 2,  /* rank by top1 - top2 */
    LP_ALG_ENTROPY = 3,      /* rank by negative entropy */
};

/* Fast-dLLM */
enum lp_cache_mode {
    LP_CACHE_NONE = 0,   /* full canvas every step (exact) */
    LP_CACHE_PREFIX = 1, /* K/V of [0, block start) cached; steps feed block + suffix */
    LP_CACHE_DUAL = 2,   /* K/V of every row cached at block start; steps feed the block */
};
enum lp_commit_rule {
    LP_RULE_THRESHOLD = 0, /* every pmax >= tau, at least the most confident */
    LP_RULE_FACTOR = 1,    /* largest n with (n+1)(1 - c_(n)) < f, at least 1 */
    LP_RULE_TOPK = 2,      /* fixed count per step (LLaDA schedule / Dream grid) */
};
enum lp_confidence {
    LP_CONF_AUTO = 0, /* negent for Dream-family models, pmax for LLaDA */
    LP_CONF_PMAX = 1,
    LP_CONF_MARGIN = 2,
    LP_CONF_NEGENT = 3,
};

/* D2F / LoPA: attention inside the decoding window (TO_CACHE + ACTIVE blocks); the
 * cached prefix is always visible whole */
enum lp_window_attn {
    LP_WINDOW_FULL = 0,         /* bidirectional over the window (LoPA as published) */
    LP_WINDOW_BLOCK_CAUSAL = 1, /* a block sees earlier blocks and itself (plain D2F) */
};

struct lp_decode_request {
    const int32_t *prompt; /* [n_prompt], not owned */
    int n_prompt;
    int gen_len; /* generated positions G */
    enum lp_decoder_kind decoder;
    int steps;     /* total forwards (llada: over all blocks) */
    int block_len; /* llada block B; dream: must equal gen_len */
    /* llada */
    enum lp_remasking remasking;
    double cfg_scale;            /* 0 = off; else un + (s+1)(cond - un) */
    bool logits_eos_inf;         /* EOS logit -inf before choosing */
    bool confidence_eos_eot_inf; /* EOS/EoT proposals rank last (the reference's intent) */
    /* both */
    double temperature; /* 0 = argmax */
    /* dream */
    double eps; /* time grid linspace(1, eps, steps+1) */
    enum lp_dream_alg alg;
    double alg_temp; /* 0 = top-k by confidence, > 0 = sample positions */
    double top_p;    /* (0, 1]; 1 = off */
    int top_k;       /* 0 = off */
    uint64_t seed;   /* the request's PRNG */
    /* Fast-dLLM (decoder fast; src/decode/fast.c) */
    enum lp_cache_mode cache;      /* none | prefix | dual (default prefix) */
    enum lp_commit_rule rule;      /* threshold | factor | topk (default threshold) */
    double threshold;              /* threshold rule: commit pmax >= tau (default 0.9) */
    double factor;                 /* factor rule f (default 1.0) */
    enum lp_confidence confidence; /* ranking; AUTO = negent for Dream, pmax for LLaDA */
    bool early_stop;               /* finished block holding EOS: fill EOS, stop (default on) */
    bool dream_first_token_commit; /* reference parity: commit a block's first position from
                                      the refresh forward (Dream) */
    /* DPad (src/decode/dpad.c; decoders fast and llada) */
    bool dpad;         /* suffix dropout on */
    int dpad_window;   /* W (default 256) */
    double dpad_sigma; /* k (default 4) */
    double dpad_scale; /* a; 0 = the architecture's default (2.0 LLaDA, 1.6 Dream) */
    /* D2F / LoPA (decoder d2f; src/decode/d2f.c, lopa.c). Ranking confidence: `confidence`
     * above (AUTO = negent for Dream-family models, pmax for LLaDA) */
    double tau_add;  /* add a block when the last one's decoded ratio >= tau_add (0.1) */
    double tau_act;  /* fully activate block b+1 when block b's ratio >= tau_act (0.95) */
    double tau_conf; /* commit masked positions with pmax > tau_conf (0.9) */
    int lopa;        /* LoPA lookahead branches K (K+1 sequences per forward); -1 = off */
    enum lp_window_attn lopa_window; /* LoPA window attention (default full, as published) */
};

/* Reference defaults for `kind`: steps = gen, block 32 for llada (gen when gen
 * is not a multiple of 32) and gen for dream, low_confidence, T = 0, cfg 0,
 * eps 1e-3, alg entropy (the Dream authors' demo/eval setting; the HF config's
 * default `origin` unmasks in random order), alg_temp 0, top_p 1, top_k 0,
 * seed 0. The prompt is left empty. */
void lp_decode_request_init(struct lp_decode_request *rq, enum lp_decoder_kind kind, int gen_len);

/* Full check of a request against a model; the LOPAD_ERR_ARG message names the
 * option. n_ctx = longest canvas allowed (prompt + gen). */
enum lopad_status lp_decode_validate(const struct lp_decode_request *rq,
                                     const struct lopad_hparams *hp, int n_ctx);

/* Names <-> enums; the parse functions return LOPAD_ERR_ARG naming the choices. */
const char *lp_decoder_name(enum lp_decoder_kind k);
enum lopad_status lp_decoder_parse(const char *s, enum lp_decoder_kind *out);
const char *lp_remasking_name(enum lp_remasking r);
enum lopad_status lp_remasking_parse(const char *s, enum lp_remasking *out);
const char *lp_dream_alg_name(enum lp_dream_alg a);
enum lopad_status lp_dream_alg_parse(const char *s, enum lp_dream_alg *out);
/* Fast-dLLM / DPad names (src/decode/fast.c, dpad.c) */
const char *lp_cache_mode_name(enum lp_cache_mode m);
enum lopad_status lp_cache_mode_parse(const char *s, enum lp_cache_mode *out);
const char *lp_commit_rule_name(enum lp_commit_rule r);
enum lopad_status lp_commit_rule_parse(const char *s, enum lp_commit_rule *out);
const char *lp_confidence_name(enum lp_confidence c);
enum lopad_status lp_confidence_parse(const char *s, enum lp_confidence *out);
/* DPad presets (the published settings, docs/DECODERS.md): set dpad, window, sigma,
 * scale of rq; LOPAD_ERR_ARG naming the choices for an unknown name. */
enum lopad_status lp_dpad_preset_apply(const char *name, struct lp_decode_request *rq);
/* D2F / LoPA names: full | block-causal (src/decode/lopa.c) */
const char *lp_window_attn_name(enum lp_window_attn a);
enum lopad_status lp_window_attn_parse(const char *s, enum lp_window_attn *out);
/* Default decoder for an architecture (llada for LLaDA, dream for Dream). */
enum lp_decoder_kind lp_decoder_default(enum lopad_arch arch);

/* ------------------------------------------------------------ the stream */

/* Passed to the callback after every step (one or more forwards + commits). */
struct lp_step_event {
    const int32_t *canvas; /* [n_canvas]: prompt then generated positions */
    int n_canvas;
    int n_prompt;
    int32_t mask_id;
    const int32_t *committed; /* [n_committed] canvas positions committed by this step */
    int n_committed;
    int step;         /* 0-based index of this step */
    int n_steps;      /* planned steps; -1 = not known in advance: the decoders whose step
                         count follows the confidences (fast, d2f, LoPA, llada --dpad) run
                         until nothing is masked. Front ends then show "step x" and the
                         generated positions decided, n_canvas - n_prompt - n_masked */
    int nfe;          /* forwards so far */
    int n_masked;     /* generated positions still MASK */
    int final_prefix; /* generated positions [0, final_prefix) are all committed */
    bool done;
    /* D2F / LoPA (0 / -1 for other decoders) */
    int n_branches; /* LoPA: sequences verified in this step's forward (lookahead + anchor) */
    int winner;     /* LoPA: the winning branch, 0..n_branches-2 = lookahead branches in
                       creation order, n_branches-1 = the anchor; -1: no forward this step */
    int winner_pos; /* LoPA: canvas position of the winner's lookahead token, -1 for the anchor */
};
/* Return nonzero to stop decoding after this step (result.cancelled). */
typedef int (*lp_step_cb)(void *ud, const struct lp_step_event *ev);

/* ------------------------------------------------------------ the result */

struct lp_decode_result {
    int32_t *ids; /* generated ids cut before the first EOS / EoT (lp_free) */
    int n_ids;
    int32_t *canvas; /* the whole final canvas [n_canvas] (lp_free) */
    int n_canvas;
    int n_prompt;
    int n_committed;        /* committed generated positions */
    int nfe;                /* denoiser evaluations (see the header comment) */
    int n_seq_evals;        /* sequences evaluated (2 per CFG step) */
    double tpf;             /* n_committed / nfe */
    double t_total;         /* seconds from start to finish */
    double t_first_forward; /* seconds of the first forward ("prefill": no cache here) */
    double t_forward;       /* seconds inside the engine's forward, all steps */
    int nfe_scores;         /* forwards through the fused head (lp_engine.forward_scores) */
    int nfe_scores_logits;  /* of them, steps that took their rows' logits (a decision too
                               close to call on the scores) */
    /* D2F / LoPA */
    int n_nonpad;      /* committed generated tokens that are not the pad id */
    double tpf_nonpad; /* n_nonpad / nfe (decoder d2f reports this as tpf too, as LoPA does) */
    int *winner_hist;  /* LoPA: wins per branch index [n_winner_hist]: 0..K-1 lookahead in
                          creation order, K = the anchor (lp_free); NULL otherwise */
    int n_winner_hist; /* K + 1 with LoPA, else 0 */
    bool cancelled;
};
void lp_decode_result_free(struct lp_decode_result *r);

/* -------------------------------------------------------------- the loop */

typedef struct lp_decoder lp_decoder;

/* Validate rq (against e->n_ctx) and set up a decoder; the prompt is copied. */
enum lopad_status lp_decode_start(const struct lp_engine *e, const struct lp_decode_request *rq,
                                  lp_decoder **out);
/* One step. *ev (may be NULL) describes it; its pointers stay valid until the
 * next call. After ev->done, further steps do nothing. */
enum lopad_status lp_decode_step(lp_decoder *d, struct lp_step_event *ev);
bool lp_decode_done(const lp_decoder *d);
/* Stop before the next step: the decoder is done and cancelled (lp_decode_step then
 * only describes the canvas). */
void lp_decode_cancel(lp_decoder *d);
/* Fill *res from the current state (callable any time; copies). */
enum lopad_status lp_decode_finish(lp_decoder *d, struct lp_decode_result *res);
void lp_decode_free(lp_decoder *d);

/* Blocking wrapper: start, step until done (calling cb after each step when
 * non-NULL), finish. res is zeroed first; on error it holds nothing. */
enum lopad_status lp_decode_run(const struct lp_engine *e, const struct lp_decode_request *rq,
                                lp_step_cb cb, void *ud, struct lp_decode_result *res);

#endif
