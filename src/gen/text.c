/*
 * text.c - the model's tokenizer and chat template (see text.h), and the
 * public text calls: lopad_tokenize, lopad_detokenize, lopad_chat_tokenize.
 */
#include "gen/text.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/common.h"
#include "core/utf8.h"
#include "model/model.h"

static void text_free(void *p) {
    struct lp_model_text *t = p;
    if (!t) return;
    lp_tokenizer_free(t->tok);
    lp_free(t);
}

static enum lopad_status make_empty(const struct lopad_model *m, void *arg, void **out) {
    LP_UNUSED(m);
    LP_UNUSED(arg);
    *out = lp_calloc(1, sizeof(struct lp_model_text), "model text");
    return *out ? LOPAD_OK : LOPAD_ERR_NOMEM;
}

static void detect_style(const struct lopad_model *m, struct lp_model_text *t) {
    const char *bos = NULL;
    size_t bl;
    if (m->hp.bos_id >= 0) bos = lp_tokenizer_token(t->tok, m->hp.bos_id, &bl);
    t->has_style = lp_chat_style_detect(lp_tokenizer_chat_template(t->tok), (int)m->hp.arch, bos,
                                        &t->style) == LOPAD_OK;
    lp_clear_error(); /* no usable template is not an error */
}

static enum lopad_status make_loaded(const struct lopad_model *m, void *arg, void **out) {
    LP_UNUSED(arg);
    struct lp_model_text *t = lp_calloc(1, sizeof *t, "model text");
    if (!t) return LOPAD_ERR_NOMEM;
    /* no tokenizer (a GGUF without its keys, a directory without tokenizer.json) runs
     * on ids; one that is there but broken is an error with its reason */
    enum lopad_status st = lp_tokenizer_load_opt(m->path, &t->tok);
    if (st != LOPAD_OK) {
        lp_free(t);
        return st;
    }
    if (t->tok) detect_style(m, t);
    *out = t;
    return LOPAD_OK;
}

enum lopad_status lp_model_text_load(lopad_model *m) {
    void *data;
    return lp_model_cache_get(m, "text", make_loaded, NULL, text_free, &data);
}

const struct lp_model_text *lp_model_text(const lopad_model *m) {
    static const struct lp_model_text none;
    void *data = NULL;
    if (lp_model_cache_get(m, "text", make_empty, NULL, text_free, &data) != LOPAD_OK) return &none;
    return data;
}

/* ------------------------------------------------------------------ chat */

/* Encode text[0..n) with the markers at marks: each marker that is a control
 * token becomes its id, everything else is plain text, so a message that spells
 * "<|im_start|>" gets the characters, not the token. Text between two markers
 * is encoded as one piece, as the tokenizer would split the whole prompt. */
static enum lopad_status encode_marked(struct lp_tokenizer *tok, const char *text, size_t n,
                                       const struct lp_chat_marks *marks, struct lp_ids *out) {
    size_t at = 0;
    for (int i = 0; i < marks->n; i++) {
        const struct lp_chat_mark *mk = &marks->v[i];
        char name[64];
        if (mk->len >= sizeof name) continue;
        memcpy(name, text + mk->off, mk->len);
        name[mk->len] = 0;
        int32_t id = lp_tokenizer_find(tok, name);
        if (id < 0 || !lp_tokenizer_is_special(tok, id)) continue; /* stays text */
        enum lopad_status st = lp_tokenizer_encode(tok, text + at, mk->off - at, false, out);
        if (st == LOPAD_OK) st = lp_ids_push(out, id);
        if (st != LOPAD_OK) return st;
        at = mk->off + mk->len;
    }
    return lp_tokenizer_encode(tok, text + at, n - at, false, out);
}

enum lopad_status lp_chat_encode(const struct lp_model_text *t, const struct lp_chat_msg *msgs,
                                 int n, const char *system, struct lp_ids *out) {
    if (!t->tok) return lp_error(LOPAD_ERR_ARG, "the model has no tokenizer: give prompt ids");
    if (!t->has_style)
        return lp_error(LOPAD_ERR_ARG, "the model has no usable chat template: use a raw prompt");
    char *text = NULL;
    size_t len = 0;
    struct lp_chat_marks marks = {0};
    enum lopad_status st =
        lp_chat_render_marked(&t->style, msgs, n, system, true, &text, &len, &marks);
    if (st == LOPAD_OK) st = encode_marked(t->tok, text, len, &marks, out);
    lp_free(marks.v);
    lp_free(text);
    return st;
}

/* ---------------------------------------------------------------- public */

size_t lopad_utf8_char_len(const char *s, size_t n) {
    return s ? lp_utf8_seq(s, n) : 0;
}

void lopad_free(void *p) {
    lp_free(p);
}

bool lopad_model_has_tokenizer(const lopad_model *m) {
    return m && lp_model_text(m)->tok;
}

bool lopad_model_has_chat_template(const lopad_model *m) {
    return m && lp_model_text(m)->tok && lp_model_text(m)->has_style;
}

static enum lopad_status ids_out(struct lp_ids *ids, int32_t **out, int *n) {
    if (ids->n > (size_t)INT32_MAX) {
        lp_ids_free(ids);
        return lp_error(LOPAD_ERR_ARG, "too many tokens");
    }
    *n = (int)ids->n;
    *out = ids->v ? ids->v : lp_malloc(sizeof(int32_t), "ids");
    return *out ? LOPAD_OK : LOPAD_ERR_NOMEM;
}

enum lopad_status lopad_tokenize(const lopad_model *m, const char *text, size_t len, int32_t **ids,
                                 int *n_ids) {
    if (!m || !text || !ids || !n_ids)
        return lp_error(LOPAD_ERR_ARG, "lopad_tokenize: model, text, ids and n_ids are required");
    *ids = NULL;
    *n_ids = 0;
    const struct lp_model_text *t = lp_model_text(m);
    if (!t->tok) return lp_error(LOPAD_ERR_ARG, "the model has no tokenizer");
    struct lp_ids v = {0};
    enum lopad_status st = lp_tokenizer_encode(t->tok, text, len, false, &v);
    if (st != LOPAD_OK) {
        lp_ids_free(&v);
        return st;
    }
    return ids_out(&v, ids, n_ids);
}

enum lopad_status lopad_detokenize(const lopad_model *m, const int32_t *ids, int n_ids,
                                   bool skip_special, char **text, size_t *len) {
    if (!m || (!ids && n_ids) || n_ids < 0 || !text)
        return lp_error(LOPAD_ERR_ARG, "lopad_detokenize: bad arguments");
    *text = NULL;
    const struct lp_model_text *t = lp_model_text(m);
    if (!t->tok) return lp_error(LOPAD_ERR_ARG, "the model has no tokenizer");
    return lp_tokenizer_decode(t->tok, ids, (size_t)n_ids, skip_special, text, len);
}

enum lopad_status lopad_chat_tokenize(const lopad_model *m, const struct lopad_chat_msg *msgs,
                                      int n_msgs, int32_t **ids, int *n_ids) {
    if (!m || !ids || !n_ids || n_msgs < 0 || (n_msgs && !msgs))
        return lp_error(LOPAD_ERR_ARG, "lopad_chat_tokenize: bad arguments");
    *ids = NULL;
    *n_ids = 0;
    struct lp_ids v = {0};
    /* struct lopad_chat_msg and struct lp_chat_msg are the same two strings */
    enum lopad_status st =
        lp_chat_encode(lp_model_text(m), (const struct lp_chat_msg *)msgs, n_msgs, NULL, &v);
    if (st != LOPAD_OK) {
        lp_ids_free(&v);
        return st;
    }
    return ids_out(&v, ids, n_ids);
}
