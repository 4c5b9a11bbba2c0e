/*
 * serve_request.c - an OpenAI request body (/v1/completions, /v1/chat/completions)
 * -> a checked lopad request.
 *
 * The body is untrusted: its size is bounded by the HTTP layer; here its nesting
 * depth, its UTF-8, NUL escapes and duplicate fields are refused before cJSON sees
 * it, every field is checked for its type, and a field that is neither OpenAI's
 * nor a decoding option of the library's table is an error naming it. Text from the
 * client only ever reaches the tokenizer as text (lopad_tokenize /
 * lopad_chat_tokenize never make control tokens of it).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "serve.h"

#define MAX_FIELDS 64
#define MAX_MESSAGES 1024
#define MAX_STOP_BYTES 256
#define MAX_PROMPT_IDS 1000000

void srv_error_set(struct srv_error *e, int http, const char *param, const char *fmt, ...) {
    e->http = http;
    e->type = http >= 500 ? "server_error" : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* "option 'lopa' ..." -> lopa; "--gen must ..." -> max_tokens; "--top-p" -> top_p */
void srv_error_param_from(struct srv_error *e, const char *msg, const char *fallback) {
    char name[64] = "";
    const char *p = strstr(msg, "option '");
    size_t n = 0;
    if (p) {
        for (p += 8; *p && *p != '\'' && n + 1 < sizeof name; p++)
            name[n++] = *p;
    } else if ((p = strstr(msg, "--"))) {
        for (p += 2; ((*p >= 'a' && *p <= 'z') || *p == '-' || (*p >= '0' && *p <= '9')) &&
                     n + 1 < sizeof name;
             p++)
            name[n++] = *p == '-' ? '_' : *p;
    }
    name[n] = 0;
    if (!strcmp(name, "gen")) snprintf(name, sizeof name, "max_tokens");
    snprintf(e->param, sizeof e->param, "%s", n ? name : fallback ? fallback : "");
}

/* ------------------------------------------------------------ pre-checks */

size_t srv_utf8_len(const unsigned char *s, size_t n) {
    return lopad_utf8_char_len((const char *)s, n); /* the library's one UTF-8 check */
}

/* UTF-8, nesting depth and "\u0000" (which cJSON would cut strings at) */
static int prescan(const char *body, size_t len, struct srv_error *err) {
    const unsigned char *s = (const unsigned char *)body;
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        size_t k = srv_utf8_len(s + i, len - i);
        if (!k || s[i] == 0)
            return srv_error_set(err, 400, NULL, "the body is not valid UTF-8 text (byte %zu)", i),
                   -1;
        if (in_str && s[i] == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && !memcmp(s + i + 2, "0000", 4))
                return srv_error_set(err, 400, NULL, "NUL characters (\\u0000) are not allowed"),
                       -1;
            i += 2;
            continue;
        }
        if (s[i] == '"') in_str = !in_str;
        if (!in_str && (s[i] == '{' || s[i] == '[') && ++depth > SRV_MAX_DEPTH)
            return srv_error_set(err, 400, NULL, "JSON nested deeper than %d levels",
                                 SRV_MAX_DEPTH),
                   -1;
        if (!in_str && (s[i] == '}' || s[i] == ']')) depth--;
        i += k;
    }
    return 0;
}

static int parse_json(const char *body, size_t len, cJSON **out, struct srv_error *err) {
    if (prescan(body, len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    size_t at = end ? (size_t)(end - body) : 0;
    while (root && at < len && strchr(" \t\r\n", body[at]))
        at++;
    if (!root || at < len) {
        cJSON_Delete(root);
        return srv_error_set(err, 400, NULL, "the body is not valid JSON (at byte %zu)", at), -1;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return srv_error_set(err, 400, NULL, "the body must be a JSON object"), -1;
    }
    int n = 0;
    for (const cJSON *a = root->child; a; a = a->next, n++) {
        if (n >= MAX_FIELDS) {
            cJSON_Delete(root);
            return srv_error_set(err, 400, NULL, "more than %d fields", MAX_FIELDS), -1;
        }
        for (const cJSON *b = root->child; b != a; b = b->next)
            if (!strcmp(a->string, b->string)) {
                srv_error_set(err, 400, a->string, "field '%.60s' given twice", a->string);
                cJSON_Delete(root);
                return -1;
            }
    }
    *out = root;
    return 0;
}

/* ---------------------------------------------------------------- fields */

static int type_error(struct srv_error *err, const char *field, const char *want) {
    srv_error_set(err, 400, field, "'%s' must be %s", field, want);
    return -1;
}

static bool is_int(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo &&
           v->valuedouble <= hi;
}

static int parse_stop(const cJSON *v, struct srv_req *r, struct srv_error *err) {
    if (cJSON_IsNull(v)) return 0;
    const cJSON *one = cJSON_IsString(v) ? v : NULL;
    if (!one && !cJSON_IsArray(v))
        return type_error(err, "stop", "a string or a list of up to 16 strings");
    for (const cJSON *s = one ? one : v->child; s; s = one ? NULL : s->next) {
        if (!cJSON_IsString(s) || !*s->valuestring || strlen(s->valuestring) > MAX_STOP_BYTES)
            return type_error(err, "stop", "non-empty strings of at most 256 bytes");
        if (r->n_stop == SRV_MAX_STOP)
            return type_error(err, "stop", "a string or a list of up to 16 strings");
        r->stop[r->n_stop++] = s->valuestring;
    }
    return 0;
}

static int parse_stream_options(const cJSON *v, struct srv_req *r, struct srv_error *err) {
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsObject(v)) return type_error(err, "stream_options", "an object");
    for (const cJSON *f = v->child; f; f = f->next) {
        if (strcmp(f->string, "include_usage") || !cJSON_IsBool(f))
            return type_error(err, "stream_options", "{\"include_usage\": true|false}");
        r->include_usage = cJSON_IsTrue(f);
    }
    return 0;
}

/* ids: [1, 2, 3] */
static int parse_ids(const cJSON *v, struct srv_req *r, struct srv_error *err) {
    int n = cJSON_GetArraySize(v);
    if (n < 1 || n > MAX_PROMPT_IDS) return type_error(err, "prompt", "a non-empty prompt");
    if (!(r->ids = malloc(sizeof(int32_t) * (size_t)n)))
        return srv_error_set(err, 500, NULL, "out of memory"), -1;
    for (const cJSON *t = v->child; t; t = t->next) {
        if (!is_int(t, 0, 2147483647.0))
            return type_error(err, "prompt", "a string, or a list of token ids");
        r->ids[r->n_ids++] = (int32_t)t->valuedouble;
    }
    return 0;
}

/* a string, [string], [int, ...] or [[int, ...]]: one prompt */
static int parse_prompt(const cJSON *v, struct srv_req *r, struct srv_error *err) {
    const char *want = "a string (one prompt; lists of prompts are not supported)";
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 &&
        (cJSON_IsString(v->child) || cJSON_IsArray(v->child)))
        v = v->child;
    if (cJSON_IsString(v)) {
        if (!*v->valuestring) return type_error(err, "prompt", "a non-empty string");
        r->prompt = v->valuestring;
        return 0;
    }
    if (cJSON_IsArray(v) && cJSON_IsNumber(v->child)) return parse_ids(v, r, err);
    return type_error(err, "prompt", want);
}

/* content: a string or OpenAI's parts [{"type": "text", "text": ...}], joined into
 * one string that replaces the parts in the tree (freed with it) */
static int message_content(cJSON *msg, cJSON *c, const char *field, const char **out,
                           struct srv_error *err) {
    if (cJSON_IsString(c)) return *out = c->valuestring, 0;
    if (!cJSON_IsArray(c)) return type_error(err, field, "a string");
    size_t n = 1;
    for (const cJSON *p = c->child; p; p = p->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") || !cJSON_IsString(x))
            return type_error(err, field, "a string or a list of text parts");
        n += strlen(x->valuestring);
    }
    char *joined = malloc(n), *w = joined;
    if (!joined) return srv_error_set(err, 500, NULL, "out of memory"), -1;
    for (const cJSON *p = c->child; p; p = p->next) {
        const char *x = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t k = strlen(x);
        memcpy(w, x, k);
        w += k;
    }
    *w = 0;
    cJSON *s = cJSON_CreateString(joined);
    free(joined);
    if (!s) return srv_error_set(err, 500, NULL, "out of memory"), -1;
    cJSON_ReplaceItemViaPointer(msg, c, s);
    *out = s->valuestring;
    return 0;
}

static int check_role(const cJSON *f, const char *field, struct srv_error *err) {
    const char *v = cJSON_IsString(f) ? f->valuestring : "";
    if (strcmp(v, "system") && strcmp(v, "user") && strcmp(v, "assistant"))
        return type_error(err, field, "\"system\", \"user\" or \"assistant\"");
    return 0;
}

static int parse_message(cJSON *m, int i, struct lopad_chat_msg *out, struct srv_error *err) {
    char field[64];
    snprintf(field, sizeof field, "messages[%d]", i);
    if (!cJSON_IsObject(m)) return type_error(err, field, "an object with role and content");
    cJSON *role = NULL, *content = NULL;
    for (cJSON *f = m->child; f; f = f->next) {
        snprintf(field, sizeof field, "messages[%d].%.24s", i, f->string);
        bool is_role = !strcmp(f->string, "role"), is_content = !strcmp(f->string, "content");
        if ((is_role && role) || (is_content && content))
            return srv_error_set(err, 400, field, "'%s' given twice", field), -1;
        if (is_role) {
            if (check_role(f, field, err)) return -1;
            role = f;
        } else if (is_content) {
            content = f;
        } else if (strcmp(f->string, "name")) {
            return srv_error_set(err, 400, field, "unknown field '%s' in a message", field), -1;
        } else if (!cJSON_IsString(f)) {
            return type_error(err, field, "a string");
        }
    }
    snprintf(field, sizeof field, "messages[%d]", i);
    if (!role || !content)
        return srv_error_set(err, 400, field, "'%s' needs a role and a content", field), -1;
    out->role = role->valuestring;
    snprintf(field, sizeof field, "messages[%d].content", i);
    return message_content(m, content, field, &out->content, err);
}

static int parse_messages(cJSON *v, struct srv_req *r, struct srv_error *err) {
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n < 1 || n > MAX_MESSAGES)
        return type_error(err, "messages", "a non-empty list of messages");
    if (!(r->msgs = calloc((size_t)n, sizeof *r->msgs)))
        return srv_error_set(err, 500, NULL, "out of memory"), -1;
    int i = 0;
    for (cJSON *m = v->child; m; m = m->next, i++)
        if (parse_message(m, i, &r->msgs[i], err)) return -1;
    r->n_msgs = n;
    return 0;
}

/* OpenAI fields lopad accepts only at their neutral value */
static int neutral_field(const cJSON *v, struct srv_error *err, bool *known) {
    const char *k = v->string;
    *known = true;
    if (!strcmp(k, "frequency_penalty") || !strcmp(k, "presence_penalty"))
        return cJSON_IsNull(v) || (cJSON_IsNumber(v) && v->valuedouble == 0)
                   ? 0
                   : type_error(err, k, "0 (not supported by lopad)");
    if (!strcmp(k, "logprobs") || !strcmp(k, "top_logprobs") || !strcmp(k, "echo"))
        return cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsNumber(v) && v->valuedouble == 0)
                   ? 0
                   : type_error(err, k, "null or false (not supported by lopad)");
    if (!strcmp(k, "best_of"))
        return cJSON_IsNull(v) || is_int(v, 1, 1) ? 0 : type_error(err, k, "1");
    if (!strcmp(k, "logit_bias"))
        return cJSON_IsNull(v) || (cJSON_IsObject(v) && !v->child)
                   ? 0
                   : type_error(err, k, "null or {} (not supported by lopad)");
    if (!strcmp(k, "suffix"))
        return cJSON_IsNull(v) ? 0 : type_error(err, k, "null (not supported by lopad)");
    if (!strcmp(k, "user")) return cJSON_IsString(v) ? 0 : type_error(err, k, "a string");
    *known = false;
    return 0;
}

static bool table_option(const char *name) {
    struct lopad_option_info in;
    for (int i = 0; lopad_option_get(i, &in); i++)
        if (!strcmp(in.name, name)) return true;
    return false;
}

static int parse_field(cJSON *v, struct srv_req *r, struct srv_error *err) {
    const char *k = v->string;
    bool chat = r->kind == SRV_CHAT, known;
    int rc = neutral_field(v, err, &known);
    if (known) return rc;
    if (!strcmp(k, "model"))
        return cJSON_IsString(v) || cJSON_IsNull(v) ? 0 : type_error(err, k, "a string");
    if (!strcmp(k, "prompt") && !chat) return parse_prompt(v, r, err);
    if (!strcmp(k, "messages") && chat) return parse_messages(v, r, err);
    if (!strcmp(k, "max_tokens") || (chat && !strcmp(k, "max_completion_tokens"))) {
        if (cJSON_IsNull(v)) return 0;
        if (!is_int(v, 1, 1e6)) return type_error(err, k, "an integer in [1, 1000000]");
        if (r->max_tokens >= 0)
            return srv_error_set(err, 400, k, "give only one of max_tokens and %s", k), -1;
        r->max_tokens = (long)v->valuedouble;
        return 0;
    }
    if (!strcmp(k, "n")) return cJSON_IsNull(v) || is_int(v, 1, 1) ? 0 : type_error(err, k, "1");
    if (!strcmp(k, "stream") || !strcmp(k, "stream_canvas")) {
        if (!cJSON_IsBool(v) && !cJSON_IsNull(v)) return type_error(err, k, "true or false");
        *(k[6] ? &r->stream_canvas : &r->stream) = cJSON_IsTrue(v);
        return 0;
    }
    if (!strcmp(k, "stream_options")) return parse_stream_options(v, r, err);
    if (!strcmp(k, "stop")) return parse_stop(v, r, err);
    if (table_option(k) && strcmp(k, "gen")) {
        /* null = the server's default (as OpenAI clients send for unset fields) */
        if (!cJSON_IsNull(v)) r->opts[r->n_opts++] = v;
        return 0;
    }
    return srv_error_set(err, 400, k, "unknown field '%.60s'", k), -1;
}

int srv_req_parse(const char *body, size_t len, enum srv_kind kind, struct srv_req *r,
                  struct srv_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    r->kind = kind;
    r->max_tokens = -1;
    if (parse_json(body, len, &r->root, err)) return -1;
    for (cJSON *v = r->root->child; v; v = v->next)
        if (parse_field(v, r, err)) return -1;
    if (kind == SRV_CHAT && !r->msgs)
        return srv_error_set(err, 400, "messages", "'messages' is required"), -1;
    if (kind == SRV_COMPLETIONS && !r->prompt && !r->ids)
        return srv_error_set(err, 400, "prompt", "'prompt' is required"), -1;
    if (r->stream_canvas && !r->stream)
        return srv_error_set(err, 400, "stream_canvas", "'stream_canvas' needs \"stream\": true"),
               -1;
    return 0;
}

void srv_req_free(struct srv_req *r) {
    free(r->ids);
    free(r->msgs);
    cJSON_Delete(r->root);
    memset(r, 0, sizeof *r);
}

/* ----------------------------------------------------------- to the library */

/* the library's message: the request's own, else this thread's */
static const char *request_msg(const lopad_request *rq) {
    const char *m = lopad_request_errmsg(rq);
    return m && *m ? m : lopad_errmsg();
}

static int set_options(const struct srv_req *r, lopad_request *rq, struct srv_error *err) {
    for (int i = 0; i < r->n_opts; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON *v = cJSON_Duplicate(r->opts[i], true);
        char *js = NULL;
        if (o && v && cJSON_AddItemToObject(o, r->opts[i]->string, v)) {
            v = NULL;
            js = cJSON_PrintUnformatted(o);
        }
        cJSON_Delete(v);
        cJSON_Delete(o);
        if (!js) return srv_error_set(err, 500, NULL, "out of memory"), -1;
        enum lopad_status st = lopad_request_set_json(rq, js);
        cJSON_free(js);
        if (st) {
            srv_error_set(err, 400, r->opts[i]->string, "%s", request_msg(rq));
            return -1;
        }
    }
    if (r->max_tokens > 0) {
        char buf[24];
        snprintf(buf, sizeof buf, "%ld", r->max_tokens);
        if (lopad_request_set(rq, "gen", buf)) {
            srv_error_set(err, 400, "max_tokens", "%s", request_msg(rq));
            return -1;
        }
    }
    return 0;
}

static const char *prompt_field(const struct srv_req *r) {
    return r->kind == SRV_CHAT ? "messages" : "prompt";
}

/* the prompt as ids on m: the tokenizer never makes control tokens of client text */
static int tokenize(const struct srv_req *r, const lopad_model *m, int32_t **ids, int *n,
                    struct srv_error *err) {
    const char *field = prompt_field(r);
    enum lopad_status st = LOPAD_OK;
    *ids = NULL;
    *n = 0;
    if (r->ids) {
        const struct lopad_hparams *hp = lopad_model_hparams(m);
        for (int i = 0; i < r->n_ids; i++)
            if (r->ids[i] >= hp->n_vocab || r->ids[i] == hp->mask_id)
                return srv_error_set(
                           err, 400, field, "prompt token %d at index %d is %s", (int)r->ids[i], i,
                           r->ids[i] == hp->mask_id ? "the mask token" : "outside the vocabulary"),
                       -1;
        *n = r->n_ids;
        return 0; /* the caller uses r->ids */
    }
    if (!lopad_model_has_tokenizer(m))
        return srv_error_set(err, 400, field, "the model has no tokenizer: give token ids"), -1;
    if (r->kind == SRV_CHAT) {
        if (!lopad_model_has_chat_template(m))
            return srv_error_set(err, 400, field,
                                 "the model has no chat template: use /v1/completions"),
                   -1;
        st = lopad_chat_tokenize(m, r->msgs, r->n_msgs, ids, n);
    } else {
        st = lopad_tokenize(m, r->prompt, strlen(r->prompt), ids, n);
    }
    if (st)
        return srv_error_set(err, st == LOPAD_ERR_NOMEM ? 500 : 400, field, "%s", lopad_errmsg()),
               -1;
    if (*n < 1) return srv_error_set(err, 400, field, "the prompt has no tokens"), -1;
    return 0;
}

/* the resolved "gen" and the context check */
static int check_context(const struct srv_req *r, lopad_request *rq, const lopad_model *m,
                         int n_prompt, struct srv_error *err) {
    char *settings = NULL;
    if (lopad_request_settings(rq, m, &settings)) {
        srv_error_set(err, 400, NULL, "%s", request_msg(rq));
        srv_error_param_from(err, err->message, NULL);
        return -1;
    }
    cJSON *s = cJSON_Parse(settings);
    lopad_free(settings);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(s, "gen");
    long gen = cJSON_IsNumber(g) ? (long)g->valuedouble : 0;
    cJSON_Delete(s);
    int n_ctx = lopad_model_hparams(m)->n_ctx_train;
    if (n_ctx <= 0 || n_prompt + gen <= n_ctx) return 0;
    if (n_prompt >= n_ctx || r->max_tokens < 0)
        srv_error_set(err, 400, prompt_field(r),
                      "the prompt (%d tokens) + %ld generated positions exceed the model's "
                      "context of %d tokens",
                      n_prompt, gen, n_ctx);
    else
        srv_error_set(err, 400, "max_tokens",
                      "max_tokens %ld + the prompt (%d tokens) exceed the model's context of %d "
                      "tokens",
                      gen, n_prompt, n_ctx);
    return -1;
}

int srv_req_build_ids(const struct srv_req *r, const lopad_request *defaults, const lopad_model *m,
                      lopad_request **out, int32_t **ids_out, int *n_prompt,
                      struct srv_error *err) {
    lopad_request *rq = NULL;
    *out = NULL;
    *n_prompt = 0;
    if (ids_out) *ids_out = NULL;
    if (lopad_request_dup(defaults, &rq)) return srv_error_set(err, 500, NULL, "out of memory"), -1;
    if (set_options(r, rq, err)) goto fail;
    if (!m) { /* the fuzz harness: options only */
        *out = rq;
        return 0;
    }
    int32_t *ids = NULL, *copy = NULL;
    int n = 0;
    if (tokenize(r, m, &ids, &n, err)) goto fail;
    const int32_t *use = ids ? ids : r->ids;
    enum lopad_status st = lopad_request_prompt_ids(rq, use, n);
    if (!st && ids_out && !(copy = malloc(sizeof(int32_t) * (size_t)n))) st = LOPAD_ERR_NOMEM;
    if (copy) memcpy(copy, use, sizeof(int32_t) * (size_t)n);
    lopad_free(ids);
    if (st) {
        srv_error_set(err, 500, NULL, "%s",
                      st == LOPAD_ERR_NOMEM ? "out of memory" : request_msg(rq));
        goto fail;
    }
    if (check_context(r, rq, m, n, err)) {
        free(copy);
        goto fail;
    }
    *out = rq;
    *n_prompt = n;
    if (ids_out) *ids_out = copy;
    return 0;
fail:
    lopad_request_free(rq);
    return -1;
}

int srv_req_build(const struct srv_req *r, const lopad_request *defaults, const lopad_model *m,
                  lopad_request **out, int *n_prompt, struct srv_error *err) {
    return srv_req_build_ids(r, defaults, m, out, NULL, n_prompt, err);
}
