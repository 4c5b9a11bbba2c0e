/*
 * lora.c - merge a PEFT LoRA adapter (adapter_config.json +
 * adapter_model.safetensors) into a loaded model once, at load time:
 *     W' = W + scale * B A,   A: [r, n_in], B: [n_out, r] (PyTorch order),
 *     scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
 * The sum is formed in f32 row by row and stored in a NEW buffer owned by the
 * model, in W's float type (F32 / F16 / BF16; quantised sources become F32);
 * the mapped file is never written.
 *
 * Only what D2F-style adapters use is accepted: plain LoRA on the linear
 * layers of the transformer blocks. DoRA, LoRA biases, per-module rank/alpha
 * patterns, modules_to_save and embedding LoRA are refused with a message
 * rather than merged wrongly.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <stddef.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "model.h"
#include "hf_names.h"
#include "../core/types.h"
#include "../formats/json.h"
#include "../formats/safetensors.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x))) return st;                                                                 \
    } while (0)

/* One linear layer of the model that an adapter may target. */
struct lora_module {
    char path[LP_HF_NAME_MAX]; /* HF module path, e.g. model.layers.3.self_attn.q_proj */
    int layer;                 /* -1 for the output head */
    int kind;                  /* 0..6: q k v o gate up down, 7: output head */
    struct lp_weight *w;
    bool targeted;
    const struct lp_tensor *a, *b;
    const char *a_name, *b_name;
    /* the merged matrix (owned by the model), applied once every module merged */
    const void *merged;
    int merged_type;
    size_t merged_rb;
};

/* |lora_alpha| above this is a broken config, not a training choice (PEFT
 * adapters use 1..a few hundred); the merged values are checked anyway. */
#define LORA_ALPHA_MAX 1e6

struct lora_cfg {
    int r;
    double alpha;
    bool rslora;
    const char **targets; /* list form */
    int n_targets;
    const char *target_regex; /* single-string form (PEFT: re.fullmatch) */
    bool all_linear;
    const char **excludes;
    int n_excludes;
    const char *exclude_regex;
    int *layers; /* layers_to_transform, NULL = all */
    int n_layers;
};

static void cfg_free(struct lora_cfg *c) {
    lp_free(c->targets);
    lp_free(c->excludes);
    lp_free(c->layers);
}

/* Names sorted for binary search (target / exclude lists, module paths): a
 * 1 MB config or a 1024-layer model must not cost lists x modules compares. */
struct sorted_names {
    struct named {
        const char *s;
        int i; /* index in the original list */
    } * e;
    int n;
};

static int cmp_named(const void *a, const void *b) {
    const struct named *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* names[i] for i < n, at byte offset `stride` apart (a list of pointers or an
 * array of structs holding a char array at offset 0) */
static enum lopad_status names_sort(const void *names, size_t stride, bool indirect, int n,
                                    struct sorted_names *out) {
    out->n = n;
    out->e = lp_malloc(sizeof *out->e * (size_t)(n > 0 ? n : 1), "sorted names");
    if (!out->e) return LOPAD_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const char *p = (const char *)names + (size_t)i * stride;
        out->e[i] = (struct named){indirect ? *(const char *const *)p : p, i};
    }
    qsort(out->e, (size_t)n, sizeof *out->e, cmp_named);
    return LOPAD_OK;
}

/* index in e of the first entry equal to s, or n */
static int names_find(const struct sorted_names *sn, const char *s) {
    int lo = 0, hi = sn->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(sn->e[mid].s, s) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sn->n && !strcmp(sn->e[lo].s, s) ? lo : sn->n;
}

/* PEFT's list matching: an entry matches a module path it equals or ends
 * ("." + entry). So look up each dot-suffix of the path; mark every entry
 * found in hit (when not NULL). */
static bool list_match(const struct sorted_names *sn, const char *path, bool *hit) {
    bool any = false;
    for (const char *p = path; p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        for (int j = names_find(sn, p); j < sn->n && !strcmp(sn->e[j].s, p); j++) {
            any = true;
            if (!hit) return true;
            hit[sn->e[j].i] = true;
        }
    }
    return any;
}

/* A compiled full-match regex (Python re.fullmatch semantics for plain
 * patterns). The pattern comes from a file, so every match is bounded: module
 * names are under LP_HF_NAME_MAX bytes and a sane pattern needs a few hundred
 * steps on one; a pathological one (nested quantifiers) stops at the limits
 * in milliseconds instead of PCRE2's default ten million steps. No JIT: it
 * would ignore the depth limit, and there are only a few hundred subjects. */
#define RX_MATCH_LIMIT 100000
#define RX_DEPTH_LIMIT 1000
#define RX_HEAP_LIMIT_KIB 4096
#define RX_MAX_PATTERN 4096 /* PEFT writes alternations of a few module names */

struct rx {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    const char *pat, *key; /* for messages */
};

static void rx_free(struct rx *r) {
    pcre2_match_context_free(r->mc);
    pcre2_match_data_free(r->md);
    pcre2_code_free(r->code);
    *r = (struct rx){0};
}

static enum lopad_status rx_compile(struct rx *r, const char *pat, const char *src,
                                    const char *key) {
    if (strlen(pat) > RX_MAX_PATTERN)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: key '%s': the regular expression is %zu bytes long (at most %d)", src,
                        key, strlen(pat), RX_MAX_PATTERN);
    size_t n = strlen(pat) + 16;
    char *full = lp_malloc(n, "regex");
    if (!full) return LOPAD_ERR_NOMEM;
    snprintf(full, n, "(?:%s)\\z", pat);
    int err;
    PCRE2_SIZE off;
    r->code = pcre2_compile((PCRE2_SPTR)full, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_UTF,
                            &err, &off, NULL);
    lp_free(full);
    if (!r->code) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s': bad regular expression \"%s\": %s", src,
                        key, pat, (const char *)msg);
    }
    r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
    r->mc = pcre2_match_context_create(NULL);
    if (!r->md || !r->mc) {
        rx_free(r);
        return lp_error(LOPAD_ERR_NOMEM, "out of memory for a regex match");
    }
    pcre2_set_match_limit(r->mc, RX_MATCH_LIMIT);
    pcre2_set_depth_limit(r->mc, RX_DEPTH_LIMIT);
    pcre2_set_heap_limit(r->mc, RX_HEAP_LIMIT_KIB);
    r->pat = pat;
    r->key = key;
    return LOPAD_OK;
}

/* *hit = whether pattern r matches all of module name s; a match that runs
 * into a limit (or any other PCRE2 error) is an error, not "no match". */
static enum lopad_status rx_full(struct rx *r, const char *s, const char *src, bool *hit) {
    int rc = pcre2_match(r->code, (PCRE2_SPTR)s, strlen(s), 0, 0, r->md, r->mc);
    *hit = rc >= 0;
    if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH) return LOPAD_OK;
    const char *what = rc == PCRE2_ERROR_MATCHLIMIT   ? "match limit"
                       : rc == PCRE2_ERROR_DEPTHLIMIT ? "depth limit"
                       : rc == PCRE2_ERROR_HEAPLIMIT  ? "memory limit"
                                                      : NULL;
    if (what)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: %s regex '%s' exceeded the %s on module '%s' (simplify the pattern: "
                        "nested repeats backtrack exponentially)",
                        src, r->key, r->pat, what, s);
    PCRE2_UCHAR msg[128];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return lp_error(LOPAD_ERR_FORMAT, "%s: %s regex '%s' failed on module '%s': %s", src, r->key,
                    r->pat, s, (const char *)msg);
}

/* absent, null, {} or [] */
static bool empty_value(const cJSON *cfg, const char *key) {
    const cJSON *it = lp_json_item(cfg, key);
    if (!it || cJSON_IsNull(it)) return true;
    if (cJSON_IsFalse(it)) return true;
    if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && cJSON_GetArraySize(it) == 0) return true;
    return false;
}

static enum lopad_status read_config(const cJSON *c, const char *src, struct lora_cfg *lc) {
    enum lopad_status st;
    const char *s;
    bool b;
    TRY(lp_json_opt_string(c, "peft_type", "LORA", src, &s));
    if (strcmp(s, "LORA") != 0)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: peft_type '%s' is not supported (only LORA)",
                        src, s);
    TRY(lp_json_opt_bool(c, "use_dora", false, src, &b));
    if (b)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: DoRA adapters (use_dora true) are not supported; merge them into the "
                        "model with PEFT first",
                        src);
    TRY(lp_json_opt_string(c, "bias", "none", src, &s));
    if (strcmp(s, "none") != 0)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: bias '%s' is not supported (only \"none\")",
                        src, s);
    TRY(lp_json_opt_bool(c, "fan_in_fan_out", false, src, &b));
    if (b) return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: fan_in_fan_out true is not supported", src);
    static const char *refused[] = {"rank_pattern",           "alpha_pattern", "modules_to_save",
                                    "layer_replication",      "lora_bias",     "target_parameters",
                                    "trainable_token_indices"};
    for (unsigned i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!empty_value(c, refused[i]))
            return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: '%s' is set; lopad merges plain LoRA only",
                            src, refused[i]);
    TRY(lp_json_get_int(c, "r", 1, 1 << 16, src, &lc->r));
    TRY(lp_json_get_double(c, "lora_alpha", src, &lc->alpha));
    if (fabs(lc->alpha) > LORA_ALPHA_MAX)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key 'lora_alpha' is %g; it must be in [-%g, %g]",
                        src, lc->alpha, LORA_ALPHA_MAX, LORA_ALPHA_MAX);
    TRY(lp_json_opt_bool(c, "use_rslora", false, src, &lc->rslora));

    if (lp_json_absent(c, "target_modules"))
        return lp_error(LOPAD_ERR_FORMAT, "%s: missing key 'target_modules'", src);
    const cJSON *tm = lp_json_item(c, "target_modules");
    if (cJSON_IsString(tm)) {
        if (!strcmp(tm->valuestring, "all-linear"))
            lc->all_linear = true;
        else
            lc->target_regex = tm->valuestring;
    } else {
        TRY(lp_json_get_strings(c, "target_modules", false, src, &lc->targets, &lc->n_targets));
        if (lc->n_targets == 0)
            return lp_error(LOPAD_ERR_FORMAT, "%s: 'target_modules' is empty", src);
    }
    const cJSON *ex = lp_json_item(c, "exclude_modules");
    if (cJSON_IsString(ex))
        lc->exclude_regex = ex->valuestring;
    else
        TRY(lp_json_opt_strings(c, "exclude_modules", false, src, &lc->excludes, &lc->n_excludes));

    const cJSON *lt = lp_json_item(c, "layers_to_transform");
    if (lt && !cJSON_IsNull(lt)) {
        int n = cJSON_IsArray(lt) ? cJSON_GetArraySize(lt) : 1;
        lc->layers = lp_malloc(sizeof(int) * (size_t)(n ? n : 1), "layers_to_transform");
        if (!lc->layers) return LOPAD_ERR_NOMEM;
        const cJSON *e = cJSON_IsArray(lt) ? lt->child : lt;
        for (int i = 0; i < n; i++, e = e->next) {
            int64_t v;
            TRY(lp_json_as_i64(e, 0, 1 << 20, src, "layers_to_transform", &v));
            lc->layers[i] = (int)v;
        }
        lc->n_layers = n;
    }
    return LOPAD_OK;
}

/* llama.cpp's LLaDA GGUF stores q/k rows permuted for interleaved RoPE: in
 * each head, stored row 2i+j came from HF row j*(hd/2)+i. B's rows must follow. */
static int64_t hf_row_of(const struct lopad_hparams *hp, int kind, int64_t row) {
    if (hp->rope != LOPAD_ROPE_NORM || kind > 1) return row;
    int64_t hd = hp->head_dim, h = row / hd, k = row % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

/* W' = W + scale * B A into a new owned buffer (mod->merged); w unchanged. */
static enum lopad_status merge_one(struct lopad_model *m, struct lora_module *mod, int r,
                                   float scale) {
    struct lp_weight *w = mod->w;
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const struct lp_type_traits *src_tr = lp_type_traits(w->type);
    if (!src_tr || !src_tr->to_float)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: cannot merge LoRA into type %s", w->name,
                        lp_type_name(w->type));
    int out_type =
        (w->type == LOPAD_TYPE_F16 || w->type == LOPAD_TYPE_BF16) ? w->type : LOPAD_TYPE_F32;
    const struct lp_type_traits *out_tr = lp_type_traits(out_type);
    size_t out_rb = lp_row_size(out_type, n_in);
    uint64_t bytes;
    if (!out_tr || !out_tr->from_float || out_rb == 0 ||
        !lp_mul_ok(out_rb, (uint64_t)n_out, &bytes))
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: cannot store a merged %s matrix", w->name,
                        lp_type_name(out_type));
    float *A = lp_malloc(sizeof(float) * (size_t)r * (size_t)n_in, "LoRA A");
    float *B = lp_malloc(sizeof(float) * (size_t)r * (size_t)n_out, "LoRA B");
    float *row = lp_malloc(sizeof(float) * (size_t)n_in, "LoRA row");
    uint8_t *dst = lp_malloc((size_t)bytes, "merged LoRA weight");
    if (!A || !B || !row || !dst) {
        lp_free(A);
        lp_free(B);
        lp_free(row);
        lp_free(dst);
        return LOPAD_ERR_NOMEM;
    }
    lp_type_traits(mod->a->type)->to_float(mod->a->data, A, (int64_t)r * n_in);
    lp_type_traits(mod->b->type)->to_float(mod->b->data, B, (int64_t)r * n_out);
    const uint8_t *src = w->data;
    for (int64_t o = 0; o < n_out; o++) {
        src_tr->to_float(src + o * w->row_bytes, row, n_in);
        const float *b = B + hf_row_of(&m->hp, mod->kind, o) * r;
        for (int k = 0; k < r; k++) {
            const float c = scale * b[k];
            const float *restrict a = A + (size_t)k * n_in;
            float *restrict y = row;
            for (int64_t j = 0; j < n_in; j++)
                y[j] += c * a[j];
        }
        out_tr->from_float(row, dst + o * out_rb, n_in);
        /* checked after storing: a finite f32 sum can still overflow F16 */
        int64_t j = lp_find_nonfinite(out_type, dst + o * out_rb, n_in);
        if (j >= 0) {
            lp_free(dst);
            dst = NULL;
            lp_error(LOPAD_ERR_FORMAT,
                     "%s: merging the LoRA adapter into tensor '%s' gives a non-finite value (NaN "
                     "or inf) at row %lld, column %lld (scale %g = lora_alpha / r); check "
                     "lora_alpha and the adapter's weights",
                     mod->a_name, w->name, (long long)o, (long long)j, (double)scale);
            break;
        }
    }
    lp_free(A);
    lp_free(B);
    lp_free(row);
    if (!dst) return LOPAD_ERR_FORMAT;
    if (!lp_model_own(m, dst, (size_t)bytes, false)) return LOPAD_ERR_NOMEM;
    mod->merged = dst;
    mod->merged_type = out_type;
    mod->merged_rb = out_rb;
    return LOPAD_OK;
}

/* Point the module's weight at its merged matrix. */
static void apply_merged(struct lopad_model *m, struct lora_module *mod) {
    struct lp_weight *w = mod->w;
    /* a tied head was not counted by bind: it only adds its new matrix */
    bool tied = w == &m->output && w->data == m->tok_embd.data;
    if (!tied && w->type >= 0 && w->type < 64 && m->type_count[w->type] > 0)
        m->type_count[w->type]--;
    m->type_count[mod->merged_type]++;
    w->type = mod->merged_type;
    w->row_bytes = mod->merged_rb;
    w->data = mod->merged;
}

/* "base_model.model.<module>.lora_{A,B}.weight" -> module and which half */
static bool split_adapter_name(const char *name, char *module, size_t size, int *half) {
    static const char prefix[] = "base_model.model.";
    static const char *suffix[2] = {".lora_A.weight", ".lora_B.weight"};
    size_t pl = sizeof prefix - 1, n = strlen(name);
    if (strncmp(name, prefix, pl) != 0) return false;
    for (int h = 0; h < 2; h++) {
        size_t sl = strlen(suffix[h]);
        if (n > pl + sl && !strcmp(name + n - sl, suffix[h]) && n - pl - sl < size) {
            memcpy(module, name + pl, n - pl - sl);
            module[n - pl - sl] = 0;
            *half = h;
            return true;
        }
    }
    return false;
}

static enum lopad_status check_shape(const struct lp_tensor *t, const char *name, int64_t d0,
                                     int64_t d1, const char *src) {
    /* d0, d1 in PyTorch order */
    if (t->n_dims != 2 || t->ne[1] != d0 || t->ne[0] != d1)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' has shape [%lld, %lld] (%d dims), expected [%lld, %lld]",
                        src, name, (long long)t->ne[1], (long long)t->ne[0], t->n_dims,
                        (long long)d0, (long long)d1);
    return LOPAD_OK;
}

/* Mark the modules that target_modules / exclude_modules / layers_to_transform
 * select (tre, xre: the compiled regexes, or code NULL; layer_on: the layers
 * layers_to_transform names, or NULL for all); target_hit[k]: list entry k
 * matched some module. */
static enum lopad_status select_modules(const struct lora_cfg *lc, const char *cfg_path,
                                        struct rx *tre, struct rx *xre, struct lora_module *mods,
                                        int n_mods, const bool *layer_on, bool *target_hit) {
    enum lopad_status st;
    struct sorted_names tl = {0}, xl = {0};
    if ((st = names_sort(lc->targets, sizeof *lc->targets, true, lc->n_targets, &tl)) ||
        (st = names_sort(lc->excludes, sizeof *lc->excludes, true, lc->n_excludes, &xl)))
        goto done;
    for (int i = 0; i < n_mods; i++) {
        struct lora_module *md = &mods[i];
        bool t = lc->all_linear && md->kind < 7; /* PEFT's all-linear skips the output head */
        if (tre->code && (st = rx_full(tre, md->path, cfg_path, &t))) goto done;
        t |= list_match(&tl, md->path, target_hit);
        bool x = false;
        if (xre->code && (st = rx_full(xre, md->path, cfg_path, &x))) goto done;
        x |= list_match(&xl, md->path, NULL);
        bool in_layers = !layer_on || (md->layer >= 0 && layer_on[md->layer]);
        md->targeted = t && !x && in_layers;
    }
done:
    lp_free(tl.e);
    lp_free(xl.e);
    return st;
}

/* Attach adapter tensor t to its module, found by path in by_path. */
static enum lopad_status pair_one(const char *cfg_path, const struct lp_st_file *ad,
                                  const struct lp_tensor *t, const struct sorted_names *by_path,
                                  struct lora_module *mods) {
    char module[256];
    int half;
    if (strstr(t->name, "lora_magnitude_vector"))
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: tensor '%s' is a DoRA magnitude; DoRA is not supported", ad->path,
                        t->name);
    if (strstr(t->name, "lora_embedding_"))
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: tensor '%s': LoRA on embeddings is not supported", ad->path, t->name);
    if (!split_adapter_name(t->name, module, sizeof module, &half))
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: unexpected tensor '%s' (want base_model.model.<module>."
                        "lora_A.weight / lora_B.weight)",
                        ad->path, t->name);
    int k = names_find(by_path, module);
    if (k == by_path->n)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' is for module '%s', which is not a linear layer of "
                        "this model",
                        ad->path, t->name, module);
    struct lora_module *md = &mods[by_path->e[k].i];
    if (!md->targeted)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' is for module '%s', which %s does not target", ad->path,
                        t->name, module, cfg_path);
    if (half == 0) {
        md->a = t;
        md->a_name = t->name;
    } else {
        md->b = t;
        md->b_name = t->name;
    }
    return LOPAD_OK;
}

/* Pair every adapter tensor with its module (through a path-sorted index). */
static enum lopad_status pair_tensors(const char *cfg_path, const struct lp_st_file *ad,
                                      struct lora_module *mods, int n_mods) {
    struct sorted_names by_path;
    enum lopad_status st = names_sort((const char *)mods + offsetof(struct lora_module, path),
                                      sizeof *mods, false, n_mods, &by_path);
    for (int i = 0; !st && i < ad->n; i++)
        st = pair_one(cfg_path, ad, &ad->t[i], &by_path, mods);
    lp_free(by_path.e);
    return st;
}

/* Mark the modules the config selects; errors for a listed target that
 * matches nothing and for an empty selection. */
static enum lopad_status choose_modules(const struct lopad_model *m, const struct lora_cfg *lc,
                                        const char *cfg_path, struct lora_module *mods,
                                        int n_mods) {
    enum lopad_status st;
    for (int k = 0; k < lc->n_layers; k++)
        if (lc->layers[k] >= m->hp.n_layer)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: key 'layers_to_transform' names layer %d; the model has %d layers",
                            cfg_path, lc->layers[k], m->hp.n_layer);
    struct rx tre = {0}, xre = {0};
    if (lc->target_regex && (st = rx_compile(&tre, lc->target_regex, cfg_path, "target_modules")))
        return st;
    if (lc->exclude_regex &&
        (st = rx_compile(&xre, lc->exclude_regex, cfg_path, "exclude_modules"))) {
        rx_free(&tre);
        return st;
    }
    /* which modules target_modules selects */
    bool *hit = lp_calloc((size_t)LP_MAX(lc->n_targets, 1), sizeof *hit, "LoRA target hits");
    bool *layer_on =
        lc->layers ? lp_calloc((size_t)m->hp.n_layer, sizeof *layer_on, "LoRA layers") : NULL;
    if (!hit || (lc->layers && !layer_on)) {
        st = LOPAD_ERR_NOMEM;
    } else {
        for (int k = 0; k < lc->n_layers; k++)
            layer_on[lc->layers[k]] = true;
        st = select_modules(lc, cfg_path, &tre, &xre, mods, n_mods, layer_on, hit);
    }
    lp_free(layer_on);
    rx_free(&tre);
    rx_free(&xre);
    /* every listed target must name something in the model */
    for (int k = 0; k < lc->n_targets && !st; k++)
        if (!hit[k])
            st = lp_error(LOPAD_ERR_FORMAT,
                          "%s: target module '%s' matches no linear layer of the model (%s)",
                          cfg_path, lc->targets[k], m->path ? m->path : "?");
    lp_free(hit);
    if (st) return st;
    bool any = false;
    for (int i = 0; i < n_mods; i++)
        any |= mods[i].targeted;
    if (!any)
        return lp_error(LOPAD_ERR_FORMAT, "%s: target_modules select no linear layer of the model",
                        cfg_path);
    return LOPAD_OK;
}

static enum lopad_status merge(struct lopad_model *m, const struct lora_cfg *lc,
                               const char *cfg_path, struct lp_st_file *ad,
                               struct lora_module *mods, int n_mods) {
    enum lopad_status st;
    TRY(choose_modules(m, lc, cfg_path, mods, n_mods));
    TRY(pair_tensors(cfg_path, ad, mods, n_mods));
    /* check everything before touching the model */
    for (int i = 0; i < n_mods; i++) {
        struct lora_module *md = &mods[i];
        if (!md->targeted) continue;
        if (!md->a && !md->b)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: module '%s' is in target_modules but has no lora_A/lora_B tensors",
                            ad->path, md->path);
        if (!md->a || !md->b)
            return lp_error(LOPAD_ERR_FORMAT, "%s: module '%s' has %s but no %s", ad->path,
                            md->path, md->a ? "lora_A" : "lora_B", md->a ? "lora_B" : "lora_A");
        if (lc->r > LP_MIN(md->w->n_in, md->w->n_out))
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: key 'r' is %d, larger than module '%s' ([%lld, %lld]) allows",
                            cfg_path, lc->r, md->path, (long long)md->w->n_out,
                            (long long)md->w->n_in);
        TRY(check_shape(md->a, md->a_name, lc->r, md->w->n_in, ad->path));
        TRY(check_shape(md->b, md->b_name, md->w->n_out, lc->r, ad->path));
    }
    float scale = (float)(lc->rslora ? lc->alpha / sqrt((double)lc->r) : lc->alpha / lc->r);
    /* all merged (and checked finite) before any weight changes */
    for (int i = 0; i < n_mods; i++)
        if (mods[i].targeted) TRY(merge_one(m, &mods[i], lc->r, scale));
    for (int i = 0; i < n_mods; i++)
        if (mods[i].targeted) apply_merged(m, &mods[i]);
    return LOPAD_OK;
}

enum lopad_status lp_lora_merge(struct lopad_model *m, const char *adapter_dir) {
    enum lopad_status st;
    char cfg_path[4096], st_path[4096];
    if ((size_t)snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", adapter_dir) >=
            sizeof cfg_path ||
        (size_t)snprintf(st_path, sizeof st_path, "%s/adapter_model.safetensors", adapter_dir) >=
            sizeof st_path)
        return lp_error(LOPAD_ERR_ARG, "%s: adapter path too long", adapter_dir);
    if (m->lora_path)
        return lp_error(LOPAD_ERR_ARG, "%s: an adapter (%s) is already merged", adapter_dir,
                        m->lora_path);
    cJSON *cfg;
    TRY(lp_json_read_file(cfg_path, 1 << 20, &cfg));
    struct lora_cfg lc = {0};
    struct lp_st_file *ad = NULL;
    struct lora_module *mods = NULL;
    st = read_config(cfg, cfg_path, &lc);
    if (st) goto done;
    struct stat sb;
    if (stat(st_path, &sb) != 0) {
        char bin[4200];
        snprintf(bin, sizeof bin, "%s/adapter_model.bin", adapter_dir);
        if (stat(bin, &sb) == 0)
            st =
                lp_error(LOPAD_ERR_UNSUPPORTED,
                         "%s: pickled adapters are not read; save the adapter as safetensors", bin);
        else
            st = lp_error(LOPAD_ERR_IO, "%s: adapter weights not found", st_path);
        goto done;
    }
    if ((st = lp_st_open(st_path, &ad))) goto done;

    /* the linear layers of every block, then the output head (PEFT matches
     * "ff_out" / "lm_head" against it too) */
    int n_mods = m->hp.n_layer * 7 + 1;
    mods = lp_calloc((size_t)n_mods, sizeof *mods, "LoRA modules");
    if (!mods) {
        st = LOPAD_ERR_NOMEM;
        goto done;
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        char paths[7][LP_HF_NAME_MAX];
        lp_hf_layer_linear_modules(m->hp.arch, il, paths);
        struct lp_layer *L = &m->layers[il];
        struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (int k = 0; k < LP_N_LAYER_MATRICES; k++) {
            struct lora_module *md = &mods[il * 7 + k];
            memcpy(md->path, paths[k], LP_HF_NAME_MAX);
            md->layer = il;
            md->kind = k;
            md->w = ws[k];
        }
    }
    struct lora_module *head = &mods[n_mods - 1];
    snprintf(head->path, sizeof head->path, "%s",
             m->hp.arch == LOPAD_ARCH_LLADA ? "model.transformer.ff_out" : "lm_head");
    head->layer = -1;
    head->kind = 7;
    head->w = &m->output; /* a tied head gets its own merged copy; the embedding stays */
    st = merge(m, &lc, cfg_path, ad, mods, n_mods);
    if (!st && !(m->lora_path = lp_strdup(adapter_dir, "adapter path"))) st = LOPAD_ERR_NOMEM;
done:
    lp_free(mods);
    lp_st_close(ad);
    cfg_free(&lc);
    cJSON_Delete(cfg);
    return st;
}
