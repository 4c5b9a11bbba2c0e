/*
 * cmd_eval.c - `lopad eval`: accuracy and speed of a model + decoder on a
 * benchmark (GSM8K, HumanEval, MBPP, MATH-500, or a GSM-format held-out file).
 *
 * Each problem becomes a prompt (chat template when the model has one, K-shot
 * exemplars as earlier turns; plain "Question: / Answer:" style text with --raw),
 * is generated with the decoder options of `lopad run` (shared through run.h) and
 * scored by eval_score.c: GSM strict (#### N) and flexible (last number), MATH by
 * normalised \boxed{} answer, code tasks by running the tests in a separate
 * python3 process (pass@1, greedy). Prints a Markdown table (or --json); --sweep
 * PARAM=v1,v2 repeats the evaluation per value and --plot draws accuracy and TPF
 * against it with gnuplot.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "cli.h"
#include "eval_data.h"
#include "eval_score.h"
#include "run.h"

struct eval_cfg {
    enum lp_eval_task task;
    int limit, shots;
    double timeout; /* seconds per code execution */
    bool chat, json, progress;
    bool show_prompt; /* print the first problem's prompt and stop */
    bool oracle;      /* score the dataset's solutions instead of generating (checks the scorers) */
    FILE *samples;    /* per-problem JSON lines, or NULL */
};

struct eval_result {
    int n, n_correct, n_flex, n_truncated, n_timeouts;
    long n_committed, nfe;
    double seconds;
    char *settings; /* the resolved settings (JSON), NULL for --oracle */
};

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: lopad eval --task TASK [-m MODEL] [options]\n"
        "  --task T             tiny-gsm | gsm8k | humaneval | mbpp | math500 | lopa-demo\n"
        "  --limit N            the first N problems (default: all)\n"
        "  --shots K            few-shot exemplars (default: gsm8k 4, mbpp 3, others 0)\n"
        "  --data FILE          problems from FILE instead of the task's file in data/ (tiny-gsm:\n"
        "                       data/tiny-gsm/heldout.jsonl, GSM8K format)\n"
        "  --timeout S          seconds per code execution (default 10)\n"
        "  --samples FILE       write one JSON line per problem (output, extracted, correct)\n"
        "  --json               one JSON object (task, n, accuracy, flexible_accuracy, tpf,\n"
        "                       nfe, tokens_per_second, settings) instead of the table\n"
        "  --sweep P=v1,v2,...  evaluate once per value of the decoder option --P\n"
        "                       (e.g. lopa=0,1,2 or threshold=0.7,0.9)\n"
        "  --plot FILE.png      with --sweep: accuracy and TPF against P (gnuplot)\n"
        "  --self-test          run the built-in scorer cases and exit\n"
        "  --show-prompt        print the first problem's prompt (as the model sees it)\n"
        "                       and exit\n"
        "  --oracle             score the dataset's own solutions instead of generating (a\n"
        "                       check of data and scorers: expect accuracy 1)\n"
        "  --unsafe-exec        run generated code (humaneval, mbpp) without a sandbox when\n"
        "                       bubblewrap is missing (it runs with your full file access)\n"
        "Generated positions default to the task's (tiny-gsm 48, lopa-demo 64 with\n"
        "blocks of 16, others 256), fitted to the model's context (--gen N).\n"
        "Data: $LOPAD_DATA, else the repository's data/ (or an installed share/lopad/data)\n"
        "found above the lopad binary or the current directory (docs/EVAL.md).\n"
        "Decoder options as for lopad run:\n");
    lp_run_print_help(f);
}

/* ------------------------------------------------------------ generation */

/* one quiet generation of ids on the session: the reply text (control tokens
 * skipped), counts added to r */
static int generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    lopad_request *rq, const int32_t *ids, int n, char **text,
                    struct eval_result *r) {
    struct lp_run_opts q = *o;
    q.quiet = true;
    enum lopad_status st = lopad_request_prompt_ids(rq, ids, n);
    if (st) return lp_cli_fail(cmd, st);
    struct lopad_result res;
    int rc = lp_run_generate(cmd, &q, s, rq, &res);
    if (rc) return rc;
    r->n_committed += res.n_committed;
    r->nfe += res.nfe;
    r->seconds += res.seconds;
    *text = strdup(res.text);
    lopad_result_free(&res);
    return *text ? 0 : lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
}

/* the prompt ids of item `it` (shots as earlier turns / text); *ids: lopad_free */
static int encode_item(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                       const struct eval_cfg *c, const struct lp_eval_set *set,
                       const struct lp_eval_item *it, int32_t **ids, int *n_ids) {
    enum lopad_status st;
    if (c->chat) {
        int n = 0;
        struct lopad_chat_msg *m = calloc((size_t)(2 * set->n_shots + 2), sizeof *m);
        if (!m) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        if (o->system) m[n++] = (struct lopad_chat_msg){"system", o->system};
        for (int i = 0; i < set->n_shots; i++) {
            m[n++] = (struct lopad_chat_msg){"user", set->shots[i].q_chat};
            m[n++] = (struct lopad_chat_msg){"assistant", set->shots[i].a_chat};
        }
        m[n++] = (struct lopad_chat_msg){"user", it->q_chat};
        st = lopad_chat_tokenize(s->model, m, n, ids, n_ids);
        free(m);
        return st ? lp_cli_fail(cmd, st) : 0;
    }
    size_t len = strlen(it->q_raw) + 1;
    for (int i = 0; i < set->n_shots; i++)
        len += strlen(set->shots[i].q_raw) + strlen(set->shots[i].a_raw);
    char *text = malloc(len);
    if (!text) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    text[0] = 0;
    for (int i = 0; i < set->n_shots; i++) {
        strcat(text, set->shots[i].q_raw);
        strcat(text, set->shots[i].a_raw);
    }
    strcat(text, it->q_raw);
    st = lopad_tokenize(s->model, text, strlen(text), ids, n_ids);
    free(text);
    return st ? lp_cli_fail(cmd, st) : 0;
}

/* ---------------------------------------------------------------- scoring */

/* a copy of s cut at the first occurrence of stop (a raw prompt's next exemplar) */
static char *cut_at(const char *s, const char *stop) {
    const char *p = strstr(s, stop);
    return strndup(s, p ? (size_t)(p - s) : strlen(s));
}

/* the Python program for a code task: solution + tests */
static char *code_program(enum lp_eval_task task, const struct lp_eval_item *it, const char *out) {
    char *block = lp_eval_code_block(out);
    char *prog = NULL;
    if (task == LP_TASK_HUMANEVAL) {
        char def[512];
        snprintf(def, sizeof def, "def %s", it->ref);
        const char *code = block ? block : out;
        char *body = NULL;
        int n = 0;
        if (strstr(code, def)) /* a whole function: defined after the prompt's (imports) */
            n = asprintf(&prog, "%s\n    pass\n\n%s\n\n%s", it->code_prompt, code, it->tests);
        else if ((body = lp_eval_cut_completion(code)))
            n = asprintf(&prog, "%s%s\n\n%s", it->code_prompt, body, it->tests);
        if (n < 0) prog = NULL;
        free(body);
    } else {
        char *code = block ? block : cut_at(out, "[DONE]");
        if (code && asprintf(&prog, "%s\n\n%s", code, it->tests) < 0) prog = NULL;
        if (!block) free(code);
    }
    free(block);
    return prog;
}

struct score {
    bool correct, flex, timeout;
    char *extracted; /* shown in --samples */
};

static void score_item(const struct eval_cfg *c, const struct lp_eval_item *it, const char *out,
                       struct score *sc) {
    memset(sc, 0, sizeof *sc);
    switch (c->task) {
    case LP_TASK_TINY_GSM:
    case LP_TASK_LOPA_DEMO:
    case LP_TASK_GSM8K: {
        char *cut = cut_at(out, "Question:");
        char *strict = lp_eval_gsm_strict(cut ? cut : out);
        char *flex = lp_eval_last_number(cut ? cut : out);
        sc->correct = lp_eval_num_equal(strict, it->ref);
        sc->flex = lp_eval_num_equal(flex, it->ref);
        sc->extracted = strict ? strict : flex;
        if (strict) free(flex);
        free(cut);
        break;
    }
    case LP_TASK_MATH500: {
        char *cut = cut_at(out, "Problem:");
        sc->extracted = lp_eval_math_extract(cut ? cut : out);
        sc->correct = sc->flex = lp_eval_math_equal(sc->extracted, it->ref);
        free(cut);
        break;
    }
    default: {
        char *prog = code_program(c->task, it, out);
        enum lp_exec_result r = prog ? lp_eval_exec_python(prog, c->timeout) : LP_EXEC_ERROR;
        sc->correct = sc->flex = r == LP_EXEC_PASS;
        sc->timeout = r == LP_EXEC_TIMEOUT;
        sc->extracted = strdup(lp_exec_result_name(r));
        free(prog);
        break;
    }
    }
}

/* ------------------------------------------------------------ evaluation */

static void write_sample(FILE *f, const struct lp_eval_item *it, const char *out,
                         const struct score *sc, const char *label) {
    cJSON *j = cJSON_CreateObject();
    if (label) cJSON_AddStringToObject(j, "sweep", label);
    cJSON_AddStringToObject(j, "id", it->id);
    /* the library's text is valid UTF-8 (stray bytes of a random model are U+FFFD) */
    cJSON_AddStringToObject(j, "output", out);
    if (sc->extracted) cJSON_AddStringToObject(j, "extracted", sc->extracted);
    if (it->ref && *it->ref) cJSON_AddStringToObject(j, "reference", it->ref);
    cJSON_AddBoolToObject(j, "correct", sc->correct);
    cJSON_AddBoolToObject(j, "flexible_correct", sc->flex);
    char *s = cJSON_PrintUnformatted(j);
    if (s) fprintf(f, "%s\n", s);
    free(s);
    cJSON_Delete(j);
}

/* the generated positions a request asks for (its resolved "gen") */
static int request_gen(const char *settings) {
    cJSON *j = cJSON_Parse(settings);
    const cJSON *g = cJSON_GetObjectItem(j, "gen");
    int gen = cJSON_IsNumber(g) ? g->valueint : 0;
    cJSON_Delete(j);
    return gen;
}

static void show_prompt(const char *cmd, const struct lp_run_session *s, const int32_t *ids, int n,
                        int ctx_limit, int *rc) {
    char *text = NULL; /* the exact text the model sees, control tokens included */
    enum lopad_status st = lopad_detokenize(s->model, ids, n, false, &text, NULL);
    if (st) {
        *rc = lp_cli_fail(cmd, st);
        return;
    }
    printf("%s\n[%d prompt tokens, context %d]\n", text, n, ctx_limit == INT_MAX ? 0 : ctx_limit);
    lopad_free(text);
}

static void progress(const struct eval_cfg *c, const struct lp_eval_set *set, const char *label,
                     const struct eval_result *r) {
    int w = 30, done = (int)((long)w * r->n / set->n_items);
    fprintf(stderr, "\r\033[K%s%s%s [", lp_eval_task_name(c->task), label ? " " : "",
            label ? label : "");
    for (int k = 0; k < w; k++)
        fputc(k < done ? '#' : '.', stderr);
    fprintf(stderr, "] %d/%d acc %.3f tpf %.2f", r->n, set->n_items, (double)r->n_correct / r->n,
            r->nfe ? (double)r->n_committed / r->nfe : 0.0);
    fflush(stderr);
}

static int evaluate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    lopad_request *rq, const struct eval_cfg *c, const struct lp_eval_set *set,
                    const char *label, struct eval_result *r) {
    memset(r, 0, sizeof *r);
    int rc = 0, ctx_limit = INT_MAX, gen = 0;
    if (!c->oracle) {
        enum lopad_status st = lopad_request_settings(rq, s->model, &r->settings);
        if (st) return lp_cli_fail(cmd, st) + 1;
        gen = request_gen(r->settings);
        if (s->hp->n_ctx_train > 0) ctx_limit = s->hp->n_ctx_train;
        if (gen >= ctx_limit)
            return lp_cli_usage_error(cmd, "--gen %d leaves no room for a prompt (context %d)", gen,
                                      ctx_limit);
    }
    for (int i = 0; i < set->n_items && !rc; i++) {
        const struct lp_eval_item *it = &set->items[i];
        int32_t *ids = NULL;
        int np = 0;
        if (!c->oracle) rc = encode_item(cmd, o, s, c, set, it, &ids, &np);
        if (!rc && c->show_prompt) {
            show_prompt(cmd, s, ids, np, ctx_limit, &rc);
            lopad_free(ids);
            break;
        }
        int keep = ctx_limit - gen, skip = 0;
        if (np > keep) { /* the model's context is too short: keep the prompt's end */
            skip = np - keep;
            r->n_truncated++;
        }
        char *out = NULL;
        if (rc) {
            /* nothing */
        } else if (c->oracle) {
            if (!(out = strdup(it->solution))) rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        } else {
            rc = generate(cmd, o, s, rq, ids + skip, np - skip, &out, r);
        }
        lopad_free(ids);
        if (rc) break;
        struct score sc;
        score_item(c, it, out, &sc);
        r->n++;
        r->n_correct += sc.correct;
        r->n_flex += sc.flex;
        r->n_timeouts += sc.timeout;
        if (c->samples) write_sample(c->samples, it, out, &sc, label);
        free(sc.extracted);
        free(out);
        if (c->progress) progress(c, set, label, r);
    }
    if (c->progress) fputs("\r\033[K", stderr);
    return rc;
}

/* ---------------------------------------------------------------- output */

static double ratio(double a, double b) {
    return b > 0 ? a / b : 0;
}

static bool gsm_style(enum lp_eval_task t) {
    return t == LP_TASK_GSM8K || t == LP_TASK_TINY_GSM || t == LP_TASK_LOPA_DEMO;
}

/* the settings that matter most, as "decoder k=v k=v" */
static void settings_text(const char *settings, char *b, size_t cap) {
    static const char *const keys[] = {"gen",       "steps",    "block", "temperature",
                                       "remasking", "alg",      "cache", "rule",
                                       "threshold", "tau_conf", "lopa",  "dpad"};
    cJSON *j = cJSON_Parse(settings ? settings : "{}");
    const cJSON *d = cJSON_GetObjectItem(j, "decoder");
    int k = snprintf(b, cap, "%s", cJSON_IsString(d) ? d->valuestring : "oracle");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && k < (int)cap; i++) {
        const cJSON *v = cJSON_GetObjectItem(j, keys[i]);
        if (!v || cJSON_IsFalse(v) || (!strcmp(keys[i], "lopa") && v->valuedouble < 0)) continue;
        if (cJSON_IsTrue(v))
            k += snprintf(b + k, cap - (size_t)k, " %s", keys[i]);
        else if (cJSON_IsString(v))
            k += snprintf(b + k, cap - (size_t)k, " %s=%s", keys[i], v->valuestring);
        else
            k += snprintf(b + k, cap - (size_t)k, " %s=%g", keys[i], v->valuedouble);
    }
    cJSON_Delete(j);
}

static cJSON *result_json(const struct eval_cfg *c, const struct eval_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "task", lp_eval_task_name(c->task));
    cJSON_AddNumberToObject(j, "n", r->n);
    cJSON_AddNumberToObject(j, "accuracy", ratio(r->n_correct, r->n));
    if (gsm_style(c->task))
        cJSON_AddNumberToObject(j, "flexible_accuracy", ratio(r->n_flex, r->n));
    else
        cJSON_AddNullToObject(j, "flexible_accuracy");
    cJSON_AddStringToObject(j, "metric",
                            lp_eval_task_is_code(c->task) ? "pass@1"
                            : gsm_style(c->task)          ? "strict_match"
                                                          : "answer_match");
    cJSON_AddNumberToObject(j, "tpf", ratio((double)r->n_committed, (double)r->nfe));
    cJSON_AddNumberToObject(j, "nfe", ratio((double)r->nfe, r->n));
    cJSON_AddNumberToObject(j, "tokens_per_second", ratio((double)r->n_committed, r->seconds));
    cJSON_AddNumberToObject(j, "n_committed", (double)r->n_committed);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    cJSON_AddNumberToObject(j, "truncated_prompts", r->n_truncated);
    if (lp_eval_task_is_code(c->task)) cJSON_AddNumberToObject(j, "timeouts", r->n_timeouts);
    cJSON_AddNumberToObject(j, "shots", c->shots);
    cJSON_AddBoolToObject(j, "chat", c->chat);
    if (c->oracle) cJSON_AddBoolToObject(j, "oracle", true);
    if (r->settings) cJSON_AddItemToObject(j, "settings", cJSON_Parse(r->settings));
    return j;
}

static void table_row(const struct eval_cfg *c, const struct eval_result *r, const char *value) {
    char set[512], flex[32];
    settings_text(r->settings, set, sizeof set);
    if (gsm_style(c->task))
        snprintf(flex, sizeof flex, "%.4f", ratio(r->n_flex, r->n));
    else
        snprintf(flex, sizeof flex, "-");
    if (value) printf("| %s ", value);
    printf("| %s | %d | %.4f | %s | %.2f | %.1f | %.1f | %s |\n", lp_eval_task_name(c->task), r->n,
           ratio(r->n_correct, r->n), flex, ratio((double)r->n_committed, (double)r->nfe),
           ratio((double)r->nfe, r->n), ratio((double)r->n_committed, r->seconds), set);
}

static void table_head(const char *param) {
    if (param) printf("| %s ", param);
    printf("| task | n | accuracy | flexible | TPF | NFE | tokens/s | settings |\n");
    if (param) printf("|---");
    printf("|---|---:|---:|---:|---:|---:|---:|---|\n");
}

static bool have_program(const char *name) {
    const char *path = getenv("PATH");
    if (!path) return false;
    char *dup = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = dup ? strtok_r(dup, ":", &save) : NULL; d && !found;
         d = strtok_r(NULL, ":", &save)) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", *d ? d : ".", name);
        found = access(p, X_OK) == 0;
    }
    free(dup);
    return found;
}

/* accuracy (left axis) and TPF (right axis) against the swept values */
static int plot(const char *cmd, const char *file, const char *param, char **values,
                const struct eval_result *r, int n, const struct eval_cfg *c) {
    if (!have_program("gnuplot")) {
        fprintf(stderr, "lopad %s: gnuplot is not installed; no plot written (table only)\n", cmd);
        return 1;
    }
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        fprintf(stderr, "lopad %s: cannot start gnuplot\n", cmd);
        return 1;
    }
    fprintf(g, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size "
               "900,540 } else { set terminal png size 900,540 }\n");
    fputs("set output '", g);
    for (const char *p = file; *p; p++)
        fputs(*p == '\'' ? "''" : (char[]){*p, 0}, g);
    fputs("'\n", g);
    fprintf(g,
            "set title '%s: accuracy and TPF vs %s'\nset xlabel '%s'\n"
            "set ylabel 'accuracy'\nset y2label 'TPF (tokens per forward)'\n"
            "set yrange [0:1.05]\nset y2range [0:*]\nset ytics nomirror\nset y2tics\n"
            "set grid\nset key top left\n$D << EOD\n",
            lp_eval_task_name(c->task), param, param);
    for (int i = 0; i < n; i++)
        fprintf(g, "\"%s\" %.6f %.6f\n", values[i], ratio(r[i].n_correct, r[i].n),
                ratio((double)r[i].n_committed, (double)r[i].nfe));
    fprintf(g, "EOD\nplot $D using 0:2:xtic(1) with linespoints lw 2 title 'accuracy' axes x1y1, "
               "$D using 0:3 with linespoints lw 2 title 'TPF' axes x1y2\n");
    int st = pclose(g);
    if (st != 0) {
        fprintf(stderr, "lopad %s: gnuplot failed (status %d); no plot written\n", cmd, st);
        return 1;
    }
    fprintf(stderr, "lopad %s: plot written to %s\n", cmd, file);
    return 0;
}

/* ------------------------------------------------------------------ main */

/* "threshold=0.7,0.9" -> the option name and the values (in buf) */
static int parse_sweep(const char *cmd, const char *spec, char *opt, size_t cap, char **buf,
                       char ***values, int *n) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return lp_cli_usage_error(cmd, "--sweep expects PARAM=v1,v2,... (got '%s')", spec);
    const char *name = spec[0] == '-' && spec[1] == '-' ? spec + 2 : spec;
    size_t pl = (size_t)(eq - name);
    if (pl + 1 > cap) return lp_cli_usage_error(cmd, "--sweep: parameter name too long");
    snprintf(opt, cap, "%.*s", (int)pl, name);
    for (char *p = opt; *p; p++)
        if (*p == '-') *p = '_';
    *buf = strdup(eq + 1);
    if (!*buf) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    int cnt = 1;
    for (char *p = *buf; *p; p++)
        cnt += *p == ',';
    *values = calloc((size_t)cnt, sizeof **values);
    if (!*values) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    char *s = *buf;
    for (int i = 0; i < cnt; i++) {
        char *c = strchr(s, ',');
        if (c) *c = 0;
        if (!*s) return lp_cli_usage_error(cmd, "--sweep: empty value in '%s'", spec);
        (*values)[i] = s;
        s = c ? c + 1 : s + strlen(s);
    }
    *n = cnt;
    return 0;
}

/* The request of sweep value v: a copy of the base with the option set (the
 * option table checks the name and the value). *out = NULL without a sweep. */
static int sweep_request(const char *cmd, const lopad_request *base, const char *opt,
                         const char *value, lopad_request **out) {
    *out = NULL;
    if (!opt) return 0;
    if (lopad_request_dup(base, out)) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    if (lopad_request_set(*out, opt, value) == LOPAD_OK) return 0;
    int rc = lp_cli_usage_error(cmd, "--sweep: %s", lopad_request_errmsg(*out));
    lopad_request_free(*out);
    *out = NULL;
    return rc;
}

/* whether the options resolve to the whole-canvas dream decoder (which takes no block) */
static int resolves_to_dream(const char *cmd, const struct lp_run_opts *o,
                             const struct lp_run_session *s, bool *dream) {
    char *js = NULL;
    if (lopad_request_settings(o->rq, s->model, &js)) return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    *dream = strstr(js, "\"decoder\":\"dream\"") != NULL;
    lopad_free(js);
    return 0;
}

/* The task's generation length when the command line gave none, fitted to the
 * model's context and the longest prompt (rounded to the block: --block, else 32 for
 * the block decoders, 1 for dream). */
static int fit_gen(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s,
                   const struct eval_cfg *c, const struct lp_eval_set *set, int block) {
    int longest = 0, rc = 0;
    for (int i = 0; i < set->n_items && !rc; i++) {
        int32_t *ids = NULL;
        int n = 0;
        rc = encode_item(cmd, o, s, c, set, &set->items[i], &ids, &n);
        if (n > longest) longest = n;
        lopad_free(ids);
    }
    if (rc) return rc;
    bool dream;
    if ((rc = resolves_to_dream(cmd, o, s, &dream))) return rc;
    int align = block > 0 ? block : dream ? 1 : 32;
    int gen = lp_eval_fit_gen(cmd, c->task, lp_eval_task_default_gen(c->task), align,
                              s->hp->n_ctx_train, longest);
    if (gen <= 0) return 2;
    char v[16];
    snprintf(v, sizeof v, "%d", gen);
    return lp_run_set_option(cmd, o->rq, "gen", v);
}

/* lopa-demo's answers decode in blocks of 16 (its model was trained so) unless the
 * command line says otherwise; the whole-canvas dream decoder takes no block */
static int task_block(const char *cmd, struct lp_run_opts *o, const struct lp_run_session *s,
                      enum lp_eval_task task, int *block) {
    if (task != LP_TASK_LOPA_DEMO) return 0;
    bool dream;
    int rc = resolves_to_dream(cmd, o, s, &dream);
    if (rc || dream) return rc;
    *block = 16;
    return lp_run_set_option(cmd, o->rq, "block", "16");
}

static int print_results(const struct eval_cfg *c, const char *sweep, char **values, int n_values,
                         const struct eval_result *res) {
    int rc = 0;
    if (c->json) {
        cJSON *j;
        if (sweep) {
            j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "task", lp_eval_task_name(c->task));
            cJSON_AddStringToObject(j, "sweep", sweep);
            cJSON *arr = cJSON_AddArrayToObject(j, "results");
            for (int v = 0; v < n_values; v++) {
                cJSON *r = result_json(c, &res[v]);
                cJSON_AddStringToObject(r, "value", values[v]);
                cJSON_AddItemToArray(arr, r);
            }
        } else {
            j = result_json(c, &res[0]);
        }
        char *out = cJSON_PrintUnformatted(j);
        if (out)
            puts(out);
        else
            rc = 1;
        free(out);
        cJSON_Delete(j);
    } else {
        table_head(sweep);
        for (int v = 0; v < n_values; v++)
            table_row(c, &res[v], sweep ? values[v] : NULL);
    }
    fflush(stdout);
    return rc;
}

struct eval_args {
    const char *data, *sweep, *plot_file, *samples;
    bool self_test, gen_set;
    int block; /* --block when given */
};

/* the command line; 0, -1 = done (help printed), or an exit code */
static int parse_args(const char *cmd, int argc, char **argv, struct lp_run_opts *o,
                      struct eval_cfg *c, struct eval_args *a) {
    long l;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return -1;
        }
        bool has_val = i + 1 < argc;
        if (!strcmp(f, "--self-test")) {
            a->self_test = true;
        } else if (!strcmp(f, "--unsafe-exec")) {
            lp_eval_set_unsafe_exec(true);
        } else if (!strcmp(f, "--show-prompt")) {
            c->show_prompt = true;
        } else if (!strcmp(f, "--oracle")) {
            c->oracle = true;
        } else if (!strcmp(f, "--task") || !strcmp(f, "--data") || !strcmp(f, "--sweep") ||
                   !strcmp(f, "--plot") || !strcmp(f, "--samples") || !strcmp(f, "--limit") ||
                   !strcmp(f, "--shots") || !strcmp(f, "--timeout")) {
            if (!has_val) return lp_cli_usage_error(cmd, "%s needs a value", f);
            const char *v = argv[++i];
            if (!strcmp(f, "--task")) {
                if (!lp_eval_task_parse(v, &c->task))
                    return lp_cli_usage_error(
                        cmd,
                        "unknown task '%s' (tiny-gsm, gsm8k, humaneval, mbpp, math500, lopa-demo)",
                        v);
            } else if (!strcmp(f, "--data")) {
                a->data = v;
            } else if (!strcmp(f, "--sweep")) {
                a->sweep = v;
            } else if (!strcmp(f, "--plot")) {
                a->plot_file = v;
            } else if (!strcmp(f, "--samples")) {
                a->samples = v;
            } else if (!strcmp(f, "--limit")) {
                if (!lp_cli_parse_int(cmd, f, v, 1, INT_MAX, &l)) return 2;
                c->limit = (int)l;
            } else if (!strcmp(f, "--shots")) {
                if (!lp_cli_parse_int(cmd, f, v, 0, 64, &l)) return 2;
                c->shots = (int)l;
            } else {
                double d;
                if (!lp_cli_parse_float(cmd, f, v, &d)) return 2;
                if (!(d > 0 && d <= 3600))
                    return lp_cli_usage_error(cmd, "--timeout expects seconds in (0, 3600]");
                c->timeout = d;
            }
        } else {
            a->gen_set |= !strcmp(f, "--gen");
            if (!strcmp(f, "--block") && i + 1 < argc) a->block = atoi(argv[i + 1]);
            int r = lp_run_parse_opt(cmd, argc, argv, &i, o);
            if (r < 0) return 2;
            if (r == 0)
                return lp_cli_usage_error(cmd, "unknown option '%s' (see lopad eval --help)", f);
        }
    }
    if (a->self_test) return 0;
    if (c->task == LP_TASK_COUNT)
        return lp_cli_usage_error(
            cmd, "give --task (tiny-gsm, gsm8k, humaneval, mbpp, math500, lopa-demo)");
    if (o->visual) return lp_cli_usage_error(cmd, "--visual is for lopad run");
    if (o->chat && o->raw) return lp_cli_usage_error(cmd, "--chat and --raw exclude each other");
    if (a->plot_file && !a->sweep) return lp_cli_usage_error(cmd, "--plot needs --sweep");
    if (c->show_prompt && (c->oracle || a->sweep))
        return lp_cli_usage_error(cmd, "--show-prompt excludes --oracle and --sweep");
    return 0;
}

static int run_eval(const char *cmd, struct lp_run_opts *o, struct eval_cfg *c,
                    const struct eval_args *a) {
    char opt[64];
    char *sweep_buf = NULL, **values = NULL;
    int n_values = 1, rc = 0;
    struct lp_eval_set set = {0};
    struct eval_result *res = NULL;
    lopad_request **rqs = NULL;
    struct lp_run_session s = {0};
    if (a->sweep) rc = parse_sweep(cmd, a->sweep, opt, sizeof opt, &sweep_buf, &values, &n_values);
    if (!rc) rc = lp_eval_load(cmd, c->task, a->data, c->limit, c->shots, &set);
    if (rc) goto done;
    c->shots = set.n_shots;
    if (lp_eval_task_is_code(c->task)) { /* generated code runs only in a sandbox */
        char why[800];
        if (lp_eval_sandbox_check(why, sizeof why)) {
            if (!lp_eval_unsafe_exec()) {
                fprintf(stderr, "lopad %s: %s\n", cmd, why);
                rc = 2;
                goto done;
            }
            fprintf(stderr, "lopad %s: warning: %s; running generated code unconfined\n", cmd, why);
        }
    }
    if (a->samples && !(c->samples = fopen(a->samples, "w"))) {
        fprintf(stderr, "lopad %s: cannot write %s: %s\n", cmd, a->samples, strerror(errno));
        rc = 2;
        goto done;
    }
    if (!c->oracle && (rc = lp_run_session_open(cmd, o, &s))) goto done;
    if (!c->oracle && !lopad_model_has_tokenizer(s.model)) {
        rc = lp_cli_usage_error(cmd, "the model has no tokenizer: eval needs text prompts");
        goto done;
    }
    bool has_style = !c->oracle && lopad_model_has_chat_template(s.model);
    if (o->chat && !has_style) {
        rc = lp_cli_usage_error(cmd, "the model has no usable chat template; use --raw");
        goto done;
    }
    c->chat = !c->oracle && (o->chat || (!o->raw && has_style));
    int block = a->block;
    if (!c->oracle && !block && (rc = task_block(cmd, o, &s, c->task, &block))) goto done;
    if (!c->oracle && !a->gen_set && (rc = fit_gen(cmd, o, &s, c, &set, block))) goto done;
    c->progress = isatty(2);
    res = calloc((size_t)n_values, sizeof *res);
    rqs = calloc((size_t)n_values, sizeof *rqs);
    if (!res || !rqs) {
        rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        goto done;
    }
    for (int v = 0; v < n_values && !rc; v++) { /* every request valid before any work */
        char *js = NULL;
        rc = sweep_request(cmd, o->rq, a->sweep ? opt : NULL, a->sweep ? values[v] : NULL, &rqs[v]);
        if (!rc && !c->oracle) {
            enum lopad_status st = lopad_request_settings(rqs[v] ? rqs[v] : o->rq, s.model, &js);
            if (st) rc = lp_cli_fail(cmd, st) + 1;
        }
        lopad_free(js);
    }
    for (int v = 0; v < n_values && !rc; v++) {
        char label[128] = "";
        if (a->sweep) snprintf(label, sizeof label, "%s=%s", opt, values[v]);
        rc = evaluate(cmd, o, &s, rqs[v] ? rqs[v] : o->rq, c, &set, a->sweep ? label : NULL,
                      &res[v]);
    }
    if (rc || c->show_prompt) goto done;
    rc = print_results(c, a->sweep ? opt : NULL, values, n_values, res);
    for (int v = 0; v < n_values; v++)
        if (res[v].n_truncated)
            fprintf(stderr,
                    "lopad %s: %d prompts were longer than the model's context and lost their "
                    "beginning\n",
                    cmd, res[v].n_truncated);
    if (a->plot_file && !rc) rc = plot(cmd, a->plot_file, opt, values, res, n_values, c);
done:
    if (c->samples) fclose(c->samples);
    if (s.model) lp_run_session_close(&s);
    lp_eval_set_free(&set);
    for (int v = 0; res && v < n_values; v++)
        lopad_free(res[v].settings);
    for (int v = 0; rqs && v < n_values; v++)
        lopad_request_free(rqs[v]);
    free(rqs);
    free(res);
    free(values);
    free(sweep_buf);
    return rc;
}

static int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval";
    struct lp_run_opts o;
    if (lp_run_opts_init(&o)) return 1;
    struct eval_cfg c = {.task = LP_TASK_COUNT, .shots = -1, .timeout = 10};
    struct eval_args a = {0};
    int rc = parse_args(cmd, argc, argv, &o, &c, &a);
    if (rc == 0 && a.self_test) {
        rc = lp_eval_self_test() ? 1 : 0;
    } else if (rc == 0) {
        c.json = o.json;
        if (c.shots < 0) c.shots = lp_eval_task_default_shots(c.task);
        rc = run_eval(cmd, &o, &c, &a);
    }
    lp_run_opts_free(&o);
    return rc < 0 ? 0 : rc;
}

LP_CLI_COMMAND("eval", cmd_eval, "accuracy and speed on GSM8K, HumanEval, MBPP, MATH-500")
