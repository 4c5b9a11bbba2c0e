/*
 * save_gguf.c - lopad_model_save_gguf(): write a loaded model (GGUF or Hugging
 * Face, LoRA merged or not) as a GGUF v3 file that lopad and llama.cpp read.
 *
 * Matrices are converted row by row inside the writer's callback (dequantise
 * to f32, requantise to the target type; a plain copy when the type is kept),
 * so no converted model is ever held in memory. Norms and biases are F32.
 *
 * RoPE: a LLaDA model whose q/k are in rotate-half layout (NEOX, as loaded
 * from Hugging Face) gets its q/k rows (and biases) permuted per head to the
 * interleaved layout llama.cpp's converter produces, and is written as NORM:
 *   new_row[h][2i + j] = old_row[h][j*half + i],  j in {0, 1}, i < half.
 * Every file also records the layout it holds in "lopad.rope_type".
 *
 * Tokenizer metadata: a model loaded from GGUF gets all tokenizer.* keys of its
 * source file copied (the file is re-opened: the model keeps no metadata); a
 * Hugging Face directory's tokenizer.json (byte-level BPE) is converted the way
 * llama.cpp's converter does: tokens by id (holes up to n_vocab as "[PAD<id>]",
 * type UNUSED), added tokens CONTROL when special else USER_DEFINED, merges as
 * "a b", model "gpt2", and tokenizer.ggml.pre named after the split regex the
 * pre_tokenizer uses ("qwen2", "llama-bpe" or "gpt2"; another regex cannot be
 * expressed in GGUF and is refused).
 */
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "../core/atomic_file.h"
#include "../core/types.h"
#include "../formats/gguf.h"
#include "../formats/json.h"
#include "tokenizer.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)

/* One matrix to write: where its rows come from and how they convert. */
struct row_src {
    const struct lp_weight *w;
    int out_type;
    int head_dim;   /* > 0: permute rows NEOX -> NORM within heads of this size */
    float *scratch; /* (n_in) shared f32 row */
};

static int64_t permuted_row(int64_t r, int head_dim) {
    if (head_dim <= 0) return r;
    int64_t h = r / head_dim, k = r % head_dim, half = head_dim / 2;
    return h * head_dim + (k % 2) * half + k / 2;
}

static enum lopad_status produce_row(void *user, int64_t row, void *dst, size_t row_bytes) {
    const struct row_src *s = user;
    const struct lp_weight *w = s->w;
    const uint8_t *src =
        (const uint8_t *)w->data + (size_t)permuted_row(row, s->head_dim) * w->row_bytes;
    if (s->out_type == w->type) {
        memcpy(dst, src, row_bytes);
        return LOPAD_OK;
    }
    lp_type_traits(w->type)->to_float(src, s->scratch, w->n_in);
    lp_type_traits(s->out_type)->from_float(s->scratch, dst, w->n_in);
    return LOPAD_OK;
}

static bool is_quantised(int type) {
    return lp_type_traits(type) && lp_type_traits(type)->blck_size > 1;
}

/* The type a matrix is written in: the requested one, or F16 when its rows do
 * not hold whole blocks of it (as llama.cpp's converter falls back). */
static int matrix_type(const struct lp_weight *w, int type) {
    if (type < 0) return w->type;
    if (w->n_in % lp_type_traits(type)->blck_size) return LOPAD_TYPE_F16;
    return type;
}

struct saver {
    const struct lopad_model *m;
    const char *path;
    struct lp_gguf_writer *w;
    int type;
    struct row_src *src; /* one per matrix */
    int n_src, cap_src;
    float *scratch;
    float **tmp; /* permuted bias copies, freed after finish */
    int n_tmp;
    bool any_quant;
};

static enum lopad_status add_matrix(struct saver *s, const char *name, const struct lp_weight *w,
                                    int head_dim) {
    LP_ASSERT(s->n_src < s->cap_src);
    struct row_src *r = &s->src[s->n_src++];
    *r = (struct row_src){w, matrix_type(w, s->type), head_dim, s->scratch};
    const struct lp_type_traits *tr = lp_type_traits(w->type);
    if (!tr)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: tensor '%s' has unsupported type id %d",
                        s->path, name, w->type);
    if (r->out_type != w->type && !lp_type_traits(r->out_type)->from_float)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: tensor '%s': lopad cannot write %s", s->path,
                        name, lp_type_name(r->out_type));
    const int64_t ne[2] = {w->n_in, w->n_out};
    return lp_gguf_writer_add_tensor_rows(s->w, name, r->out_type, 2, ne, produce_row, r);
}

static enum lopad_status add_vector(struct saver *s, const char *name, const float *v, int64_t n,
                                    int head_dim) {
    if (head_dim > 0) {
        float *p = lp_malloc(sizeof(float) * (size_t)n, "permuted bias");
        if (!p) return LOPAD_ERR_NOMEM;
        s->tmp[s->n_tmp++] = p;
        for (int64_t i = 0; i < n; i++)
            p[i] = v[permuted_row(i, head_dim)];
        v = p;
    }
    return lp_gguf_writer_add_tensor(s->w, name, LOPAD_TYPE_F32, 1, &n, v,
                                     sizeof(float) * (size_t)n);
}

static enum lopad_status add_tensors(struct saver *s, bool permute) {
    const struct lopad_model *m = s->m;
    const struct lopad_hparams *hp = &m->hp;
    enum lopad_status st;
    const int hd = permute ? hp->head_dim : 0;
    const int64_t E = hp->n_embd, QD = (int64_t)hp->n_head * hp->head_dim,
                  KD = (int64_t)hp->n_head_kv * hp->head_dim;
    TRY(add_matrix(s, "token_embd.weight", &m->tok_embd, 0));
    char name[96];
    for (int i = 0; i < hp->n_layer; i++) {
        const struct lp_layer *L = &m->layers[i];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, i), name)
        TRY(add_vector(s, NAME("attn_norm.weight"), L->attn_norm, E, 0));
        TRY(add_matrix(s, NAME("attn_q.weight"), &L->wq, hd));
        TRY(add_matrix(s, NAME("attn_k.weight"), &L->wk, hd));
        TRY(add_matrix(s, NAME("attn_v.weight"), &L->wv, 0));
        if (L->bq) TRY(add_vector(s, NAME("attn_q.bias"), L->bq, QD, hd));
        if (L->bk) TRY(add_vector(s, NAME("attn_k.bias"), L->bk, KD, hd));
        if (L->bv) TRY(add_vector(s, NAME("attn_v.bias"), L->bv, KD, 0));
        TRY(add_matrix(s, NAME("attn_output.weight"), &L->wo, 0));
        TRY(add_vector(s, NAME("ffn_norm.weight"), L->ffn_norm, E, 0));
        TRY(add_matrix(s, NAME("ffn_gate.weight"), &L->w_gate, 0));
        TRY(add_matrix(s, NAME("ffn_up.weight"), &L->w_up, 0));
        TRY(add_matrix(s, NAME("ffn_down.weight"), &L->w_down, 0));
#undef NAME
    }
    TRY(add_vector(s, "output_norm.weight", m->output_norm, E, 0));
    /* a tied head (same data as the embedding) is written as no output.weight */
    if (m->output.data != m->tok_embd.data) TRY(add_matrix(s, "output.weight", &m->output, 0));
    for (int i = 0; i < s->n_src; i++)
        if (is_quantised(s->src[i].out_type)) s->any_quant = true;
    return LOPAD_OK;
}

/* llama.cpp's general.file_type for a uniform output type, or -1 */
static int file_type_of(int type) {
    switch (type) {
    case LOPAD_TYPE_F32: return 0;
    case LOPAD_TYPE_F16: return 1;
    case LOPAD_TYPE_Q4_0: return 2;
    case LOPAD_TYPE_Q8_0: return 7;
    case LOPAD_TYPE_BF16: return 32;
    }
    return -1;
}

/* GGUF token types (llama.cpp's llama_token_type) */
enum { TT_NORMAL = 1, TT_UNUSED = 5, TT_CONTROL = 3, TT_USER_DEFINED = 4 };

struct hf_vocab {
    const char **tok; /* [n] borrowed from the JSON, or from pads */
    int32_t *type;    /* [n] */
    char *pads;       /* "[PAD<id>]" strings for holes */
    const char **merges;
    char *merge_buf;
    int64_t n, n_merges;
};

static void hf_vocab_free(struct hf_vocab *v) {
    lp_free(v->tok);
    lp_free(v->type);
    lp_free(v->pads);
    lp_free(v->merges);
    lp_free(v->merge_buf);
}

/* A token id of tokenizer.json, which must be below max_id + 1 (n_vocab). */
static enum lopad_status vocab_id(const cJSON *it, int64_t max_id, const char *src,
                                  const char *what, int64_t *id) {
    enum lopad_status st;
    TRY(lp_json_as_i64(it, 0, INT32_MAX, src, what, id));
    if (*id > max_id)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: a token of '%s' has id %lld, outside the model's vocabulary (ids "
                        "0..%lld)",
                        src, what, (long long)*id, (long long)max_id);
    return LOPAD_OK;
}

static enum lopad_status hf_collect(struct hf_vocab *v, const cJSON *root, int64_t n_vocab,
                                    const char *src) {
    enum lopad_status st;
    const cJSON *model, *vocab, *merges, *e;
    TRY(lp_json_get_item(root, "model", cJSON_Object, src, &model));
    const char *type;
    TRY(lp_json_opt_string(model, "type", "BPE", src, &type));
    if (strcmp(type, "BPE"))
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: tokenizer model '%s' (only BPE converts)", src,
                        type);
    TRY(lp_json_get_item(model, "vocab", cJSON_Object, src, &vocab));
    TRY(lp_json_get_item(model, "merges", cJSON_Array, src, &merges));
    const cJSON *added = lp_json_item(root, "added_tokens");
    if (added && !cJSON_IsArray(added)) added = NULL;
    /* ids must name rows of the model's embedding (and stay below 2^24, the
     * engine's vocabulary limit): one stray huge id would otherwise size every
     * table below (hundreds of MB from a 4 KB file) */
    const int64_t max_id = n_vocab > 0 ? LP_MIN(n_vocab, 1 << 24) - 1 : (1 << 24) - 1;
    int64_t n = n_vocab;
    cJSON_ArrayForEach(e, vocab) {
        int64_t id;
        TRY(vocab_id(e, max_id, src, "model.vocab", &id));
        n = LP_MAX(n, id + 1);
    }
    cJSON_ArrayForEach(e, added) {
        int64_t id;
        TRY(vocab_id(lp_json_item(e, "id"), max_id, src, "added_tokens", &id));
        n = LP_MAX(n, id + 1);
    }
    v->n = n;
    v->tok = lp_calloc((size_t)n, sizeof *v->tok, "tokenizer tokens");
    v->type = lp_calloc((size_t)n, sizeof *v->type, "tokenizer token types");
    if (!v->tok || !v->type) return LOPAD_ERR_NOMEM;
    cJSON_ArrayForEach(e, vocab) {
        int64_t id = (int64_t)e->valuedouble;
        v->tok[id] = e->string;
        v->type[id] = TT_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        int64_t id;
        const char *content;
        bool special;
        TRY(lp_json_get_i64(e, "id", 0, max_id, src, &id));
        TRY(lp_json_get_string(e, "content", src, &content));
        TRY(lp_json_opt_bool(e, "special", false, src, &special));
        v->tok[id] = content;
        v->type[id] = special ? TT_CONTROL : TT_USER_DEFINED;
    }
    int64_t holes = 0;
    for (int64_t i = 0; i < n; i++)
        holes += !v->tok[i];
    if (holes) {
        v->pads = lp_malloc((size_t)holes * 32, "tokenizer pad names");
        if (!v->pads) return LOPAD_ERR_NOMEM;
        char *p = v->pads;
        for (int64_t i = 0; i < n; i++) {
            if (v->tok[i]) continue;
            snprintf(p, 32, "[PAD%lld]", (long long)i);
            v->tok[i] = p;
            v->type[i] = TT_UNUSED;
            p += 32;
        }
    }
    /* merges: "a b" strings, or [a, b] pairs (newer tokenizers) */
    v->n_merges = cJSON_GetArraySize(merges);
    size_t bytes = 1;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
            cJSON_IsString(e->child->next))
            bytes += strlen(e->child->valuestring) + strlen(e->child->next->valuestring) + 2;
        else if (!cJSON_IsString(e))
            return lp_error(LOPAD_ERR_FORMAT, "%s: a merge is neither \"a b\" nor [a, b]", src);
    }
    v->merges = lp_calloc((size_t)v->n_merges + 1, sizeof *v->merges, "tokenizer merges");
    v->merge_buf = lp_malloc(bytes, "tokenizer merges");
    if (!v->merges || !v->merge_buf) return LOPAD_ERR_NOMEM;
    char *p = v->merge_buf;
    int64_t j = 0;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            v->merges[j++] = e->valuestring;
        } else {
            int k = sprintf(p, "%s %s", e->child->valuestring, e->child->next->valuestring);
            v->merges[j++] = p;
            p += k + 1;
        }
    }
    return LOPAD_OK;
}

/* The first Split regex anywhere under the pre_tokenizer, or NULL. */
static const char *find_regex(const cJSON *n) {
    if (!n) return NULL;
    if (cJSON_IsObject(n)) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(n, "Regex");
        if (cJSON_IsString(r)) return r->valuestring;
    }
    if (cJSON_IsObject(n) || cJSON_IsArray(n))
        for (const cJSON *c = n->child; c; c = c->next) {
            const char *r = find_regex(c);
            if (r) return r;
        }
    return NULL;
}

/* tokenizer.ggml.pre for the pre-tokenizer of a tokenizer.json */
static enum lopad_status detect_pre(const cJSON *root, const char *src, const char **pre) {
    const cJSON *pt = lp_json_item(root, "pre_tokenizer");
    const char *re = find_regex(pt);
    if (!re && pt) {
        /* a bare ByteLevel with use_regex (default true) splits with GPT-2's regex */
        const cJSON *type = lp_json_item(pt, "type");
        if (cJSON_IsString(type) && !strcmp(type->valuestring, "ByteLevel") &&
            !cJSON_IsFalse(lp_json_item(pt, "use_regex")))
            re = LP_PAT_GPT2;
    }
    if (re && !strcmp(re, LP_PAT_QWEN2))
        *pre = "qwen2";
    else if (re && !strcmp(re, LP_PAT_LLAMA3))
        *pre = "llama-bpe";
    else if (re && !strcmp(re, LP_PAT_GPT2))
        *pre = "gpt2";
    else
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: the pre-tokenizer's split pattern is not one GGUF can name "
                        "(qwen2, llama-bpe, gpt2); cannot write the tokenizer",
                        src);
    return LOPAD_OK;
}

static enum lopad_status add_hf_tokenizer(struct saver *s) {
    const struct lopad_model *m = s->m;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.json", m->path) >= sizeof path)
        return lp_error(LOPAD_ERR_ARG, "%s: path too long", m->path);
    if (access(path, R_OK) != 0) return LOPAD_OK; /* a model without a tokenizer */
    cJSON *root;
    enum lopad_status st;
    TRY(lp_json_read_file(path, (size_t)256 << 20, &root));
    struct hf_vocab v = {0};
    const char *pre = NULL;
    st = detect_pre(root, path, &pre);
    if (!st) st = hf_collect(&v, root, m->hp.n_vocab, path);
    struct lp_gguf_writer *w = s->w;
    const bool llada = m->hp.arch == LOPAD_ARCH_LLADA;
    if (!st) st = lp_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (!st) st = lp_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    if (!st) st = lp_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", LP_GGUF_STRING, v.tok, v.n);
    if (!st) st = lp_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", LP_GGUF_I32, v.type, v.n);
    if (!st)
        st = lp_gguf_writer_add_arr(w, "tokenizer.ggml.merges", LP_GGUF_STRING, v.merges,
                                    v.n_merges);
    if (!st) st = lp_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", llada);
    hf_vocab_free(&v);
    cJSON_Delete(root);
    return st;
}

static enum lopad_status add_kvs(struct saver *s, bool norm_rope) {
    const struct lopad_model *m = s->m;
    const struct lopad_hparams *hp = &m->hp;
    struct lp_gguf_writer *w = s->w;
    enum lopad_status st;
    const char *arch = hp->arch == LOPAD_ARCH_DREAM ? "dream" : "llada";
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    TRY(lp_gguf_writer_add_str(w, "general.architecture", arch));
    TRY(lp_gguf_writer_add_u32(w, "general.alignment", LP_GGUF_DEFAULT_ALIGNMENT));
    if (file_type_of(s->type) >= 0)
        TRY(lp_gguf_writer_add_u32(w, "general.file_type", (uint32_t)file_type_of(s->type)));
    if (s->any_quant) TRY(lp_gguf_writer_add_u32(w, "general.quantization_version", 2));
    TRY(lp_gguf_writer_add_u32(w, K("block_count"), (uint32_t)hp->n_layer));
    if (hp->n_ctx_train > 0)
        TRY(lp_gguf_writer_add_u32(w, K("context_length"), (uint32_t)hp->n_ctx_train));
    TRY(lp_gguf_writer_add_u32(w, K("embedding_length"), (uint32_t)hp->n_embd));
    TRY(lp_gguf_writer_add_u32(w, K("feed_forward_length"), (uint32_t)hp->n_ff));
    TRY(lp_gguf_writer_add_u32(w, K("attention.head_count"), (uint32_t)hp->n_head));
    TRY(lp_gguf_writer_add_u32(w, K("attention.head_count_kv"), (uint32_t)hp->n_head_kv));
    if (hp->head_dim * hp->n_head != hp->n_embd) {
        TRY(lp_gguf_writer_add_u32(w, K("attention.key_length"), (uint32_t)hp->head_dim));
        TRY(lp_gguf_writer_add_u32(w, K("attention.value_length"), (uint32_t)hp->head_dim));
    }
    TRY(lp_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), hp->norm_eps));
    TRY(lp_gguf_writer_add_f32(w, K("rope.freq_base"), hp->rope_theta));
    TRY(lp_gguf_writer_add_u32(w, K("rope.dimension_count"), (uint32_t)hp->head_dim));
    TRY(lp_gguf_writer_add_u32(w, K("vocab_size"), (uint32_t)hp->n_vocab));
    TRY(lp_gguf_writer_add_bool(w, K("attention.causal"), false));
#undef K
    TRY(lp_gguf_writer_add_bool(w, "diffusion.shift_logits", hp->shift_logits));
    TRY(lp_gguf_writer_add_str(w, "lopad.rope_type", norm_rope ? "norm" : "neox"));
    const struct {
        const char *key;
        int32_t id;
    } ids[] = {
        {"tokenizer.ggml.mask_token_id", hp->mask_id},
        {"tokenizer.ggml.bos_token_id", hp->bos_id},
        {"tokenizer.ggml.eos_token_id", hp->eos_id},
        {"tokenizer.ggml.padding_token_id", hp->pad_id},
        {"tokenizer.ggml.eot_token_id", hp->eot_id},
    };
    for (unsigned i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].id >= 0) TRY(lp_gguf_writer_add_u32(w, ids[i].key, (uint32_t)ids[i].id));
    if (m->chat_template)
        TRY(lp_gguf_writer_add_str(w, "tokenizer.chat_template", m->chat_template));

    /* the source GGUF's tokenizer (vocabulary, merges, types, flags) */
    if (m->format && !strcmp(m->format, "gguf") && m->path) {
        struct lp_gguf *g;
        TRY(lp_gguf_open(m->path, &g));
        st = LOPAD_OK;
        for (int64_t i = 0; !st && i < lp_gguf_n_kv(g); i++) {
            const char *k = lp_gguf_key(g, i);
            if (strncmp(k, "tokenizer.", 10) && strcmp(k, "general.name")) continue;
            if (lp_gguf_writer_has_key(w, k)) continue;
            st = lp_gguf_writer_add_value(w, k, lp_gguf_value(g, i));
        }
        lp_gguf_close(g);
        if (st) return st;
    } else if (m->format && !strcmp(m->format, "hf") && m->path) {
        TRY(add_hf_tokenizer(s));
    }
    return LOPAD_OK;
}

enum lopad_status lopad_model_save_gguf(const lopad_model *m, const char *path, int type) {
    lp_clear_error();
    if (!m || !path || !*path) return lp_error(LOPAD_ERR_ARG, "save: no model or no path");
    if (type >= 0 && (!lp_type_traits(type) || !lp_type_traits(type)->from_float))
        return lp_error(LOPAD_ERR_ARG,
                        "%s: cannot write weights as %s (type id %d); lopad writes F32, F16, BF16, "
                        "Q8_0 and Q4_0",
                        path, lp_type_name(type), type);
    const struct lopad_hparams *hp = &m->hp;
    /* LLaDA in rotate-half layout is written in llama.cpp's interleaved layout */
    const bool permute = hp->arch == LOPAD_ARCH_LLADA && hp->rope == LOPAD_ROPE_NEOX;
    if (permute && hp->head_dim % 2)
        return lp_error(LOPAD_ERR_ARG, "%s: odd head dim %d", path, hp->head_dim);
    const bool norm_rope = permute || hp->rope == LOPAD_ROPE_NORM;

    struct saver s = {.m = m, .path = path, .type = type};
    int64_t max_in = LP_MAX(LP_MAX(hp->n_embd, hp->n_ff), (int64_t)hp->n_head * hp->head_dim);
    s.cap_src = 7 * hp->n_layer + 2;
    s.src = lp_calloc((size_t)s.cap_src, sizeof *s.src, "save: row sources");
    s.scratch = lp_malloc(sizeof(float) * (size_t)max_in, "save: row scratch");
    s.tmp = lp_calloc((size_t)2 * hp->n_layer + 1, sizeof *s.tmp, "save: bias copies");
    enum lopad_status st = LOPAD_ERR_NOMEM;
    if (!s.src || !s.scratch || !s.tmp) goto out;
    /* the writer works inside a private staging directory, so its temporary
     * name cannot be a planted symlink; the result is renamed over path */
    struct lp_atomic_file af;
    if ((st = lp_atomic_begin(path, &af))) goto out;
    char suffix[32];
    snprintf(suffix, sizeof suffix, ".tmp.%ld", (long)getpid()); /* gguf.h's temporary name */
    if ((st = lp_atomic_also(&af, suffix)) || (st = lp_gguf_writer_create(af.staged, &s.w))) {
        lp_atomic_abort(&af);
        goto out;
    }
    /* tensors are only described here (rows are produced in finish), so the
     * quantisation version can be decided before the keys are written */
    if (!(st = add_tensors(&s, permute)) && !(st = add_kvs(&s, norm_rope)))
        st = lp_gguf_writer_finish(s.w);
    else
        lp_gguf_writer_abort(s.w);
    s.w = NULL;
    if (!st)
        st = lp_atomic_commit(&af);
    else
        lp_atomic_abort(&af);
out:
    for (int i = 0; s.tmp && i < s.n_tmp; i++)
        lp_free(s.tmp[i]);
    lp_free(s.tmp);
    lp_free(s.scratch);
    lp_free(s.src);
    return st;
}
