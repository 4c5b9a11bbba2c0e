/*
 * run.h - what `lopad run` (cmd_run.c) shares with `lopad chat` and `lopad eval`:
 * the command-line flags of a generation (session flags plus every decoding
 * option of the library's option table), the loaded model with its session,
 * and one generation with streamed output. Only the public API (lopad.h).
 */
#ifndef LP_CLI_RUN_H
#define LP_CLI_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "lopad.h"

struct lp_run_opts {
    const char *model, *lora;
    const char *device; /* --device cpu|cuda, NULL = cpu */
    const char *system;
    int threads;
    int tensor_parallel; /* --tensor-parallel T (under mpirun) */
    bool json, visual, chat, raw;
    bool quiet;        /* lp_run_generate prints nothing; errors are still reported (lopad eval) */
    lopad_request *rq; /* the decoding options from the flags (its prompt is unused) */
};

/* a loaded model and the session that generates on it */
struct lp_run_session {
    lopad_model *model;
    lopad_session *sess;
    const struct lopad_hparams *hp;
};

/* 0, or an exit code (out of memory) */
int lp_run_opts_init(struct lp_run_opts *o);
void lp_run_opts_free(struct lp_run_opts *o);
/* Parse the flag at argv[*i] (advancing *i past its value): 1 = consumed,
 * 0 = not a generation flag, -1 = bad value (message printed). */
int lp_run_parse_opt(const char *cmd, int argc, char **argv, int *i, struct lp_run_opts *o);
/* Set decoding option `name` (table name or CLI flag) to value text on rq;
 * 0 or 2 with the message printed. */
int lp_run_set_option(const char *cmd, lopad_request *rq, const char *name, const char *value);
void lp_run_print_help(FILE *f);

/* Load o->model (or $LOPAD_DEFAULT_MODEL) and open a session with the flags and
 * the environment knobs (LOPAD_KERNELS, LOPAD_REPACK, LOPAD_FUSED_SCORES).
 * "synthetic:SHAPE[:LAYERS][@TYPE]" builds a random-weight model instead
 * (cli/synthetic.c). 0 or an exit code. */
int lp_run_session_open(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s);
void lp_run_session_close(struct lp_run_session *s);
/* The session parameters of the flags and the environment knobs (for front ends
 * that open more sessions on the same model, such as the server's slots). 0 or 2. */
int lp_run_session_params(const char *cmd, const struct lp_run_opts *o,
                          struct lopad_session_params *p);

/* Generate rq on the session: streams the text (or the --visual canvas), then the
 * JSON object or the ids and a summary on stderr, unless o->quiet. res (optional)
 * receives the result (free with lopad_result_free). 0, or an exit code (2 = a bad
 * request). */
int lp_run_generate(const char *cmd, const struct lp_run_opts *o, struct lp_run_session *s,
                    lopad_request *rq, struct lopad_result *res);

/* cli/synthetic.c: a random-weight model for benchmarks (a developer tool) */
int lp_cli_synthetic_model(const char *cmd, const char *spec, lopad_model **out);

#endif
