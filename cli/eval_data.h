/*
 * eval_data.h - the benchmark data of `lopad eval` (cmd_eval.c): locating the
 * repository's data/ folder, reading GSM8K / HumanEval / MBPP / MATH-500 (and GSM-format
 * held-out files), and the text of each problem as a chat turn and as a raw
 * few-shot prompt.
 */
#ifndef LP_CLI_EVAL_DATA_H
#define LP_CLI_EVAL_DATA_H

#include <stdbool.h>
#include <stddef.h>

enum lp_eval_task {
    LP_TASK_TINY_GSM = 0,
    LP_TASK_GSM8K,
    LP_TASK_HUMANEVAL,
    LP_TASK_MBPP,
    LP_TASK_MATH500,
    LP_TASK_LOPA_DEMO, /* tiny-gsm's problems worded many ways (models/lopa-demo; issue 18) */
    LP_TASK_COUNT
};

/* one problem; every string malloc'd, NULL where the task has none */
struct lp_eval_item {
    char *id;
    char *q_chat, *a_chat; /* the user turn; the assistant turn when used as an exemplar */
    char *q_raw, *a_raw;   /* the same for a plain-text few-shot prompt */
    char *ref;             /* reference answer (GSM: normalised number; MATH: the answer) */
    char *code_prompt;     /* HumanEval: the function header + docstring */
    char *tests;           /* code tasks: Python run after the solution */
    char *solution;        /* a correct reply (the dataset's solution): `--oracle` scores it */
};

struct lp_eval_set {
    enum lp_eval_task task;
    struct lp_eval_item *items, *shots;
    int n_items, n_shots;
};

const char *lp_eval_task_name(enum lp_eval_task t);
bool lp_eval_task_parse(const char *s, enum lp_eval_task *out);
bool lp_eval_task_is_code(enum lp_eval_task t);
int lp_eval_task_default_shots(enum lp_eval_task t);
/* generated positions when --gen is not given: tiny-gsm 48 (the demo model's runs in
 * docs/RESULTS.md), the benchmarks 256 (their reference evaluations) */
int lp_eval_task_default_gen(enum lp_eval_task t);
/* gen fitted to a model's trained context n_ctx (<= 0: unknown, gen kept): gen when
 * longest_prompt + gen fits, else the room left rounded down to a multiple of align
 * (the decoder's --block; 1 = any), with a note on stderr; 0 with a message naming the
 * task, the longest prompt and the context when fewer than max(8, align) positions
 * are left */
int lp_eval_fit_gen(const char *cmd, enum lp_eval_task task, int gen, int align, int n_ctx,
                    int longest_prompt);

/* Load the task. data: an explicit file (NULL = the task's file in the repository's
 * data folder: $LOPAD_DATA, else data/ found above the lopad binary or the current
 * directory (or an installed share/lopad/data), else for benchmarks
 * ../shared/data/bench; tiny-gsm: data/tiny-gsm/heldout.jsonl); limit <= 0 = all; shots
 * exemplars.
 * Returns 0, or 2 with a message on stderr naming the missing / bad file. */
int lp_eval_load(const char *cmd, enum lp_eval_task task, const char *data, int limit, int shots,
                 struct lp_eval_set *out);
void lp_eval_set_free(struct lp_eval_set *s);

#endif
