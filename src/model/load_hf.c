/*
 * load_hf.c - load a Hugging Face checkpoint directory (Dream / DiffuCoder or
 * LLaDA): config.json -> hyper-parameters, tokenizer_config.json /
 * generation_config.json -> special ids and chat template, model.safetensors
 * or a sharded model.safetensors.index.json -> a tensor directory under the
 * canonical names of hf_names.h, then lp_model_bind(). Shards stay mapped and
 * are owned by the model; nothing is copied except norms and biases (bind).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include "model.h"
#include "hf_names.h"
#include "../formats/json.h"
#include "../formats/safetensors.h"

/* ------------------------------------------------------------ name mapping */

struct name_pair {
    const char *hf, *canon;
};

static const struct name_pair dream_global[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
static const struct name_pair dream_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
static const struct name_pair llada_global[] = {
    {"model.transformer.wte.weight", "token_embd.weight"},
    {"model.transformer.ln_f.weight", "output_norm.weight"},
    {"model.transformer.ff_out.weight", "output.weight"},
};
static const struct name_pair llada_layer[] = {
    {"attn_norm.weight", "attn_norm.weight"},
    {"q_proj.weight", "attn_q.weight"},
    {"k_proj.weight", "attn_k.weight"},
    {"v_proj.weight", "attn_v.weight"},
    {"q_proj.bias", "attn_q.bias"},
    {"k_proj.bias", "attn_k.bias"},
    {"v_proj.bias", "attn_v.bias"},
    {"attn_out.weight", "attn_output.weight"},
    {"ff_norm.weight", "ffn_norm.weight"},
    {"ff_proj.weight", "ffn_gate.weight"}, /* LLaDA's ff_proj is the gate (goes through SiLU) */
    {"up_proj.weight", "ffn_up.weight"},
    {"ff_out.weight", "ffn_down.weight"}, /* per-block ff_out is the down projection */
};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

bool lp_hf_canonical_name(enum lopad_arch arch, const char *hf, char *buf, size_t size) {
    const struct name_pair *g = arch == LOPAD_ARCH_LLADA ? llada_global : dream_global;
    const struct name_pair *l = arch == LOPAD_ARCH_LLADA ? llada_layer : dream_layer;
    size_t nl = arch == LOPAD_ARCH_LLADA ? N_OF(llada_layer) : N_OF(dream_layer);
    const char *prefix = arch == LOPAD_ARCH_LLADA ? "model.transformer.blocks." : "model.layers.";
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(hf, g[i].hf)) return (size_t)snprintf(buf, size, "%s", g[i].canon) < size;
    size_t pl = strlen(prefix);
    if (strncmp(hf, prefix, pl) != 0) return false;
    const char *p = hf + pl;
    /* layer index: decimal digits, no leading zeros, at most 6 of them */
    int il = 0, nd = 0;
    while (p[nd] >= '0' && p[nd] <= '9' && nd < 7)
        il = il * 10 + (p[nd++] - '0');
    if (nd == 0 || nd > 6 || (nd > 1 && p[0] == '0') || p[nd] != '.') return false;
    const char *rest = p + nd + 1;
    for (size_t i = 0; i < nl; i++)
        if (!strcmp(rest, l[i].hf))
            return (size_t)snprintf(buf, size, "blk.%d.%s", il, l[i].canon) < size;
    return false;
}

void lp_hf_layer_linear_modules(enum lopad_arch arch, int il, char mods[7][LP_HF_NAME_MAX]) {
    static const char *dream[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                   "mlp.down_proj"};
    static const char *llada[7] = {"q_proj",  "k_proj",  "v_proj", "attn_out",
                                   "ff_proj", "up_proj", "ff_out"};
    for (int i = 0; i < 7; i++) {
        if (arch == LOPAD_ARCH_LLADA)
            snprintf(mods[i], LP_HF_NAME_MAX, "model.transformer.blocks.%d.%s", il, llada[i]);
        else
            snprintf(mods[i], LP_HF_NAME_MAX, "model.layers.%d.%s", il, dream[i]);
    }
}

/* ---------------------------------------------------------------- helpers */

static enum lopad_status join(char *buf, size_t size, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size)
        return lp_error(LOPAD_ERR_ARG, "%s/%s: path too long", dir, name);
    return LOPAD_OK;
}

/* Present at all: a FIFO, device or directory under a known name is then
 * refused by the reader (lp_open_regular) instead of passing for absent. */
static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A token id: an integer, or a list of them (first taken, as for eos lists in
 * generation_config.json); absent / null leaves *out unchanged. */
static enum lopad_status opt_token_id(const cJSON *obj, const char *key, const char *src,
                                      int32_t *out) {
    const cJSON *it = lp_json_item(obj, key);
    if (!it || cJSON_IsNull(it)) return LOPAD_OK;
    if (cJSON_IsArray(it)) {
        if (cJSON_GetArraySize(it) == 0) return LOPAD_OK;
        it = cJSON_GetArrayItem(it, 0);
    }
    int64_t v;
    enum lopad_status st = lp_json_as_i64(it, 0, INT32_MAX, src, key, &v);
    if (!st) *out = (int32_t)v;
    return st;
}

/* ------------------------------------------------------------ config.json */

static enum lopad_status detect_arch(const cJSON *cfg, const char *src, enum lopad_arch *arch) {
    enum lopad_status st;
    const char *mt;
    const char **archs = NULL;
    int n_archs = 0;
    if ((st = lp_json_opt_string(cfg, "model_type", NULL, src, &mt))) return st;
    if ((st = lp_json_opt_strings(cfg, "architectures", true, src, &archs, &n_archs))) return st;
    int found = -1;
    if (mt && !strcasecmp(mt, "dream"))
        found = LOPAD_ARCH_DREAM;
    else if (mt && !strcasecmp(mt, "llada"))
        found = LOPAD_ARCH_LLADA;
    for (int i = 0; i < n_archs && found < 0 && !mt; i++) {
        if (!strcmp(archs[i], "DreamModel")) found = LOPAD_ARCH_DREAM;
        if (!strcmp(archs[i], "LLaDAModelLM")) found = LOPAD_ARCH_LLADA;
    }
    const char *a0 = n_archs > 0 ? archs[0] : "none";
    lp_free(archs);
    if (found < 0) {
        if (!mt && n_archs == 0)
            return lp_error(LOPAD_ERR_FORMAT, "%s: missing key 'model_type' (and 'architectures')",
                            src);
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: model_type '%s' (architectures %s) is not supported; lopad runs "
                        "Dream (model_type \"Dream\") and LLaDA (model_type \"llada\")",
                        src, mt ? mt : "(absent)", a0);
    }
    *arch = (enum lopad_arch)found;
    return LOPAD_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)

static enum lopad_status unsupported_if(bool cond, const char *src, const char *what) {
    if (cond) return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: %s is not supported", src, what);
    return LOPAD_OK;
}

static enum lopad_status read_dream_config(struct lopad_hparams *hp, const cJSON *c,
                                           const char *src, bool *tied) {
    enum lopad_status st;
    double theta, eps;
    bool sliding;
    const char *act;
    TRY(lp_json_get_int(c, "hidden_size", 1, 1 << 20, src, &hp->n_embd));
    TRY(lp_json_get_int(c, "num_hidden_layers", 1, 1 << 16, src, &hp->n_layer));
    TRY(lp_json_get_int(c, "num_attention_heads", 1, 1 << 16, src, &hp->n_head));
    TRY(lp_json_opt_int(c, "num_key_value_heads", 1, 1 << 16, hp->n_head, src, &hp->n_head_kv));
    TRY(lp_json_get_int(c, "intermediate_size", 1, 1 << 24, src, &hp->n_ff));
    TRY(lp_json_get_int(c, "vocab_size", 1, 1 << 26, src, &hp->n_vocab));
    TRY(lp_json_opt_int(c, "max_position_embeddings", 0, INT_MAX, 0, src, &hp->n_ctx_train));
    /* defaults are those of transformers' Qwen2Config */
    TRY(lp_json_opt_double(c, "rope_theta", 10000.0, src, &theta));
    TRY(lp_json_opt_double(c, "rms_norm_eps", 1e-6, src, &eps));
    TRY(lp_json_opt_bool(c, "tie_word_embeddings", false, src, tied));
    TRY(lp_json_opt_bool(c, "use_sliding_window", false, src, &sliding));
    TRY(unsupported_if(sliding, src, "use_sliding_window true"));
    TRY(unsupported_if(!lp_json_absent(c, "rope_scaling"), src, "rope_scaling"));
    TRY(lp_json_opt_string(c, "hidden_act", "silu", src, &act));
    TRY(unsupported_if(strcmp(act, "silu") != 0, src, "hidden_act other than silu"));
    int hd_default = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    TRY(lp_json_opt_int(c, "head_dim", 1, 1 << 16, hd_default, src, &hp->head_dim));
    hp->rope_theta = (float)theta;
    hp->norm_eps = (float)eps;
    hp->shift_logits = true;
    hp->has_qkv_bias = true; /* Qwen2 attention always has q/k/v biases */
    TRY(opt_token_id(c, "mask_token_id", src, &hp->mask_id));
    TRY(opt_token_id(c, "bos_token_id", src, &hp->bos_id));
    TRY(opt_token_id(c, "eos_token_id", src, &hp->eos_id));
    TRY(opt_token_id(c, "pad_token_id", src, &hp->pad_id));
    return LOPAD_OK;
}

static enum lopad_status read_llada_config(struct lopad_hparams *hp, const cJSON *c,
                                           const char *src, bool *tied) {
    enum lopad_status st;
    double theta, eps, ratio;
    bool bias, qkv_bias, alibi, rope;
    const char *s;
    TRY(lp_json_get_int(c, "d_model", 1, 1 << 20, src, &hp->n_embd));
    TRY(lp_json_get_int(c, "n_layers", 1, 1 << 16, src, &hp->n_layer));
    TRY(lp_json_get_int(c, "n_heads", 1, 1 << 16, src, &hp->n_head));
    TRY(lp_json_opt_int(c, "n_kv_heads", 1, 1 << 16, hp->n_head, src, &hp->n_head_kv));
    if (lp_json_absent(c, "mlp_hidden_size")) {
        /* LLaDA's block: hidden = mlp_ratio * d_model when no explicit size */
        TRY(lp_json_get_double(c, "mlp_ratio", src, &ratio));
        if (!(ratio > 0 && ratio * hp->n_embd <= (1 << 24)))
            return lp_error(LOPAD_ERR_FORMAT, "%s: key 'mlp_ratio' = %g is out of range", src,
                            ratio);
        hp->n_ff = (int)(ratio * hp->n_embd);
    } else {
        TRY(lp_json_get_int(c, "mlp_hidden_size", 1, 1 << 24, src, &hp->n_ff));
    }
    /* the embedding may be padded past the tokenizer's vocabulary: the matrices
     * (and the logits) have embedding_size rows */
    if (lp_json_absent(c, "embedding_size"))
        TRY(lp_json_get_int(c, "vocab_size", 1, 1 << 26, src, &hp->n_vocab));
    else
        TRY(lp_json_get_int(c, "embedding_size", 1, 1 << 26, src, &hp->n_vocab));
    TRY(lp_json_opt_int(c, "max_sequence_length", 0, INT_MAX, 0, src, &hp->n_ctx_train));
    TRY(lp_json_opt_double(c, "rope_theta", 10000.0, src, &theta));
    TRY(lp_json_opt_double(c, "rms_norm_eps", 1e-5, src, &eps));
    TRY(lp_json_opt_bool(c, "weight_tying", false, src, tied));
    TRY(lp_json_opt_bool(c, "include_bias", false, src, &bias));
    TRY(lp_json_opt_bool(c, "include_qkv_bias", false, src, &qkv_bias));
    TRY(unsupported_if(bias, src, "include_bias true (biases on every linear layer)"));
    TRY(lp_json_opt_bool(c, "alibi", false, src, &alibi));
    TRY(unsupported_if(alibi, src, "alibi"));
    TRY(lp_json_opt_bool(c, "rope", true, src, &rope));
    TRY(unsupported_if(!rope, src, "rope false"));
    TRY(lp_json_opt_string(c, "block_type", "llama", src, &s));
    TRY(unsupported_if(strcmp(s, "llama") != 0, src, "block_type other than \"llama\""));
    TRY(lp_json_opt_string(c, "activation_type", "silu", src, &s));
    TRY(unsupported_if(strcmp(s, "silu") != 0, src, "activation_type other than \"silu\""));
    TRY(lp_json_opt_string(c, "layer_norm_type", "rms", src, &s));
    TRY(unsupported_if(strcmp(s, "rms") != 0, src, "layer_norm_type other than \"rms\""));
    hp->head_dim = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    hp->rope_theta = (float)theta;
    hp->norm_eps = (float)eps;
    hp->shift_logits = false;
    hp->has_qkv_bias = qkv_bias;
    TRY(opt_token_id(c, "mask_token_id", src, &hp->mask_id));
    TRY(opt_token_id(c, "bos_token_id", src, &hp->bos_id));
    TRY(opt_token_id(c, "eos_token_id", src, &hp->eos_id));
    TRY(opt_token_id(c, "pad_token_id", src, &hp->pad_id));
    return LOPAD_OK;
}

/* ---------------------------------------------- tokenizer / generation config */

/* id of an added token whose content is `text` in tokenizer_config.json's
 * added_tokens_decoder ({"126348": {"content": "<|eot_id|>", ...}}), or -1 */
static int32_t added_token_id(const cJSON *tc, const char *text) {
    const cJSON *dec = lp_json_item(tc, "added_tokens_decoder");
    const cJSON *e;
    if (!cJSON_IsObject(dec) || !text) return -1;
    cJSON_ArrayForEach(e, dec) {
        const cJSON *content = lp_json_item(e, "content");
        if (!cJSON_IsString(content) || strcmp(content->valuestring, text) != 0) continue;
        char *end;
        errno = 0;
        long v = strtol(e->string, &end, 10);
        if (*e->string && !*end && !errno && v >= 0 && v <= INT32_MAX) return (int32_t)v;
    }
    return -1;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *special_token_text(const cJSON *tc, const char *key) {
    const cJSON *it = lp_json_item(tc, key);
    if (cJSON_IsString(it)) return it->valuestring;
    const cJSON *c = lp_json_item(it, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static void fill_from_tokens(int32_t *id, const cJSON *tc, const char *key) {
    if (*id >= 0) return;
    *id = added_token_id(tc, special_token_text(tc, key));
}

static enum lopad_status read_side_configs(struct lopad_model *m, const char *dir) {
    enum lopad_status st;
    struct lopad_hparams *hp = &m->hp;
    char path[PATH_MAX];
    /* generation_config.json fills ids config.json lacked */
    TRY(join(path, sizeof path, dir, "generation_config.json"));
    if (file_exists(path)) {
        cJSON *g;
        TRY(lp_json_read_file(path, 1 << 20, &g));
        int32_t ids[4] = {hp->mask_id, hp->bos_id, hp->eos_id, hp->pad_id};
        if (!(st = opt_token_id(g, "mask_token_id", path, &ids[0])) &&
            !(st = opt_token_id(g, "bos_token_id", path, &ids[1])) &&
            !(st = opt_token_id(g, "eos_token_id", path, &ids[2])))
            st = opt_token_id(g, "pad_token_id", path, &ids[3]);
        cJSON_Delete(g);
        if (st) return st;
        if (hp->mask_id < 0) hp->mask_id = ids[0];
        if (hp->bos_id < 0) hp->bos_id = ids[1];
        if (hp->eos_id < 0) hp->eos_id = ids[2];
        if (hp->pad_id < 0) hp->pad_id = ids[3];
    }
    TRY(join(path, sizeof path, dir, "tokenizer_config.json"));
    if (file_exists(path)) {
        cJSON *tc;
        TRY(lp_json_read_file(path, 16 << 20, &tc));
        fill_from_tokens(&hp->bos_id, tc, "bos_token");
        fill_from_tokens(&hp->eos_id, tc, "eos_token");
        fill_from_tokens(&hp->pad_id, tc, "pad_token");
        fill_from_tokens(&hp->mask_id, tc, "mask_token");
        if (hp->mask_id < 0) {
            /* the mask tokens' texts in Dream and LLaDA vocabularies */
            hp->mask_id = added_token_id(tc, "<|mask|>");
            if (hp->mask_id < 0) hp->mask_id = added_token_id(tc, "<|mdm_mask|>");
        }
        if (hp->eot_id < 0) {
            /* end of a chat turn: LLaMA-3 style (LLaDA) or ChatML (Dream, DiffuCoder) */
            hp->eot_id = added_token_id(tc, "<|eot_id|>");
            if (hp->eot_id < 0) hp->eot_id = added_token_id(tc, "<|im_end|>");
        }
        /* chat_template: a string, or a list of {"name", "template"} */
        const cJSON *ct = lp_json_item(tc, "chat_template");
        const char *tmpl = NULL;
        if (cJSON_IsString(ct)) {
            tmpl = ct->valuestring;
        } else if (cJSON_IsArray(ct)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, ct) {
                const cJSON *nm = lp_json_item(e, "name"), *t = lp_json_item(e, "template");
                if (!cJSON_IsString(t)) continue;
                if (!tmpl || (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default")))
                    tmpl = t->valuestring;
            }
        }
        st = LOPAD_OK;
        if (tmpl && !m->chat_template && !(m->chat_template = lp_strdup(tmpl, "chat template")))
            st = LOPAD_ERR_NOMEM;
        cJSON_Delete(tc);
        if (st) return st;
    }
    /* newer transformers save the template on its own */
    TRY(join(path, sizeof path, dir, "chat_template.jinja"));
    if (!m->chat_template && file_exists(path)) {
        char *text;
        size_t len;
        TRY(lp_read_file(path, 1 << 20, &text, &len));
        m->chat_template = text;
    }
    return LOPAD_OK; /* ids outside the vocabulary are refused by lp_hparams_check */
}

/* ------------------------------------------------------------------ weights */

struct shards {
    struct lp_st_file **f;
    char **name; /* shard file name as in the index */
    bool *used;
    int n;
};

static void shards_free(struct shards *s) {
    for (int i = 0; i < s->n; i++) {
        lp_st_close(s->f[i]);
        lp_free(s->name[i]);
    }
    lp_free(s->f);
    lp_free(s->name);
    lp_free(s->used);
}

/* index of shard `name`, opening it on first use */
static enum lopad_status shard_get(struct shards *s, const char *dir, const char *name,
                                   const char *index_path, int *out) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name)) {
            *out = i;
            return LOPAD_OK;
        }
    if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return lp_error(LOPAD_ERR_FORMAT, "%s: shard file name '%s' is not a plain file name",
                        index_path, name);
    char path[PATH_MAX];
    enum lopad_status st;
    TRY(join(path, sizeof path, dir, name));
    if (!file_exists(path))
        return lp_error(LOPAD_ERR_IO, "%s: shard '%s' listed in %s is missing", path, name,
                        index_path);
    size_t k = (size_t)s->n + 1;
    struct lp_st_file **f = lp_realloc(s->f, k * sizeof *f, "shard list");
    if (!f) return LOPAD_ERR_NOMEM;
    s->f = f;
    char **nm = lp_realloc(s->name, k * sizeof *nm, "shard list");
    if (!nm) return LOPAD_ERR_NOMEM;
    s->name = nm;
    bool *used = lp_realloc(s->used, k * sizeof *used, "shard list");
    if (!used) return LOPAD_ERR_NOMEM;
    s->used = used;
    if (!(s->name[s->n] = lp_strdup(name, "shard name"))) return LOPAD_ERR_NOMEM;
    s->used[s->n] = false;
    if ((st = lp_st_open(path, &s->f[s->n]))) {
        lp_free(s->name[s->n]);
        return st;
    }
    *out = s->n++;
    return LOPAD_OK;
}

struct dir_builder {
    struct lp_tensor *t;
    int n, cap;
    char *names; /* n * LP_CANON_NAME_MAX bytes, handed to the model */
    enum lopad_arch arch;
    int n_layer;
    bool tied;
};

/* Layer of canonical name "blk.<il>.<rest>", or -1 for a global tensor. */
static long canon_layer(const char *canon) {
    if (strncmp(canon, "blk.", 4)) return -1;
    return strtol(canon + 4, NULL, 10);
}

/* add HF tensor `t` under its canonical name (ignored when lopad does not use it).
 * A tensor of a layer the config does not have is refused here, so the
 * directory never holds more than the model's own tensors (bounded work). */
static enum lopad_status dir_add(struct dir_builder *b, const struct lp_tensor *t,
                                 const char *hf_name, const char *src, bool *added) {
    char canon[LP_CANON_NAME_MAX];
    *added = false;
    if (!lp_hf_canonical_name(b->arch, hf_name, canon, sizeof canon)) return LOPAD_OK;
    if (b->tied && !strcmp(canon, "output.weight")) return LOPAD_OK; /* tied: embedding is output */
    long il = canon_layer(canon);
    if (il >= b->n_layer)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' belongs to layer %ld, but config.json declares %d layers",
                        src, hf_name, il, b->n_layer);
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        struct lp_tensor *nt = lp_realloc(b->t, sizeof *nt * cap, "tensor directory");
        if (!nt) return LOPAD_ERR_NOMEM;
        b->t = nt;
        char *nn = lp_realloc(b->names, (size_t)cap * LP_CANON_NAME_MAX, "tensor names");
        if (!nn) return LOPAD_ERR_NOMEM;
        /* names moved: repoint the entries already added */
        for (int i = 0; i < b->n; i++)
            b->t[i].name = nn + (size_t)i * LP_CANON_NAME_MAX;
        b->names = nn;
        b->cap = cap;
    }
    char *slot = b->names + (size_t)b->n * LP_CANON_NAME_MAX;
    memcpy(slot, canon, sizeof canon);
    b->t[b->n] = *t;
    b->t[b->n].name = slot;
    b->n++;
    *added = true;
    return LOPAD_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const struct lp_tensor *const *)a)->name,
                  (*(const struct lp_tensor *const *)b)->name);
}

/* Two HF names for one canonical tensor (e.g. the same tensor in two shards):
 * found by sorting, O(n log n). */
static enum lopad_status check_duplicates(const struct dir_builder *b, const char *dir) {
    if (b->n < 2) return LOPAD_OK;
    const struct lp_tensor **v = lp_malloc(sizeof *v * (size_t)b->n, "tensor name check");
    if (!v) return LOPAD_ERR_NOMEM;
    for (int i = 0; i < b->n; i++)
        v[i] = &b->t[i];
    qsort(v, (size_t)b->n, sizeof *v, cmp_tensor_name);
    enum lopad_status st = LOPAD_OK;
    for (int i = 1; i < b->n && !st; i++)
        if (!strcmp(v[i - 1]->name, v[i]->name))
            st = lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' appears more than once", dir,
                          v[i]->name);
    lp_free(v);
    return st;
}

static enum lopad_status load_weights(struct lopad_model *m, const char *dir, bool tied,
                                      struct shards *sh, struct dir_builder *b) {
    enum lopad_status st;
    char path[PATH_MAX], index_path[PATH_MAX];
    b->arch = m->hp.arch;
    b->n_layer = m->hp.n_layer;
    b->tied = tied;
    TRY(join(index_path, sizeof index_path, dir, "model.safetensors.index.json"));
    TRY(join(path, sizeof path, dir, "model.safetensors"));
    if (file_exists(index_path)) {
        cJSON *idx;
        const cJSON *wm, *e;
        TRY(lp_json_read_file(index_path, 64 << 20, &idx));
        if ((st = lp_json_get_item(idx, "weight_map", cJSON_Object, index_path, &wm))) {
            cJSON_Delete(idx);
            return st;
        }
        cJSON_ArrayForEach(e, wm) {
            int si;
            bool added;
            if (!cJSON_IsString(e)) {
                st = lp_error(LOPAD_ERR_FORMAT, "%s: weight_map entry '%s' must be a file name",
                              index_path, e->string);
                break;
            }
            if ((st = shard_get(sh, dir, e->valuestring, index_path, &si))) break;
            const struct lp_tensor *t = lp_st_find(sh->f[si], e->string);
            if (!t) {
                st = lp_error(LOPAD_ERR_FORMAT,
                              "%s: tensor '%s' is listed in %s but absent from shard '%s'",
                              sh->f[si]->path, e->string, index_path, e->valuestring);
                break;
            }
            if ((st = dir_add(b, t, e->string, sh->f[si]->path, &added))) break;
            if (added) sh->used[si] = true;
        }
        cJSON_Delete(idx);
        if (st) return st;
    } else if (file_exists(path)) {
        int si;
        TRY(shard_get(sh, dir, "model.safetensors", path, &si));
        for (int i = 0; i < sh->f[si]->n; i++) {
            bool added;
            const struct lp_tensor *t = &sh->f[si]->t[i];
            TRY(dir_add(b, t, t->name, path, &added));
            if (added) sh->used[si] = true;
        }
    } else {
        return lp_error(LOPAD_ERR_IO,
                        "%s: no model.safetensors or model.safetensors.index.json in the directory",
                        dir);
    }
    TRY(check_duplicates(b, dir));
    /* an untied model must bring its output head */
    bool has_out = false;
    for (int i = 0; i < b->n; i++)
        has_out |= !strcmp(b->t[i].name, "output.weight");
    if (!tied && !has_out)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: missing output head '%s' (and the config does not tie it to the "
                        "embedding)",
                        dir,
                        m->hp.arch == LOPAD_ARCH_LLADA ? "model.transformer.ff_out.weight"
                                                       : "lm_head.weight");
    return LOPAD_OK;
}

enum lopad_status lp_load_hf(struct lopad_model *m, const char *dir) {
    enum lopad_status st;
    char cfg_path[PATH_MAX];
    TRY(join(cfg_path, sizeof cfg_path, dir, "config.json"));
    cJSON *cfg;
    TRY(lp_json_read_file(cfg_path, 4 << 20, &cfg));
    bool tied = false;
    enum lopad_arch arch = LOPAD_ARCH_DREAM;
    st = detect_arch(cfg, cfg_path, &arch);
    if (!st) {
        m->hp.arch = arch;
        m->hp.rope = LOPAD_ROPE_NEOX; /* HF code of both families rotates halves */
        st = arch == LOPAD_ARCH_DREAM ? read_dream_config(&m->hp, cfg, cfg_path, &tied)
                                      : read_llada_config(&m->hp, cfg, cfg_path, &tied);
    }
    cJSON_Delete(cfg);
    if (st) return st;
    if (m->hp.head_dim <= 0)
        return lp_error(LOPAD_ERR_FORMAT, "%s: hidden size %d is not a multiple of %d heads",
                        cfg_path, m->hp.n_embd, m->hp.n_head);
    TRY(read_side_configs(m, dir));

    struct shards sh = {0};
    struct dir_builder b = {0};
    st = load_weights(m, dir, tied, &sh, &b);
    /* the model owns the names (weights keep pointers to them) and every
     * mapping a bound tensor lives in; unused shards are just closed */
    if (st)
        lp_free(b.names);
    else if (b.names && !lp_model_own(m, b.names, 0, false))
        st = LOPAD_ERR_NOMEM; /* freed it */
    b.names = NULL;
    for (int i = 0; !st && i < sh.n; i++) {
        if (!sh.used[i]) continue;
        void *p;
        size_t size;
        lp_st_take_mapping(sh.f[i], &p, &size);
        if (!lp_model_own(m, p, size, true)) st = LOPAD_ERR_NOMEM;
    }
    if (!st) {
        struct lp_tensor_dir d = {b.t, b.n};
        st = lp_model_bind(m, &d, dir);
    }
    lp_free(b.t);
    shards_free(&sh);
    return st;
}
