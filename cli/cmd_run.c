/*
 * cmd_run.c - `lopad run`: one generation, through the public API (lopad.h).
 *
 * Text streams to stdout as it becomes final (the final prefix, which only
 * grows); a progress line (on a terminal) or the --visual canvas go to stderr,
 * then a summary (decoder, tokens, NFE, TPF, times). --json prints one JSON
 * object instead of the text. The shared helpers (run.h) also serve `lopad chat`
 * and `lopad eval`.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "cli.h"
#include "run.h"

/* ---------------------------------------------------------------- options */

int lp_run_opts_init(struct lp_run_opts *o) {
    memset(o, 0, sizeof *o);
    if (lopad_request_new(&o->rq)) return lp_cli_fail("run", LOPAD_ERR_NOMEM);
    return 0;
}

void lp_run_opts_free(struct lp_run_opts *o) {
    lopad_request_free(o->rq);
    o->rq = NULL;
}

static bool need(const char *cmd, int argc, char **argv, int i) {
    if (i + 1 < argc) return true;
    lp_cli_usage_error(cmd, "%s needs a value", argv[i]);
    return false;
}

/* the table row a flag names: "--lopa-window-attention" -> "lopa_window_attention" */
static bool option_for_flag(const char *flag, struct lopad_option_info *info) {
    if (strncmp(flag, "--", 2)) return false;
    char name[64];
    size_t n = strlen(flag + 2);
    if (n >= sizeof name) return false;
    for (size_t i = 0; i <= n; i++)
        name[i] = flag[2 + i] == '-' ? '_' : flag[2 + i];
    for (int i = 0; i < lopad_option_count(); i++)
        if (lopad_option_get(i, info) && !strcmp(info->name, name)) return true;
    return false;
}

int lp_run_set_option(const char *cmd, lopad_request *rq, const char *name, const char *value) {
    struct lopad_option_info info;
    const char *key = name;
    if (!strncmp(name, "--", 2) && option_for_flag(name, &info)) key = info.name;
    if (lopad_request_set(rq, key, value) == LOPAD_OK) return 0;
    char flag[80];
    int n = snprintf(flag, sizeof flag, "--");
    for (const char *c = key; *c && n < (int)sizeof flag - 1; c++)
        flag[n++] = *c == '_' ? '-' : *c;
    flag[n] = 0;
    return lp_cli_usage_error(cmd, "%s: %s", flag, lopad_request_errmsg(rq));
}

int lp_run_parse_opt(const char *cmd, int argc, char **argv, int *i, struct lp_run_opts *o) {
    const char *a = argv[*i];
    const char **str = !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->model
                       : !strcmp(a, "--lora")                    ? &o->lora
                       : !strcmp(a, "--device")                  ? &o->device
                       : !strcmp(a, "--system")                  ? &o->system
                                                                 : NULL;
    if (str) {
        if (!need(cmd, argc, argv, *i)) return -1;
        *str = argv[++*i];
        return 1;
    }
    if (!strcmp(a, "--threads")) {
        long l;
        if (!need(cmd, argc, argv, *i) || !lp_cli_parse_int(cmd, a, argv[++*i], 0, 1024, &l))
            return -1;
        o->threads = (int)l;
        return 1;
    }
    if (!strcmp(a, "--tensor-parallel") || !strcmp(a, "-tp")) {
        long l;
        if (!need(cmd, argc, argv, *i) || !lp_cli_parse_int(cmd, a, argv[++*i], 1, 4096, &l))
            return -1;
        o->tensor_parallel = (int)l;
        return 1;
    }
    bool *flag = !strcmp(a, "--json")     ? &o->json
                 : !strcmp(a, "--visual") ? &o->visual
                 : !strcmp(a, "--chat")   ? &o->chat
                 : !strcmp(a, "--raw")    ? &o->raw
                                          : NULL;
    if (flag) return *flag = true, 1;
    struct lopad_option_info info;
    if (!option_for_flag(a, &info)) return 0;
    const char *value = "on";
    if (!info.flag) {
        if (!need(cmd, argc, argv, *i)) return -1;
        value = argv[++*i];
    }
    return lp_run_set_option(cmd, o->rq, info.name, value) ? -1 : 1;
}

void lp_run_print_help(FILE *f) {
    fputs("  -m, --model PATH     a .gguf file or a Hugging Face directory (default: the demo "
          "model,\n"
          "                       or $LOPAD_DEFAULT_MODEL)\n"
          "  --lora DIR           merge a PEFT LoRA adapter (such as D2F's) at load time\n"
          "  --chat | --raw       wrap the prompt in the chat template (default when the model\n"
          "                       has one) or use the text as is\n"
          "  --system S           system prompt (chat)\n"
          "  --threads N          worker threads (default 0 = all cores)\n"
          "  --device cpu|cuda    compute device (cuda needs a -DLOPAD_CUDA=ON build)\n"
          "  --tensor-parallel T  under mpirun: T ranks split every forward (heads, FFN,\n"
          "                       vocabulary); the groups of T share LoPA's branches\n"
          "  --visual             redraw the canvas on stderr after every step\n"
          "Decoding options (docs/DECODERS.md). Without --decoder: fast (Fast-dLLM, dual cache,\n"
          "threshold 0.9), or d2f when a LoRA adapter is loaded or --lopa is given.\n",
          f);
    static const char *const groups[] = {"decoding", "llada", "dream", "fast", "d2f", "dpad"};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        fprintf(f, "%s:\n", groups[g]);
        struct lopad_option_info in;
        for (int i = 0; lopad_option_get(i, &in); i++) {
            if (strcmp(in.group, groups[g])) continue;
            char head[160];
            int n = snprintf(head, sizeof head, "  --");
            for (const char *c = in.name; *c && n < 60; c++)
                head[n++] = *c == '_' ? '-' : *c;
            head[n] = 0;
            if (in.choices) {
                for (int k = 0; in.choices[k] && n < 150; k++)
                    n += snprintf(head + n, sizeof head - (size_t)n, "%s%s", k ? "|" : " ",
                                  in.choices[k]);
            } else if (in.metavar) {
                snprintf(head + n, sizeof head - (size_t)n, " %s", in.metavar);
            }
            fprintf(f, "%-28s %s (default %s)\n", head, in.help, in.def);
        }
    }
    fputs("Environment: LOPAD_KERNELS=ref|avx2|avx512f32|avx512 caps the CPU kernels,\n"
          "LOPAD_REPACK=0|1 never / always repacks Q8_0 weights, LOPAD_FUSED_SCORES=0 makes the\n"
          "decoders read full logits (same tokens).\n",
          f);
}

/* ---------------------------------------------------------------- session */

#ifndef LOPAD_DEFAULT_MODEL_PATH
#define LOPAD_DEFAULT_MODEL_PATH ""
#endif

/* the environment knobs: CLI conveniences the library takes as parameters */
int lp_run_session_params(const char *cmd, const struct lp_run_opts *o,
                          struct lopad_session_params *p) {
    *p = (struct lopad_session_params){
        .n_threads = o->threads, .device = o->device, .tensor_parallel = o->tensor_parallel};
    int rc = lp_cli_env_ctx_params(cmd, &p->kernels, &p->repack);
    if (rc) return rc;
    const char *fs = getenv("LOPAD_FUSED_SCORES");
    p->no_fused_scores = fs && !strcmp(fs, "0");
    return 0;
}

int lp_run_session_open(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s) {
    memset(s, 0, sizeof *s);
    if (!o->model) o->model = getenv("LOPAD_DEFAULT_MODEL");
    if (!o->model || !*o->model) o->model = LOPAD_DEFAULT_MODEL_PATH;
    if (!*o->model)
        return lp_cli_usage_error(cmd, "no model: give -m MODEL (or set LOPAD_DEFAULT_MODEL)");
    int rc = 0;
    if (!strncmp(o->model, "synthetic:", strlen("synthetic:"))) {
        if (o->lora)
            return lp_cli_usage_error(cmd, "--lora needs a model file, not a synthetic model");
        rc = lp_cli_synthetic_model(cmd, o->model + strlen("synthetic:"), &s->model);
    } else {
        struct lopad_load_opts lo = {.lora_dir = o->lora};
        enum lopad_status st = lopad_model_load(o->model, &lo, &s->model);
        if (st) rc = lp_cli_fail(cmd, st);
    }
    if (rc) return rc;
    s->hp = lopad_model_hparams(s->model);
    struct lopad_session_params sp;
    if ((rc = lp_run_session_params(cmd, o, &sp))) {
        lp_run_session_close(s);
        return rc;
    }
    enum lopad_status st = lopad_session_new(s->model, &sp, &s->sess);
    if (st) {
        lp_run_session_close(s);
        return lp_cli_fail(cmd, st);
    }
    return 0;
}

void lp_run_session_close(struct lp_run_session *s) {
    lopad_session_free(s->sess);
    lopad_model_free(s->model);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- output */

struct stream {
    const struct lp_run_session *s;
    const struct lp_run_opts *o;
    bool stream_text; /* print text as it becomes final */
    bool progress;    /* progress line on stderr */
    bool tty;
    double t0;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void draw_token(const struct lp_run_session *s, int32_t t, FILE *f) {
    char *b = NULL;
    size_t len = 0;
    if (!lopad_model_has_tokenizer(s->model) ||
        lopad_detokenize(s->model, &t, 1, false, &b, &len) != LOPAD_OK) {
        fprintf(f, "[%d]", (int)t);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fputc(' ', f);
        else
            fputc(c, f);
    }
    lopad_free(b);
}

static void draw_lopa(const struct lopad_step *ev, FILE *f) {
    if (ev->winner == ev->n_branches - 1)
        fprintf(f, "lopa: %d branches, winner: the anchor", ev->n_branches);
    else
        fprintf(f, "lopa: %d branches, winner: lookahead %d (token at position %d)", ev->n_branches,
                ev->winner, ev->winner_pos - ev->n_prompt);
    fputs("; added positions:", f);
    for (int c = 0; c < ev->n_committed; c++)
        fprintf(f, " %d%s", ev->committed[c] - ev->n_prompt,
                ev->committed[c] == ev->winner_pos ? "*" : "");
    fputc('\n', f);
}

static void draw_canvas(struct stream *st, const struct lopad_step *ev) {
    FILE *f = stderr;
    if (st->tty) fputs("\033[H\033[2J", f);
    /* n_steps < 0: the confidences decide the step count (fast, d2f, LoPA, llada --dpad) */
    if (ev->n_steps >= 0)
        fprintf(f, "step %d/%d  nfe %d  masked %d\n", ev->step + 1, ev->n_steps, ev->nfe,
                ev->n_masked);
    else
        fprintf(f, "step %d  nfe %d  masked %d\n", ev->step + 1, ev->nfe, ev->n_masked);
    if (ev->n_branches > 0) draw_lopa(ev, f);
    for (int j = ev->n_prompt; j < ev->n_canvas; j++) {
        bool fresh = false;
        for (int c = 0; c < ev->n_committed; c++)
            fresh |= ev->committed[c] == j;
        int32_t t = ev->canvas[j];
        if (t == ev->mask_id) {
            fputs(st->tty ? "\033[2m_\033[0m" : "_", f);
            continue;
        }
        if (fresh && st->tty) fputs("\033[7m", f);
        draw_token(st->s, t, f);
        if (fresh && st->tty) fputs("\033[0m", f);
    }
    fputc('\n', f);
    fflush(f);
}

static int on_step(void *ud, const struct lopad_step *ev) {
    struct stream *st = ud;
    if (st->stream_text && ev->text_new) {
        fwrite(ev->text + ev->text_len - ev->text_new, 1, ev->text_new, stdout);
        fflush(stdout);
    }
    if (st->o->visual) {
        draw_canvas(st, ev);
    } else if (st->progress) {
        double dt = now() - st->t0;
        int done = ev->n_canvas - ev->n_prompt - ev->n_masked;
        char steps[32] = "";
        if (ev->n_steps >= 0) snprintf(steps, sizeof steps, "/%d", ev->n_steps);
        fprintf(stderr, "\r\033[K[step %d%s] nfe %d, %d/%d committed, %.1f tok/s", ev->step + 1,
                steps, ev->nfe, done, ev->n_canvas - ev->n_prompt, dt > 0 ? done / dt : 0.0);
        if (ev->done) fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    return 0;
}

static double process_cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int print_json(const struct lp_run_session *s, const struct lopad_result *res,
                      double cpu_s) {
    cJSON *j = cJSON_CreateObject();
    cJSON *ids = cJSON_AddArrayToObject(j, "ids");
    for (int i = 0; i < res->n_ids; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(res->ids[i]));
    if (lopad_model_has_tokenizer(s->model)) cJSON_AddStringToObject(j, "text", res->text);
    double tps = res->seconds > 0 ? res->n_committed / res->seconds : 0;
    cJSON_AddStringToObject(j, "finish_reason", res->finish_reason);
    cJSON_AddNumberToObject(j, "n_prompt", res->n_prompt);
    cJSON_AddNumberToObject(j, "n_committed", res->n_committed);
    cJSON_AddNumberToObject(j, "nfe", res->nfe);
    cJSON_AddNumberToObject(j, "tpf", res->tpf);
    cJSON_AddNumberToObject(j, "seconds", res->seconds);
    cJSON_AddNumberToObject(j, "prefill_seconds", res->prefill_seconds);
    cJSON_AddNumberToObject(j, "decode_seconds", res->seconds - res->prefill_seconds);
    /* CPU time of all threads: with --threads 1 on a shared machine, the cost of the
     * work itself (wall time also counts the waits) */
    cJSON_AddNumberToObject(j, "cpu_seconds", cpu_s);
    cJSON_AddNumberToObject(j, "tokens_per_second", tps);
    /* D2F / LoPA: non-pad tokens per NFE; branch wins (lookahead 0..K-1, anchor K) */
    cJSON_AddNumberToObject(j, "n_nonpad", res->n_nonpad);
    cJSON_AddNumberToObject(j, "tpf_nonpad", res->tpf_nonpad);
    cJSON_AddNumberToObject(j, "n_seq_evals", res->n_seq_evals);
    if (res->winner_hist) {
        cJSON *h = cJSON_AddArrayToObject(j, "winner_hist");
        for (int i = 0; i < res->n_winner_hist; i++)
            cJSON_AddItemToArray(h, cJSON_CreateNumber(res->winner_hist[i]));
    }
    cJSON_AddItemToObject(j, "settings", cJSON_Parse(res->settings));
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!out) return 1;
    puts(out);
    free(out);
    return 0;
}

/* "fast (dual cache)", "d2f + LoPA 4", ... from the resolved settings */
static void decoder_label(const char *settings, char *buf, size_t cap) {
    cJSON *j = cJSON_Parse(settings);
    const cJSON *d = cJSON_GetObjectItem(j, "decoder"), *c = cJSON_GetObjectItem(j, "cache"),
                *l = cJSON_GetObjectItem(j, "lopa"), *dp = cJSON_GetObjectItem(j, "dpad");
    int k = snprintf(buf, cap, "%s", cJSON_IsString(d) ? d->valuestring : "?");
    if (cJSON_IsString(c) && k < (int)cap)
        k += snprintf(buf + k, cap - (size_t)k, " (%s cache)", c->valuestring);
    if (cJSON_IsNumber(l) && l->valueint >= 0 && k < (int)cap)
        k += snprintf(buf + k, cap - (size_t)k, " + LoPA %d", l->valueint);
    if (cJSON_IsTrue(dp) && k < (int)cap) snprintf(buf + k, cap - (size_t)k, " + DPad");
    cJSON_Delete(j);
}

static void print_summary(const char *cmd, const struct lopad_result *res) {
    char label[96];
    decoder_label(res->settings, label, sizeof label);
    double tps = res->seconds > 0 ? res->n_committed / res->seconds : 0;
    fprintf(stderr,
            "lopad %s: decoder %s: %d tokens (%d kept before EOS), NFE %d, TPF %.2f, prefill "
            "%.3f s, decode %.3f s, %.1f tok/s\n",
            cmd, label, res->n_committed, res->n_ids, res->nfe, res->tpf, res->prefill_seconds,
            res->seconds - res->prefill_seconds, tps);
    if (res->winner_hist) { /* D2F / LoPA */
        fprintf(stderr, "lopad %s: LoPA wins: anchor %d, lookahead", cmd,
                res->winner_hist[res->n_winner_hist - 1]);
        for (int i = 0; i + 1 < res->n_winner_hist; i++)
            fprintf(stderr, " %d", res->winner_hist[i]);
        fprintf(stderr, " (%d sequences in %d forwards)\n", res->n_seq_evals, res->nfe);
    }
}

int lp_run_generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    lopad_request *rq, struct lopad_result *out) {
    bool has_tok = lopad_model_has_tokenizer(s->model);
    struct stream st = {.s = s, .o = o, .t0 = now(), .tty = isatty(2)};
    st.stream_text = has_tok && !o->json && !o->quiet;
    st.progress = st.tty && !o->json && !o->quiet;
    struct lopad_result res;
    const double cpu0 = process_cpu_seconds();
    enum lopad_status est =
        lopad_generate(s->sess, rq, o->quiet ? NULL : on_step, o->quiet ? NULL : &st, &res);
    const double cpu_s = process_cpu_seconds() - cpu0;
    if (est) {
        if (st.progress) fputs("\r\033[K", stderr);
        /* a request the library refuses (options, prompt, context) is a usage error */
        return lp_cli_fail(cmd, est) + (est == LOPAD_ERR_ARG);
    }
    int rc = 0;
    if (st.stream_text) fputc('\n', stdout);
    if (!o->quiet && o->json) {
        rc = print_json(s, &res, cpu_s);
    } else if (!o->quiet && !has_tok) {
        for (int i = 0; i < res.n_ids; i++)
            printf(i ? ",%d" : "%d", (int)res.ids[i]);
        putchar('\n');
    }
    if (!o->quiet) {
        fflush(stdout);
        print_summary(cmd, &res);
    }
    if (out)
        *out = res;
    else
        lopad_result_free(&res);
    return rc;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f, "usage: lopad run [-m MODEL] (-p TEXT | --prompt-ids 1,2,3) [options]\n"
               "  -p, --prompt TEXT    prompt text (needs the model's tokenizer)\n"
               "  --prompt-ids IDS     prompt as comma-separated token ids\n"
               "  --json               print one JSON object (ids, text, nfe, tpf, seconds,\n"
               "                       settings) instead of the text\n");
    lp_run_print_help(f);
}

/* the prompt of `run` onto o->rq */
static int set_prompt(const char *cmd, struct lp_run_opts *o, const struct lp_run_session *s,
                      const char *prompt, const char *prompt_ids) {
    enum lopad_status st;
    if (prompt_ids) {
        int32_t *ids = NULL;
        int n = 0;
        if (!lp_cli_parse_ids(cmd, "--prompt-ids", prompt_ids, &ids, &n)) return 2;
        st = lopad_request_prompt_ids(o->rq, ids, n);
        free(ids);
    } else if (!lopad_model_has_tokenizer(s->model)) {
        return lp_cli_usage_error(cmd, "the model has no tokenizer: give the prompt as "
                                       "--prompt-ids");
    } else if (o->chat && !lopad_model_has_chat_template(s->model)) {
        return lp_cli_usage_error(cmd, "the model has no usable chat template; use --raw");
    } else if (o->raw) {
        st = lopad_request_prompt_text(o->rq, prompt);
    } else {
        st = lopad_request_prompt_user(o->rq, prompt, o->system);
    }
    return st ? lp_cli_fail(cmd, st) : 0;
}

static int cmd_run(int argc, char **argv) {
    const char *cmd = "run";
    struct lp_run_opts o;
    if (lp_run_opts_init(&o)) return 1;
    const char *prompt = NULL, *prompt_ids = NULL;
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            lp_run_opts_free(&o);
            return 0;
        }
        const char **p = !strcmp(a, "-p") || !strcmp(a, "--prompt") ? &prompt
                         : !strcmp(a, "--prompt-ids")               ? &prompt_ids
                                                                    : NULL;
        if (p) {
            if (!need(cmd, argc, argv, i))
                rc = 2;
            else
                *p = argv[++i];
            continue;
        }
        int r = lp_run_parse_opt(cmd, argc, argv, &i, &o);
        if (r < 0) rc = 2;
        if (r == 0) rc = lp_cli_usage_error(cmd, "unknown option '%s' (see lopad run --help)", a);
    }
    if (!rc && !prompt == !prompt_ids)
        rc = lp_cli_usage_error(cmd, "give exactly one of -p TEXT or --prompt-ids IDS");
    if (!rc && o.chat && o.raw) rc = lp_cli_usage_error(cmd, "--chat and --raw exclude each other");
    if (!rc && prompt_ids && (o.chat || o.system))
        rc = lp_cli_usage_error(cmd, "--chat / --system need a text prompt (-p)");
    if (!rc && o.raw && o.system) rc = lp_cli_usage_error(cmd, "--system needs the chat template");
    if (!rc && prompt && !*prompt) rc = lp_cli_usage_error(cmd, "empty prompt");
    struct lp_run_session s = {0};
    if (!rc) rc = lp_run_session_open(cmd, &o, &s);
    if (!rc) rc = set_prompt(cmd, &o, &s, prompt, prompt_ids);
    if (!rc) rc = lp_run_generate(cmd, &o, &s, o.rq, NULL);
    if (s.model) lp_run_session_close(&s);
    lp_run_opts_free(&o);
    return rc;
}

LP_CLI_COMMAND("run", cmd_run, "generate text (fast, d2f + LoPA, dpad, llada, dream decoders)")
