/*
 * load_gguf.c - load a GGUF model (as written by llama.cpp's converter for the
 * `dream` and `llada` architectures, or by lopad itself): metadata ->
 * hyper-parameters, tensor infos -> a tensor directory, then lp_model_bind().
 *
 * The file is mapped once; the mapping and a copy of the tensor names (weights
 * keep pointers to them) are handed to the model, the parsed metadata is freed.
 * Special ids come from tokenizer.ggml.*_token_id (-1 when absent; for Dream a
 * missing eot id falls back to the <|im_end|> token, as the HF loader does).
 * RoPE: llama.cpp permutes LLaDA's q/k rows to interleaved pairs (NORM) and
 * leaves Dream in rotate-half (NEOX); a "lopad.rope_type" key overrides both.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "../formats/gguf.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)

/* A required non-negative integer that fits in int. */
static enum lopad_status req_int(const struct lp_gguf *g, const char *key, int *out) {
    uint32_t v;
    enum lopad_status st = lp_gguf_get_u32(g, key, &v);
    if (st) return st;
    if (v > INT_MAX)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' = %u is too large", lp_gguf_path(g), key,
                        v);
    *out = (int)v;
    return LOPAD_OK;
}

static enum lopad_status opt_int(const struct lp_gguf *g, const char *key, int def, int *out) {
    if (!lp_gguf_get(g, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return req_int(g, key, out);
}

static enum lopad_status opt_f32(const struct lp_gguf *g, const char *key, float def, float *out) {
    if (!lp_gguf_get(g, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return lp_gguf_get_f32(g, key, out);
}

/* A special token id: -1 when absent; any integer type; negative values mean
 * "none" (some converters write -1 as an i32). */
static enum lopad_status special_id(const struct lp_gguf *g, const char *key, int32_t *out) {
    const struct lp_gguf_value *v = lp_gguf_get(g, key);
    *out = -1;
    if (!v) return LOPAD_OK;
    int64_t id;
    if (!lp_gguf_value_i64(v, &id) || v->type == LP_GGUF_BOOL || id > INT32_MAX)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' must be a token id (an integer), got %s",
                        lp_gguf_path(g), key, lp_gguf_type_name(v->type));
    *out = id < 0 ? -1 : (int32_t)id;
    return LOPAD_OK;
}

static enum lopad_status read_hparams(struct lopad_model *m, const struct lp_gguf *g) {
    enum lopad_status st;
    const char *path = lp_gguf_path(g);
    struct lopad_hparams *hp = &m->hp;
    const char *arch;
    TRY(lp_gguf_get_str(g, "general.architecture", &arch));
    if (!strcmp(arch, "dream")) {
        hp->arch = LOPAD_ARCH_DREAM;
        hp->rope = LOPAD_ROPE_NEOX;
        hp->shift_logits = true;
    } else if (!strcmp(arch, "llada")) {
        hp->arch = LOPAD_ARCH_LLADA;
        hp->rope = LOPAD_ROPE_NORM; /* llama.cpp's converter permuted q/k */
        hp->shift_logits = false;
    } else {
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: architecture '%s' is not supported (lopad runs 'dream' and 'llada')",
                        path, arch);
    }
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    TRY(req_int(g, K("block_count"), &hp->n_layer));
    TRY(req_int(g, K("embedding_length"), &hp->n_embd));
    TRY(req_int(g, K("feed_forward_length"), &hp->n_ff));
    TRY(req_int(g, K("attention.head_count"), &hp->n_head));
    TRY(opt_int(g, K("attention.head_count_kv"), hp->n_head, &hp->n_head_kv));
    TRY(lp_gguf_get_f32(g, K("attention.layer_norm_rms_epsilon"), &hp->norm_eps));
    TRY(opt_f32(g, K("rope.freq_base"), 10000.0f, &hp->rope_theta));
    TRY(opt_int(g, K("context_length"), 0, &hp->n_ctx_train));
    if (hp->n_head <= 0)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' must be positive", path,
                        K("attention.head_count"));
    if (lp_gguf_get(g, K("attention.key_length"))) {
        TRY(req_int(g, key, &hp->head_dim));
    } else {
        if (hp->n_embd % hp->n_head)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: embedding length %d is not a multiple of %d heads (and no "
                            "%s.attention.key_length)",
                            path, hp->n_embd, hp->n_head, arch);
        hp->head_dim = hp->n_embd / hp->n_head;
    }
#undef K
    if (lp_gguf_get(g, "diffusion.shift_logits"))
        TRY(lp_gguf_get_bool(g, "diffusion.shift_logits", &hp->shift_logits));

    TRY(special_id(g, "tokenizer.ggml.mask_token_id", &hp->mask_id));
    TRY(special_id(g, "tokenizer.ggml.bos_token_id", &hp->bos_id));
    TRY(special_id(g, "tokenizer.ggml.eos_token_id", &hp->eos_id));
    TRY(special_id(g, "tokenizer.ggml.padding_token_id", &hp->pad_id));
    TRY(special_id(g, "tokenizer.ggml.eot_token_id", &hp->eot_id));
    /* Dream's converter writes no eot id; like the HF loader (and llama.cpp's
     * vocabulary loader) take <|im_end|>, on which chat turns end. LLaDA keeps -1. */
    const struct lp_gguf_value *toks = lp_gguf_get(g, "tokenizer.ggml.tokens");
    if (hp->eot_id < 0 && hp->arch == LOPAD_ARCH_DREAM && toks && toks->type == LP_GGUF_ARRAY &&
        toks->arr.type == LP_GGUF_STRING) {
        for (uint64_t j = 0; j < toks->arr.n && j <= INT32_MAX; j++) {
            size_t len = 0;
            const char *tok = lp_gguf_arr_str(toks, j, &len);
            if (tok && len == 10 && !memcmp(tok, "<|im_end|>", 10)) {
                hp->eot_id = (int32_t)j;
                break;
            }
        }
    }

    if (lp_gguf_get(g, "lopad.rope_type")) {
        const char *r;
        TRY(lp_gguf_get_str(g, "lopad.rope_type", &r));
        if (!strcmp(r, "neox"))
            hp->rope = LOPAD_ROPE_NEOX;
        else if (!strcmp(r, "norm"))
            hp->rope = LOPAD_ROPE_NORM;
        else
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: key 'lopad.rope_type' = '%s' (expected 'neox' or 'norm')", path,
                            r);
    }
    hp->has_qkv_bias = lp_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;

    const struct lp_tensor *emb = lp_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return lp_error(LOPAD_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", path);
    if (emb->n_dims != 2 || emb->ne[1] > INT_MAX)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor 'token_embd.weight' must be a matrix [n_embd, n_vocab]", path);
    hp->n_vocab = (int)emb->ne[1];

    if (lp_gguf_get(g, "tokenizer.chat_template")) {
        const char *t;
        TRY(lp_gguf_get_str(g, "tokenizer.chat_template", &t));
        lp_free(m->chat_template);
        if (!(m->chat_template = lp_strdup(t, "chat template"))) return LOPAD_ERR_NOMEM;
    }
    return LOPAD_OK;
}

/* The model takes the mapping and a copy of the names; then bind. */
static enum lopad_status bind_tensors(struct lopad_model *m, struct lp_gguf *g) {
    const int64_t n = lp_gguf_n_tensors(g);
    const struct lp_tensor *src = lp_gguf_tensors(g);
    size_t names_size = 0;
    for (int64_t i = 0; i < n; i++)
        names_size += strlen(src[i].name) + 1;
    char *names = lp_malloc(names_size ? names_size : 1, "tensor names");
    struct lp_tensor *t = lp_calloc(n ? (size_t)n : 1, sizeof *t, "tensor directory");
    if (!names || !t) {
        lp_free(names);
        lp_free(t);
        return LOPAD_ERR_NOMEM;
    }
    char *p = names;
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(src[i].name) + 1;
        memcpy(p, src[i].name, l);
        t[i] = src[i];
        t[i].name = p;
        p += l;
    }
    enum lopad_status st = LOPAD_OK;
    if (!lp_model_own(m, names, names_size, false)) st = LOPAD_ERR_NOMEM; /* it freed names */
    void *map;
    size_t map_size;
    lp_gguf_release_mapping(g, &map, &map_size);
    if (map && !lp_model_own(m, map, map_size, true)) st = LOPAD_ERR_NOMEM; /* it unmapped */
    if (!st) {
        struct lp_tensor_dir d = {t, (int)n};
        st = lp_model_bind(m, &d, lp_gguf_path(g));
    }
    lp_free(t);
    return st;
}

enum lopad_status lp_load_gguf(struct lopad_model *m, const char *path) {
    struct lp_gguf *g;
    enum lopad_status st = lp_gguf_open(path, &g);
    if (st) return st;
    m->hp.mask_id = m->hp.bos_id = m->hp.eos_id = m->hp.pad_id = m->hp.eot_id = -1;
    st = read_hparams(m, g);
    if (!st) st = bind_tensors(m, g);
    lp_gguf_close(g);
    return st;
}
