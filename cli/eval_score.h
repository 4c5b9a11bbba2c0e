/*
 * eval_score.h - scoring for `lopad eval` (cmd_eval.c): answer extraction and
 * comparison for GSM8K-style and MATH-style tasks, and sandboxed execution of
 * generated Python code against a task's tests (HumanEval, MBPP).
 * All returned strings are malloc'd (free()).
 */
#ifndef LP_CLI_EVAL_SCORE_H
#define LP_CLI_EVAL_SCORE_H

#include <stdbool.h>

/* GSM8K: the number after the last "####" (strict), or NULL */
char *lp_eval_gsm_strict(const char *out);
/* the last number in the text (flexible), or NULL */
char *lp_eval_last_number(const char *out);
/* true when two number strings are equal after dropping commas, '$', spaces and a
 * trailing '.' (compared as numbers) */
bool lp_eval_num_equal(const char *a, const char *b);
/* the reference of a GSM8K answer: the text after "#### ", normalised */
char *lp_eval_gsm_reference(const char *answer);

/* MATH: the content of the last \boxed{...} (or \fbox{...}), else the last number; NULL
 * when neither is present */
char *lp_eval_math_extract(const char *out);
/* the canonical form used for comparison (spaces, \left/\right, \dfrac, \frac12,
 * \text{}, degrees, trailing dots removed) */
char *lp_eval_math_normalize(const char *s);
/* normalised equality, or numerical equality when both sides are numbers */
bool lp_eval_math_equal(const char *pred, const char *ref);

/* Python code: the first ```python (or ```) fenced block of a reply, else NULL */
char *lp_eval_code_block(const char *out);
/* Cut a raw completion at the first top-level line (a line that starts with a
 * non-space character after the first line): the usual HumanEval stop rule. */
char *lp_eval_cut_completion(const char *completion);

enum lp_exec_result { LP_EXEC_PASS = 0, LP_EXEC_FAIL = 1, LP_EXEC_TIMEOUT = 2, LP_EXEC_ERROR = 3 };
/* Run `program` with $LOPAD_PYTHON, else /usr/bin/python3, else python3 from PATH, in a fresh
 * temporary directory and its own process group, without network (unshare -n when it works, and
 * socket connect/bind disabled in the interpreter), with CPU / memory / file size limits; killed
 * after timeout_s. PASS = exit status 0. */
enum lp_exec_result lp_eval_exec_python(const char *program, double timeout_s);
const char *lp_exec_result_name(enum lp_exec_result r);

/* Built-in scorer cases; prints failures and "N passed, N failed" on stdout.
 * Returns the number of failures. */
int lp_eval_self_test(void);

#endif
