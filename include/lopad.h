/*
 * lopad.h - the public API of lopad, a fast inference engine for diffusion
 * language models (LLaDA, Dream, DiffuCoder and their D2F variants).
 *
 * The engine is a chain of rooms; this header exposes the engine's three doors,
 * then generation as a library (requests, sessions, generations: below):
 *
 *   model    lopad_model_load()   a GGUF file or a Hugging Face directory (+ LoRA),
 *                                 memory-mapped; weights stay in their stored type.
 *   context  lopad_ctx_new()      activations, a KV cache and a thread pool for one
 *                                 request; never allocates inside lopad_forward().
 *   forward  lopad_forward()      one transformer call over a batch of fed tokens
 *                                 (one or several sequences = LoPA branches) that
 *                                 attend to a shared, read-only cached prefix.
 *
 * Errors: every call that can fail returns enum lopad_status; the message, which
 * names the file / tensor / key / argument at fault, is kept per thread and read
 * with lopad_errmsg() (and on the request, session or generation that failed).
 * Handles are opaque; every *_free(NULL) is a no-op. Contexts and sessions keep
 * their model alive: lopad_model_free() may come first.
 */
#ifndef LOPAD_H
#define LOPAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOPAD_VERSION "0.1.0"

enum lopad_status {
    LOPAD_OK = 0,
    LOPAD_ERR_IO,          /* cannot open / read / map / write a file */
    LOPAD_ERR_FORMAT,      /* malformed or inconsistent file contents */
    LOPAD_ERR_UNSUPPORTED, /* valid input that lopad does not handle (dtype, arch, DoRA, ...) */
    LOPAD_ERR_ARG,         /* bad argument from the caller (token id out of range, ...) */
    LOPAD_ERR_NOMEM,       /* allocation failed */
};

/* Message of the last error on this thread ("" when none). */
const char *lopad_errmsg(void);
const char *lopad_status_name(enum lopad_status st);

/* ------------------------------------------------------------------ model */

enum lopad_arch {
    LOPAD_ARCH_DREAM = 0, /* Qwen2-style block, q/k/v biases, logits shifted */
    LOPAD_ARCH_LLADA = 1, /* LLaMA-style block, no biases, no shift */
};

enum lopad_rope {
    LOPAD_ROPE_NEOX = 0, /* rotate-half: pairs (i, i + d/2); HF layout of both families */
    LOPAD_ROPE_NORM = 1, /* interleaved pairs (2i, 2i+1); llama.cpp's permuted LLaDA GGUF */
};

/* Tensor element types; values are the GGUF / ggml type ids (append-only). */
enum lopad_type {
    LOPAD_TYPE_F32 = 0,
    LOPAD_TYPE_F16 = 1,
    LOPAD_TYPE_Q4_0 = 2,
    LOPAD_TYPE_Q8_0 = 8,
    LOPAD_TYPE_Q4_K = 12,
    LOPAD_TYPE_Q6_K = 14,
    LOPAD_TYPE_BF16 = 30,
};

struct lopad_hparams {
    enum lopad_arch arch;
    enum lopad_rope rope;
    int n_embd; /* hidden size */
    int n_layer;
    int n_head;    /* query heads */
    int n_head_kv; /* key/value heads (GQA when < n_head) */
    int head_dim;
    int n_ff; /* MLP inner size */
    int n_vocab;
    int n_ctx_train; /* context length the model was trained for (0 = unknown) */
    float rope_theta;
    float norm_eps;
    bool shift_logits; /* prediction for position j is the output at j-1 */
    bool has_qkv_bias;
    /* special token ids, -1 when unknown */
    int32_t mask_id, bos_id, eos_id, pad_id, eot_id;
};

struct lopad_load_opts {
    const char *lora_dir; /* PEFT adapter directory merged at load time, or NULL */
    bool no_tokenizer;    /* skip the tokenizer and chat template (ids only) */
};

typedef struct lopad_model lopad_model;

/* Load a model from a .gguf file or a Hugging Face directory (config.json +
 * safetensors). opts may be NULL. On success *out owns the mapping. */
enum lopad_status lopad_model_load(const char *path, const struct lopad_load_opts *opts,
                                   lopad_model **out);
/* Give back the caller's reference: the model goes with its last context / session. */
void lopad_model_free(lopad_model *m);
const struct lopad_hparams *lopad_model_hparams(const lopad_model *m);
/* Human-readable summary (architecture, sizes, tensor types, special ids). */
void lopad_model_print_info(const lopad_model *m, void *file /* FILE* */);

/* Write the model as GGUF v3; weights converted to `type` (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_K, Q6_K; rows that are not whole blocks fall back to F16), or kept as
 * stored when type < 0. Norms and biases stay F32. The file is written
 * to a temporary name and renamed, so a failure leaves nothing half-written. */
enum lopad_status lopad_model_save_gguf(const lopad_model *m, const char *path, int type);

/* ---------------------------------------------------------------- context */

typedef struct lopad_ctx lopad_ctx;

struct lopad_ctx_params {
    int n_ctx;           /* KV cache rows (>= longest canvas fed) */
    int n_batch_max;     /* most fed tokens in one lopad_forward (all sequences together) */
    int n_threads;       /* 0 = all cores */
    const char *device;  /* NULL or "cpu" = CPU backend; "cuda" = CUDA backend (-DLOPAD_CUDA=ON) */
    const char *kernels; /* NULL = the best the CPU has; "ref" | "avx2" | "avx512f32" | "avx512"
                            caps the CPU kernel level (comparisons, debugging) */
    int repack;          /* enum lopad_repack: Q8_0 weights in the int8 kernel's layout */
    int tensor_parallel; /* 0 / 1 = the whole model here. T > 1, in a job of R ranks (mpirun,
                            R a multiple of T): consecutive groups of T ranks each hold 1/T of
                            the attention heads, FFN columns and vocabulary, and compute every
                            forward together; the R / T groups share LoPA's branches. Every
                            rank of the job creates its context with the same T (collective).
                            docs/DISTRIBUTED.md */
};

enum lopad_repack {
    LOPAD_REPACK_AUTO = 0, /* when the copy takes at most half of the available memory */
    LOPAD_REPACK_OFF = 1,
    LOPAD_REPACK_ON = 2,
};

enum lopad_status lopad_ctx_new(const lopad_model *m, const struct lopad_ctx_params *p,
                                lopad_ctx **out);
void lopad_ctx_free(lopad_ctx *c);
int lopad_ctx_n_threads(const lopad_ctx *c);

/* ---------------------------------------------------------------- forward
 *
 * A batch feeds n_tokens tokens that belong to n_seq independent sequences
 * (seq ids 0..n_seq-1, each sequence's tokens contiguous and in increasing seq
 * order). Every fed token attends to
 *   - the cached rows [0, n_cache) of the context's KV cache, except the rows
 *     [cache_skip_begin, cache_skip_end) (dual cache: the block being re-fed),
 *   - the fed tokens of its own sequence, restricted by `block` when given:
 *     token i sees fed token j iff block[j] <= block[i] (block-causal);
 *     NULL = bidirectional.
 * Positions are explicit (RoPE), so a pruned canvas keeps its original ids.
 *
 * After the call, the K/V of every fed row stay in the context's scratch until
 * the next lopad_forward; lopad_kv_commit() copies chosen fed rows into the
 * cache (prefix append, dual-cache overwrite, LoPA commit-winner).
 *
 * Logits are computed only for the fed rows listed in out_rows, written to
 * logits[n_out][n_vocab] as raw model outputs (no shift applied).
 */
struct lopad_batch {
    int n_tokens;
    const int32_t *tokens; /* [n_tokens] */
    const int32_t *pos;    /* [n_tokens] RoPE position ids */
    int n_seq;             /* >= 1 */
    const int32_t *seq;    /* [n_tokens] sequence of each token, or NULL = all 0 */
    const int32_t *block;  /* [n_tokens] block ids for the block-causal mask, or NULL */
    int n_cache;           /* cached rows visible to every sequence */
    int cache_skip_begin;  /* cached rows [begin, end) are hidden; begin == end = none */
    int cache_skip_end;
    int n_out;
    const int32_t *out_rows; /* [n_out] indices into the fed tokens */
    float *logits;           /* [n_out][n_vocab], caller-owned */
};

enum lopad_status lopad_forward(lopad_ctx *c, const struct lopad_batch *b);

/* Copy the K/V of fed rows [src, src+n) of the last forward into cache rows
 * [dst, dst+n). dst <= the cache's current length (no gaps); rows past it
 * extend the cache. */
enum lopad_status lopad_kv_commit(lopad_ctx *c, int src, int n, int dst);
/* Forget cached rows from n on (n <= current length). */
void lopad_kv_truncate(lopad_ctx *c, int n);
int lopad_kv_len(const lopad_ctx *c);

/* K/V rows as one flat buffer, to move them between contexts of the same model (another
 * process or machine: LoPA's commit-winner across ranks). Layout: for each layer, K rows
 * [n][n_head_kv * head_dim] then V rows, f32. Export reads fed rows [src, src+n) of the
 * last forward; import writes cache rows [dst, dst+n) (dst <= lopad_kv_len, no gaps), bit
 * for bit what lopad_kv_commit would have copied on the exporting context. */
size_t lopad_kv_rows_bytes(const lopad_ctx *c, int n);
enum lopad_status lopad_kv_export(const lopad_ctx *c, int src, int n, void *buf);
enum lopad_status lopad_kv_import(lopad_ctx *c, const void *buf, int n, int dst);

/* ============================================================= generation
 *
 * The rooms above are the engine; what follows is generation as a library:
 *
 *   text      the model's tokenizer and chat template (loaded with the model)
 *   request   lopad_request_new()  a prompt plus decoding options set by name
 *                                  ("lopa" = "4") or from a JSON object, checked
 *                                  against one table of options
 *   session   lopad_session_new()  a context the library sizes for each request
 *                                  and keeps for the next one, with one thread
 *                                  budget; one generation at a time
 *   gen       lopad_gen_start() / _step() / _finish(), or lopad_generate():
 *                                  step events, text that only grows, cancel
 *
 * A model is read-only once loaded: many threads may share it, each with its
 * own session and requests. Errors: the calls return enum lopad_status; the
 * message is also kept on the handle that failed (lopad_request_errmsg, ...)
 * besides the per-thread lopad_errmsg(). Strings and arrays the library returns
 * to the caller are freed with lopad_free().
 */

void lopad_free(void *p);

/* --------------------------------------------------------------------- text */

/* Whether the model came with a tokenizer (tokenizer.json / GGUF tokenizer keys),
 * and with a chat template lopad can render (ChatML or LLaMA-3 headers). */
bool lopad_model_has_tokenizer(const lopad_model *m);
bool lopad_model_has_chat_template(const lopad_model *m);
/* Text -> ids (*ids: lopad_free). Text never becomes control tokens: a literal
 * "<|im_start|>" is tokenised as the characters it is made of. */
enum lopad_status lopad_tokenize(const lopad_model *m, const char *text, size_t len, int32_t **ids,
                                 int *n_ids);
/* Ids -> UTF-8 bytes exactly as stored (*text: NUL-terminated, lopad_free; len may
 * be NULL); skip_special drops control tokens. */
enum lopad_status lopad_detokenize(const lopad_model *m, const int32_t *ids, int n_ids,
                                   bool skip_special, char **text, size_t *len);

/* Length of the valid UTF-8 character at s[0..n) (1..4), or 0 when the bytes there are
 * not one (RFC 3629: no overlongs, surrogates or code points past U+10FFFF). */
size_t lopad_utf8_char_len(const char *s, size_t n);

struct lopad_chat_msg {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
};
/* The conversation through the model's chat template, ending with the assistant's
 * header (*ids: lopad_free). Only the template's own markers become control
 * tokens; message contents are plain text. */
enum lopad_status lopad_chat_tokenize(const lopad_model *m, const struct lopad_chat_msg *msgs,
                                      int n_msgs, int32_t **ids, int *n_ids);

/* ------------------------------------------------------------------ request */

typedef struct lopad_request lopad_request;

enum lopad_status lopad_request_new(lopad_request **out);
void lopad_request_free(lopad_request *r);
/* A copy of r (options and prompt), for variations of one request. */
enum lopad_status lopad_request_dup(const lopad_request *r, lopad_request **out);
/* Set a decoding option by name from text ("decoder" = "d2f", "lopa" = "4",
 * "dpad" = "on"). Unknown names and bad values are LOPAD_ERR_ARG with a message
 * naming the option and what it accepts. lopad_option_* below lists them. */
enum lopad_status lopad_request_set(lopad_request *r, const char *name, const char *value);
/* Set several from a JSON object: {"decoder": "d2f", "lopa": 4, "dpad": true}. */
enum lopad_status lopad_request_set_json(lopad_request *r, const char *json);
/* The prompt: raw text (no template), a conversation (the model's chat template),
 * text as one user message through the template when the model has one (raw
 * otherwise), or token ids. Each replaces the previous prompt. */
enum lopad_status lopad_request_prompt_text(lopad_request *r, const char *text);
enum lopad_status lopad_request_prompt_chat(lopad_request *r, const struct lopad_chat_msg *msgs,
                                            int n_msgs);
enum lopad_status lopad_request_prompt_user(lopad_request *r, const char *text,
                                            const char *system /* NULL = template's */);
enum lopad_status lopad_request_prompt_ids(lopad_request *r, const int32_t *ids, int n_ids);
/* The settings the request resolves to on model m (the decoder, then every option
 * that decoder reads), as a JSON object (*json: lopad_free). Also validates. */
enum lopad_status lopad_request_settings(const lopad_request *r, const lopad_model *m, char **json);
/* The whole check a generation would make (options, prompt, context, the decoder's own
 * rules) without a session: a server answers a bad request before queueing it. */
enum lopad_status lopad_request_validate(const lopad_request *r, const lopad_model *m);
const char *lopad_request_errmsg(const lopad_request *r);

/* The option table: name, type ("int", "float", "bool", "enum", "seed", "name"),
 * default and help, for front ends that list or validate options. */
int lopad_option_count(void);
struct lopad_option_info {
    const char *name, *type, *def, *help;
    const char *const *choices; /* enums: NULL-terminated; NULL otherwise */
    double lo, hi;              /* int / float: the allowed range */
    const char *group;          /* "decoding", "llada", "dream", "fast", "d2f", "dpad" */
    const char *metavar;        /* the value's name in help ("N"), NULL for a bare flag */
    bool flag;                  /* a bool the CLI takes as a bare flag (--dpad) */
};
bool lopad_option_get(int i, struct lopad_option_info *out);

/* ------------------------------------------------------------------ session */

typedef struct lopad_session lopad_session;

struct lopad_session_params {
    int n_threads;        /* 0 = all cores; forwards and the decoders' proposals share them */
    const char *device;   /* NULL / "cpu", or "cuda" */
    const char *kernels;  /* CPU kernel cap (struct lopad_ctx_params) */
    int repack;           /* enum lopad_repack */
    bool no_fused_scores; /* decoders read full logits instead of the fused head's scores
                             (A/B timing; the tokens are the same) */
    int tensor_parallel;  /* struct lopad_ctx_params: T ranks per forward under mpirun */
};

/* The session holds a reference to m (freeing the model first is safe). p may be NULL. */
enum lopad_status lopad_session_new(const lopad_model *m, const struct lopad_session_params *p,
                                    lopad_session **out);
void lopad_session_free(lopad_session *s);
const char *lopad_session_errmsg(const lopad_session *s);

/* --------------------------------------------------------------- generation */

/* After every step (one or more forwards and their commits). Pointers stay valid
 * until the next step. */
struct lopad_step {
    const int32_t *canvas; /* [n_canvas]: prompt then generated positions */
    int n_canvas, n_prompt;
    int32_t mask_id;
    const int32_t *committed; /* canvas positions committed by this step */
    int n_committed;
    int step;         /* 0-based */
    int n_steps;      /* planned steps, -1 when the confidences decide */
    int nfe;          /* forwards so far */
    int n_masked;     /* generated positions still masked */
    int final_prefix; /* generated positions [0, final_prefix) are all committed */
    bool done;
    /* LoPA (0 / -1 otherwise) */
    int n_branches; /* sequences verified in this step's forward */
    int winner;     /* 0..n_branches-2 lookahead branches, n_branches-1 the anchor */
    int winner_pos; /* canvas position of the winner's lookahead token, -1 for the anchor */
    /* The text of the final prefix up to the first EOS / EoT: it only grows and
     * never ends inside a UTF-8 character. text[text_len - text_new, text_len) is
     * what this step added (what a streaming front end prints). */
    const char *text;
    size_t text_len, text_new;
};
/* Return nonzero to cancel (the generation stops after this step). */
typedef int (*lopad_step_fn)(void *ud, const struct lopad_step *st);

struct lopad_result {
    char *text; /* the generated text, cut at the first EOS / EoT, no control tokens */
    size_t text_len;
    int32_t *ids; /* generated ids cut before the first EOS / EoT */
    int n_ids;
    int32_t *canvas; /* the final canvas, prompt included */
    int n_canvas, n_prompt;
    int n_committed; /* committed generated positions */
    int nfe;         /* forwards (denoiser evaluations as the references count them) */
    int n_seq_evals; /* sequences evaluated (CFG: 2 per step; LoPA: branches) */
    double tpf;      /* tokens per forward (d2f: non-pad tokens, as LoPA reports) */
    int n_nonpad;
    double tpf_nonpad;
    double seconds, prefill_seconds, forward_seconds;
    int *winner_hist; /* LoPA: wins per branch, lookahead 0..K-1 then the anchor */
    int n_winner_hist;
    const char *finish_reason; /* "stop" (EOS / EoT), "length", "cancelled" */
    char *settings;            /* the resolved settings (JSON) */
};
void lopad_result_free(struct lopad_result *res);

typedef struct lopad_gen lopad_gen;

/* Start generating r on session s (the prompt is tokenised and the context sized
 * here). One generation per session at a time. */
enum lopad_status lopad_gen_start(lopad_session *s, const lopad_request *r, lopad_gen **out);
/* One step; *st (may be NULL) describes it. After done, steps do nothing. */
enum lopad_status lopad_gen_step(lopad_gen *g, const struct lopad_step **st);
bool lopad_gen_done(const lopad_gen *g);
/* Ask to stop: safe from any thread; the generation ends before its next step. */
void lopad_gen_cancel(lopad_gen *g);
/* The result so far (callable any time, copies). */
enum lopad_status lopad_gen_finish(lopad_gen *g, struct lopad_result *res);
void lopad_gen_free(lopad_gen *g);
const char *lopad_gen_errmsg(const lopad_gen *g);

/* Blocking: start, step (calling fn after each step when non-NULL), finish. */
enum lopad_status lopad_generate(lopad_session *s, const lopad_request *r, lopad_step_fn fn,
                                 void *ud, struct lopad_result *res);

#ifdef __cplusplus
}
#endif
#endif /* LOPAD_H */
