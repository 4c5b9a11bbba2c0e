/*
 * cmd_run.c - `lopad run`: one generation with a vanilla decoder (llada, dream).
 *
 * Text streams to stdout as it becomes final (a prefix of the generation is final
 * once all its positions are committed); a progress line (on a terminal) or the
 * --visual canvas go to stderr, then a summary (tokens, NFE, TPF, times). --json
 * prints one JSON object instead of the text. The helpers marked "shared" are also
 * used by cmd_chat.c (declared in run.h).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "cli.h"
#include "run.h"
#include "core/common.h"
#include "decode/decode.h"
#include "model/chat.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"

/* ---------------------------------------------------------------- options */

void lp_run_opts_init(struct lp_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->fast.early_stop = -1; /* -1 = the decoder's default */
    o->gen = 64;
}

static bool need(const char *cmd, int argc, char **argv, int i) {
    if (i + 1 < argc) return true;
    lp_cli_usage_error(cmd, "%s needs a value", argv[i]);
    return false;
}

/* shared: parse argv[*i] (and its value); 1 = consumed, 0 = not a run option,
 * -1 = bad value (message printed) */
int lp_run_parse_opt(const char *cmd, int argc, char **argv, int *i, struct lp_run_opts *o) {
    const char *a = argv[*i];
    long l;
    double d;
#define VAL (need(cmd, argc, argv, *i) ? argv[++*i] : NULL)
#define INT_OPT(name, lo, hi, dst, flag)                                                           \
    if (!strcmp(a, name)) {                                                                        \
        const char *v_ = VAL;                                                                      \
        if (!v_ || !lp_cli_parse_int(cmd, name, v_, lo, hi, &l)) return -1;                        \
        dst = (int)l;                                                                              \
        flag;                                                                                      \
        return 1;                                                                                  \
    }
#define DBL_OPT(name, dst, flag)                                                                   \
    if (!strcmp(a, name)) {                                                                        \
        const char *v_ = VAL;                                                                      \
        if (!v_ || !lp_cli_parse_float(cmd, name, v_, &d)) return -1;                              \
        dst = d;                                                                                   \
        flag;                                                                                      \
        return 1;                                                                                  \
    }
#define STR_OPT(name, dst)                                                                         \
    if (!strcmp(a, name)) {                                                                        \
        const char *v_ = VAL;                                                                      \
        if (!v_) return -1;                                                                        \
        dst = v_;                                                                                  \
        return 1;                                                                                  \
    }
    STR_OPT("-m", o->model);
    STR_OPT("--model", o->model);
    STR_OPT("--lora", o->lora);
    INT_OPT("--gen", 1, 1 << 20, o->gen, (void)0);
    STR_OPT("--decoder", o->decoder);
    INT_OPT("--steps", 1, 1 << 20, o->steps, o->set_steps = true);
    INT_OPT("--block", 1, 1 << 20, o->block, o->set_block = true);
    STR_OPT("--remasking", o->remasking);
    DBL_OPT("--temperature", o->temperature, o->set_temperature = true);
    DBL_OPT("--cfg-scale", o->cfg_scale, o->set_cfg = true);
    DBL_OPT("--eps", o->eps, o->set_eps = true);
    STR_OPT("--alg", o->alg);
    DBL_OPT("--alg-temp", o->alg_temp, o->set_alg_temp = true);
    DBL_OPT("--top-p", o->top_p, o->set_top_p = true);
    INT_OPT("--top-k", 0, INT_MAX, o->top_k, o->set_top_k = true);
    INT_OPT("--threads", 0, 1024, o->threads, (void)0);
    STR_OPT("--device", o->device);
    STR_OPT("--system", o->system);
    if (!strcmp(a, "--seed")) {
        const char *v = VAL;
        char *end;
        errno = 0;
        unsigned long long s = v ? strtoull(v, &end, 10) : 0;
        if (!v || !*v || *end || errno || v[0] == '-') {
            if (v) lp_cli_usage_error(cmd, "--seed expects a non-negative integer, got '%s'", v);
            return -1;
        }
        o->seed = s;
        o->set_seed = true;
        return 1;
    }
    /* Fast-dLLM */
    STR_OPT("--cache", o->fast.cache);
    STR_OPT("--rule", o->fast.rule);
    STR_OPT("--confidence", o->fast.confidence);
    DBL_OPT("--threshold", o->fast.threshold, o->fast.set_threshold = true);
    DBL_OPT("--factor", o->fast.factor, o->fast.set_factor = true);
    if (!strcmp(a, "--early-stop")) {
        const char *v = VAL;
        if (!v) return -1;
        if (strcmp(v, "on") && strcmp(v, "off")) {
            lp_cli_usage_error(cmd, "--early-stop expects on or off, got '%s'", v);
            return -1;
        }
        o->fast.early_stop = !strcmp(v, "on");
        return 1;
    }
    if (!strcmp(a, "--dream-first-token-commit")) return o->fast.first_token = true, 1;
    /* DPad */
    if (!strcmp(a, "--dpad")) return o->fast.dpad = true, 1;
    INT_OPT("--dpad-window", 1, 1 << 20, o->fast.dpad_window, o->fast.set_window = true);
    DBL_OPT("--dpad-sigma", o->fast.dpad_sigma, o->fast.set_sigma = true);
    DBL_OPT("--dpad-scale", o->fast.dpad_scale, o->fast.set_scale = true);
    STR_OPT("--preset", o->fast.preset);
    /* D2F / LoPA */
    DBL_OPT("--tau-add", o->d2f.tau_add, o->d2f.set_tau_add = true);
    DBL_OPT("--tau-act", o->d2f.tau_act, o->d2f.set_tau_act = true);
    DBL_OPT("--tau-conf", o->d2f.tau_conf, o->d2f.set_tau_conf = true);
    INT_OPT("--lopa", 0, 64, o->d2f.lopa, o->d2f.set_lopa = true);
    STR_OPT("--lopa-window-attention", o->d2f.window);
    if (!strcmp(a, "--logits-eos-inf")) return o->logits_eos_inf = true, 1;
    if (!strcmp(a, "--confidence-eos-eot-inf")) return o->confidence_eos_eot_inf = true, 1;
    if (!strcmp(a, "--json")) return o->json = true, 1;
    if (!strcmp(a, "--visual")) return o->visual = true, 1;
    if (!strcmp(a, "--chat")) return o->chat = true, 1;
    if (!strcmp(a, "--raw")) return o->raw = true, 1;
#undef VAL
#undef INT_OPT
#undef DBL_OPT
#undef STR_OPT
    return 0;
}

const char *lp_run_opts_help =
    "  -m, --model PATH     a .gguf file or a Hugging Face directory (default: "
    "$LOPAD_DEFAULT_MODEL)\n"
    "  --lora DIR           merge a PEFT LoRA adapter at load time\n"
    "  --gen N              generated positions (default 64)\n"
    "  --decoder D          llada | dream | fast (default: from the architecture)\n"
    "  --steps S            forwards in total (default: --gen)\n"
    "  --block B            llada block length (default 32, or --gen when it is not a\n"
    "                       multiple of 32); dream decodes the whole canvas\n"
    "  --remasking R        llada: low_confidence | random (default low_confidence)\n"
    "  --temperature T      0 = argmax (default 0)\n"
    "  --cfg-scale C        llada classifier-free guidance (default 0 = off)\n"
    "  --logits-eos-inf     llada: never propose EOS\n"
    "  --confidence-eos-eot-inf  llada: EOS / EoT proposals are committed last\n"
    "  --eps E              dream time grid linspace(1, E, steps+1) (default 1e-3)\n"
    "  --alg A              dream: origin | maskgit_plus | topk_margin | entropy (default "
    "entropy)\n"
    "  --alg-temp AT        dream: sample positions from softmax(conf / AT) (default 0 = top-k)\n"
    "  --top-p P, --top-k K dream sampling filters (default off)\n"
    "  --seed S             PRNG seed (default 0); same seed, same tokens\n"
    "Fast-dLLM (--decoder fast; docs/DECODERS.md):\n"
    "  --cache C            none | prefix | dual (default prefix)\n"
    "  --rule R             threshold | factor | topk (default threshold)\n"
    "  --threshold TAU      commit every pmax >= TAU (default 0.9)\n"
    "  --factor F           factor rule: largest n with (n+1)(1-c_n) < F (default 1.0)\n"
    "  --confidence C       ranking: auto | pmax | margin | negent (auto: negent for Dream,\n"
    "                       pmax for LLaDA)\n"
    "  --early-stop on|off  a finished block holding EOS ends decoding (default on)\n"
    "  --dream-first-token-commit  reference parity: commit a block's first position\n"
    "                       from the refresh forward (Dream)\n"
    "D2F / LoPA (--decoder d2f; ALGORITHMS.md 4-5):\n"
    "  --tau-add A          add a block when the last one is A decoded (default 0.1)\n"
    "  --tau-act T          fully activate the next block when one is T decoded (0.95)\n"
    "  --tau-conf C         commit every masked position with pmax > C (default 0.9)\n"
    "  --confidence C       as above: the fallback commit and LoPA's ranking\n"
    "  --lopa K             LoPA: K lookahead branches verified with the anchor in one\n"
    "                       batched forward (implies --decoder d2f; with --decoder fast:\n"
    "                       Fast-dLLM + LoPA, --rule threshold, greedy)\n"
    "  --lopa-window-attention W  full | block-causal (default full, as published;\n"
    "                       --lopa 0 with block-causal is plain d2f)\n"
    "DPad (--decoder fast, llada, or dream --block B):\n"
    "  --dpad               drop suffix positions beyond the block (per-block draw)\n"
    "  --dpad-window W      window (default 256)\n"
    "  --dpad-sigma K       k: x = K d / (W-1) (default 4)\n"
    "  --dpad-scale A       keep(d) = min(1, A N(x)) (default 2.0 LLaDA, 1.6 Dream)\n"
    "  --preset NAME        published DPad settings, e.g. dpad-llada-gsm8k (implies --dpad)\n"
    "  --chat | --raw       wrap the prompt in the chat template (default when the model\n"
    "                       has one) or use the text as is\n"
    "  --system S           system prompt (chat)\n"
    "  --threads N          worker threads (default 0 = all cores)\n"
    "  --device cpu|cuda    compute device (cuda needs a -DLOPAD_CUDA=ON build)\n"
    "  --visual             redraw the canvas on stderr after every step\n";

/* ---------------------------------------------------------------- session */

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* "synthetic:SHAPE[:LAYERS][@TYPE]": a random-weight model built in memory */
static int open_synthetic(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s) {
    if (o->lora) return lp_cli_usage_error(cmd, "--lora needs a model file, not a synthetic model");
    char spec[128];
    const char *body = o->model + strlen("synthetic:");
    if (strlen(body) >= sizeof spec)
        return lp_cli_usage_error(cmd, "synthetic model name too long: '%.64s...'", body);
    strcpy(spec, body);
    int type = LOPAD_TYPE_BF16;
    char *at = strchr(spec, '@');
    if (at) {
        *at = 0;
        type = lp_cli_weight_type(at + 1);
        if (type < 0)
            return lp_cli_usage_error(
                cmd, "synthetic model: unknown type '%s' (" LP_CLI_WEIGHT_TYPES ")", at + 1);
    }
    enum lopad_status st = lp_model_synthetic(spec, type, 1234, &s->model);
    if (st) return lp_cli_fail(cmd, st) + (st == LOPAD_ERR_ARG); /* a bad name: usage error */
    s->hp = lopad_model_hparams(s->model);
    return 0;
}

/* shared: load the model named by o (or $LOPAD_DEFAULT_MODEL); 0 or an exit code */
int lp_run_session_open(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s) {
    memset(s, 0, sizeof *s);
    if (!o->model) o->model = getenv("LOPAD_DEFAULT_MODEL");
    if (!o->model || !*o->model)
        return lp_cli_usage_error(cmd, "no model: give -m MODEL (or set LOPAD_DEFAULT_MODEL)");
    if (!strncmp(o->model, "synthetic:", strlen("synthetic:"))) return open_synthetic(cmd, o, s);
    struct lopad_load_opts lo = {.lora_dir = o->lora};
    enum lopad_status st = lopad_model_load(o->model, &lo, &s->model);
    if (st) return lp_cli_fail(cmd, st);
    s->hp = lopad_model_hparams(s->model);
    /* the tokenizer is optional: a model without one runs on ids */
    char tj[4096];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", o->model);
    bool try_tok = is_dir(o->model) ? access(tj, R_OK) == 0 : true;
    if (try_tok) {
        st = lp_tokenizer_load(o->model, &s->tok);
        if (st && is_dir(o->model)) {
            lp_cli_fail(cmd, st);
            lopad_model_free(s->model);
            return 1;
        }
        if (st) s->tok = NULL; /* a GGUF without tokenizer keys */
    }
    if (s->tok) {
        const char *bos = NULL;
        size_t bl;
        if (s->hp->bos_id >= 0) bos = lp_tokenizer_token(s->tok, s->hp->bos_id, &bl);
        s->has_style = lp_chat_style_detect(lp_tokenizer_chat_template(s->tok), (int)s->hp->arch,
                                            bos, &s->style) == LOPAD_OK;
    }
    return 0;
}

void lp_run_session_close(struct lp_run_session *s) {
    lp_tokenizer_free(s->tok);
    lopad_model_free(s->model);
    memset(s, 0, sizeof *s);
}

/* shared: the request from the options (decoder default from the architecture) */
int lp_run_make_request(const char *cmd, const struct lp_run_opts *o,
                        const struct lp_run_session *s, struct lp_decode_request *rq) {
    enum lp_decoder_kind k = lp_decoder_default(s->hp->arch);
    if (o->decoder && lp_decoder_parse(o->decoder, &k)) return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->d2f.set_lopa && !o->decoder) k = LP_DEC_D2F; /* D2F / LoPA: --lopa implies d2f */
    lp_decode_request_init(rq, k, o->gen);
    if (o->set_steps) rq->steps = o->steps;
    if (o->set_block) rq->block_len = o->block;
    if (o->remasking && lp_remasking_parse(o->remasking, &rq->remasking))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->alg && lp_dream_alg_parse(o->alg, &rq->alg)) return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->set_temperature) rq->temperature = o->temperature;
    if (o->set_cfg) rq->cfg_scale = o->cfg_scale;
    if (o->set_eps) rq->eps = o->eps;
    if (o->set_alg_temp) rq->alg_temp = o->alg_temp;
    if (o->set_top_p) rq->top_p = o->top_p;
    if (o->set_top_k) rq->top_k = o->top_k;
    rq->logits_eos_inf = o->logits_eos_inf;
    rq->confidence_eos_eot_inf = o->confidence_eos_eot_inf;
    rq->seed = o->seed;
    /* Fast-dLLM / DPad */
    if (o->fast.cache && lp_cache_mode_parse(o->fast.cache, &rq->cache))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->fast.rule && lp_commit_rule_parse(o->fast.rule, &rq->rule))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->fast.confidence && lp_confidence_parse(o->fast.confidence, &rq->confidence))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->fast.set_threshold) rq->threshold = o->fast.threshold;
    if (o->fast.set_factor) rq->factor = o->fast.factor;
    if (o->fast.early_stop >= 0) rq->early_stop = o->fast.early_stop;
    rq->dream_first_token_commit = o->fast.first_token;
    if (o->fast.preset && lp_dpad_preset_apply(o->fast.preset, rq))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    if (o->fast.dpad) rq->dpad = true;
    if (o->fast.set_window) rq->dpad_window = o->fast.dpad_window;
    if (o->fast.set_sigma) rq->dpad_sigma = o->fast.dpad_sigma;
    if (o->fast.set_scale) rq->dpad_scale = o->fast.dpad_scale;
    bool fast_set = o->fast.cache || o->fast.rule ||
                    (o->fast.confidence && rq->decoder != LP_DEC_D2F) || o->fast.set_threshold ||
                    o->fast.set_factor || o->fast.first_token;
    if (fast_set && rq->decoder != LP_DEC_FAST)
        return lp_cli_usage_error(cmd, "--cache / --rule / --threshold / --factor / --confidence "
                                       "/ --dream-first-token-commit need --decoder fast");
    /* D2F / LoPA */
    if (o->d2f.set_tau_add) rq->tau_add = o->d2f.tau_add;
    if (o->d2f.set_tau_act) rq->tau_act = o->d2f.tau_act;
    if (o->d2f.set_tau_conf) rq->tau_conf = o->d2f.tau_conf;
    if (o->d2f.set_lopa) rq->lopa = o->d2f.lopa;
    if (o->d2f.window && lp_window_attn_parse(o->d2f.window, &rq->lopa_window))
        return lp_cli_fail(cmd, LOPAD_ERR_ARG) + 1;
    bool d2f_set = o->d2f.set_tau_add || o->d2f.set_tau_act || o->d2f.set_tau_conf;
    if (d2f_set && rq->decoder != LP_DEC_D2F)
        return lp_cli_usage_error(cmd, "--tau-add / --tau-act / --tau-conf need --decoder d2f");
    if ((o->d2f.set_lopa || o->d2f.window) && rq->decoder != LP_DEC_D2F &&
        rq->decoder != LP_DEC_FAST)
        return lp_cli_usage_error(cmd, "--lopa / --lopa-window-attention need --decoder d2f or "
                                       "fast");
    if (o->d2f.window && rq->lopa < 0)
        return lp_cli_usage_error(cmd, "--lopa-window-attention needs --lopa K");
    bool dpad_set = o->fast.set_window || o->fast.set_sigma || o->fast.set_scale;
    if (dpad_set && !rq->dpad)
        return lp_cli_usage_error(cmd, "--dpad-window / --dpad-sigma / --dpad-scale need --dpad "
                                       "(or a --preset)");
    return 0;
}

/* ---------------------------------------------------------------- output */

struct stream {
    const struct lp_run_session *s;
    const struct lp_run_opts *o;
    struct lp_tok_stream ts;
    int printed;      /* generated positions already streamed */
    bool ended;       /* an EOS / EoT was reached */
    bool stream_text; /* print text as it becomes final */
    bool progress;    /* progress line on stderr */
    bool tty;
    double t0;
    struct lp_ids reply; /* ids streamed so far (the reply) */
};

static bool is_end(const struct lp_run_session *s, int32_t t) {
    return (s->hp->eos_id >= 0 && t == s->hp->eos_id) || (s->hp->eot_id >= 0 && t == s->hp->eot_id);
}

static void draw_token(const struct lp_run_session *s, int32_t t, FILE *f) {
    size_t len = 0;
    const char *b = s->tok ? lp_tokenizer_token(s->tok, t, &len) : NULL;
    if (!b) {
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
}

static void draw_canvas(struct stream *st, const struct lp_step_event *ev) {
    FILE *f = stderr;
    if (st->tty) fputs("\033[H\033[2J", f);
    /* n_steps < 0: the decoder has no planned step count (fast, d2f, LoPA, llada --dpad) */
    if (ev->n_steps >= 0)
        fprintf(f, "step %d/%d  nfe %d  masked %d\n", ev->step + 1, ev->n_steps, ev->nfe,
                ev->n_masked);
    else
        fprintf(f, "step %d  nfe %d  masked %d\n", ev->step + 1, ev->nfe, ev->n_masked);
    if (ev->n_branches > 0) { /* D2F / LoPA: the winner and what it added */
        if (ev->winner == ev->n_branches - 1)
            fprintf(f, "lopa: %d branches, winner: the anchor", ev->n_branches);
        else
            fprintf(f, "lopa: %d branches, winner: lookahead %d (token at position %d)",
                    ev->n_branches, ev->winner, ev->winner_pos - ev->n_prompt);
        fputs("; added positions:", f);
        for (int c = 0; c < ev->n_committed; c++)
            fprintf(f, " %d%s", ev->committed[c] - ev->n_prompt,
                    ev->committed[c] == ev->winner_pos ? "*" : "");
        fputc('\n', f);
    }
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

static int on_step(void *ud, const struct lp_step_event *ev) {
    struct stream *st = ud;
    /* the final prefix, up to the first EOS / EoT */
    while (!st->ended && st->printed < ev->final_prefix) {
        int32_t t = ev->canvas[ev->n_prompt + st->printed];
        if (is_end(st->s, t)) {
            st->ended = true;
            break;
        }
        if (lp_ids_push(&st->reply, t)) return 1;
        if (st->stream_text) {
            const char *txt;
            size_t n;
            if (lp_tok_stream_push(st->s->tok, &st->ts, t, true, &txt, &n) == LOPAD_OK && n) {
                fwrite(txt, 1, n, stdout);
                fflush(stdout);
            }
        }
        st->printed++;
    }
    if (st->o->visual) {
        draw_canvas(st, ev);
    } else if (st->progress) {
        double dt = lp_time() - st->t0;
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

/* text for JSON: invalid UTF-8 (a random model's bytes) becomes U+FFFD */
static char *utf8_sanitize(const char *s, size_t n) {
    char *o = malloc(3 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (int j = 1; ok && j < len; j++)
            ok = ((unsigned char)s[i + j] >> 6) == 2;
        if (ok && len == 2) ok = c >= 0xC2;
        if (ok && len == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
        }
        if (ok && len == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            ok = c <= 0xF4 && !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
        }
        if (ok) {
            memcpy(o + k, s + i, (size_t)len);
            k += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    o[k] = 0;
    return o;
}

static void json_settings(cJSON *o, const struct lp_decode_request *rq) {
    cJSON_AddStringToObject(o, "decoder", lp_decoder_name(rq->decoder));
    cJSON_AddNumberToObject(o, "gen", rq->gen_len);
    cJSON_AddNumberToObject(o, "steps", rq->steps);
    cJSON_AddNumberToObject(o, "block", rq->block_len);
    cJSON_AddNumberToObject(o, "temperature", rq->temperature);
    char seed[32]; /* exact: a double would round seeds above 2^53 */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)rq->seed);
    cJSON_AddRawToObject(o, "seed", seed);
    if (rq->decoder == LP_DEC_LLADA) {
        cJSON_AddStringToObject(o, "remasking", lp_remasking_name(rq->remasking));
        cJSON_AddNumberToObject(o, "cfg_scale", rq->cfg_scale);
        cJSON_AddBoolToObject(o, "logits_eos_inf", rq->logits_eos_inf);
        cJSON_AddBoolToObject(o, "confidence_eos_eot_inf", rq->confidence_eos_eot_inf);
    } else {
        cJSON_AddStringToObject(o, "alg", lp_dream_alg_name(rq->alg));
        cJSON_AddNumberToObject(o, "alg_temp", rq->alg_temp);
        cJSON_AddNumberToObject(o, "eps", rq->eps);
        cJSON_AddNumberToObject(o, "top_p", rq->top_p);
        cJSON_AddNumberToObject(o, "top_k", rq->top_k);
    }
    if (rq->decoder == LP_DEC_FAST) { /* Fast-dLLM */
        cJSON_AddStringToObject(o, "cache", lp_cache_mode_name(rq->cache));
        cJSON_AddStringToObject(o, "rule", lp_commit_rule_name(rq->rule));
        cJSON_AddNumberToObject(o, "threshold", rq->threshold);
        cJSON_AddNumberToObject(o, "factor", rq->factor);
        cJSON_AddStringToObject(o, "confidence", lp_confidence_name(rq->confidence));
        cJSON_AddBoolToObject(o, "early_stop", rq->early_stop);
        cJSON_AddBoolToObject(o, "dream_first_token_commit", rq->dream_first_token_commit);
    }
    if (rq->decoder == LP_DEC_D2F) { /* D2F / LoPA */
        cJSON_AddNumberToObject(o, "tau_add", rq->tau_add);
        cJSON_AddNumberToObject(o, "tau_act", rq->tau_act);
        cJSON_AddNumberToObject(o, "tau_conf", rq->tau_conf);
        cJSON_AddStringToObject(o, "confidence", lp_confidence_name(rq->confidence));
        if (rq->lopa >= 0) {
            cJSON_AddNumberToObject(o, "lopa", rq->lopa);
            cJSON_AddStringToObject(o, "lopa_window_attention",
                                    lp_window_attn_name(rq->lopa_window));
        }
    }
    if (rq->dpad) { /* DPad */
        cJSON_AddNumberToObject(o, "dpad_window", rq->dpad_window);
        cJSON_AddNumberToObject(o, "dpad_sigma", rq->dpad_sigma);
        cJSON_AddNumberToObject(o, "dpad_scale", rq->dpad_scale);
    }
}

static double process_cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* shared: run one request on the session; streams, prints the summary / JSON
 * (nothing with o->quiet). reply (optional) receives the generated ids cut at the
 * first EOS / EoT, stats (optional) the counts. */
int lp_run_generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    struct lp_decode_request *rq, struct lp_ids *reply) {
    return lp_run_generate_ex(cmd, o, s, rq, reply, NULL);
}

int lp_run_generate_ex(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                       struct lp_decode_request *rq, struct lp_ids *reply,
                       struct lp_run_stats *stats) {
    int ctx_limit = s->hp->n_ctx_train > 0 ? s->hp->n_ctx_train : INT_MAX;
    enum lopad_status est = lp_decode_validate(rq, s->hp, ctx_limit);
    if (est) return lp_cli_fail(cmd, est) + 1; /* a bad request is a usage error */
    int L = rq->n_prompt + rq->gen_len;
    int n_batch = rq->cfg_scale > 0 ? 2 * L : L;
    /* D2F / LoPA: all K+1 branches in one forward when they fit a modest buffer (the
     * decoder splits a larger batch into calls, still one NFE) */
    if ((rq->decoder == LP_DEC_D2F || rq->decoder == LP_DEC_FAST) && rq->lopa > 0)
        n_batch = (int)LP_MIN((int64_t)(rq->lopa + 1) * L, (int64_t)LP_MAX(L, 16384));
    struct lopad_ctx_params cp = {
        .n_ctx = L, .n_batch_max = n_batch, .n_threads = o->threads, .device = o->device};
    lopad_ctx *ctx = NULL;
    est = lopad_ctx_new(s->model, &cp, &ctx);
    if (est) return lp_cli_fail(cmd, est);
    struct lp_engine eng;
    lp_engine_from_ctx(&eng, s->model, ctx, L, n_batch);

    struct stream st = {.s = s, .o = o, .t0 = lp_time()};
    st.tty = isatty(2);
    st.stream_text = s->tok && !o->json && !o->quiet;
    st.progress = st.tty && !o->json && !o->quiet;
    struct lp_decode_result res;
    const double cpu0 = process_cpu_seconds();
    est = lp_decode_run(&eng, rq, o->quiet ? NULL : on_step, o->quiet ? NULL : &st, &res);
    const double cpu_s = process_cpu_seconds() - cpu0;
    lopad_ctx_free(ctx);
    if (est) {
        if (st.progress) fputs("\r\033[K", stderr);
        lp_tok_stream_free(&st.ts);
        lp_ids_free(&st.reply);
        return lp_cli_fail(cmd, est);
    }
    if (st.stream_text) {
        const char *txt;
        size_t n;
        lp_tok_stream_flush(&st.ts, &txt, &n);
        fwrite(txt, 1, n, stdout);
        fputc('\n', stdout);
    }
    double tps = res.t_total > 0 ? res.n_committed / res.t_total : 0;
    int rc = 0;
    if (stats) *stats = (struct lp_run_stats){res.n_committed, res.nfe, res.t_total};
    if (o->quiet) {
        /* nothing printed */
    } else if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *ids = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < res.n_ids; i++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(res.ids[i]));
        if (s->tok) {
            char *text = NULL, *clean = NULL;
            size_t tl = 0;
            if (lp_tokenizer_decode(s->tok, res.ids, (size_t)res.n_ids, true, &text, &tl) ==
                    LOPAD_OK &&
                (clean = utf8_sanitize(text, tl)))
                cJSON_AddStringToObject(j, "text", clean);
            free(clean);
            lp_free(text);
        }
        cJSON_AddNumberToObject(j, "n_prompt", res.n_prompt);
        cJSON_AddNumberToObject(j, "n_committed", res.n_committed);
        cJSON_AddNumberToObject(j, "nfe", res.nfe);
        cJSON_AddNumberToObject(j, "tpf", res.tpf);
        cJSON_AddNumberToObject(j, "seconds", res.t_total);
        cJSON_AddNumberToObject(j, "prefill_seconds", res.t_first_forward);
        cJSON_AddNumberToObject(j, "decode_seconds", res.t_total - res.t_first_forward);
        /* CPU time of all threads during decoding: with --threads 1 on a shared machine,
         * the cost of the work itself (wall time also counts the waits) */
        cJSON_AddNumberToObject(j, "cpu_seconds", cpu_s);
        cJSON_AddNumberToObject(j, "tokens_per_second", tps);
        /* D2F / LoPA: non-pad tokens per NFE; branch wins (lookahead 0..K-1, anchor K) */
        cJSON_AddNumberToObject(j, "n_nonpad", res.n_nonpad);
        cJSON_AddNumberToObject(j, "tpf_nonpad", res.tpf_nonpad);
        cJSON_AddNumberToObject(j, "n_seq_evals", res.n_seq_evals);
        if (res.winner_hist) {
            cJSON *h = cJSON_AddArrayToObject(j, "winner_hist");
            for (int i = 0; i < res.n_winner_hist; i++)
                cJSON_AddItemToArray(h, cJSON_CreateNumber(res.winner_hist[i]));
        }
        json_settings(cJSON_AddObjectToObject(j, "settings"), rq);
        char *out = cJSON_PrintUnformatted(j);
        if (out) {
            puts(out);
            free(out);
        } else {
            rc = 1;
        }
        cJSON_Delete(j);
    } else if (!s->tok) {
        for (int i = 0; i < res.n_ids; i++)
            printf(i ? ",%d" : "%d", (int)res.ids[i]);
        putchar('\n');
    }
    if (!o->quiet) {
        fflush(stdout);
        fprintf(stderr,
                "lopad %s: %d tokens (%d kept before EOS), NFE %d, TPF %.2f, prefill %.3f s, "
                "decode %.3f s, %.1f tok/s\n",
                cmd, res.n_committed, res.n_ids, res.nfe, res.tpf, res.t_first_forward,
                res.t_total - res.t_first_forward, tps);
    }
    if (res.winner_hist && !o->quiet) { /* D2F / LoPA */
        fprintf(stderr, "lopad %s: LoPA wins: anchor %d, lookahead", cmd,
                res.winner_hist[res.n_winner_hist - 1]);
        for (int i = 0; i + 1 < res.n_winner_hist; i++)
            fprintf(stderr, " %d", res.winner_hist[i]);
        fprintf(stderr, " (%d sequences in %d forwards)\n", res.n_seq_evals, res.nfe);
    }
    if (reply) {
        reply->n = 0;
        for (int i = 0; i < res.n_ids && rc == 0; i++)
            if (lp_ids_push(reply, res.ids[i])) rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    }
    lp_decode_result_free(&res);
    lp_tok_stream_free(&st.ts);
    lp_ids_free(&st.reply);
    return rc;
}

/* shared: encode a user turn (chat template or raw text) */
int lp_run_encode(const char *cmd, const struct lp_run_session *s, const struct lp_chat_msg *msgs,
                  int n_msgs, const char *system, bool chat, struct lp_ids *out) {
    if (!s->tok)
        return lp_cli_usage_error(cmd,
                                  "the model has no tokenizer: give the prompt as --prompt-ids");
    out->n = 0;
    enum lopad_status st;
    if (chat) {
        if (!s->has_style)
            return lp_cli_usage_error(cmd, "the model has no usable chat template; use --raw");
        char *text = NULL;
        size_t len = 0;
        st = lp_chat_render(&s->style, msgs, n_msgs, system, true, &text, &len);
        if (st) return lp_cli_fail(cmd, st);
        st = lp_tokenizer_encode(s->tok, text, len, true, out);
        lp_free(text);
    } else {
        st = lp_tokenizer_encode(s->tok, msgs[n_msgs - 1].content, strlen(msgs[n_msgs - 1].content),
                                 true, out);
    }
    return st ? lp_cli_fail(cmd, st) : 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f, "usage: lopad run [-m MODEL] (-p TEXT | --prompt-ids 1,2,3) [options]\n"
               "  -p, --prompt TEXT    prompt text (needs the model's tokenizer)\n"
               "  --prompt-ids IDS     prompt as comma-separated token ids\n"
               "  --json               print one JSON object (ids, text, nfe, tpf, seconds,\n"
               "                       settings) instead of the text\n");
    fputs(lp_run_opts_help, f);
}

static int cmd_run(int argc, char **argv) {
    const char *cmd = "run";
    struct lp_run_opts o;
    lp_run_opts_init(&o);
    const char *prompt = NULL, *prompt_ids = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!need(cmd, argc, argv, i)) return 2;
            prompt = argv[++i];
            continue;
        }
        if (!strcmp(a, "--prompt-ids")) {
            if (!need(cmd, argc, argv, i)) return 2;
            prompt_ids = argv[++i];
            continue;
        }
        int r = lp_run_parse_opt(cmd, argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r == 0) return lp_cli_usage_error(cmd, "unknown option '%s' (see lopad run --help)", a);
    }
    if (!prompt == !prompt_ids)
        return lp_cli_usage_error(cmd, "give exactly one of -p TEXT or --prompt-ids IDS");
    if (o.chat && o.raw) return lp_cli_usage_error(cmd, "--chat and --raw exclude each other");
    if (prompt_ids && (o.chat || o.system))
        return lp_cli_usage_error(cmd, "--chat / --system need a text prompt (-p)");
    if (prompt && !*prompt) return lp_cli_usage_error(cmd, "empty prompt");

    int32_t *ids = NULL;
    int n_ids = 0;
    if (prompt_ids && !lp_cli_parse_ids(cmd, "--prompt-ids", prompt_ids, &ids, &n_ids)) return 2;

    struct lp_run_session s;
    int rc = lp_run_session_open(cmd, &o, &s);
    if (rc) {
        free(ids);
        return rc;
    }
    struct lp_ids enc = {0};
    if (prompt) {
        bool chat = o.chat || (!o.raw && s.has_style);
        struct lp_chat_msg msg = {"user", prompt};
        rc = lp_run_encode(cmd, &s, &msg, 1, o.system, chat, &enc);
    }
    struct lp_decode_request rq;
    if (!rc) rc = lp_run_make_request(cmd, &o, &s, &rq);
    if (!rc) {
        rq.prompt = prompt ? enc.v : ids;
        rq.n_prompt = prompt ? (int)enc.n : n_ids;
        rc = lp_run_generate(cmd, &o, &s, &rq, NULL);
    }
    lp_ids_free(&enc);
    free(ids);
    lp_run_session_close(&s);
    return rc;
}

LP_CLI_COMMAND("run", cmd_run, "generate text with a vanilla decoder (llada, dream)")
