/*
 * eval_data.h - the benchmark data of `lopad eval` (cmd_eval.c): locating
 * ../shared/data/bench, reading GSM8K / HumanEval / MBPP / MATH-500 (and GSM-format
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

/* Load the task. data: an explicit file (NULL = the shared benchmark file, or for
 * tiny-gsm tools/train/data/heldout.jsonl); limit <= 0 = all; shots exemplars.
 * Returns 0, or 2 with a message on stderr naming the missing / bad file. */
int lp_eval_load(const char *cmd, enum lp_eval_task task, const char *data, int limit, int shots,
                 struct lp_eval_set *out);
void lp_eval_set_free(struct lp_eval_set *s);

#endif
