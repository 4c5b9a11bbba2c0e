/*
 * tok_load.c - build a byte-level BPE tokenizer from a Hugging Face
 * tokenizer.json (+ tokenizer_config.json) or from the tokenizer.ggml.* keys of
 * a GGUF file. Both paths end in the same tables (tok_internal.h), so encoding
 * does not depend on where the tokenizer came from.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tok_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "../formats/gguf.h"
#include "../formats/json.h"

/* ------------------------------------------------------------ shared bits */

/* Decode a byte-level alphabet string into t's scratch and look it up. */
static int32_t lookup_bytelevel(const struct lp_tokenizer *t, const char *s, size_t len,
                                char *buf) {
    size_t n = lp_bytelevel_decode(s, len, buf);
    return lp_tok_lookup(t, buf, n);
}

/* Add merge "a b" / (a, b) given as byte-level strings. */
static enum lopad_status add_merge(struct lp_tokenizer *t, const char *a, size_t la, const char *b,
                                   size_t lb, char *buf, size_t idx, const char *source) {
    int32_t ia = lookup_bytelevel(t, a, la, buf);
    int32_t ib = lookup_bytelevel(t, b, lb, buf);
    size_t na = lp_bytelevel_decode(a, la, buf);
    size_t nb = lp_bytelevel_decode(b, lb, buf + na);
    int32_t im = lp_tok_lookup(t, buf, na + nb);
    if (ia < 0 || ib < 0 || im < 0)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: merge %zu ('%.*s' '%.*s'): %s is not in the vocabulary", source, idx,
                        (int)LP_MIN(la, 64), a, (int)LP_MIN(lb, 64), b,
                        ia < 0   ? "the left part"
                        : ib < 0 ? "the right part"
                                 : "the merged token");
    lp_tok_merge_add(t, ia, ib, im);
    return LOPAD_OK;
}

/* Split "a b" at its single space. */
static bool split_merge(const char *s, size_t len, size_t *la, const char **b, size_t *lb) {
    const char *sp = memchr(s, ' ', len);
    if (!sp || sp == s || sp + 1 == s + len) return false;
    if (memchr(sp + 1, ' ', (size_t)(s + len - sp - 1))) return false;
    *la = (size_t)(sp - s);
    *b = sp + 1;
    *lb = len - *la - 1;
    return true;
}

/* ------------------------------------------------------------ Hugging Face */

static enum lopad_status parse_pre(struct lp_tokenizer *t, const cJSON *p, const char *src,
                                   int depth) {
    if (!p || cJSON_IsNull(p)) return LOPAD_OK;
    if (depth > 8) return lp_error(LOPAD_ERR_FORMAT, "%s: pre_tokenizer nested too deeply", src);
    const char *type;
    enum lopad_status st = lp_json_get_string(p, "type", src, &type);
    if (st) return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list;
        if ((st = lp_json_get_item(p, "pretokenizers", cJSON_Array, src, &list))) return st;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) if ((st = parse_pre(t, e, src, depth + 1))) return st;
        return LOPAD_OK;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat;
        if ((st = lp_json_get_item(p, "pattern", cJSON_Object, src, &pat))) return st;
        const char *behavior, *re = NULL, *lit = NULL;
        bool invert;
        if ((st = lp_json_get_string(p, "behavior", src, &behavior))) return st;
        if ((st = lp_json_opt_bool(p, "invert", false, src, &invert))) return st;
        if ((st = lp_json_opt_string(pat, "Regex", NULL, src, &re))) return st;
        if ((st = lp_json_opt_string(pat, "String", NULL, src, &lit))) return st;
        if (strcmp(behavior, "Isolated") || invert)
            return lp_error(LOPAD_ERR_UNSUPPORTED,
                            "%s: pre_tokenizer Split with behavior '%s'%s is not supported (only "
                            "Isolated, not inverted)",
                            src, behavior, invert ? " and invert" : "");
        if (re) return lp_tok_add_pattern(t, re);
        if (!lit) return lp_error(LOPAD_ERR_FORMAT, "%s: pre_tokenizer Split has no pattern", src);
        /* a literal: quote every character */
        size_t n = strlen(lit);
        char *q = lp_malloc(2 * n + 1, "split pattern");
        if (!q) return LOPAD_ERR_NOMEM;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (strchr("\\^$.|?*+()[]{}", lit[i])) q[o++] = '\\';
            q[o++] = lit[i];
        }
        q[o] = 0;
        st = lp_tok_add_pattern(t, q);
        lp_free(q);
        return st;
    }
    if (!strcmp(type, "ByteLevel")) {
        bool prefix, use_regex;
        if ((st = lp_json_opt_bool(p, "add_prefix_space", false, src, &prefix))) return st;
        if ((st = lp_json_opt_bool(p, "use_regex", true, src, &use_regex))) return st;
        if (prefix)
            return lp_error(LOPAD_ERR_UNSUPPORTED,
                            "%s: pre_tokenizer ByteLevel with add_prefix_space is not supported",
                            src);
        return use_regex ? lp_tok_add_pattern(t, LP_PAT_GPT2) : LOPAD_OK;
    }
    return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", src,
                    type);
}

static enum lopad_status parse_normalizer(struct lp_tokenizer *t, const cJSON *n, const char *src,
                                          int depth) {
    if (!n || cJSON_IsNull(n)) return LOPAD_OK;
    if (depth > 8) return lp_error(LOPAD_ERR_FORMAT, "%s: normalizer nested too deeply", src);
    const char *type;
    enum lopad_status st = lp_json_get_string(n, "type", src, &type);
    if (st) return st;
    if (!strcmp(type, "NFC")) {
        t->nfc = true;
        return LOPAD_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const cJSON *list;
        if ((st = lp_json_get_item(n, "normalizers", cJSON_Array, src, &list))) return st;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) if ((st = parse_normalizer(t, e, src, depth + 1))) return st;
        return LOPAD_OK;
    }
    return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", src, type);
}

/* An added token object {id, content, special} (tokenizer.json added_tokens or
 * an added_tokens_decoder value whose key gives the id). */
static enum lopad_status add_token_obj(struct lp_tokenizer *t, const cJSON *o, int64_t id,
                                       bool only_new, const char *src) {
    const char *content;
    bool special;
    enum lopad_status st;
    if (id < 0 && (st = lp_json_get_i64(o, "id", 0, LP_TOK_MAX_ID - 1, src, &id))) return st;
    if ((st = lp_json_get_string(o, "content", src, &content))) return st;
    if ((st = lp_json_opt_bool(o, "special", false, src, &special))) return st;
    if (only_new && id < t->n_vocab && t->kind[id] >= LP_TOK_ADDED) return LOPAD_OK;
    return lp_tok_set(t, (int32_t)id, content, strlen(content),
                      special ? LP_TOK_SPECIAL : LP_TOK_ADDED);
}

/* bos_token etc.: a string or {"content": ...}; NULL when absent. */
static const char *token_name(const cJSON *cfg, const char *key) {
    const cJSON *v = lp_json_item(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = lp_json_item(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static enum lopad_status read_config(struct lp_tokenizer *t, const cJSON *cfg, const char *src) {
    enum lopad_status st;
    const cJSON *dec = lp_json_item(cfg, "added_tokens_decoder");
    if (cJSON_IsObject(dec)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, dec) {
            char *end;
            long id = strtol(e->string, &end, 10);
            if (*end || end == e->string || id < 0 || id >= LP_TOK_MAX_ID)
                return lp_error(LOPAD_ERR_FORMAT,
                                "%s: added_tokens_decoder key '%s' is not a token id", src,
                                e->string);
            if ((st = add_token_obj(t, e, id, true, src))) return st;
        }
    }
    const cJSON *tpl = lp_json_item(cfg, "chat_template");
    const char *s = NULL;
    if (cJSON_IsString(tpl)) {
        s = tpl->valuestring;
    } else if (cJSON_IsArray(tpl)) { /* [{name, template}, ...]: "default", else the first */
        const cJSON *e;
        cJSON_ArrayForEach(e, tpl) {
            const cJSON *name = lp_json_item(e, "name"), *body = lp_json_item(e, "template");
            if (!cJSON_IsString(body)) continue;
            if (!s || (cJSON_IsString(name) && !strcmp(name->valuestring, "default")))
                s = body->valuestring;
        }
    }
    if (s && !(t->chat_template = lp_strdup(s, "chat template"))) return LOPAD_ERR_NOMEM;
    return LOPAD_OK;
}

static void resolve_named_ids(struct lp_tokenizer *t, const cJSON *cfg) {
    const char *n;
    if ((n = token_name(cfg, "bos_token"))) t->bos_id = lp_tokenizer_find(t, n);
    if ((n = token_name(cfg, "eos_token"))) t->eos_id = lp_tokenizer_find(t, n);
    if ((n = token_name(cfg, "pad_token"))) t->pad_id = lp_tokenizer_find(t, n);
}

static enum lopad_status load_hf(struct lp_tokenizer *t, const cJSON *root, const cJSON *cfg,
                                 const char *src, const char *cfg_src) {
    enum lopad_status st;
    const cJSON *model, *vocab, *merges;
    if ((st = lp_json_get_item(root, "model", cJSON_Object, src, &model))) return st;
    const char *type;
    if ((st = lp_json_opt_string(model, "type", "BPE", src, &type))) return st;
    if (strcmp(type, "BPE"))
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)",
                        src, type);
    const char *csp = NULL, *eow = NULL;
    bool byte_fallback;
    if ((st = lp_json_opt_string(model, "continuing_subword_prefix", NULL, src, &csp))) return st;
    if ((st = lp_json_opt_string(model, "end_of_word_suffix", NULL, src, &eow))) return st;
    if ((st = lp_json_opt_bool(model, "byte_fallback", false, src, &byte_fallback))) return st;
    if ((csp && *csp) || (eow && *eow) || byte_fallback)
        return lp_error(
            LOPAD_ERR_UNSUPPORTED,
            "%s: BPE with continuing_subword_prefix / end_of_word_suffix / byte_fallback "
            "is not supported (byte-level BPE only)",
            src);
    if ((st = lp_json_opt_bool(model, "ignore_merges", false, src, &t->ignore_merges))) return st;
    if ((st = lp_json_get_item(model, "vocab", cJSON_Object, src, &vocab))) return st;
    if ((st = lp_json_get_item(model, "merges", cJSON_Array, src, &merges))) return st;

    /* bound ids by what the files list (see LP_TOK_ID_SLACK) */
    int64_t entries = cJSON_GetArraySize(vocab) +
                      cJSON_GetArraySize(lp_json_item(root, "added_tokens")) +
                      cJSON_GetArraySize(lp_json_item(cfg, "added_tokens_decoder"));
    t->id_limit = (int32_t)LP_MIN(entries + LP_TOK_ID_SLACK, (int64_t)LP_TOK_MAX_ID);
    size_t maxlen = 16;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) maxlen = LP_MAX(maxlen, strlen(e->string) + 1);
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e))
            maxlen = LP_MAX(maxlen, strlen(e->valuestring) + 1);
        else if (cJSON_IsArray(e))
            for (const cJSON *x = e->child; x; x = x->next)
                if (cJSON_IsString(x)) maxlen = LP_MAX(maxlen, 2 * strlen(x->valuestring) + 1);
    }
    char *buf = lp_malloc(2 * maxlen, "tokenizer scratch");
    if (!buf) return LOPAD_ERR_NOMEM;

    cJSON_ArrayForEach(e, vocab) {
        int64_t id;
        if ((st = lp_json_as_i64(e, 0, LP_TOK_MAX_ID - 1, src, e->string, &id))) goto out;
        size_t n = lp_bytelevel_decode(e->string, strlen(e->string), buf);
        if ((st = lp_tok_set(t, (int32_t)id, buf, n, LP_TOK_NORMAL))) goto out;
    }
    const cJSON *added = lp_json_item(root, "added_tokens");
    if (added && !cJSON_IsNull(added)) {
        if (!cJSON_IsArray(added)) {
            st = lp_error(LOPAD_ERR_FORMAT, "%s: added_tokens is not an array", src);
            goto out;
        }
        cJSON_ArrayForEach(e, added) if ((st = add_token_obj(t, e, -1, false, src))) goto out;
    }
    if (cfg && (st = read_config(t, cfg, cfg_src))) goto out;
    if ((st = lp_tok_index_vocab(t))) goto out;

    if ((st = lp_tok_merges_reserve(t, (size_t)cJSON_GetArraySize(merges)))) goto out;
    size_t idx = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
            if (!split_merge(a, strlen(a), &la, &b, &lb)) {
                st = lp_error(LOPAD_ERR_FORMAT, "%s: merge %zu ('%.64s') is not two tokens", src,
                              idx, a);
                goto out;
            }
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            b = e->child->next->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            st =
                lp_error(LOPAD_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [a, b]", src, idx);
            goto out;
        }
        if ((st = add_merge(t, a, la, b, lb, buf, idx, src))) goto out;
        idx++;
    }
    const char *unk = NULL;
    if ((st = lp_json_opt_string(model, "unk_token", NULL, src, &unk))) goto out;
    if ((st = parse_normalizer(t, lp_json_item(root, "normalizer"), src, 0))) goto out;
    if ((st = parse_pre(t, lp_json_item(root, "pre_tokenizer"), src, 0))) goto out;
    if ((st = lp_tok_finish(t))) goto out;
    if (unk) t->unk_id = lp_tokenizer_find(t, unk);
    if (cfg) resolve_named_ids(t, cfg);
out:
    lp_free(buf);
    return st;
}

enum lopad_status lp_tokenizer_from_hf_json(const char *json_path, const char *config_path,
                                            struct lp_tokenizer **out) {
    *out = NULL;
    cJSON *root = NULL, *cfg = NULL;
    enum lopad_status st = lp_json_read_file(json_path, 0, &root);
    if (st) return st;
    if (config_path && (st = lp_json_read_file(config_path, 0, &cfg))) {
        cJSON_Delete(root);
        return st;
    }
    struct lp_tokenizer *t = lp_tok_new(json_path);
    if (!t)
        st = LOPAD_ERR_NOMEM;
    else
        st = load_hf(t, root, cfg, json_path, config_path);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (st) {
        lp_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LOPAD_OK;
}

/* -------------------------------------------------------------------- GGUF */

/* tokenizer.ggml.pre -> split pattern, NFC, ignore_merges. */
static enum lopad_status gguf_pre(struct lp_tokenizer *t, const char *pre, const char *src) {
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", NULL};
    static const char *const llama3[] = {"llama-bpe", "llama3", "llada", "dbrx", "smaug-bpe", NULL};
    static const char *const gpt2[] = {"gpt-2", "gpt2", NULL};
    for (int i = 0; qwen2[i]; i++)
        if (!strcmp(pre, qwen2[i])) {
            t->nfc = true;
            return lp_tok_add_pattern(t, LP_PAT_QWEN2);
        }
    for (int i = 0; llama3[i]; i++)
        if (!strcmp(pre, llama3[i])) {
            t->ignore_merges = true;
            return lp_tok_add_pattern(t, LP_PAT_LLAMA3);
        }
    for (int i = 0; gpt2[i]; i++)
        if (!strcmp(pre, gpt2[i])) return lp_tok_add_pattern(t, LP_PAT_GPT2);
    return lp_error(LOPAD_ERR_UNSUPPORTED,
                    "%s: tokenizer.ggml.pre '%s' is not supported (known: qwen2, deepseek-r1-qwen, "
                    "llama-bpe, llama3, llada, dbrx, smaug-bpe, gpt-2)",
                    src, pre);
}

static void gguf_opt_id(const struct lp_gguf *g, const char *key, int32_t n_vocab, int32_t *out) {
    const struct lp_gguf_value *v = lp_gguf_get(g, key);
    int64_t id;
    if (v && lp_gguf_value_i64(v, &id) && id >= 0 && id < n_vocab) *out = (int32_t)id;
}

/* The keys that make a tokenizer (special-id keys such as
 * tokenizer.ggml.mask_token_id alone do not: converters write those for
 * models without a vocabulary). NULL when none is present. */
static const char *present_vocab_key(const struct lp_gguf *g) {
    static const char *const keys[] = {"tokenizer.ggml.model",  "tokenizer.ggml.tokens",
                                       "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                                       "tokenizer.ggml.pre",    "tokenizer.ggml.scores"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (lp_gguf_get(g, keys[i])) return keys[i];
    return NULL;
}

static enum lopad_status load_gguf(struct lp_tokenizer *t, const struct lp_gguf *g,
                                   const char *src) {
    enum lopad_status st;
    if (!lp_gguf_get(g, "tokenizer.ggml.model")) {
        const char *other = present_vocab_key(g);
        if (!other)
            return lp_error(LOPAD_ERR_UNSUPPORTED,
                            "%s: no tokenizer in this GGUF (no tokenizer.ggml.model / tokens / "
                            "merges keys)",
                            src);
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: broken tokenizer: key 'tokenizer.ggml.model' is missing but '%s' is "
                        "present",
                        src, other);
    }
    const char *model;
    if ((st = lp_gguf_get_str(g, "tokenizer.ggml.model", &model))) return st;
    if (strcmp(model, "gpt2"))
        return lp_error(
            LOPAD_ERR_UNSUPPORTED,
            "%s: tokenizer.ggml.model '%s' is not supported (only byte-level BPE 'gpt2')", src,
            model);
    const struct lp_gguf_value *tokens, *types = NULL, *merges = NULL;
    if ((st = lp_gguf_get_arr(g, "tokenizer.ggml.tokens", LP_GGUF_STRING, &tokens))) return st;
    if (lp_gguf_get(g, "tokenizer.ggml.token_type") &&
        (st = lp_gguf_get_arr(g, "tokenizer.ggml.token_type", -1, &types)))
        return st;
    if (lp_gguf_get(g, "tokenizer.ggml.merges") &&
        (st = lp_gguf_get_arr(g, "tokenizer.ggml.merges", LP_GGUF_STRING, &merges)))
        return st;
    uint64_t n = tokens->arr.n;
    if (n == 0 || n > LP_TOK_MAX_ID)
        return lp_error(LOPAD_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", src,
                        (unsigned long long)n);
    if (types && types->arr.n != n)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tokenizer.ggml.token_type has %llu entries, tokens has %llu", src,
                        (unsigned long long)types->arr.n, (unsigned long long)n);
    size_t maxlen = 16;
    for (uint64_t j = 0; j < n; j++) {
        size_t l = 0;
        if (!lp_gguf_arr_str(tokens, j, &l))
            return lp_error(LOPAD_ERR_FORMAT, "%s: tokenizer.ggml.tokens[%llu] is not a string",
                            src, (unsigned long long)j);
        maxlen = LP_MAX(maxlen, l + 1);
    }
    if (merges)
        for (uint64_t j = 0; j < merges->arr.n; j++) {
            size_t l = 0;
            if (!lp_gguf_arr_str(merges, j, &l))
                return lp_error(LOPAD_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] is not a string",
                                src, (unsigned long long)j);
            maxlen = LP_MAX(maxlen, l + 1);
        }
    char *buf = lp_malloc(2 * maxlen, "tokenizer scratch");
    if (!buf) return LOPAD_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++) {
        size_t l;
        const char *s = lp_gguf_arr_str(tokens, j, &l);
        int64_t type = 1;
        if (types && !lp_gguf_arr_i64(types, j, &type)) {
            st = lp_error(LOPAD_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%llu] is not an integer",
                          src, (unsigned long long)j);
            goto out;
        }
        if (type == 3 || type == 4) { /* control / user-defined: raw text */
            st = lp_tok_set(t, (int32_t)j, s, l, type == 3 ? LP_TOK_SPECIAL : LP_TOK_ADDED);
        } else {
            size_t bl = lp_bytelevel_decode(s, l, buf);
            st = lp_tok_set(t, (int32_t)j, buf, bl, LP_TOK_NORMAL);
        }
        if (st) goto out;
    }
    if ((st = lp_tok_index_vocab(t))) goto out;
    if ((st = lp_tok_merges_reserve(t, merges ? merges->arr.n : 0))) goto out;
    for (uint64_t j = 0; merges && j < merges->arr.n; j++) {
        size_t l, la, lb;
        const char *s = lp_gguf_arr_str(merges, j, &l), *b;
        if (!split_merge(s, l, &la, &b, &lb)) {
            st = lp_error(LOPAD_ERR_FORMAT,
                          "%s: tokenizer.ggml.merges[%llu] ('%.64s') is not two tokens", src,
                          (unsigned long long)j, s);
            goto out;
        }
        if ((st = add_merge(t, s, la, b, lb, buf, (size_t)j, src))) goto out;
    }
    const struct lp_gguf_value *pre = lp_gguf_get(g, "tokenizer.ggml.pre");
    if (!pre) {
        st = lp_error(LOPAD_ERR_UNSUPPORTED,
                      "%s: tokenizer.ggml.pre is missing: cannot tell the pre-tokenizer pattern",
                      src);
        goto out;
    }
    const char *pre_s;
    if ((st = lp_gguf_get_str(g, "tokenizer.ggml.pre", &pre_s))) goto out;
    if ((st = gguf_pre(t, pre_s, src))) goto out;
    const struct lp_gguf_value *tpl = lp_gguf_get(g, "tokenizer.chat_template");
    if (tpl && tpl->type == LP_GGUF_STRING) {
        const char *tpl_s;
        if ((st = lp_gguf_get_str(g, "tokenizer.chat_template", &tpl_s))) goto out;
        if (!(t->chat_template = lp_strdup(tpl_s, "chat template"))) {
            st = LOPAD_ERR_NOMEM;
            goto out;
        }
    }
    if ((st = lp_tok_finish(t))) goto out;
    gguf_opt_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos_id);
    gguf_opt_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos_id);
    gguf_opt_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad_id);
    gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk_id);
out:
    lp_free(buf);
    return st;
}

enum lopad_status lp_tokenizer_from_gguf_ctx(const struct lp_gguf *g, const char *source,
                                             struct lp_tokenizer **out) {
    *out = NULL;
    struct lp_tokenizer *t = lp_tok_new(source);
    if (!t) return LOPAD_ERR_NOMEM;
    enum lopad_status st = load_gguf(t, g, source);
    if (st) {
        lp_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LOPAD_OK;
}

bool lp_tokenizer_gguf_absent(const struct lp_gguf *g) {
    return present_vocab_key(g) == NULL;
}

enum lopad_status lp_tokenizer_from_gguf(const char *path, struct lp_tokenizer **out) {
    *out = NULL;
    struct lp_gguf *g;
    enum lopad_status st = lp_gguf_open(path, &g);
    if (st) return st;
    st = lp_tokenizer_from_gguf_ctx(g, path, out);
    lp_gguf_close(g);
    return st;
}

/* ------------------------------------------------------------ any source */

/* Present at all: a FIFO or directory under the name is then refused by the
 * reader (lp_open_regular) rather than taken for absent. */
static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

enum lopad_status lp_tokenizer_load_opt(const char *path, struct lp_tokenizer **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return lp_error(LOPAD_ERR_IO, "%s: no such file or directory", path);
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 32;
        char *a = lp_malloc(n, "path");
        if (!a) return LOPAD_ERR_NOMEM;
        snprintf(a, n, "%s/tokenizer.json", path);
        bool present = is_file(a);
        lp_free(a);
        return present ? lp_tokenizer_load(path, out) : LOPAD_OK;
    }
    if (ends_with(path, ".json")) return lp_tokenizer_load(path, out);
    struct lp_gguf *g;
    enum lopad_status st = lp_gguf_open(path, &g);
    if (st) return st;
    st = lp_tokenizer_gguf_absent(g) ? LOPAD_OK : lp_tokenizer_from_gguf_ctx(g, path, out);
    lp_gguf_close(g);
    return st;
}

enum lopad_status lp_tokenizer_load(const char *path, struct lp_tokenizer **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return lp_error(LOPAD_ERR_IO, "%s: no such file or directory", path);
    size_t n = strlen(path);
    char *a = lp_malloc(n + 32, "path"), *b = lp_malloc(n + 32, "path");
    enum lopad_status st;
    if (!a || !b) {
        st = LOPAD_ERR_NOMEM;
    } else if (S_ISDIR(sb.st_mode)) {
        snprintf(a, n + 32, "%s/tokenizer.json", path);
        snprintf(b, n + 32, "%s/tokenizer_config.json", path);
        if (!is_file(a))
            st = lp_error(LOPAD_ERR_IO, "%s: no tokenizer.json in this model directory", path);
        else
            st = lp_tokenizer_from_hf_json(a, is_file(b) ? b : NULL, out);
    } else if (ends_with(path, ".json")) {
        /* tokenizer.json: read its sibling tokenizer_config.json when present */
        memcpy(a, path, n + 1);
        char *slash = strrchr(a, '/');
        if (slash)
            snprintf(slash + 1, n + 32 - (size_t)(slash + 1 - a), "tokenizer_config.json");
        else
            snprintf(a, n + 32, "tokenizer_config.json");
        st = lp_tokenizer_from_hf_json(path, is_file(a) && strcmp(a, path) ? a : NULL, out);
    } else {
        st = lp_tokenizer_from_gguf(path, out);
    }
    lp_free(a);
    lp_free(b);
    return st;
}
