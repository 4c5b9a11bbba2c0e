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
#include "core/common.h"
#include "decode/decode.h"
#include "model/chat.h"
#include "model/tokenizer.h"

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
    struct lp_decode_request rq; /* the settings (prompt fields unused) */
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: lopad eval --task TASK [-m MODEL] [options]\n"
            "  --task T             tiny-gsm | gsm8k | humaneval | mbpp | math500\n"
            "  --limit N            the first N problems (default: all)\n"
            "  --shots K            few-shot exemplars (default: gsm8k 4, mbpp 3, others 0)\n"
            "  --data FILE          problems from FILE instead of ../shared/data/bench (tiny-gsm:\n"
            "                       default tools/train/data/heldout.jsonl, GSM8K format)\n"
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
            "Generated positions default to 256 here (--gen N).\n"
            "The shared data folder: $LOPAD_SHARED, else a shared/data/bench found above the\n"
            "lopad binary or the current directory. Decoder options as for lopad run:\n");
    fputs(lp_run_opts_help, f);
}

/* ------------------------------------------------------------ generation */

/* one quiet generation through lopad run's path (run.h): the reply text (special
 * tokens skipped), stats added to r */
static int generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    struct lp_decode_request *rq, char **text, struct eval_result *r) {
    struct lp_run_opts q = *o;
    q.quiet = true;
    struct lp_ids reply = {0};
    struct lp_run_stats stats;
    int rc = lp_run_generate_ex(cmd, &q, s, rq, &reply, &stats);
    if (!rc) {
        r->n_committed += stats.n_committed;
        r->nfe += stats.nfe;
        r->seconds += stats.seconds;
        enum lopad_status st = lp_tokenizer_decode(s->tok, reply.v, reply.n, true, text, NULL);
        if (st) rc = lp_cli_fail(cmd, st);
    }
    lp_ids_free(&reply);
    return rc;
}

/* the prompt ids of item `it` (shots as earlier turns / text) */
static int encode_item(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                       const struct eval_cfg *c, const struct lp_eval_set *set,
                       const struct lp_eval_item *it, struct lp_ids *enc) {
    int rc = 0;
    if (c->chat) {
        int n = 0;
        struct lp_chat_msg *m = calloc((size_t)(2 * set->n_shots + 1), sizeof *m);
        if (!m) return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        for (int i = 0; i < set->n_shots; i++) {
            m[n++] = (struct lp_chat_msg){"user", set->shots[i].q_chat};
            m[n++] = (struct lp_chat_msg){"assistant", set->shots[i].a_chat};
        }
        m[n++] = (struct lp_chat_msg){"user", it->q_chat};
        rc = lp_run_encode(cmd, s, m, n, o->system, true, enc);
        free(m);
        return rc;
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
    struct lp_chat_msg msg = {"user", text};
    rc = lp_run_encode(cmd, s, &msg, 1, NULL, false, enc);
    free(text);
    return rc;
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

/* a copy that is valid UTF-8 for JSON: a random model's stray bytes become '?' */
static char *utf8_clean(const char *s) {
    char *o = strdup(s);
    if (!o) return NULL;
    unsigned char *p = (unsigned char *)o;
    for (size_t i = 0; p[i];) {
        unsigned c = p[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0;
        for (int j = 1; ok && j < len; j++)
            ok = (p[i + j] >> 6) == 2; /* also stops at the NUL */
        if (ok && len == 2) ok = c >= 0xC2;
        if (ok && len == 3)
            ok = !(c == 0xE0 && p[i + 1] < 0xA0) && !(c == 0xED && p[i + 1] >= 0xA0);
        if (ok && len == 4)
            ok = c <= 0xF4 && !(c == 0xF0 && p[i + 1] < 0x90) && !(c == 0xF4 && p[i + 1] >= 0x90);
        if (!ok) {
            p[i++] = '?';
            continue;
        }
        i += (size_t)len;
    }
    return o;
}

static void write_sample(FILE *f, const struct lp_eval_item *it, const char *out,
                         const struct score *sc, const char *label) {
    cJSON *j = cJSON_CreateObject();
    if (label) cJSON_AddStringToObject(j, "sweep", label);
    cJSON_AddStringToObject(j, "id", it->id);
    char *o = utf8_clean(out), *x = sc->extracted ? utf8_clean(sc->extracted) : NULL;
    if (o) cJSON_AddStringToObject(j, "output", o);
    if (x) cJSON_AddStringToObject(j, "extracted", x);
    free(o);
    free(x);
    if (it->ref && *it->ref) cJSON_AddStringToObject(j, "reference", it->ref);
    cJSON_AddBoolToObject(j, "correct", sc->correct);
    cJSON_AddBoolToObject(j, "flexible_correct", sc->flex);
    char *s = cJSON_PrintUnformatted(j);
    if (s) fprintf(f, "%s\n", s);
    free(s);
    cJSON_Delete(j);
}

static int evaluate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    const struct eval_cfg *c, const struct lp_eval_set *set, const char *label,
                    struct eval_result *r) {
    memset(r, 0, sizeof *r);
    int rc = 0, ctx_limit = INT_MAX;
    if (!c->oracle) rc = lp_run_make_request(cmd, o, s, &r->rq);
    if (rc) return rc;
    if (!c->oracle && s->hp->n_ctx_train > 0) ctx_limit = s->hp->n_ctx_train;
    if (!c->oracle && r->rq.gen_len >= ctx_limit)
        return lp_cli_usage_error(cmd, "--gen %d leaves no room for a prompt (context %d)",
                                  r->rq.gen_len, ctx_limit);
    struct lp_ids enc = {0};
    for (int i = 0; i < set->n_items && !rc; i++) {
        const struct lp_eval_item *it = &set->items[i];
        if (!c->oracle) rc = encode_item(cmd, o, s, c, set, it, &enc);
        if (rc) break;
        if (c->show_prompt) { /* the exact text the model sees, special tokens included */
            char *text = NULL;
            enum lopad_status st = lp_tokenizer_decode(s->tok, enc.v, enc.n, false, &text, NULL);
            if (st) {
                rc = lp_cli_fail(cmd, st);
            } else {
                printf("%s\n", text);
                printf("[%zu prompt tokens, context %d]\n", enc.n,
                       ctx_limit == INT_MAX ? 0 : ctx_limit);
            }
            lp_free(text);
            break;
        }
        struct lp_decode_request rq = r->rq;
        int keep = ctx_limit - rq.gen_len;
        const int32_t *p = enc.v;
        int np = (int)enc.n;
        if (np > keep) { /* the model's context is too short: keep the prompt's end */
            p += np - keep;
            np = keep;
            r->n_truncated++;
        }
        rq.prompt = p;
        rq.n_prompt = np;
        char *out = NULL;
        if (c->oracle) {
            if (!(out = strdup(it->solution))) rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        } else {
            rc = generate(cmd, o, s, &rq, &out, r);
        }
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
        if (c->progress) {
            int w = 30, done = (int)((long)w * r->n / set->n_items);
            fprintf(stderr, "\r\033[K%s%s%s [", lp_eval_task_name(c->task), label ? " " : "",
                    label ? label : "");
            for (int k = 0; k < w; k++)
                fputc(k < done ? '#' : '.', stderr);
            fprintf(stderr, "] %d/%d acc %.3f tpf %.2f", r->n, set->n_items,
                    (double)r->n_correct / r->n, r->nfe ? (double)r->n_committed / r->nfe : 0.0);
            fflush(stderr);
        }
    }
    if (c->progress) fputs("\r\033[K", stderr);
    lp_ids_free(&enc);
    return rc;
}

/* ---------------------------------------------------------------- output */

static double ratio(double a, double b) {
    return b > 0 ? a / b : 0;
}

static bool gsm_style(enum lp_eval_task t) {
    return t == LP_TASK_GSM8K || t == LP_TASK_TINY_GSM;
}

/* the decoder settings that matter for this request, as "k=v k=v" */
static void settings_text(const struct lp_decode_request *rq, const struct eval_cfg *c, char *b,
                          size_t cap) {
    int k = snprintf(b, cap, "%s gen=%d steps=%d block=%d T=%g", lp_decoder_name(rq->decoder),
                     rq->gen_len, rq->steps, rq->block_len, rq->temperature);
#define ADD(...) k += snprintf(b + k, (size_t)k < cap ? cap - (size_t)k : 0, __VA_ARGS__)
    if (rq->decoder == LP_DEC_LLADA) ADD(" remasking=%s", lp_remasking_name(rq->remasking));
    if (rq->decoder == LP_DEC_DREAM) ADD(" alg=%s", lp_dream_alg_name(rq->alg));
    if (rq->decoder == LP_DEC_FAST)
        ADD(" cache=%s rule=%s threshold=%g", lp_cache_mode_name(rq->cache),
            lp_commit_rule_name(rq->rule), rq->threshold);
    if (rq->decoder == LP_DEC_D2F) ADD(" tau_conf=%g", rq->tau_conf);
    if ((rq->decoder == LP_DEC_D2F || rq->decoder == LP_DEC_FAST) && rq->lopa >= 0)
        ADD(" lopa=%d", rq->lopa);
    if (rq->dpad) ADD(" dpad");
    ADD(" shots=%d %s", c->shots, c->chat ? "chat" : "raw");
#undef ADD
}

static void settings_json(cJSON *o, const struct lp_decode_request *rq) {
    cJSON_AddStringToObject(o, "decoder", lp_decoder_name(rq->decoder));
    cJSON_AddNumberToObject(o, "gen", rq->gen_len);
    cJSON_AddNumberToObject(o, "steps", rq->steps);
    cJSON_AddNumberToObject(o, "block", rq->block_len);
    cJSON_AddNumberToObject(o, "temperature", rq->temperature);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)rq->seed);
    cJSON_AddRawToObject(o, "seed", seed);
    if (rq->decoder == LP_DEC_LLADA) {
        cJSON_AddStringToObject(o, "remasking", lp_remasking_name(rq->remasking));
        cJSON_AddNumberToObject(o, "cfg_scale", rq->cfg_scale);
    } else {
        cJSON_AddStringToObject(o, "alg", lp_dream_alg_name(rq->alg));
        cJSON_AddNumberToObject(o, "alg_temp", rq->alg_temp);
        cJSON_AddNumberToObject(o, "top_p", rq->top_p);
        cJSON_AddNumberToObject(o, "top_k", rq->top_k);
    }
    if (rq->decoder == LP_DEC_FAST) {
        cJSON_AddStringToObject(o, "cache", lp_cache_mode_name(rq->cache));
        cJSON_AddStringToObject(o, "rule", lp_commit_rule_name(rq->rule));
        cJSON_AddNumberToObject(o, "threshold", rq->threshold);
        cJSON_AddNumberToObject(o, "factor", rq->factor);
        cJSON_AddStringToObject(o, "confidence", lp_confidence_name(rq->confidence));
    }
    if (rq->decoder == LP_DEC_D2F) {
        cJSON_AddNumberToObject(o, "tau_add", rq->tau_add);
        cJSON_AddNumberToObject(o, "tau_act", rq->tau_act);
        cJSON_AddNumberToObject(o, "tau_conf", rq->tau_conf);
        cJSON_AddStringToObject(o, "confidence", lp_confidence_name(rq->confidence));
    }
    if ((rq->decoder == LP_DEC_D2F || rq->decoder == LP_DEC_FAST) && rq->lopa >= 0)
        cJSON_AddNumberToObject(o, "lopa", rq->lopa);
    if (rq->dpad) {
        cJSON_AddNumberToObject(o, "dpad_window", rq->dpad_window);
        cJSON_AddNumberToObject(o, "dpad_sigma", rq->dpad_sigma);
        cJSON_AddNumberToObject(o, "dpad_scale", rq->dpad_scale);
    }
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
    settings_json(cJSON_AddObjectToObject(j, "settings"), &r->rq);
    return j;
}

static void table_row(const struct eval_cfg *c, const struct eval_result *r, const char *value) {
    char set[512], flex[32];
    settings_text(&r->rq, c, set, sizeof set);
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
        return 0;
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

/* "threshold=0.7,0.9" -> option "--threshold" and the values (in buf) */
static int parse_sweep(const char *cmd, const char *spec, char *opt, size_t cap, char **buf,
                       char ***values, int *n) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return lp_cli_usage_error(cmd, "--sweep expects PARAM=v1,v2,... (got '%s')", spec);
    size_t pl = (size_t)(eq - spec);
    if (pl + 3 > cap) return lp_cli_usage_error(cmd, "--sweep: parameter name too long");
    const char *name = spec[0] == '-' && spec[1] == '-' ? spec + 2 : spec;
    pl -= (size_t)(name - spec);
    snprintf(opt, cap, "--%.*s", (int)pl, name);
    for (char *p = opt + 2; *p; p++)
        if (*p == '_') *p = '-';
    static const char *const banned[] = {"--model",  "--m",    "--lora", "--device", "--json",
                                         "--visual", "--chat", "--raw",  "--system", "--threads"};
    for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
        if (!strcmp(opt, banned[i]))
            return lp_cli_usage_error(cmd, "--sweep: %s is not a decoder parameter", opt + 2);
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

/* opts with "--opt value" applied: 0, or 2 when the option is unknown / takes no
 * value / the value is bad */
static int apply_sweep(const char *cmd, struct lp_run_opts *o, const char *opt, char *value) {
    char *argv[3] = {(char *)opt, value, NULL};
    int i = 0;
    int r = lp_run_parse_opt(cmd, 2, argv, &i, o);
    if (r < 0) return 2;
    if (r == 0 || i != 1)
        return lp_cli_usage_error(cmd, "--sweep: %s is not a decoder option with a value", opt);
    return 0;
}

static int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval";
    struct lp_run_opts o;
    lp_run_opts_init(&o);
    o.gen = 256; /* room for a worked solution (lopad run's default is 64) */
    struct eval_cfg c = {.task = LP_TASK_COUNT, .shots = -1, .timeout = 10};
    const char *data = NULL, *sweep = NULL, *plot_file = NULL, *samples = NULL;
    bool self_test = false;
    long l;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--self-test")) {
            self_test = true;
        } else if (!strcmp(a, "--show-prompt")) {
            c.show_prompt = true;
        } else if (!strcmp(a, "--oracle")) {
            c.oracle = true;
        } else if (!strcmp(a, "--task") || !strcmp(a, "--data") || !strcmp(a, "--sweep") ||
                   !strcmp(a, "--plot") || !strcmp(a, "--samples") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--shots") || !strcmp(a, "--timeout")) {
            if (!has_val) return lp_cli_usage_error(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--task")) {
                if (!lp_eval_task_parse(v, &c.task))
                    return lp_cli_usage_error(
                        cmd, "unknown task '%s' (tiny-gsm, gsm8k, humaneval, mbpp, math500)", v);
            } else if (!strcmp(a, "--data")) {
                data = v;
            } else if (!strcmp(a, "--sweep")) {
                sweep = v;
            } else if (!strcmp(a, "--plot")) {
                plot_file = v;
            } else if (!strcmp(a, "--samples")) {
                samples = v;
            } else if (!strcmp(a, "--limit")) {
                if (!lp_cli_parse_int(cmd, a, v, 1, INT_MAX, &l)) return 2;
                c.limit = (int)l;
            } else if (!strcmp(a, "--shots")) {
                if (!lp_cli_parse_int(cmd, a, v, 0, 64, &l)) return 2;
                c.shots = (int)l;
            } else {
                double d;
                if (!lp_cli_parse_float(cmd, a, v, &d)) return 2;
                if (!(d > 0 && d <= 3600))
                    return lp_cli_usage_error(cmd, "--timeout expects seconds in (0, 3600]");
                c.timeout = d;
            }
        } else {
            int r = lp_run_parse_opt(cmd, argc, argv, &i, &o);
            if (r < 0) return 2;
            if (r == 0)
                return lp_cli_usage_error(cmd, "unknown option '%s' (see lopad eval --help)", a);
        }
    }
    if (self_test) return lp_eval_self_test() ? 1 : 0;
    if (c.task == LP_TASK_COUNT)
        return lp_cli_usage_error(cmd, "give --task (tiny-gsm, gsm8k, humaneval, mbpp, math500)");
    if (o.visual) return lp_cli_usage_error(cmd, "--visual is for lopad run");
    if (o.chat && o.raw) return lp_cli_usage_error(cmd, "--chat and --raw exclude each other");
    if (plot_file && !sweep) return lp_cli_usage_error(cmd, "--plot needs --sweep");
    if (c.show_prompt && (c.oracle || sweep))
        return lp_cli_usage_error(cmd, "--show-prompt excludes --oracle and --sweep");
    c.json = o.json;
    if (c.shots < 0) c.shots = lp_eval_task_default_shots(c.task);

    char opt[64];
    char *sweep_buf = NULL, **values = NULL;
    int n_values = 1;
    int rc = 0;
    struct lp_eval_set set = {0};
    struct eval_result *res = NULL;
    struct lp_run_session s = {0};
    bool session = false;
    if (sweep) {
        rc = parse_sweep(cmd, sweep, opt, sizeof opt, &sweep_buf, &values, &n_values);
        for (int v = 0; !rc && v < n_values; v++) { /* every value checked before any work */
            struct lp_run_opts t = o;
            rc = apply_sweep(cmd, &t, opt, values[v]);
        }
        if (rc) goto done;
    }
    rc = lp_eval_load(cmd, c.task, data, c.limit, c.shots, &set);
    if (rc) goto done;
    c.shots = set.n_shots;
    if (samples && !(c.samples = fopen(samples, "w"))) {
        fprintf(stderr, "lopad %s: cannot write %s\n", cmd, samples);
        rc = 2;
        goto done;
    }
    if (!c.oracle) {
        rc = lp_run_session_open(cmd, &o, &s);
        if (rc) goto done;
        session = true;
    }
    if (c.oracle) {
        /* no model: the dataset's solutions are scored */
    } else if (!s.tok) {
        rc = lp_cli_usage_error(cmd, "the model has no tokenizer: eval needs text prompts");
        goto done;
    }
    if (o.chat && !s.has_style) {
        rc = lp_cli_usage_error(cmd, "the model has no usable chat template; use --raw");
        goto done;
    }
    c.chat = !c.oracle && (o.chat || (!o.raw && s.has_style));
    c.progress = isatty(2);
    res = calloc((size_t)n_values, sizeof *res);
    if (!res) {
        rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
        goto done;
    }
    for (int v = 0; v < n_values && !rc && !c.oracle; v++) { /* all requests valid first */
        struct lp_run_opts t = o;
        struct lp_decode_request rq;
        if (sweep) apply_sweep(cmd, &t, opt, values[v]);
        rc = lp_run_make_request(cmd, &t, &s, &rq);
    }
    for (int v = 0; v < n_values && !rc; v++) {
        struct lp_run_opts t = o;
        char label[128] = "";
        if (sweep) {
            apply_sweep(cmd, &t, opt, values[v]);
            snprintf(label, sizeof label, "%s=%s", opt + 2, values[v]);
        }
        rc = evaluate(cmd, &t, &s, &c, &set, sweep ? label : NULL, &res[v]);
    }
    if (rc || c.show_prompt) goto done;
    if (c.json) {
        cJSON *j;
        if (sweep) {
            j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "task", lp_eval_task_name(c.task));
            cJSON_AddStringToObject(j, "sweep", opt + 2);
            cJSON *arr = cJSON_AddArrayToObject(j, "results");
            for (int v = 0; v < n_values; v++) {
                cJSON *r = result_json(&c, &res[v]);
                cJSON_AddStringToObject(r, "value", values[v]);
                cJSON_AddItemToArray(arr, r);
            }
        } else {
            j = result_json(&c, &res[0]);
        }
        char *out = cJSON_PrintUnformatted(j);
        if (out)
            puts(out);
        else
            rc = 1;
        free(out);
        cJSON_Delete(j);
    } else {
        table_head(sweep ? opt + 2 : NULL);
        for (int v = 0; v < n_values; v++)
            table_row(&c, &res[v], sweep ? values[v] : NULL);
    }
    fflush(stdout);
    for (int v = 0; v < n_values; v++)
        if (res[v].n_truncated)
            fprintf(stderr,
                    "lopad %s: %d prompts were longer than the model's context and lost their "
                    "beginning\n",
                    cmd, res[v].n_truncated);
    if (plot_file) rc = plot(cmd, plot_file, opt + 2, values, res, n_values, &c);
done:
    if (c.samples) fclose(c.samples);
    if (session) lp_run_session_close(&s);
    lp_eval_set_free(&set);
    free(res);
    free(values);
    free(sweep_buf);
    return rc;
}

LP_CLI_COMMAND("eval", cmd_eval, "accuracy and speed on GSM8K, HumanEval, MBPP, MATH-500")
