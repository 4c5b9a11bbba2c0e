/*
 * run.h - what `lopad run` (cmd_run.c) shares with `lopad chat` (cmd_chat.c):
 * the decoding options, a loaded model with its tokenizer, and the helpers that
 * turn options into a decode request and run it with streaming output, or
 * quietly (`lopad eval`, cmd_eval.c: nothing printed, the ids and counts returned).
 */
#ifndef LP_CLI_RUN_H
#define LP_CLI_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "lopad.h"
#include "decode/decode.h"
#include "model/chat.h"
#include "model/tokenizer.h"

struct lp_run_opts {
    const char *model, *lora;
    const char *device; /* --device cpu|cuda, NULL = cpu */
    int gen;
    const char *decoder, *remasking, *alg;
    int steps, block, top_k, threads;
    double temperature, cfg_scale, eps, alg_temp, top_p;
    bool set_steps, set_block, set_temperature, set_cfg, set_eps, set_alg_temp, set_top_p,
        set_top_k, set_seed;
    bool logits_eos_inf, confidence_eos_eot_inf;
    uint64_t seed;
    bool json, visual, chat, raw;
    bool quiet; /* lp_run_generate prints nothing (no text, progress, JSON or summary);
                 * errors are still reported. Not an option: set by lopad eval */
    const char *system;
    struct { /* Fast-dLLM / DPad */
        const char *cache, *rule, *confidence, *preset;
        double threshold, factor, dpad_scale, dpad_sigma;
        int dpad_window, early_stop; /* early_stop: -1 = default */
        bool set_threshold, set_factor, set_scale, set_sigma, set_window, first_token, dpad;
    } fast;
    struct { /* D2F / LoPA */
        double tau_add, tau_act, tau_conf;
        bool set_tau_add, set_tau_act, set_tau_conf, set_lopa;
        int lopa;
        const char *window;
    } d2f;
};

/* a loaded model and its tokenizer */
struct lp_run_session {
    lopad_model *model;
    const struct lopad_hparams *hp;
    struct lp_tokenizer *tok; /* NULL when the model has no tokenizer */
    struct lp_chat_style style;
    bool has_style;
};

void lp_run_opts_init(struct lp_run_opts *o);
/* Parse the option at argv[*i] (advancing *i past its value): 1 = consumed,
 * 0 = not a run option, -1 = bad value (message printed). */
int lp_run_parse_opt(const char *cmd, int argc, char **argv, int *i, struct lp_run_opts *o);
extern const char *lp_run_opts_help;
/* Load o->model (or $LOPAD_DEFAULT_MODEL). "synthetic:SHAPE[:LAYERS][@TYPE]" builds a
 * random-weight model in memory instead (model/synthetic.h; TYPE f32 | f16 | bf16 |
 * q8_0 | q4_0, default bf16; no tokenizer, so prompts are ids), e.g.
 * synthetic:llada-8b:2@q8_0 for benchmarks of whole generations. 0 or an exit code. */
int lp_run_session_open(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s);
void lp_run_session_close(struct lp_run_session *s);
int lp_run_make_request(const char *cmd, const struct lp_run_opts *o,
                        const struct lp_run_session *s, struct lp_decode_request *rq);
/* what one generation did (summed by callers over several) */
struct lp_run_stats {
    int n_committed, nfe;
    double seconds; /* the decoder's total time, prefill included */
};

/* Run one request on the session: streams the text (or the --visual canvas), then
 * the JSON object or the ids and a summary on stderr, unless o->quiet. reply
 * (optional) receives the generated ids cut at the first EOS / EoT, stats
 * (optional) the counts. 0, or an exit code (2 = a bad request). */
int lp_run_generate_ex(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                       struct lp_decode_request *rq, struct lp_ids *reply,
                       struct lp_run_stats *stats);
/* the same without stats */
int lp_run_generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    struct lp_decode_request *rq, struct lp_ids *reply);
int lp_run_encode(const char *cmd, const struct lp_run_session *s, const struct lp_chat_msg *msgs,
                  int n_msgs, const char *system, bool chat, struct lp_ids *out);

#endif
