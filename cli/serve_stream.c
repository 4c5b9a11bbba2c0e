/*
 * serve_stream.c - the OpenAI JSON shapes of `lopad serve`: whole responses
 * (text_completion, chat.completion), server-sent-event chunks
 * (text_completion / chat.completion.chunk, then "data: [DONE]"), error objects,
 * the model list, and lopad's canvas events (event: canvas) for viewers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>

#include "serve.h"

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int srv_buf_add(struct srv_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

int srv_buf_addf(struct srv_buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return srv_buf_add(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = srv_buf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

/* a cJSON string from n bytes (the text may hold NULs only in theory: cut there) */
static cJSON *string_n(const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return NULL;
    memcpy(t, s, n);
    t[n] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    return j;
}

static char *print_free(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* {"id", "object", "created", "model", "choices": [...]} */
static cJSON *envelope(const struct srv_job *j, const char *object, cJSON **choice) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model_name);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, *choice);
    cJSON_AddNumberToObject(*choice, "index", 0);
    return o;
}

static void add_usage(cJSON *o, const struct srv_job *j) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_completion);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_completion);
}

static void add_finish(cJSON *choice, const char *reason) {
    if (reason)
        cJSON_AddStringToObject(choice, "finish_reason", reason);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
}

char *srv_json_response(const struct srv_job *j) {
    cJSON *choice, *o;
    cJSON *text = string_n(j->text.p ? j->text.p : "", j->text.len);
    if (j->kind == SRV_CHAT) {
        o = envelope(j, "chat.completion", &choice);
        cJSON *m = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", text);
    } else {
        o = envelope(j, "text_completion", &choice);
        cJSON_AddItemToObject(choice, "text", text);
        cJSON_AddNullToObject(choice, "logprobs");
    }
    add_finish(choice, j->finish_reason);
    add_usage(o, j);
    /* lopad's own numbers, beside OpenAI's */
    cJSON *x = cJSON_AddObjectToObject(o, "lopad");
    cJSON_AddNumberToObject(x, "nfe", j->nfe);
    cJSON_AddNumberToObject(x, "tpf", j->tpf);
    return print_free(o);
}

char *srv_json_error(const struct srv_error *e) {
    cJSON *o = cJSON_CreateObject(), *er = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(er, "message", e->message);
    cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0])
        cJSON_AddStringToObject(er, "param", e->param);
    else
        cJSON_AddNullToObject(er, "param");
    cJSON_AddNullToObject(er, "code");
    return print_free(o);
}

char *srv_json_models(const char *model_name, long created) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "lopad");
    return print_free(o);
}

/* ------------------------------------------------------------------- SSE */

static int sse_send(struct srv_job *j, cJSON *o, const char *event) {
    char *s = print_free(o);
    if (!s) return -1;
    int rc = event ? srv_buf_addf(&j->sse, "event: %s\n", event) : 0;
    if (!rc) rc = srv_buf_addf(&j->sse, "data: %s\n\n", s);
    cJSON_free(s);
    return rc;
}

static cJSON *chunk(const struct srv_job *j, cJSON **choice) {
    return envelope(j, j->kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", choice);
}

int srv_sse_delta(struct srv_job *j, const char *text, size_t n, bool first) {
    cJSON *choice, *o = chunk(j, &choice);
    if (j->kind == SRV_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(choice, "delta");
        if (first) cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddItemToObject(d, "content", string_n(text, n));
    } else {
        cJSON_AddItemToObject(choice, "text", string_n(text, n));
        cJSON_AddNullToObject(choice, "logprobs");
    }
    add_finish(choice, NULL);
    return sse_send(j, o, NULL);
}

int srv_sse_finish(struct srv_job *j) {
    cJSON *choice, *o = chunk(j, &choice);
    if (j->kind == SRV_CHAT) {
        cJSON_AddObjectToObject(choice, "delta");
    } else {
        cJSON_AddStringToObject(choice, "text", "");
        cJSON_AddNullToObject(choice, "logprobs");
    }
    add_finish(choice, j->finish_reason);
    int rc = sse_send(j, o, NULL);
    if (!rc && j->include_usage) { /* OpenAI: one more chunk, no choices, the usage */
        o = chunk(j, &choice);
        cJSON_DeleteItemFromObject(o, "choices");
        cJSON_AddArrayToObject(o, "choices");
        add_usage(o, j);
        rc = sse_send(j, o, NULL);
    }
    return rc ? rc : srv_buf_addf(&j->sse, "data: [DONE]\n\n");
}

int srv_sse_error(struct srv_job *j) {
    char *e = srv_json_error(&j->err);
    int rc = e ? srv_buf_addf(&j->sse, "data: %s\n\ndata: [DONE]\n\n", e) : -1;
    cJSON_free(e);
    return rc;
}

/* One token's text for a viewer (control tokens shown by name). A token may hold part
 * of a character: each byte that is not a whole character becomes U+FFFD, as in the
 * generated text, so the JSON stays valid UTF-8. */
static cJSON *token_text(const lopad_model *m, int32_t t) {
    char *s = NULL;
    size_t n = 0;
    if (!lopad_model_has_tokenizer(m) || lopad_detokenize(m, &t, 1, false, &s, &n))
        return cJSON_CreateNull();
    struct srv_buf b = {0};
    for (size_t i = 0; i < n;) {
        size_t k = srv_utf8_len((const unsigned char *)s + i, n - i);
        if (s[i] == 0) k = 0;
        srv_buf_add(&b, k ? s + i : "\xEF\xBF\xBD", k ? k : 3);
        i += k ? k : 1;
    }
    lopad_free(s);
    cJSON *j = string_n(b.p ? b.p : "", b.len);
    free(b.p);
    return j;
}

/* event: canvas, data: the step (positions counted from the first generated one) */
int srv_sse_canvas(struct srv_job *j, const lopad_model *m, const struct lopad_step *st) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", st->step);
    cJSON_AddNumberToObject(o, "n_steps", st->n_steps);
    cJSON_AddNumberToObject(o, "nfe", st->nfe);
    cJSON_AddNumberToObject(o, "n_gen", st->n_canvas - st->n_prompt);
    cJSON_AddNumberToObject(o, "n_masked", st->n_masked);
    cJSON_AddNumberToObject(o, "final_prefix", st->final_prefix);
    cJSON *c = cJSON_AddArrayToObject(o, "committed");
    for (int i = 0; i < st->n_committed; i++) {
        int pos = st->committed[i];
        cJSON *e = cJSON_CreateArray();
        cJSON_AddItemToArray(e, cJSON_CreateNumber(pos - st->n_prompt));
        cJSON_AddItemToArray(e, token_text(m, st->canvas[pos]));
        cJSON_AddItemToArray(c, e);
    }
    if (st->n_branches > 0) {
        cJSON *l = cJSON_AddObjectToObject(o, "lopa");
        cJSON_AddNumberToObject(l, "branches", st->n_branches);
        cJSON_AddNumberToObject(l, "winner", st->winner);
        cJSON_AddBoolToObject(l, "anchor", st->winner == st->n_branches - 1);
        cJSON_AddNumberToObject(l, "winner_pos",
                                st->winner_pos < 0 ? -1 : st->winner_pos - st->n_prompt);
    }
    cJSON_AddBoolToObject(o, "done", st->done);
    return sse_send(j, o, "canvas");
}
