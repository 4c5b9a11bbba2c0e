/*
 * model.h - a loaded model: hyper-parameters plus weight views bound onto the
 * mapped files. Internal to the engine; users see the opaque lopad_model.
 *
 * Loading is two steps, so GGUF and Hugging Face share everything after parsing:
 *   1. a format loader (load_gguf.c, load_hf.c) fills the hyper-parameters and a
 *      tensor directory whose names are the canonical (GGUF) names:
 *        token_embd.weight  output_norm.weight  output.weight
 *        blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,
 *               ffn_gate,ffn_up,ffn_down}.weight   blk.N.attn_{q,k,v}.bias
 *   2. lp_model_bind() checks every shape against the hyper-parameters and binds
 *      the weights; norms and biases are copied to f32 (they are tiny), matrices
 *      stay views of the file in their stored type.
 */
#ifndef LP_MODEL_H
#define LP_MODEL_H

#include <stdio.h>
#include "../core/common.h"
#include "../core/tensor.h"

/* A matrix W of PyTorch shape [n_out, n_in]: row r (n_in elements, whole quant
 * blocks) starts at data + r * row_bytes. y = W x computes n_out outputs. */
struct lp_weight {
    const char *name;
    int type; /* enum lopad_type */
    int64_t n_in;
    int64_t n_out;
    size_t row_bytes;
    const void *data;
};

struct lp_layer {
    float *attn_norm;        /* (n_embd) */
    struct lp_weight wq;     /* (n_head*head_dim, n_embd) */
    struct lp_weight wk;     /* (n_head_kv*head_dim, n_embd) */
    struct lp_weight wv;     /* (n_head_kv*head_dim, n_embd) */
    struct lp_weight wo;     /* (n_embd, n_head*head_dim) */
    float *bq, *bk, *bv;     /* q/k/v biases (Dream) or NULL */
    float *ffn_norm;         /* (n_embd) */
    struct lp_weight w_gate; /* (n_ff, n_embd) */
    struct lp_weight w_up;   /* (n_ff, n_embd) */
    struct lp_weight w_down; /* (n_embd, n_ff) */
};

/* A layer's matrices in one fixed order: q, k, v, o, gate, up, down (the order
 * of lp_hf_layer_linear_modules). Usage:
 *   const struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L); */
#define LP_N_LAYER_MATRICES 7
#define LP_LAYER_MATRICES(L)                                                                       \
    { &(L)->wq, &(L)->wk, &(L)->wv, &(L)->wo, &(L)->w_gate, &(L)->w_up, &(L)->w_down }

/* A list of named tensors, as a format loader found them. */
struct lp_tensor_dir {
    struct lp_tensor *t;
    int n;
};
const struct lp_tensor *lp_dir_find(const struct lp_tensor_dir *d, const char *name);

/* Something the model must release: a file mapping or a heap buffer. */
struct lp_owned {
    void *ptr;
    size_t size;
    bool mapped; /* munmap(ptr, size) instead of free */
};

struct lopad_model {
    struct lopad_hparams hp;
    char *path;         /* what was loaded (file or directory) */
    const char *format; /* "gguf" or "hf" */

    struct lp_weight tok_embd; /* (n_vocab, n_embd) rows are embeddings */
    float *output_norm;        /* (n_embd) */
    struct lp_weight output;   /* (n_vocab, n_embd) */
    struct lp_layer *layers;   /* [n_layer] */

    /* tensor-type census for `lopad info`: count of weight matrices per type id */
    int type_count[64];

    /* tokenizer / chat metadata as found in the source (may be NULL) */
    char *chat_template;
    char *lora_path; /* adapter merged at load, or NULL */

    struct lp_owned *owned;
    int n_owned;

    struct lp_model_cache *caches; /* what backends derived from the weights */
};

/* Data a backend derives once from a model's weights (a repacked layout, device
 * copies), shared by every context of the model and released by
 * lopad_model_free. The weights never change after loading, so nothing goes
 * stale. */
struct lp_model_cache {
    char key[32];
    void *data;
    void (*free)(void *data);
    struct lp_model_cache *next;
};
typedef enum lopad_status (*lp_model_cache_make_fn)(const struct lopad_model *m, void *arg,
                                                    void **data);
/* The model's entry for key (at most 31 characters), made by make(m, arg, &data)
 * on first use (serialised: one make at a time, across models); free_fn(data)
 * runs at lopad_model_free. A failed make leaves no entry and returns its status. */
enum lopad_status lp_model_cache_get(const struct lopad_model *m, const char *key,
                                     lp_model_cache_make_fn make, void *arg,
                                     void (*free_fn)(void *data), void **out);

/* Release what m owns and what backends derived (caches, owned buffers and mappings);
 * the rest of m stays (a tensor-parallel shard frees itself with it). */
void lp_model_free_derived(struct lopad_model *m);

/* Take ownership of a heap buffer or mapping; returns false on OOM (and then
 * releases it). */
bool lp_model_own(struct lopad_model *m, void *ptr, size_t size, bool mapped);

/* Bind a directory onto m (hp must be filled in). Errors name the tensor and
 * `source` (the file or directory) and the expected vs found shape. */
enum lopad_status lp_model_bind(struct lopad_model *m, const struct lp_tensor_dir *dir,
                                const char *source);

/* Format loaders: fill m->hp, bind, and hand mappings to m via lp_model_own. */
enum lopad_status lp_load_gguf(struct lopad_model *m, const char *path);
enum lopad_status lp_load_hf(struct lopad_model *m, const char *dir);
/* Merge a PEFT LoRA adapter directory into m (weights it targets become owned
 * copies). */
enum lopad_status lp_lora_merge(struct lopad_model *m, const char *adapter_dir);

/* Index of the first NaN / inf among n elements of `type` at data (n a multiple
 * of the block size); for Q8_0, Q4_0, Q4_K and Q6_K the f16 block scales (and
 * Q4_K mins) are checked and the index is the block's first element. -1 when
 * all are finite or the type is unknown. One pass, vectorisable. */
int64_t lp_find_nonfinite(int type, const void *data, int64_t n);

/* Give back the resident pages of [data, data + bytes) when they lie in one of m's
 * read-only file mappings (the next touch refills them from the file); nothing for
 * heap memory. After a pass that read weights it will not read again. */
void lp_model_drop_pages(const struct lopad_model *m, const void *data, size_t bytes);

/* Validate hyper-parameters after a loader filled them (ranges, divisibility). */
enum lopad_status lp_hparams_check(const struct lopad_hparams *hp, const char *source);

#endif
