/*
 * generate.c - generation as a library: requests (prompt + options from the
 * option table), sessions (a context sized per request and kept for the next)
 * and generations (stepped or blocking, with the text of the final prefix that
 * only grows). The decoders run below through the engine door (decode.h).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/utf8.h"
#include "decode/decode.h"
#include "gen/options.h"
#include "gen/text.h"
#include "model/model.h"
#include "model/model_ref.h"

/* A model that does not say its context length gets at most this canvas. */
#define LP_CTX_UNKNOWN_MAX 32768

/* Keep the message of the failing call on the handle too. */
static enum lopad_status keep(char *slot, size_t cap, enum lopad_status st) {
    if (st != LOPAD_OK) snprintf(slot, cap, "%s", lopad_errmsg());
    return st;
}
#define KEEP(h, st) keep((h)->err, sizeof(h)->err, (st))

/* ------------------------------------------------------------------ request */

enum prompt_kind { PROMPT_NONE, PROMPT_TEXT, PROMPT_CHAT, PROMPT_USER, PROMPT_IDS };

struct lopad_request {
    struct lp_opt_set opts;
    enum prompt_kind kind;
    char *text, *system;      /* PROMPT_TEXT / PROMPT_USER */
    struct lp_chat_msg *msgs; /* PROMPT_CHAT (strings owned) */
    int n_msgs;
    int32_t *ids; /* PROMPT_IDS */
    int n_ids;
    char err[1024];
};

enum lopad_status lopad_request_new(lopad_request **out) {
    if (!out) return lp_error(LOPAD_ERR_ARG, "lopad_request_new: out is NULL");
    *out = lp_calloc(1, sizeof **out, "request");
    return *out ? LOPAD_OK : LOPAD_ERR_NOMEM;
}

static void prompt_clear(lopad_request *r) {
    for (int i = 0; i < r->n_msgs; i++) {
        lp_free((void *)r->msgs[i].role);
        lp_free((void *)r->msgs[i].content);
    }
    lp_free(r->msgs);
    lp_free(r->text);
    lp_free(r->system);
    lp_free(r->ids);
    r->msgs = NULL;
    r->text = r->system = NULL;
    r->ids = NULL;
    r->n_msgs = r->n_ids = 0;
    r->kind = PROMPT_NONE;
}

void lopad_request_free(lopad_request *r) {
    if (!r) return;
    prompt_clear(r);
    lp_free(r);
}

static enum lopad_status set_text_prompt(lopad_request *r, enum prompt_kind k, const char *text,
                                         const char *system);

enum lopad_status lopad_request_dup(const lopad_request *r, lopad_request **out) {
    if (!r || !out) return lp_error(LOPAD_ERR_ARG, "lopad_request_dup: bad arguments");
    enum lopad_status st = lopad_request_new(out);
    if (st != LOPAD_OK) return st;
    lopad_request *c = *out;
    c->opts = r->opts;
    switch (r->kind) {
    case PROMPT_NONE: break;
    case PROMPT_TEXT: st = set_text_prompt(c, r->kind, r->text, NULL); break;
    case PROMPT_USER: st = set_text_prompt(c, r->kind, r->text, r->system); break;
    case PROMPT_IDS: st = lopad_request_prompt_ids(c, r->ids, r->n_ids); break;
    case PROMPT_CHAT:
        st = lopad_request_prompt_chat(c, (const struct lopad_chat_msg *)r->msgs, r->n_msgs);
        break;
    }
    if (st != LOPAD_OK) {
        lopad_request_free(c);
        *out = NULL;
    }
    return st;
}

const char *lopad_request_errmsg(const lopad_request *r) {
    return r ? r->err : "";
}

enum lopad_status lopad_request_set(lopad_request *r, const char *name, const char *value) {
    if (!r) return lp_error(LOPAD_ERR_ARG, "lopad_request_set: no request");
    return KEEP(r, lp_opt_set_text(&r->opts, name, value));
}

enum lopad_status lopad_request_set_json(lopad_request *r, const char *json) {
    if (!r || !json) return lp_error(LOPAD_ERR_ARG, "lopad_request_set_json: no request or JSON");
    struct lp_opt_set s = r->opts; /* all or nothing */
    enum lopad_status st = lp_opt_set_json(&s, json, strlen(json));
    if (st == LOPAD_OK) r->opts = s;
    return KEEP(r, st);
}

static enum lopad_status set_text_prompt(lopad_request *r, enum prompt_kind k, const char *text,
                                         const char *system) {
    if (!r || !text) return lp_error(LOPAD_ERR_ARG, "prompt: no request or no text");
    prompt_clear(r);
    r->kind = k;
    if (!(r->text = lp_strdup(text, "prompt")) ||
        (system && !(r->system = lp_strdup(system, "system prompt")))) {
        prompt_clear(r);
        return KEEP(r, LOPAD_ERR_NOMEM);
    }
    return LOPAD_OK;
}

enum lopad_status lopad_request_prompt_text(lopad_request *r, const char *text) {
    return set_text_prompt(r, PROMPT_TEXT, text, NULL);
}

enum lopad_status lopad_request_prompt_user(lopad_request *r, const char *text,
                                            const char *system) {
    return set_text_prompt(r, PROMPT_USER, text, system);
}

enum lopad_status lopad_request_prompt_chat(lopad_request *r, const struct lopad_chat_msg *msgs,
                                            int n_msgs) {
    if (!r || n_msgs < 1 || !msgs)
        return lp_error(LOPAD_ERR_ARG, "prompt: a conversation needs at least one message");
    prompt_clear(r);
    r->kind = PROMPT_CHAT;
    if (!(r->msgs = lp_calloc((size_t)n_msgs, sizeof *r->msgs, "messages")))
        return KEEP(r, LOPAD_ERR_NOMEM);
    r->n_msgs = n_msgs;
    for (int i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            prompt_clear(r);
            return KEEP(r, lp_error(LOPAD_ERR_ARG, "prompt: message %d has no role or content", i));
        }
        r->msgs[i].role = lp_strdup(msgs[i].role, "role");
        r->msgs[i].content = lp_strdup(msgs[i].content, "content");
        if (!r->msgs[i].role || !r->msgs[i].content) {
            prompt_clear(r);
            return KEEP(r, LOPAD_ERR_NOMEM);
        }
    }
    return LOPAD_OK;
}

enum lopad_status lopad_request_prompt_ids(lopad_request *r, const int32_t *ids, int n_ids) {
    if (!r || n_ids < 1 || !ids) return lp_error(LOPAD_ERR_ARG, "prompt: no token ids");
    prompt_clear(r);
    r->kind = PROMPT_IDS;
    if (!(r->ids = lp_malloc(sizeof(int32_t) * (size_t)n_ids, "prompt ids")))
        return KEEP(r, LOPAD_ERR_NOMEM);
    memcpy(r->ids, ids, sizeof(int32_t) * (size_t)n_ids);
    r->n_ids = n_ids;
    return LOPAD_OK;
}

/* the prompt's ids on model m (appended to *out) */
static enum lopad_status request_encode(const lopad_request *r, const lopad_model *m,
                                        struct lp_ids *out) {
    const struct lp_model_text *t = lp_model_text(m);
    if (r->kind == PROMPT_NONE) return lp_error(LOPAD_ERR_ARG, "the request has no prompt");
    if (r->kind == PROMPT_IDS) {
        for (int i = 0; i < r->n_ids; i++)
            if (lp_ids_push(out, r->ids[i])) return LOPAD_ERR_NOMEM;
        return LOPAD_OK;
    }
    if (!t->tok) return lp_error(LOPAD_ERR_ARG, "the model has no tokenizer: give prompt ids");
    if (r->kind == PROMPT_CHAT) return lp_chat_encode(t, r->msgs, r->n_msgs, NULL, out);
    if (r->kind == PROMPT_USER && t->has_style) {
        struct lp_chat_msg msg = {"user", r->text};
        return lp_chat_encode(t, &msg, 1, r->system, out);
    }
    return lp_tokenizer_encode(t->tok, r->text, strlen(r->text), false, out);
}

static enum lopad_status request_resolve(const lopad_request *r, const lopad_model *m,
                                         struct lp_decode_request *rq) {
    return lp_opt_resolve(&r->opts, lopad_model_hparams(m), m->lora_path != NULL, rq);
}

/* the error slot is the request's own record of its last failure, not its contents */
#define KEEP_R(r, st) keep(((lopad_request *)(r))->err, sizeof(r)->err, (st))

enum lopad_status lopad_request_settings(const lopad_request *r, const lopad_model *m,
                                         char **json) {
    if (!r || !m || !json) return lp_error(LOPAD_ERR_ARG, "lopad_request_settings: bad arguments");
    *json = NULL;
    struct lp_decode_request rq;
    enum lopad_status st = request_resolve(r, m, &rq);
    if (st == LOPAD_OK && !(*json = lp_opt_settings_json(&rq))) st = LOPAD_ERR_NOMEM;
    return KEEP_R(r, st);
}

static int ctx_limit(const lopad_model *m);

enum lopad_status lopad_request_validate(const lopad_request *r, const lopad_model *m) {
    if (!r || !m) return lp_error(LOPAD_ERR_ARG, "lopad_request_validate: bad arguments");
    struct lp_decode_request rq;
    struct lp_ids prompt = {0};
    enum lopad_status st = request_resolve(r, m, &rq);
    if (st == LOPAD_OK) st = request_encode(r, m, &prompt);
    if (st == LOPAD_OK && prompt.n > (size_t)INT_MAX / 2)
        st = lp_error(LOPAD_ERR_ARG, "prompt too long");
    if (st == LOPAD_OK) {
        rq.prompt = prompt.v;
        rq.n_prompt = (int)prompt.n;
        st = lp_decode_validate(&rq, lopad_model_hparams(m), ctx_limit(m));
    }
    lp_ids_free(&prompt);
    return KEEP_R(r, st);
}

/* ------------------------------------------------------------ option table */

int lopad_option_count(void) {
    return lp_n_opts;
}

bool lopad_option_get(int i, struct lopad_option_info *out) {
    static const char *const types[] = {"int", "float", "bool", "enum", "seed", "name"};
    if (i < 0 || i >= lp_n_opts || !out) return false;
    const struct lp_opt *o = &lp_opts[i];
    *out = (struct lopad_option_info){o->name, types[o->type], o->def,
                                      o->help, o->choices,     o->lo,
                                      o->hi,   o->group,       o->flag ? NULL : o->metavar,
                                      o->flag};
    return true;
}

/* ------------------------------------------------------------------ session */

struct lopad_session {
    const lopad_model *model;
    struct lopad_session_params p;
    char device[16], kernels[16];
    lopad_ctx *ctx;
    int ctx_n, ctx_batch; /* what ctx was made for */
    bool busy;
    char err[1024];
};

static bool copy_name(char *dst, size_t cap, const char *src, const char **field) {
    if (!src) return true;
    if (strlen(src) >= cap) return false;
    strcpy(dst, src);
    *field = dst;
    return true;
}

enum lopad_status lopad_session_new(const lopad_model *m, const struct lopad_session_params *p,
                                    lopad_session **out) {
    if (!out || !m) return lp_error(LOPAD_ERR_ARG, "lopad_session_new: model and out are required");
    *out = NULL;
    lopad_session *s = lp_calloc(1, sizeof *s, "session");
    if (!s) return LOPAD_ERR_NOMEM;
    if (p) s->p = *p;
    s->p.device = s->p.kernels = NULL;
    if (!p || (copy_name(s->device, sizeof s->device, p->device, &s->p.device) &&
               copy_name(s->kernels, sizeof s->kernels, p->kernels, &s->p.kernels))) {
        if (lp_model_retain(m) != LOPAD_OK) {
            lp_free(s);
            return LOPAD_ERR_NOMEM;
        }
        s->model = m;
        *out = s;
        return LOPAD_OK;
    }
    lp_free(s);
    return lp_error(LOPAD_ERR_ARG, "lopad_session_new: device or kernel name too long");
}

void lopad_session_free(lopad_session *s) {
    if (!s) return;
    lopad_ctx_free(s->ctx);
    lp_model_release(s->model); /* the session's reference */
    lp_free(s);
}

const char *lopad_session_errmsg(const lopad_session *s) {
    return s ? s->err : "";
}

/* A context for canvases of L positions fed n_batch at a time: the current one
 * when it is large enough, else a new one. */
static enum lopad_status session_ctx(lopad_session *s, int L, int n_batch) {
    if (s->ctx && s->ctx_n >= L && s->ctx_batch >= n_batch) {
        lopad_kv_truncate(s->ctx, 0);
        return LOPAD_OK;
    }
    lopad_ctx_free(s->ctx);
    s->ctx = NULL;
    struct lopad_ctx_params cp = {.n_ctx = L,
                                  .n_batch_max = n_batch,
                                  .n_threads = s->p.n_threads,
                                  .device = s->p.device,
                                  .kernels = s->p.kernels,
                                  .repack = s->p.repack,
                                  .tensor_parallel = s->p.tensor_parallel};
    enum lopad_status st = lopad_ctx_new(s->model, &cp, &s->ctx);
    if (st == LOPAD_OK) {
        s->ctx_n = L;
        s->ctx_batch = n_batch;
    }
    return st;
}

/* Rows one forward feeds: the canvas, twice with CFG; LoPA's K+1 branches in one
 * forward when they fit a modest buffer (else the decoder splits the batch, still
 * one forward). */
static int batch_for(const struct lp_decode_request *rq, int L) {
    int n = rq->cfg_scale > 0 ? 2 * L : L;
    if ((rq->decoder == LP_DEC_D2F || rq->decoder == LP_DEC_FAST) && rq->lopa > 0)
        n = (int)LP_MIN((int64_t)(rq->lopa + 1) * L, (int64_t)LP_MAX(L, 16384));
    return n;
}

/* --------------------------------------------------------------- generation */

struct lopad_gen {
    lopad_session *s;
    const struct lp_model_text *text;
    struct lp_decode_request rq;
    struct lp_ids prompt;
    struct lp_engine eng;
    lp_decoder *d;
    struct lp_step_event ev;
    struct lopad_step step;
    struct lp_tok_stream ts;
    char *out; /* the final prefix's text, valid UTF-8 */
    size_t out_len, out_cap;
    int consumed; /* generated positions turned into text */
    bool ended;   /* an EOS / EoT was reached */
    bool cancelled;
    atomic_bool cancel;
    char err[1024];
};

static enum lopad_status text_append(lopad_gen *g, const char *b, size_t n) {
    size_t need = g->out_len + 3 * n + 1; /* each invalid byte becomes U+FFFD */
    if (need > g->out_cap) {
        size_t cap = LP_MAX(need, 2 * g->out_cap);
        char *p = lp_realloc(g->out, cap, "generated text");
        if (!p) return LOPAD_ERR_NOMEM;
        g->out = p;
        g->out_cap = cap;
    }
    g->out_len += lp_utf8_sanitize(b, n, g->out + g->out_len);
    g->out[g->out_len] = 0;
    return LOPAD_OK;
}

static bool is_end(const lopad_gen *g, int32_t t) {
    const struct lopad_hparams *hp = &g->eng.hp;
    return (hp->eos_id >= 0 && t == hp->eos_id) || (hp->eot_id >= 0 && t == hp->eot_id);
}

/* turn the newly final positions into text */
static enum lopad_status text_advance(lopad_gen *g, const struct lp_step_event *ev) {
    while (!g->ended && g->consumed < ev->final_prefix) {
        int32_t t = ev->canvas[ev->n_prompt + g->consumed];
        if (is_end(g, t)) {
            g->ended = true;
            break;
        }
        g->consumed++;
        size_t tl; /* ids the tokenizer lacks (a model vocabulary padded past it) add nothing */
        if (!g->text->tok || !lp_tokenizer_token(g->text->tok, t, &tl)) continue;
        const char *b;
        size_t n;
        enum lopad_status st = lp_tok_stream_push(g->text->tok, &g->ts, t, true, &b, &n);
        if (st == LOPAD_OK) st = text_append(g, b, n);
        if (st != LOPAD_OK) return st;
    }
    if (ev->done || g->ended) { /* a character the generation left unfinished */
        const char *b;
        size_t n;
        lp_tok_stream_flush(&g->ts, &b, &n);
        return text_append(g, b, n);
    }
    return LOPAD_OK;
}

static void fill_step(lopad_gen *g, size_t len0) {
    const struct lp_step_event *e = &g->ev;
    g->step = (struct lopad_step){
        .canvas = e->canvas,
        .n_canvas = e->n_canvas,
        .n_prompt = e->n_prompt,
        .mask_id = e->mask_id,
        .committed = e->committed,
        .n_committed = e->n_committed,
        .step = e->step,
        .n_steps = e->n_steps,
        .nfe = e->nfe,
        .n_masked = e->n_masked,
        .final_prefix = e->final_prefix,
        .done = e->done || g->cancelled,
        .n_branches = e->n_branches,
        .winner = e->winner,
        .winner_pos = e->winner_pos,
        .text = g->out ? g->out : "",
        .text_len = g->out_len,
        .text_new = g->out_len - len0,
    };
}

/* the canvas limit: the trained context, or a bound when the model does not say */
static int ctx_limit(const lopad_model *m) {
    int n = lopad_model_hparams(m)->n_ctx_train;
    return n > 0 ? n : LP_CTX_UNKNOWN_MAX;
}

static enum lopad_status gen_setup(lopad_gen *g, const lopad_request *r) {
    lopad_session *s = g->s;
    enum lopad_status st = request_resolve(r, s->model, &g->rq);
    if (st == LOPAD_OK) st = request_encode(r, s->model, &g->prompt);
    if (st != LOPAD_OK) return st;
    if (g->prompt.n > (size_t)INT_MAX / 2) return lp_error(LOPAD_ERR_ARG, "prompt too long");
    g->rq.prompt = g->prompt.v;
    g->rq.n_prompt = (int)g->prompt.n;
    if ((st = lp_decode_validate(&g->rq, lopad_model_hparams(s->model), ctx_limit(s->model))))
        return st;
    int L = g->rq.n_prompt + g->rq.gen_len, n_batch = batch_for(&g->rq, L);
    if ((st = session_ctx(s, L, n_batch))) return st;
    lp_engine_from_ctx(&g->eng, s->model, s->ctx, L, s->ctx_batch);
    if (s->p.no_fused_scores) g->eng.forward_scores = NULL, g->eng.last_logits = NULL;
    return lp_decode_start(&g->eng, &g->rq, &g->d);
}

enum lopad_status lopad_gen_start(lopad_session *s, const lopad_request *r, lopad_gen **out) {
    if (!s || !r || !out) return lp_error(LOPAD_ERR_ARG, "lopad_gen_start: bad arguments");
    *out = NULL;
    if (s->busy)
        return KEEP(s, lp_error(LOPAD_ERR_ARG, "the session is already generating (one "
                                               "generation per session at a time)"));
    lopad_gen *g = lp_calloc(1, sizeof *g, "generation");
    if (!g) return KEEP(s, LOPAD_ERR_NOMEM);
    g->s = s;
    g->text = lp_model_text(s->model);
    atomic_init(&g->cancel, false);
    enum lopad_status st = gen_setup(g, r);
    if (st != LOPAD_OK) {
        keep(s->err, sizeof s->err, st);
        lopad_gen_free(g);
        return st;
    }
    s->busy = true;
    *out = g;
    return LOPAD_OK;
}

bool lopad_gen_done(const lopad_gen *g) {
    return !g || lp_decode_done(g->d);
}

void lopad_gen_cancel(lopad_gen *g) {
    if (g) atomic_store(&g->cancel, true);
}

enum lopad_status lopad_gen_step(lopad_gen *g, const struct lopad_step **st_out) {
    if (st_out) *st_out = NULL;
    if (!g) return lp_error(LOPAD_ERR_ARG, "lopad_gen_step: no generation");
    if (atomic_load(&g->cancel) && !lp_decode_done(g->d)) {
        g->cancelled = true;
        lp_decode_cancel(g->d); /* the step below only describes the canvas */
    }
    size_t len0 = g->out_len;
    enum lopad_status st = lp_decode_step(g->d, &g->ev);
    if (st == LOPAD_OK && !g->cancelled) st = text_advance(g, &g->ev);
    if (st != LOPAD_OK) return KEEP(g, st);
    fill_step(g, len0);
    if (st_out) *st_out = &g->step;
    return LOPAD_OK;
}

const char *lopad_gen_errmsg(const lopad_gen *g) {
    return g ? g->err : "";
}

static const char *finish_reason(const lopad_gen *g, const struct lp_decode_result *dr) {
    if (g->cancelled) return "cancelled";
    if (dr->n_ids < dr->n_canvas - dr->n_prompt) {
        int32_t t = dr->canvas[dr->n_prompt + dr->n_ids];
        if (is_end(g, t)) return "stop";
    }
    return "length";
}

enum lopad_status lopad_gen_finish(lopad_gen *g, struct lopad_result *res) {
    if (!g || !res) return lp_error(LOPAD_ERR_ARG, "lopad_gen_finish: bad arguments");
    memset(res, 0, sizeof *res);
    struct lp_decode_result dr;
    enum lopad_status st = lp_decode_finish(g->d, &dr);
    if (st != LOPAD_OK) return KEEP(g, st);
    *res = (struct lopad_result){
        .text = lp_strdup(g->out ? g->out : "", "result text"),
        .text_len = g->out_len,
        .ids = dr.ids,
        .n_ids = dr.n_ids,
        .canvas = dr.canvas,
        .n_canvas = dr.n_canvas,
        .n_prompt = dr.n_prompt,
        .n_committed = dr.n_committed,
        .nfe = dr.nfe,
        .n_seq_evals = dr.n_seq_evals,
        .tpf = dr.tpf,
        .n_nonpad = dr.n_nonpad,
        .tpf_nonpad = dr.tpf_nonpad,
        .seconds = dr.t_total,
        .prefill_seconds = dr.t_first_forward,
        .forward_seconds = dr.t_forward,
        .winner_hist = dr.winner_hist,
        .n_winner_hist = dr.n_winner_hist,
        .finish_reason = finish_reason(g, &dr),
        .settings = lp_opt_settings_json(&g->rq),
    };
    if (!res->text || !res->settings) {
        lopad_result_free(res);
        return KEEP(g, LOPAD_ERR_NOMEM);
    }
    return LOPAD_OK;
}

void lopad_result_free(struct lopad_result *res) {
    if (!res) return;
    lp_free(res->text);
    lp_free(res->ids);
    lp_free(res->canvas);
    lp_free(res->winner_hist);
    lp_free(res->settings);
    memset(res, 0, sizeof *res);
}

void lopad_gen_free(lopad_gen *g) {
    if (!g) return;
    if (g->d) g->s->busy = false;
    lp_decode_free(g->d);
    lp_ids_free(&g->prompt);
    lp_tok_stream_free(&g->ts);
    lp_free(g->out);
    lp_free(g);
}

enum lopad_status lopad_generate(lopad_session *s, const lopad_request *r, lopad_step_fn fn,
                                 void *ud, struct lopad_result *res) {
    if (!res) return lp_error(LOPAD_ERR_ARG, "lopad_generate: no result");
    memset(res, 0, sizeof *res);
    lopad_gen *g;
    enum lopad_status st = lopad_gen_start(s, r, &g);
    if (st != LOPAD_OK) return st;
    while (!lopad_gen_done(g)) {
        const struct lopad_step *ev;
        if ((st = lopad_gen_step(g, &ev))) break;
        if (fn && fn(ud, ev) && !ev->done) {
            g->cancelled = true;
            lp_decode_cancel(g->d);
        }
    }
    if (st == LOPAD_OK) st = lopad_gen_finish(g, res);
    if (st != LOPAD_OK) keep(s->err, sizeof s->err, st);
    lopad_gen_free(g);
    return st;
}
