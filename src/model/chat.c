/*
 * chat.c - ChatML and LLaMA-3 header chat formats: recognise the model's
 * template by its markers and render conversations natively (see chat.h).
 */
#include "chat.h"

#include <stdio.h>
#include <string.h>
#include "../../include/lopad.h"

#define LLADA_BOS "<|startoftext|>"
#define DREAM_SYSTEM "You are a helpful assistant."

const char *lp_chat_format_name(enum lp_chat_format f) {
    switch (f) {
    case LP_CHAT_CHATML: return "chatml";
    case LP_CHAT_LLAMA3: return "llama3";
    }
    return "?";
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src);
}

/* The default system prompt of a ChatML template: the first literal
 * '<|im_start|>system\n ... <|im_end|>' whose body is plain text (not an
 * expression such as `+ messages[0]['content'] +`). Jinja escapes (\n, \', \")
 * are undone. False when there is none or it does not fit. */
static bool chatml_default_system(const char *tmpl, char *out, size_t cap) {
    static const char *const head = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        const char *b = p + strlen(head);
        if (!strncmp(b, "\\n", 2))
            b += 2;
        else if (*b == '\n')
            b += 1;
        else
            continue;
        const char *e = strstr(b, "<|im_end|>");
        if (!e) return false;
        bool plain = true;
        for (const char *q = b; q < e && plain; q++) {
            if (*q == '{' || *q == '}' || *q == '+')
                plain = false;
            else if ((*q == '\'' || *q == '"') && (q == b || q[-1] != '\\'))
                plain = false;
        }
        if (!plain || b == e) continue;
        size_t o = 0;
        for (const char *q = b; q < e; q++) {
            char c = *q;
            if (c == '\\' && q + 1 < e) {
                q++;
                c = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
            }
            if (o + 1 >= cap) return false;
            out[o++] = c;
        }
        out[o] = 0;
        return true;
    }
    return false;
}

enum lopad_status lp_chat_style_detect(const char *tmpl, int arch, const char *bos_token,
                                       struct lp_chat_style *out) {
    memset(out, 0, sizeof *out);
    if (!tmpl) {
        if (arch == LOPAD_ARCH_DREAM) {
            out->format = LP_CHAT_CHATML;
            copy_str(out->default_system, sizeof out->default_system, DREAM_SYSTEM);
            return LOPAD_OK;
        }
        if (arch == LOPAD_ARCH_LLADA) {
            out->format = LP_CHAT_LLAMA3;
            copy_str(out->bos, sizeof out->bos, bos_token ? bos_token : LLADA_BOS);
            out->trim = true;
            return LOPAD_OK;
        }
        return lp_error(LOPAD_ERR_ARG, "chat: no chat template and unknown architecture %d", arch);
    }
    if (strstr(tmpl, "<|im_start|>")) {
        out->format = LP_CHAT_CHATML;
        if (!chatml_default_system(tmpl, out->default_system, sizeof out->default_system))
            out->default_system[0] = 0;
        return LOPAD_OK;
    }
    if (strstr(tmpl, "<|start_header_id|>")) {
        out->format = LP_CHAT_LLAMA3;
        if (strstr(tmpl, "bos_token"))
            copy_str(out->bos, sizeof out->bos, bos_token ? bos_token : LLADA_BOS);
        else if (strstr(tmpl, "<|begin_of_text|>"))
            copy_str(out->bos, sizeof out->bos, "<|begin_of_text|>");
        else if (strstr(tmpl, LLADA_BOS))
            copy_str(out->bos, sizeof out->bos, LLADA_BOS);
        out->trim = strstr(tmpl, "trim") != NULL;
        return LOPAD_OK;
    }
    return lp_error(LOPAD_ERR_UNSUPPORTED,
                    "chat template not recognised (neither ChatML <|im_start|> nor LLaMA-3 "
                    "<|start_header_id|> markers): %.80s%s",
                    tmpl, strlen(tmpl) > 80 ? "..." : "");
}

struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
    struct lp_chat_marks *marks; /* where the template's markers are, or NULL */
};

static void put(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = lp_realloc(b->s, cap, "chat prompt");
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(struct sbuf *b, const char *s) {
    put(b, s, strlen(s));
}

/* a control-token marker of the template (never text from a message) */
static void marker(struct sbuf *b, const char *s) {
    struct lp_chat_marks *m = b->marks;
    if (m && !b->oom) {
        if (m->n == m->cap) {
            int cap = m->cap ? 2 * m->cap : 16;
            struct lp_chat_mark *v = lp_realloc(m->v, sizeof *v * (size_t)cap, "chat marks");
            if (!v) {
                b->oom = true;
                return;
            }
            m->v = v;
            m->cap = cap;
        }
        m->v[m->n++] = (struct lp_chat_mark){b->n, strlen(s)};
    }
    puts_(b, s);
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void put_trimmed(struct sbuf *b, const char *s) {
    size_t n = strlen(s);
    while (n && is_space(*s))
        s++, n--;
    while (n && is_space(s[n - 1]))
        n--;
    put(b, s, n);
}

static void render_one(struct sbuf *b, const struct lp_chat_style *st, const char *role,
                       const char *content, bool first) {
    if (st->format == LP_CHAT_CHATML) {
        marker(b, "<|im_start|>");
        puts_(b, role);
        puts_(b, "\n");
        puts_(b, content);
        marker(b, "<|im_end|>");
        puts_(b, "\n");
    } else {
        if (first && st->bos[0]) marker(b, st->bos);
        marker(b, "<|start_header_id|>");
        puts_(b, role);
        marker(b, "<|end_header_id|>");
        puts_(b, "\n\n");
        if (st->trim)
            put_trimmed(b, content);
        else
            puts_(b, content);
        marker(b, "<|eot_id|>");
    }
}

enum lopad_status lp_chat_render(const struct lp_chat_style *style, const struct lp_chat_msg *msgs,
                                 int n, const char *system, bool add_generation_prompt, char **out,
                                 size_t *len) {
    return lp_chat_render_marked(style, msgs, n, system, add_generation_prompt, out, len, NULL);
}

enum lopad_status lp_chat_render_marked(const struct lp_chat_style *style,
                                        const struct lp_chat_msg *msgs, int n, const char *system,
                                        bool add_generation_prompt, char **out, size_t *len,
                                        struct lp_chat_marks *marks) {
    *out = NULL;
    if (style->format != LP_CHAT_CHATML && style->format != LP_CHAT_LLAMA3)
        return lp_error(LOPAD_ERR_ARG, "chat: unknown format %d", (int)style->format);
    if (n < 0 || (n > 0 && !msgs)) return lp_error(LOPAD_ERR_ARG, "chat: bad message list");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content || !msgs[i].role[0])
            return lp_error(LOPAD_ERR_ARG, "chat: message %d has no role or no content", i);
    bool starts_with_system = n > 0 && !strcmp(msgs[0].role, "system");
    if (system && starts_with_system)
        return lp_error(LOPAD_ERR_ARG,
                        "chat: a system prompt was given and the conversation starts with one too");
    struct sbuf b = {.marks = marks};
    bool first = true;
    if (system) {
        render_one(&b, style, "system", system, true);
        first = false;
    } else if (style->format == LP_CHAT_CHATML && n > 0 && !starts_with_system &&
               style->default_system[0]) {
        render_one(&b, style, "system", style->default_system, true);
        first = false;
    }
    for (int i = 0; i < n; i++) {
        render_one(&b, style, msgs[i].role, msgs[i].content, first);
        first = false;
    }
    if (add_generation_prompt && style->format == LP_CHAT_CHATML) {
        marker(&b, "<|im_start|>");
        puts_(&b, "assistant\n");
    } else if (add_generation_prompt) {
        marker(&b, "<|start_header_id|>");
        puts_(&b, "assistant");
        marker(&b, "<|end_header_id|>");
        puts_(&b, "\n\n");
    }
    put(&b, "", 0); /* an empty conversation still yields "" */
    if (b.oom) {
        lp_free(b.s);
        return LOPAD_ERR_NOMEM;
    }
    *out = b.s;
    if (len) *len = b.n;
    return LOPAD_OK;
}
