/*
 * options.c - the table of decoding options (see options.h) and what reads it:
 * parsing from text and JSON, resolving into a decode request, the settings
 * JSON and the help text.
 */
#include "gen/options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "core/common.h"

#define F(field) ((int)offsetof(struct lp_decode_request, field))
#define LLADA LP_D(LP_DEC_LLADA)
#define DREAM LP_D(LP_DEC_DREAM)
#define FAST LP_D(LP_DEC_FAST)
#define D2F LP_D(LP_DEC_D2F)

static const char *const decoder_choices[] = {"llada", "dream", "fast", "d2f", NULL};
static const char *const remasking_choices[] = {"low_confidence", "random", NULL};
static const char *const alg_choices[] = {"origin", "maskgit_plus", "topk_margin", "entropy", NULL};
static const char *const cache_choices[] = {"none", "prefix", "dual", NULL};
static const char *const rule_choices[] = {"threshold", "factor", "topk", NULL};
static const char *const confidence_choices[] = {"auto", "pmax", "margin", "negent", NULL};
static const char *const window_choices[] = {"full", "block-causal", NULL};

#define BIG (1 << 20)

/* clang-format off */
const struct lp_opt lp_opts[] = {
    /* name, type, field, lo, hi, choices, decoders, strict, flag, needs, group, def, metavar, help */
    {"decoder", LP_OPT_ENUM, -1, 0, 0, decoder_choices, LP_D_ALL, false, false, NULL, "decoding",
     "fast (d2f with a LoRA adapter or --lopa)", "D",
     "llada | dream (vanilla), fast (Fast-dLLM), d2f (D2F; + LoPA with --lopa)"},
    {"gen", LP_OPT_INT, F(gen_len), 1, BIG, NULL, LP_D_ALL, false, false, NULL, "decoding", "64",
     "N", "generated positions"},
    {"steps", LP_OPT_INT, F(steps), 1, BIG, NULL, LLADA | DREAM | FAST, false, false, NULL,
     "decoding", "gen", "S", "forwards in total (llada, dream, fast --rule topk)"},
    {"block", LP_OPT_INT, F(block_len), 1, BIG, NULL, LP_D_ALL, false, false, NULL, "decoding",
     "32 (gen when not a multiple of 32); dream: gen", "B",
     "block length (llada, fast, d2f; dream by blocks with --dpad)"},
    {"temperature", LP_OPT_FLOAT, F(temperature), 0, 1e6, NULL, LLADA | DREAM | FAST, false,
     false, NULL, "decoding", "0", "T", "0 = argmax"},
    {"seed", LP_OPT_SEED, F(seed), 0, 0, NULL, LP_D_ALL, false, false, NULL, "decoding", "0", "S",
     "PRNG seed; same seed, same tokens"},
    {"remasking", LP_OPT_ENUM, F(remasking), 0, 0, remasking_choices, LLADA, false, false, NULL,
     "llada", "low_confidence", "R", "which positions a step commits"},
    {"cfg_scale", LP_OPT_FLOAT, F(cfg_scale), 0, 1e6, NULL, LLADA, false, false, NULL, "llada",
     "0", "C", "classifier-free guidance (0 = off)"},
    {"logits_eos_inf", LP_OPT_BOOL, F(logits_eos_inf), 0, 0, NULL, LLADA | FAST, false, true,
     NULL, "llada", "off", NULL, "never propose EOS"},
    {"confidence_eos_eot_inf", LP_OPT_BOOL, F(confidence_eos_eot_inf), 0, 0, NULL, LLADA, false,
     true, NULL, "llada", "off", NULL, "EOS / EoT proposals are committed last"},
    {"eps", LP_OPT_FLOAT, F(eps), 0, 1, NULL, DREAM, false, false, NULL, "dream", "1e-3", "E",
     "time grid linspace(1, E, steps+1)"},
    {"alg", LP_OPT_ENUM, F(alg), 0, 0, alg_choices, DREAM, false, false, NULL, "dream", "entropy",
     "A", "ranking of the positions a step commits"},
    {"alg_temp", LP_OPT_FLOAT, F(alg_temp), 0, 1e6, NULL, DREAM, false, false, NULL, "dream", "0",
     "AT", "sample positions from softmax(conf / AT) (0 = top-k)"},
    {"top_p", LP_OPT_FLOAT, F(top_p), 0, 1, NULL, DREAM | FAST, false, false, NULL, "dream", "1",
     "P", "nucleus filter (1 = off)"},
    {"top_k", LP_OPT_INT, F(top_k), 0, INT_MAX, NULL, DREAM | FAST, false, false, NULL, "dream",
     "0", "K", "top-k filter (0 = off)"},
    {"cache", LP_OPT_ENUM, F(cache), 0, 0, cache_choices, FAST, true, false, NULL, "fast",
     "prefix (dual when the decoder is the default)", "C", "KV cache mode"},
    {"rule", LP_OPT_ENUM, F(rule), 0, 0, rule_choices, FAST, true, false, NULL, "fast",
     "threshold", "R", "parallel commit rule"},
    {"threshold", LP_OPT_FLOAT, F(threshold), 0, 1, NULL, FAST, true, false, NULL, "fast", "0.9",
     "TAU", "threshold rule: commit every pmax >= TAU"},
    {"factor", LP_OPT_FLOAT, F(factor), 0, 1e6, NULL, FAST, true, false, NULL, "fast", "1.0", "F",
     "factor rule: largest n with (n+1)(1-c_n) < F"},
    {"confidence", LP_OPT_ENUM, F(confidence), 0, 0, confidence_choices, FAST | D2F, true, false,
     NULL, "fast", "auto", "C",
     "ranking; auto = the reference's: pmax for threshold / factor and LLaDA, negent for "
     "Dream's top-k schedule and D2F on Dream"},
    {"early_stop", LP_OPT_BOOL, F(early_stop), 0, 0, NULL, FAST, false, false, NULL, "fast", "on",
     "on|off", "a finished block holding EOS ends decoding"},
    {"dream_first_token_commit", LP_OPT_BOOL, F(dream_first_token_commit), 0, 0, NULL, FAST, true,
     true, NULL, "fast", "off", NULL,
     "reference parity: commit a block's first position from the refresh forward (Dream)"},
    {"tau_add", LP_OPT_FLOAT, F(tau_add), 0, 1, NULL, D2F, true, false, NULL, "d2f", "0.1", "A",
     "add a block when the last one is A decoded"},
    {"tau_act", LP_OPT_FLOAT, F(tau_act), 0, 1, NULL, D2F, true, false, NULL, "d2f", "0.95", "T",
     "fully activate the next block when one is T decoded"},
    {"tau_conf", LP_OPT_FLOAT, F(tau_conf), 0, 1, NULL, D2F, true, false, NULL, "d2f", "0.9", "C",
     "commit every masked position with pmax > C"},
    {"lopa", LP_OPT_INT, F(lopa), -1, 64, NULL, D2F | FAST, true, false, NULL, "d2f", "-1 (off)",
     "K", "LoPA: K lookahead branches verified with the anchor in one batched forward (d2f, "
     "or fast --rule threshold)"},
    {"lopa_window_attention", LP_OPT_ENUM, F(lopa_window), 0, 0, window_choices, D2F | FAST, true,
     false, "lopa", "d2f", "full", "W", "attention inside LoPA's window (full as published)"},
    {"dpad", LP_OPT_BOOL, F(dpad), 0, 0, NULL, LLADA | DREAM | FAST, false, true, NULL, "dpad",
     "off", NULL, "drop suffix positions beyond the block (per-block draw)"},
    {"dpad_window", LP_OPT_INT, F(dpad_window), 1, BIG, NULL, LLADA | DREAM | FAST, false, false,
     "dpad", "dpad", "256", "W", "window"},
    {"dpad_sigma", LP_OPT_FLOAT, F(dpad_sigma), 0, 1e6, NULL, LLADA | DREAM | FAST, false, false,
     "dpad", "dpad", "4", "K", "k: x = K d / (W-1)"},
    {"dpad_scale", LP_OPT_FLOAT, F(dpad_scale), 0, 1e6, NULL, LLADA | DREAM | FAST, false, false,
     "dpad", "dpad", "2.0 LLaDA, 1.6 Dream", "A", "keep(d) = min(1, A N(x))"},
    {"preset", LP_OPT_NAME, -1, 0, 0, NULL, LLADA | DREAM | FAST, false, false, NULL, "dpad",
     "none", "NAME", "published DPad settings, e.g. dpad-llada-gsm8k (sets dpad and its options)"},
};
/* clang-format on */
const int lp_n_opts = (int)(sizeof lp_opts / sizeof lp_opts[0]);

_Static_assert(sizeof lp_opts / sizeof lp_opts[0] <= 64, "struct lp_opt_set holds 64 values");

static int opt_index(const struct lp_opt *o) {
    return (int)(o - lp_opts);
}

const struct lp_opt *lp_opt_find(const char *name) {
    for (int i = 0; name && i < lp_n_opts; i++)
        if (!strcmp(lp_opts[i].name, name)) return &lp_opts[i];
    return NULL;
}

/* ----------------------------------------------------------------- parsing */

static void choices_list(const struct lp_opt *o, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; o->choices[i] && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", o->choices[i]);
}

static enum lopad_status parse_bool(const struct lp_opt *o, const char *t, bool *out) {
    static const char *const on[] = {"1", "true", "on", "yes"}, *const off[] = {"0", "false", "off",
                                                                                "no"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(t, on[i])) return *out = true, LOPAD_OK;
        if (!strcmp(t, off[i])) return *out = false, LOPAD_OK;
    }
    return lp_error(LOPAD_ERR_ARG, "option '%s' expects on or off (true / false), got '%.64s'",
                    o->name, t);
}

enum lopad_status lp_opt_parse(const struct lp_opt *o, const char *t, struct lp_opt_value *out) {
    memset(out, 0, sizeof *out);
    out->set = true;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case LP_OPT_INT: {
        long long v = strtoll(t, &end, 10);
        if (!*t || *end || errno || v < o->lo || v > o->hi)
            return lp_error(LOPAD_ERR_ARG,
                            "option '%s' expects an integer in [%.0f, %.0f], got "
                            "'%.64s'",
                            o->name, o->lo, o->hi, t);
        out->i = v;
        return LOPAD_OK;
    }
    case LP_OPT_FLOAT: {
        double v = strtod(t, &end);
        if (!*t || *end || !isfinite(v) || v < o->lo || v > o->hi)
            return lp_error(LOPAD_ERR_ARG,
                            "option '%s' expects a number in [%g, %g], got "
                            "'%.64s'",
                            o->name, o->lo, o->hi, t);
        out->f = v;
        return LOPAD_OK;
    }
    case LP_OPT_BOOL: return parse_bool(o, t, &out->b);
    case LP_OPT_SEED: {
        unsigned long long v = strtoull(t, &end, 10);
        if (!*t || *end || errno || t[0] == '-')
            return lp_error(LOPAD_ERR_ARG,
                            "option '%s' expects a non-negative integer, got "
                            "'%.64s'",
                            o->name, t);
        out->u = v;
        return LOPAD_OK;
    }
    case LP_OPT_ENUM:
        for (int i = 0; o->choices[i]; i++)
            if (!strcmp(t, o->choices[i])) return out->e = i, LOPAD_OK;
        char list[256];
        choices_list(o, list, sizeof list);
        return lp_error(LOPAD_ERR_ARG, "option '%s' expects one of %s, got '%.64s'", o->name, list,
                        t);
    case LP_OPT_NAME: {
        struct lp_decode_request probe; /* the preset table knows its names */
        if (lp_dpad_preset_apply(t, &probe) != LOPAD_OK) {
            char msg[1200];
            snprintf(msg, sizeof msg, "%s", lopad_errmsg());
            return lp_error(LOPAD_ERR_ARG, "option '%s': %s", o->name, msg);
        }
        snprintf(out->name, sizeof out->name, "%s", t);
        return LOPAD_OK;
    }
    }
    return LOPAD_ERR_ARG;
}

static enum lopad_status unknown_option(const char *name) {
    return lp_error(LOPAD_ERR_ARG, "unknown option '%.64s' (see lopad run --help for the options)",
                    name ? name : "");
}

enum lopad_status lp_opt_set_text(struct lp_opt_set *s, const char *name, const char *text) {
    const struct lp_opt *o = lp_opt_find(name);
    if (!o) return unknown_option(name);
    if (!text) return lp_error(LOPAD_ERR_ARG, "option '%s' needs a value", name);
    struct lp_opt_value v;
    enum lopad_status st = lp_opt_parse(o, text, &v);
    if (st == LOPAD_OK) s->v[opt_index(o)] = v;
    return st;
}

/* a JSON value for option o: its own type, or a string parsed as text */
static enum lopad_status set_json_item(struct lp_opt_set *s, const struct lp_opt *o,
                                       const cJSON *it) {
    char buf[64];
    const char *text = NULL;
    if (cJSON_IsString(it)) {
        text = it->valuestring;
    } else if (cJSON_IsBool(it) && o->type == LP_OPT_BOOL) {
        text = cJSON_IsTrue(it) ? "true" : "false";
    } else if (cJSON_IsNumber(it) && (o->type == LP_OPT_INT || o->type == LP_OPT_SEED)) {
        double d = it->valuedouble;
        if (d != floor(d) || fabs(d) > 9007199254740992.0)
            return lp_error(LOPAD_ERR_ARG, "option '%s' expects an integer, got %g", o->name, d);
        snprintf(buf, sizeof buf, "%.0f", d);
        text = buf;
    } else if (cJSON_IsNumber(it) && o->type == LP_OPT_FLOAT) {
        snprintf(buf, sizeof buf, "%.17g", it->valuedouble);
        text = buf;
    } else {
        static const char *const want[] = {"an integer", "a number",   "a boolean",
                                           "a string",   "an integer", "a string"};
        return lp_error(LOPAD_ERR_ARG, "option '%s' expects %s", o->name, want[o->type]);
    }
    return lp_opt_set_text(s, o->name, text);
}

enum lopad_status lp_opt_set_cjson(struct lp_opt_set *s, const cJSON *obj) {
    if (!cJSON_IsObject(obj)) return lp_error(LOPAD_ERR_ARG, "options must be a JSON object");
    for (const cJSON *it = obj->child; it; it = it->next) {
        const struct lp_opt *o = lp_opt_find(it->string);
        if (!o) return unknown_option(it->string);
        enum lopad_status st = set_json_item(s, o, it);
        if (st) return st;
    }
    return LOPAD_OK;
}

enum lopad_status lp_opt_set_json(struct lp_opt_set *s, const char *json, size_t len) {
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!j) return lp_error(LOPAD_ERR_ARG, "options: not valid JSON");
    enum lopad_status st = lp_opt_set_cjson(s, j);
    cJSON_Delete(j);
    return st;
}

/* --------------------------------------------------------------- resolving */

static void store(const struct lp_opt *o, const struct lp_opt_value *v,
                  struct lp_decode_request *rq) {
    char *p = (char *)rq + o->field;
    switch (o->type) {
    case LP_OPT_INT: *(int *)p = (int)v->i; break;
    case LP_OPT_FLOAT: *(double *)p = v->f; break;
    case LP_OPT_BOOL: *(bool *)p = v->b; break;
    case LP_OPT_ENUM: *(int *)p = v->e; break;
    case LP_OPT_SEED: *(uint64_t *)p = v->u; break;
    case LP_OPT_NAME: break;
    }
}

static bool option_on(const struct lp_opt *o, const struct lp_decode_request *rq) {
    const char *p = (const char *)rq + o->field;
    return o->type == LP_OPT_BOOL ? *(const bool *)p : *(const int *)p >= 0;
}

static const struct lp_opt_value *value_of(const struct lp_opt_set *s, const char *name) {
    return &s->v[opt_index(lp_opt_find(name))];
}

/* decoder lists for messages: "fast" or "fast, d2f" */
static void decoder_list(unsigned mask, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int d = 0; d < LP_DEC_COUNT && k < cap; d++)
        if (mask & LP_D(d))
            k += (size_t)snprintf(buf + k, cap - k, "%s%s", k ? " or " : "", decoder_choices[d]);
}

enum lopad_status lp_opt_resolve(const struct lp_opt_set *s, const struct lopad_hparams *hp,
                                 bool has_lora, struct lp_decode_request *rq) {
    const struct lp_opt_value *dec = value_of(s, "decoder"), *gen = value_of(s, "gen");
    const struct lp_opt_value *lopa = value_of(s, "lopa"), *preset = value_of(s, "preset");
    bool auto_decoder = !dec->set;
    enum lp_decoder_kind k = LP_DEC_FAST;
    if (dec->set)
        k = (enum lp_decoder_kind)dec->e;
    else if ((lopa->set && lopa->i >= 0) || has_lora)
        k = LP_DEC_D2F; /* D2F / LoPA: --lopa implies d2f; a LoRA adapter is D2F's */
    lp_decode_request_init(rq, k, gen->set ? (int)gen->i : 64);
    if (auto_decoder && k == LP_DEC_FAST) rq->cache = LP_CACHE_DUAL; /* the fast default */
    if (preset->set && lp_dpad_preset_apply(preset->name, rq)) return LOPAD_ERR_ARG;
    for (int i = 0; i < lp_n_opts; i++) {
        const struct lp_opt *o = &lp_opts[i];
        if (!s->v[i].set || o->field < 0) continue;
        /* an int whose lowest value means off (lopa -1) is fine with any decoder */
        bool off = o->type == LP_OPT_INT && o->lo < 0 && s->v[i].i == (int64_t)o->lo;
        if (o->strict && !(o->decoders & LP_D(k)) && !off) {
            char list[64];
            decoder_list(o->decoders, list, sizeof list);
            return lp_error(LOPAD_ERR_ARG, "option '%s' needs decoder %s (the decoder is %s)",
                            o->name, list, decoder_choices[k]);
        }
        store(o, &s->v[i], rq);
    }
    for (int i = 0; i < lp_n_opts; i++) { /* after all stores: a preset turns dpad on */
        const struct lp_opt *o = &lp_opts[i];
        if (s->v[i].set && o->needs && !option_on(lp_opt_find(o->needs), rq))
            return lp_error(LOPAD_ERR_ARG, "option '%s' needs option '%s'", o->name, o->needs);
    }
    LP_UNUSED(hp);
    return LOPAD_OK;
}

/* ---------------------------------------------------------------- output */

static void add_value(cJSON *j, const struct lp_opt *o, const struct lp_decode_request *rq) {
    const char *p = (const char *)rq + o->field;
    switch (o->type) {
    case LP_OPT_INT: cJSON_AddNumberToObject(j, o->name, *(const int *)p); break;
    case LP_OPT_FLOAT: cJSON_AddNumberToObject(j, o->name, *(const double *)p); break;
    case LP_OPT_BOOL: cJSON_AddBoolToObject(j, o->name, *(const bool *)p); break;
    case LP_OPT_ENUM: {
        int e = *(const int *)p;
        cJSON_AddStringToObject(j, o->name, e >= 0 ? o->choices[e] : "?");
        break;
    }
    case LP_OPT_SEED: { /* exact: a double would round seeds above 2^53 */
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)*(const uint64_t *)p);
        cJSON_AddRawToObject(j, o->name, seed);
        break;
    }
    case LP_OPT_NAME: break;
    }
}

cJSON *lp_opt_settings_cjson(const struct lp_decode_request *rq) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "decoder", decoder_choices[rq->decoder]);
    for (int i = 0; i < lp_n_opts; i++) {
        const struct lp_opt *o = &lp_opts[i];
        if (o->field < 0 || !(o->decoders & LP_D(rq->decoder))) continue;
        if (o->needs && !option_on(lp_opt_find(o->needs), rq)) continue;
        add_value(j, o, rq);
    }
    return j;
}

char *lp_opt_settings_json(const struct lp_decode_request *rq) {
    cJSON *j = lp_opt_settings_cjson(rq);
    char *out = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    char *copy = out ? lp_strdup(out, "settings") : NULL;
    free(out);
    return copy;
}

/* ------------------------------------------------------------------ help */

static void help_row(const struct lp_opt *o, char *buf, size_t cap, size_t *k) {
    char flag[96], rest[200] = "";
    int n = snprintf(flag, sizeof flag, "  --");
    for (const char *c = o->name; *c && n < (int)sizeof flag - 1; c++)
        flag[n++] = *c == '_' ? '-' : *c;
    flag[n] = 0;
    if (o->type == LP_OPT_ENUM) {
        char list[160];
        size_t l = 0;
        for (int i = 0; o->choices[i] && l < sizeof list; i++)
            l += (size_t)snprintf(list + l, sizeof list - l, "%s%s", i ? "|" : "", o->choices[i]);
        snprintf(rest, sizeof rest, " %s", list);
    } else if (!o->flag) {
        snprintf(rest, sizeof rest, " %s", o->metavar ? o->metavar : "V");
    }
    char head[200];
    snprintf(head, sizeof head, "%s%s", flag, rest);
    if (*k < cap)
        *k +=
            (size_t)snprintf(buf + *k, cap - *k, "%-30s %s (default %s)\n", head, o->help, o->def);
}

char *lp_opt_help(void) {
    static const char *const groups[][2] = {
        {"decoding", "Decoding"},
        {"llada", "LLaDA (--decoder llada)"},
        {"dream", "Dream (--decoder dream; top-p/top-k also fast)"},
        {"fast", "Fast-dLLM (--decoder fast)"},
        {"d2f", "D2F / LoPA (--decoder d2f)"},
        {"dpad", "DPad (--decoder fast, llada, or dream --block B)"}};
    size_t cap = 16384, k = 0;
    char *buf = lp_malloc(cap, "help");
    if (!buf) return NULL;
    buf[0] = 0;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        if (k < cap) k += (size_t)snprintf(buf + k, cap - k, "%s:\n", groups[g][1]);
        for (int i = 0; i < lp_n_opts; i++)
            if (!strcmp(lp_opts[i].group, groups[g][0])) help_row(&lp_opts[i], buf, cap, &k);
    }
    return buf;
}
