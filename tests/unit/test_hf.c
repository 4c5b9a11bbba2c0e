/*
 * test_hf.c - the Hugging Face directory loader: tiny Dream and LLaDA
 * checkpoints (config.json, tokenizer_config.json, single-file and sharded
 * safetensors) are written from C under LOPAD_BINARY_DIR, loaded through
 * lopad_model_load, and checked tensor by tensor; every bad input must fail
 * with the right status and a message naming the file / tensor / key.
 */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/common.h"
#include "core/types.h"
#include "model/model.h"
#include "model/hf_names.h"

#define TMP LOPAD_BINARY_DIR "/test_tmp_hf"

/* ------------------------------------------------ a small safetensors writer */

struct stw_tensor {
    char name[96];
    int type; /* LOPAD_TYPE_F32 / F16 / BF16, or -1 = I64 (unsupported) */
    int rank;
    int64_t shape[4]; /* PyTorch order */
    unsigned char *data;
    size_t nbytes;
};
struct stw {
    struct stw_tensor t[160];
    int n;
};

/* deterministic values exactly representable in bf16 and f16 */
static unsigned name_hash(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}
static float tval(const char *hf_name, int64_t i) {
    return (float)((int)((name_hash(hf_name) + (unsigned)i * 7u) % 17u) - 8) * 0.125f;
}

static void stw_add(struct stw *w, const char *name, int type, int rank, int64_t d0, int64_t d1) {
    struct stw_tensor *t = &w->t[w->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->rank = rank;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t n = rank == 1 ? d0 : d0 * d1;
    size_t es = type == LOPAD_TYPE_F32 || type < 0 ? (type < 0 ? 8 : 4) : 2;
    t->nbytes = (size_t)n * es;
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    for (int64_t i = 0; i < n; i++) {
        float v = tval(name, i);
        if (type == LOPAD_TYPE_F32)
            memcpy(t->data + 4 * i, &v, 4);
        else if (type == LOPAD_TYPE_F16) {
            uint16_t h = lp_f32_to_f16(v);
            memcpy(t->data + 2 * i, &h, 2);
        } else if (type == LOPAD_TYPE_BF16) {
            uint16_t h = lp_f32_to_bf16(v);
            memcpy(t->data + 2 * i, &h, 2);
        } else {
            int64_t x = i;
            memcpy(t->data + 8 * i, &x, 8);
        }
    }
}

static const char *dtype_name(int type) {
    switch (type) {
    case LOPAD_TYPE_F32: return "F32";
    case LOPAD_TYPE_F16: return "F16";
    case LOPAD_TYPE_BF16: return "BF16";
    default: return "I64";
    }
}

/* write tensors [from, to) of w to path */
static void stw_write_range(const struct stw *w, int from, int to, const char *path) {
    char *hdr = malloc(65536);
    size_t hl = 0, off = 0;
    hl += sprintf(hdr + hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = from; i < to; i++) {
        const struct stw_tensor *t = &w->t[i];
        hl += sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                      dtype_name(t->type));
        for (int d = 0; d < t->rank; d++)
            hl += sprintf(hdr + hl, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        hl += sprintf(hdr + hl, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    hl += sprintf(hdr + hl, "}");
    while ((8 + hl) % 8)
        hdr[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    for (int i = 0; i < 8; i++)
        fputc((int)((uint64_t)hl >> (8 * i)) & 0xff, f);
    fwrite(hdr, 1, hl, f);
    for (int i = from; i < to; i++)
        fwrite(w->t[i].data, 1, w->t[i].nbytes, f);
    fclose(f);
    free(hdr);
}

static void stw_free(struct stw *w) {
    for (int i = 0; i < w->n; i++)
        free(w->t[i].data);
    w->n = 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot clean %s\n", dir);
}

/* ------------------------------------------------------ tiny checkpoints */

enum { E = 8, NH = 2, HD = 4, F = 12, V = 16, NL = 2 };

struct opts {
    int arch;
    int mat_type;                /* dtype of the matrices */
    bool tied;                   /* config ties output to the embedding; no head tensor written */
    bool sharded;                /* index + 2 shards */
    const char *skip;            /* HF tensor not written */
    const char *wrong;           /* HF tensor written with a wrong shape */
    const char *config_override; /* full config.json text */
    bool no_tokenizer_config;
};

static int n_kv(int arch) {
    return arch == LOPAD_ARCH_DREAM ? 1 : 2;
}

static void add_t(struct stw *w, const struct opts *o, const char *name, int type, int rank,
                  int64_t d0, int64_t d1) {
    if (o->skip && !strcmp(o->skip, name)) return;
    if (o->wrong && !strcmp(o->wrong, name)) d0 += 1;
    stw_add(w, name, type, rank, d0, d1);
}

static void build_tensors(struct stw *w, const struct opts *o) {
    bool dream = o->arch == LOPAD_ARCH_DREAM;
    int mt = o->mat_type;
    int kvd = n_kv(o->arch) * HD;
    char nm[96];
    add_t(w, o, dream ? "model.embed_tokens.weight" : "model.transformer.wte.weight", mt, 2, V, E);
    if (!o->tied)
        add_t(w, o, dream ? "lm_head.weight" : "model.transformer.ff_out.weight", mt, 2, V, E);
    add_t(w, o, dream ? "model.norm.weight" : "model.transformer.ln_f.weight", LOPAD_TYPE_F32, 1, E,
          0);
    for (int l = 0; l < NL; l++) {
        const char *pre = dream ? "model.layers" : "model.transformer.blocks";
#define T(suffix, type, rank, a, b)                                                                \
    snprintf(nm, sizeof nm, "%s.%d.%s", pre, l, suffix);                                           \
    add_t(w, o, nm, type, rank, a, b);
        if (dream) {
            T("input_layernorm.weight", LOPAD_TYPE_F32, 1, E, 0);
            T("self_attn.q_proj.weight", mt, 2, NH * HD, E);
            T("self_attn.k_proj.weight", mt, 2, kvd, E);
            T("self_attn.v_proj.weight", mt, 2, kvd, E);
            T("self_attn.q_proj.bias", mt, 1, NH * HD, 0);
            T("self_attn.k_proj.bias", mt, 1, kvd, 0);
            T("self_attn.v_proj.bias", mt, 1, kvd, 0);
            T("self_attn.o_proj.weight", mt, 2, E, NH * HD);
            T("post_attention_layernorm.weight", LOPAD_TYPE_F32, 1, E, 0);
            T("mlp.gate_proj.weight", mt, 2, F, E);
            T("mlp.up_proj.weight", mt, 2, F, E);
            T("mlp.down_proj.weight", mt, 2, E, F);
            T("self_attn.rotary_emb.inv_freq", LOPAD_TYPE_F32, 1, HD / 2, 0); /* ignored */
        } else {
            T("attn_norm.weight", LOPAD_TYPE_F32, 1, E, 0);
            T("q_proj.weight", mt, 2, NH * HD, E);
            T("k_proj.weight", mt, 2, kvd, E);
            T("v_proj.weight", mt, 2, kvd, E);
            T("attn_out.weight", mt, 2, E, NH * HD);
            T("ff_norm.weight", LOPAD_TYPE_F32, 1, E, 0);
            T("ff_proj.weight", mt, 2, F, E);
            T("up_proj.weight", mt, 2, F, E);
            T("ff_out.weight", mt, 2, E, F);
        }
#undef T
    }
}

static const char *dream_config(bool tied) {
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"architectures\": [\"DreamModel\"], \"model_type\": \"Dream\", \"hidden_size\": %d,"
             " \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": 1,"
             " \"intermediate_size\": %d, \"vocab_size\": %d, \"rope_theta\": 1000000.0,"
             " \"rms_norm_eps\": 1e-06, \"max_position_embeddings\": 2048, \"mask_token_id\": 15,"
             " \"bos_token_id\": 14, \"eos_token_id\": 13, \"pad_token_id\": 13,"
             " \"tie_word_embeddings\": %s, \"rope_scaling\": null, \"hidden_act\": \"silu\","
             " \"use_sliding_window\": false, \"torch_dtype\": \"bfloat16\"}",
             E, NL, NH, F, V, tied ? "true" : "false");
    return buf;
}

static const char *llada_config(bool tied) {
    static char buf[1024];
    snprintf(
        buf, sizeof buf,
        "{\"architectures\": [\"LLaDAModelLM\"], \"model_type\": \"llada\", \"d_model\": %d,"
        " \"n_layers\": %d, \"n_heads\": %d, \"n_kv_heads\": 2, \"mlp_hidden_size\": %d,"
        " \"mlp_ratio\": 4, \"vocab_size\": 14, \"embedding_size\": %d, \"rope_theta\": 500000.0,"
        " \"rms_norm_eps\": 1e-05, \"max_sequence_length\": 4096, \"mask_token_id\": 12,"
        " \"eos_token_id\": 11, \"pad_token_id\": 11, \"include_bias\": false,"
        " \"include_qkv_bias\": false, \"weight_tying\": %s, \"block_type\": \"llama\","
        " \"activation_type\": \"silu\", \"layer_norm_type\": \"rms\", \"alibi\": false,"
        " \"rope\": true}",
        E, NL, NH, F, V, tied ? "true" : "false");
    return buf;
}

static char dir_buf[512];
static const char *make_model(const char *name, const struct opts *o) {
    snprintf(dir_buf, sizeof dir_buf, "%s/%s", TMP, name);
    rm_rf(dir_buf);
    mkdir(dir_buf, 0755);
    char p[600];
    bool dream = o->arch == LOPAD_ARCH_DREAM;
    snprintf(p, sizeof p, "%s/config.json", dir_buf);
    write_text(p, o->config_override ? o->config_override
                  : dream            ? dream_config(o->tied)
                                     : llada_config(o->tied));
    if (!o->no_tokenizer_config) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", dir_buf);
        write_text(p, dream ? "{\"added_tokens_decoder\": {\"10\": {\"content\": \"<|im_end|>\","
                              " \"special\": true}, \"13\": {\"content\": \"<|endoftext|>\"}},"
                              " \"bos_token\": null, \"chat_template\": \"{{ chatml }}\"}"
                            : "{\"added_tokens_decoder\": {\"9\": {\"content\": \"<|eot_id|>\"},"
                              " \"8\": {\"content\": \"<|startoftext|>\"}},"
                              " \"bos_token\": {\"content\": \"<|startoftext|>\"},"
                              " \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
                              " {\"name\": \"default\", \"template\": \"{{ llama3 }}\"}]}");
    }
    struct stw *w = calloc(1, sizeof *w);
    build_tensors(w, o);
    if (!o->sharded) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir_buf);
        stw_write_range(w, 0, w->n, p);
    } else {
        int half = w->n / 2;
        const char *s1 = "model-00001-of-00002.safetensors",
                   *s2 = "model-00002-of-00002.safetensors";
        snprintf(p, sizeof p, "%s/%s", dir_buf, s1);
        stw_write_range(w, 0, half, p);
        snprintf(p, sizeof p, "%s/%s", dir_buf, s2);
        stw_write_range(w, half, w->n, p);
        char *idx = malloc(65536);
        size_t n = (size_t)sprintf(idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
        for (int i = 0; i < w->n; i++)
            n += (size_t)sprintf(idx + n, "%s\"%s\": \"%s\"", i ? ", " : "", w->t[i].name,
                                 i < half ? s1 : s2);
        sprintf(idx + n, "}}");
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir_buf);
        write_text(p, idx);
        free(idx);
    }
    stw_free(w);
    free(w);
    return dir_buf;
}

/* ---------------------------------------------------------------- checks */

static bool msg_has(const char *s) {
    return strstr(lopad_errmsg(), s) != NULL;
}

/* The weight must hold hf_name's generated values, shape [n_out, n_in]. */
static void check_weight(const struct lp_weight *w, const char *hf_name, int type, int64_t n_out,
                         int64_t n_in) {
    CHECK_MSG(w->data != NULL, "%s unbound", hf_name);
    if (!w->data) return;
    CHECK_MSG(w->type == type && w->n_out == n_out && w->n_in == n_in, "%s: type %d [%lld x %lld]",
              hf_name, w->type, (long long)w->n_out, (long long)w->n_in);
    float *row = malloc(sizeof(float) * n_in);
    int bad = 0;
    for (int64_t r = 0; r < n_out; r++) {
        lp_type_traits(w->type)->to_float((const char *)w->data + r * w->row_bytes, row, n_in);
        for (int64_t c = 0; c < n_in; c++)
            bad += row[c] != tval(hf_name, r * n_in + c);
    }
    CHECK_MSG(bad == 0, "%s: %d values differ", hf_name, bad);
    free(row);
}

static void check_vec(const float *v, const char *hf_name, int n) {
    CHECK_MSG(v != NULL, "%s missing", hf_name);
    if (!v) return;
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += v[i] != tval(hf_name, i);
    CHECK_MSG(bad == 0, "%s: %d values differ", hf_name, bad);
}

static void test_dream_single_file(void) {
    struct opts o = {.arch = LOPAD_ARCH_DREAM, .mat_type = LOPAD_TYPE_BF16};
    const char *dir = make_model("dream", &o);
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    CHECK(hp->arch == LOPAD_ARCH_DREAM && hp->rope == LOPAD_ROPE_NEOX);
    CHECK(hp->n_embd == E && hp->n_layer == NL && hp->n_head == NH && hp->n_head_kv == 1);
    CHECK(hp->head_dim == HD && hp->n_ff == F && hp->n_vocab == V && hp->n_ctx_train == 2048);
    CHECK(hp->rope_theta == 1e6f && hp->norm_eps == 1e-6f);
    CHECK(hp->shift_logits && hp->has_qkv_bias);
    CHECK(hp->mask_id == 15 && hp->bos_id == 14 && hp->eos_id == 13 && hp->pad_id == 13);
    CHECK(hp->eot_id == 10); /* <|im_end|> from tokenizer_config.json */
    CHECK(m->chat_template && !strcmp(m->chat_template, "{{ chatml }}"));
    CHECK(!strcmp(m->format, "hf"));
    check_weight(&m->tok_embd, "model.embed_tokens.weight", LOPAD_TYPE_BF16, V, E);
    check_weight(&m->output, "lm_head.weight", LOPAD_TYPE_BF16, V, E);
    CHECK(m->output.data != m->tok_embd.data);
    check_vec(m->output_norm, "model.norm.weight", E);
    const struct lp_layer *L = &m->layers[1];
    check_weight(&L->wq, "model.layers.1.self_attn.q_proj.weight", LOPAD_TYPE_BF16, NH * HD, E);
    check_weight(&L->wk, "model.layers.1.self_attn.k_proj.weight", LOPAD_TYPE_BF16, HD, E);
    check_weight(&L->wv, "model.layers.1.self_attn.v_proj.weight", LOPAD_TYPE_BF16, HD, E);
    check_weight(&L->wo, "model.layers.1.self_attn.o_proj.weight", LOPAD_TYPE_BF16, E, NH * HD);
    check_weight(&L->w_gate, "model.layers.1.mlp.gate_proj.weight", LOPAD_TYPE_BF16, F, E);
    check_weight(&L->w_up, "model.layers.1.mlp.up_proj.weight", LOPAD_TYPE_BF16, F, E);
    check_weight(&L->w_down, "model.layers.1.mlp.down_proj.weight", LOPAD_TYPE_BF16, E, F);
    check_vec(L->attn_norm, "model.layers.1.input_layernorm.weight", E);
    check_vec(L->ffn_norm, "model.layers.1.post_attention_layernorm.weight", E);
    check_vec(L->bq, "model.layers.1.self_attn.q_proj.bias", NH * HD);
    check_vec(L->bk, "model.layers.1.self_attn.k_proj.bias", HD);
    check_vec(L->bv, "model.layers.1.self_attn.v_proj.bias", HD);
    check_vec(m->layers[0].attn_norm, "model.layers.0.input_layernorm.weight", E);
    CHECK(m->type_count[LOPAD_TYPE_BF16] == 2 + 7 * NL);
    lopad_model_free(m);
}

static void test_llada_sharded_tied(void) {
    struct opts o = {
        .arch = LOPAD_ARCH_LLADA, .mat_type = LOPAD_TYPE_F16, .tied = true, .sharded = true};
    const char *dir = make_model("llada_sharded", &o);
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    CHECK(hp->arch == LOPAD_ARCH_LLADA && hp->rope == LOPAD_ROPE_NEOX);
    CHECK(!hp->shift_logits && !hp->has_qkv_bias);
    CHECK(hp->n_vocab == V); /* embedding_size, not vocab_size */
    CHECK(hp->n_head_kv == 2 && hp->head_dim == HD && hp->n_ctx_train == 4096);
    CHECK(hp->rope_theta == 5e5f && hp->norm_eps == 1e-5f);
    CHECK(hp->mask_id == 12 && hp->eos_id == 11 && hp->pad_id == 11);
    CHECK(hp->bos_id == 8); /* from tokenizer_config's bos_token */
    CHECK(hp->eot_id == 9); /* <|eot_id|> */
    CHECK(m->chat_template && !strcmp(m->chat_template, "{{ llama3 }}"));
    check_weight(&m->tok_embd, "model.transformer.wte.weight", LOPAD_TYPE_F16, V, E);
    CHECK(m->output.data == m->tok_embd.data); /* tied */
    check_vec(m->output_norm, "model.transformer.ln_f.weight", E);
    for (int l = 0; l < NL; l++) {
        const struct lp_layer *L = &m->layers[l];
        char nm[96];
#define W(field, suffix, r, c)                                                                     \
    snprintf(nm, sizeof nm, "model.transformer.blocks.%d." suffix, l);                             \
    check_weight(&L->field, nm, LOPAD_TYPE_F16, r, c);
        W(wq, "q_proj.weight", NH * HD, E);
        W(wk, "k_proj.weight", 2 * HD, E);
        W(wv, "v_proj.weight", 2 * HD, E);
        W(wo, "attn_out.weight", E, NH * HD);
        W(w_gate, "ff_proj.weight", F, E); /* ff_proj is the gate */
        W(w_up, "up_proj.weight", F, E);
        W(w_down, "ff_out.weight", E, F); /* per-block ff_out is down */
#undef W
        snprintf(nm, sizeof nm, "model.transformer.blocks.%d.attn_norm.weight", l);
        check_vec(L->attn_norm, nm, E);
        snprintf(nm, sizeof nm, "model.transformer.blocks.%d.ff_norm.weight", l);
        check_vec(L->ffn_norm, nm, E);
        CHECK(L->bq == NULL && L->bk == NULL && L->bv == NULL);
    }
    lopad_model_free(m);
}

/* an untied LLaDA in one F32 file, with a generation_config.json and no tokenizer config */
static void test_llada_untied_f32(void) {
    struct opts o = {
        .arch = LOPAD_ARCH_LLADA, .mat_type = LOPAD_TYPE_F32, .no_tokenizer_config = true};
    const char *dir = make_model("llada_f32", &o);
    char p[600];
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    write_text(p, "{\"bos_token_id\": 7, \"eos_token_id\": [3, 4]}");
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    check_weight(&m->output, "model.transformer.ff_out.weight", LOPAD_TYPE_F32, V, E);
    check_weight(&m->layers[0].w_down, "model.transformer.blocks.0.ff_out.weight", LOPAD_TYPE_F32,
                 E, F);
    CHECK(m->hp.bos_id == 7);  /* config.json had none */
    CHECK(m->hp.eos_id == 11); /* config.json wins */
    CHECK(m->hp.eot_id == -1 && m->chat_template == NULL);
    lopad_model_free(m);
}

static void test_canonical_names(void) {
    char b[LP_CANON_NAME_MAX];
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.27.mlp.down_proj.weight", b,
                               sizeof b) &&
          !strcmp(b, "blk.27.ffn_down.weight"));
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.3.self_attn.k_proj.bias", b,
                               sizeof b) &&
          !strcmp(b, "blk.3.attn_k.bias"));
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_DREAM, "lm_head.weight", b, sizeof b) &&
          !strcmp(b, "output.weight"));
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_LLADA, "model.transformer.ff_out.weight", b, sizeof b) &&
          !strcmp(b, "output.weight"));
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_LLADA, "model.transformer.blocks.31.ff_out.weight", b,
                               sizeof b) &&
          !strcmp(b, "blk.31.ffn_down.weight"));
    CHECK(lp_hf_canonical_name(LOPAD_ARCH_LLADA, "model.transformer.blocks.0.ff_proj.weight", b,
                               sizeof b) &&
          !strcmp(b, "blk.0.ffn_gate.weight"));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.0.self_attn.rotary_emb.inv_freq", b,
                                sizeof b));
    CHECK(
        !lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.01.mlp.up_proj.weight", b, sizeof b));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers..mlp.up_proj.weight", b, sizeof b));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.1234567.mlp.up_proj.weight", b,
                                sizeof b));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.transformer.wte.weight", b, sizeof b));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_LLADA, "model.embed_tokens.weight", b, sizeof b));
    CHECK(!lp_hf_canonical_name(LOPAD_ARCH_DREAM, "model.layers.1.mlp.up_proj.weight", b, 8));
    char mods[7][LP_HF_NAME_MAX];
    lp_hf_layer_linear_modules(LOPAD_ARCH_LLADA, 5, mods);
    CHECK(!strcmp(mods[3], "model.transformer.blocks.5.attn_out"));
    lp_hf_layer_linear_modules(LOPAD_ARCH_DREAM, 2, mods);
    CHECK(!strcmp(mods[4], "model.layers.2.mlp.gate_proj"));
}

/* the HF directories written by tools/ref/make_fixtures.py (transformers layout) */
static void test_ref_fixtures(void) {
    lopad_model *m = NULL;
    enum lopad_status st =
        lopad_model_load(LOPAD_SOURCE_DIR "/tests/fixtures/tiny-llada", NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (!st) {
        const struct lopad_hparams *hp = &m->hp;
        CHECK(hp->arch == LOPAD_ARCH_LLADA && hp->n_embd == 64 && hp->n_layer == 2);
        CHECK(hp->n_head == 4 && hp->n_head_kv == 4 && hp->head_dim == 16 && hp->n_ff == 128);
        CHECK(hp->n_vocab == 272 && hp->n_ctx_train == 512 && !hp->shift_logits);
        CHECK(hp->mask_id == 266 && hp->eos_id == 265 && hp->bos_id == 264 && hp->eot_id == 269);
        CHECK(m->chat_template && strstr(m->chat_template, "<|start_header_id|>"));
        CHECK(m->tok_embd.type == LOPAD_TYPE_F32 && m->output.data != m->tok_embd.data);
        lopad_model_free(m);
    }
    st = lopad_model_load(LOPAD_SOURCE_DIR "/tests/fixtures/tiny-dream", NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (!st) {
        const struct lopad_hparams *hp = &m->hp;
        CHECK(hp->arch == LOPAD_ARCH_DREAM && hp->n_head_kv == 2 && hp->shift_logits);
        CHECK(hp->has_qkv_bias && m->layers[1].bk != NULL);
        CHECK(hp->mask_id == 268 && hp->bos_id == 267 && hp->eos_id == 264);
        CHECK(hp->eot_id > 0); /* <|im_end|> */
        CHECK(m->tok_embd.type == LOPAD_TYPE_BF16 && m->chat_template != NULL);
        lopad_model_free(m);
    }
}

/* ------------------------------------------------------------ bad inputs */

static void expect_load_fail(const char *dir, enum lopad_status want, const char *frag1,
                             const char *frag2) {
    lopad_model *m = (lopad_model *)1;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == want, "%s: status %d (%s), want %d", dir, st, lopad_errmsg(), want);
    CHECK(m == NULL);
    if (frag1) CHECK_MSG(msg_has(frag1), "'%s' lacks '%s'", lopad_errmsg(), frag1);
    if (frag2) CHECK_MSG(msg_has(frag2), "'%s' lacks '%s'", lopad_errmsg(), frag2);
    if (st == LOPAD_OK) lopad_model_free(m);
}

static void test_bad_dirs(void) {
    char p[600];
    struct opts o = {.arch = LOPAD_ARCH_DREAM, .mat_type = LOPAD_TYPE_BF16, .sharded = true};
    const char *dir;

    /* missing shard */
    dir = make_model("bad_missing_shard", &o);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    unlink(p);
    expect_load_fail(dir, LOPAD_ERR_IO, "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json");

    /* a tensor in the index that its shard lacks */
    o.skip = "model.norm.weight"; /* not written, but listed below */
    dir = make_model("bad_index_tensor", &o);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p,
               "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "'model.norm.weight'", "model-00001-of-00002");
    o.skip = NULL;

    /* an index entry escaping the directory */
    dir = make_model("bad_index_path", &o);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"weight_map\": {\"lm_head.weight\": \"../x.safetensors\"}}");
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "../x.safetensors", "index");
    write_text(p, "{\"weight_map\": [1]}");
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "model.safetensors.index.json", "'weight_map'");

    o.sharded = false;
    /* config missing a field */
    o.config_override = "{\"model_type\": \"Dream\", \"num_hidden_layers\": 2}";
    dir = make_model("bad_cfg_field", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "config.json", "'hidden_size'");
    /* a field of the wrong kind */
    o.config_override = "{\"model_type\": \"llada\", \"d_model\": \"8\"}";
    dir = make_model("bad_cfg_kind", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "config.json", "'d_model'");
    /* unknown model type */
    o.config_override = "{\"model_type\": \"qwen2\", \"architectures\": [\"Qwen2ForCausalLM\"]}";
    dir = make_model("bad_type", &o);
    expect_load_fail(dir, LOPAD_ERR_UNSUPPORTED, "config.json", "'qwen2'");
    o.config_override = "{\"hidden_size\": 8}";
    dir = make_model("bad_no_type", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "config.json", "model_type");
    /* malformed JSON */
    o.config_override = "{\"model_type\": \"Dream\",\n \"hidden_size\": 8,,}";
    dir = make_model("bad_json", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "config.json", "line 2");
    /* unsupported configuration */
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s", dream_config(false));
    memcpy(strstr(cfg, "\"rope_scaling\": null"), "\"rope_scaling\": {}  ", 20);
    o.config_override = cfg;
    dir = make_model("bad_rope_scaling", &o);
    expect_load_fail(dir, LOPAD_ERR_UNSUPPORTED, "config.json", "rope_scaling");
    /* heads that do not divide the hidden size */
    snprintf(cfg, sizeof cfg, "%s", dream_config(false));
    memcpy(strstr(cfg, "\"num_attention_heads\": 2"), "\"num_attention_heads\": 3", 24);
    dir = make_model("bad_heads", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "config.json", "heads");
    /* special id outside the vocabulary */
    snprintf(cfg, sizeof cfg, "%s", dream_config(false));
    memcpy(strstr(cfg, "\"mask_token_id\": 15"), "\"mask_token_id\": 99", 19);
    dir = make_model("bad_mask_id", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "bad_mask_id", "special token");
    o.config_override = NULL;

    /* no config.json */
    dir = make_model("bad_no_config", &o);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    expect_load_fail(dir, LOPAD_ERR_IO, "config.json", NULL);
    /* no weights */
    dir = make_model("bad_no_weights", &o);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    expect_load_fail(dir, LOPAD_ERR_IO, "bad_no_weights", "model.safetensors");
    /* a required tensor missing (bind names the canonical name) */
    o.skip = "model.layers.1.mlp.up_proj.weight";
    dir = make_model("bad_missing_tensor", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "blk.1.ffn_up.weight", "bad_missing_tensor");
    o.skip = "lm_head.weight";
    dir = make_model("bad_no_head", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "lm_head.weight", "bad_no_head");
    o.skip = NULL;
    /* a wrong shape */
    o.wrong = "model.layers.0.self_attn.k_proj.weight";
    dir = make_model("bad_shape", &o);
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "blk.0.attn_k.weight", "expected");
    o.wrong = NULL;
    /* an unsupported dtype inside a shard */
    o.mat_type = -1;
    dir = make_model("bad_dtype", &o);
    expect_load_fail(dir, LOPAD_ERR_UNSUPPORTED, "I64", "model.safetensors");
    /* a corrupt tokenizer_config.json is reported, not ignored */
    o.mat_type = LOPAD_TYPE_BF16;
    dir = make_model("bad_tok_cfg", &o);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    write_text(p, "{\"chat_template\": ");
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "tokenizer_config.json", "malformed");
}

/* A FIFO (or other non-regular file) under any name the loader reads is
 * refused at once with an error naming it; open() must not block on it. */
static void test_special_files(void) {
    static const char *const names[] = {
        "config.json",         "generation_config.json", "tokenizer_config.json",
        "chat_template.jinja", "model.safetensors",      "model.safetensors.index.json",
    };
    struct opts o = {
        .arch = LOPAD_ARCH_DREAM, .mat_type = LOPAD_TYPE_BF16, .no_tokenizer_config = true};
    char p[600];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *dir = make_model("special", &o);
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
        CHECK(mkfifo(p, 0600) == 0);
        expect_load_fail(dir, LOPAD_ERR_IO, names[i], "FIFO");
        unlink(p);
        CHECK(mkdir(p, 0700) == 0);
        expect_load_fail(dir, LOPAD_ERR_IO, names[i], "directory");
        rmdir(p);
    }
    /* an adapter directory whose files are FIFOs */
    const char *dir = make_model("special", &o);
    snprintf(p, sizeof p, "%s/adapter", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/adapter/adapter_config.json", dir);
    CHECK(mkfifo(p, 0600) == 0);
    snprintf(p, sizeof p, "%s/adapter", dir);
    struct lopad_load_opts lo = {.lora_dir = p};
    lopad_model *m = NULL;
    CHECK(lopad_model_load(dir, &lo, &m) == LOPAD_ERR_IO && m == NULL);
    CHECK_MSG(msg_has("adapter_config.json") && msg_has("FIFO"), "%s", lopad_errmsg());
}

/* A safetensors file of n empty F32 tensors named printf(fmt, i). */
static void write_many_st(const char *path, int n, const char *fmt) {
    size_t cap = (size_t)n * 96 + 64, o = 1;
    char *h = malloc(cap);
    h[0] = '{';
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, fmt, i);
        o += (size_t)snprintf(h + o, cap - o,
                              "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                              i ? "," : "", name);
    }
    while ((o + 9) % 8) /* keep the data buffer aligned */
        h[o++] = ' ';
    h[o++] = '}';
    FILE *f = fopen(path, "wb");
    uint64_t hl = o;
    unsigned char le[8];
    for (int k = 0; k < 8; k++)
        le[k] = (unsigned char)(hl >> (8 * k));
    fwrite(le, 1, 8, f);
    fwrite(h, 1, o, f);
    fclose(f);
    free(h);
}

/* Headers listing ~10^5 tensors are handled in O(n log n): name checks,
 * index lookups and layer bounds never compare every name with every other
 * (the quadratic versions took minutes here). */
static void test_many_tensors(void) {
    enum { N = 100000 };
    struct opts o = {.arch = LOPAD_ARCH_DREAM, .mat_type = LOPAD_TYPE_BF16};
    char p[600];
    const char *dir = make_model("many", &o);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    /* tensors of layers the config does not have: refused at the first one */
    write_many_st(p, N, "model.layers.%d.mlp.up_proj.weight");
    double t0 = lp_time();
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "model.layers.2.mlp.up_proj.weight", "2 layers");
    double dt1 = lp_time() - t0;
    /* an index naming every tensor of a big shard (names lopad ignores) */
    write_many_st(p, N, "extra.%d.weight");
    size_t cap = (size_t)N * 64 + 64, n = 0;
    char *idx = malloc(cap);
    n += (size_t)snprintf(idx, cap, "{\"weight_map\": {");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(idx + n, cap - n, "%s\"extra.%d.weight\": \"model.safetensors\"",
                              i ? ", " : "", i);
    snprintf(idx + n, cap - n, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, idx);
    free(idx);
    t0 = lp_time();
    expect_load_fail(dir, LOPAD_ERR_FORMAT, "output head", NULL);
    double dt2 = lp_time() - t0;
    fprintf(stderr, "  %d tensors: layer bound %.2f s, index %.2f s\n", N, dt1, dt2);
    CHECK(dt1 < 60 && dt2 < 60); /* guards against the quadratic versions, not speed targets */
}

/* Every allocation failure during a sharded load returns NOMEM and leaks
 * nothing (run under ASan). */
static void test_alloc_failures(void) {
    struct opts o = {.arch = LOPAD_ARCH_DREAM, .mat_type = LOPAD_TYPE_BF16, .sharded = true};
    const char *dir = make_model("alloc", &o);
    int ok_at = -1;
    for (long k = 0; k < 2000; k++) {
        lopad_model *m = (lopad_model *)1;
        lp_alloc_fail_after(k);
        enum lopad_status st = lopad_model_load(dir, NULL, &m);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK) {
            ok_at = (int)k;
            lopad_model_free(m);
            break;
        }
        CHECK_MSG(st == LOPAD_ERR_NOMEM, "k=%ld: %d %s", k, st, lopad_errmsg());
        CHECK(m == NULL);
    }
    CHECK(ok_at > 10);
}

int main(void) {
    mkdir(TMP, 0755);
    TEST_RUN(test_canonical_names);
    TEST_RUN(test_dream_single_file);
    TEST_RUN(test_llada_sharded_tied);
    TEST_RUN(test_llada_untied_f32);
    TEST_RUN(test_ref_fixtures);
    TEST_RUN(test_bad_dirs);
    TEST_RUN(test_alloc_failures);
    alarm(120); /* a blocking open() must fail the test, not hang it */
    TEST_RUN(test_special_files);
    TEST_RUN(test_many_tensors);
    return test_report();
}
