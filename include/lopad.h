/*
 * lopad.h - the public API of lopad, a fast inference engine for diffusion
 * language models (LLaDA, Dream, DiffuCoder and their D2F variants).
 *
 * The engine is a chain of rooms; this header exposes the three a caller needs:
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
 * with lopad_errmsg(). Handles are opaque; every *_free(NULL) is a no-op.
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
    int n_embd;       /* hidden size */
    int n_layer;
    int n_head;       /* query heads */
    int n_head_kv;    /* key/value heads (GQA when < n_head) */
    int head_dim;
    int n_ff;         /* MLP inner size */
    int n_vocab;
    int n_ctx_train;  /* context length the model was trained for (0 = unknown) */
    float rope_theta;
    float norm_eps;
    bool shift_logits; /* prediction for position j is the output at j-1 */
    bool has_qkv_bias;
    /* special token ids, -1 when unknown */
    int32_t mask_id, bos_id, eos_id, pad_id, eot_id;
};

struct lopad_load_opts {
    const char *lora_dir; /* PEFT adapter directory merged at load time, or NULL */
};

typedef struct lopad_model lopad_model;

/* Load a model from a .gguf file or a Hugging Face directory (config.json +
 * safetensors). opts may be NULL. On success *out owns the mapping. */
enum lopad_status lopad_model_load(const char *path, const struct lopad_load_opts *opts,
                                   lopad_model **out);
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
    int n_ctx;       /* KV cache rows (>= longest canvas fed) */
    int n_batch_max; /* most fed tokens in one lopad_forward (all sequences together) */
    int n_threads;   /* 0 = all cores */
    const char *device; /* NULL or "cpu" = CPU backend; "cuda" = CUDA backend (-DLOPAD_CUDA=ON) */
    const char *kernels; /* NULL = the best the CPU has; "ref" | "avx2" | "avx512f32" | "avx512"
                            caps the CPU kernel level (comparisons, debugging) */
    int repack;          /* enum lopad_repack: Q8_0 weights in the int8 kernel's layout */
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

#ifdef __cplusplus
}
#endif
#endif /* LOPAD_H */
