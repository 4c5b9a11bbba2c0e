/*
 * eval_score.h - scoring for `lopad eval` (cmd_eval.c): answer extraction and
 * comparison for GSM8K-style and MATH-style tasks, and sandboxed execution of
 * generated Python code against a task's tests (HumanEval, MBPP).
 * All returned strings are malloc'd (free()).
 */
#ifndef LP_CLI_EVAL_SCORE_H
#define LP_CLI_EVAL_SCORE_H

#include <stdbool.h>
#include <stddef.h>

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

enum lp_exec_result {
    LP_EXEC_PASS = 0,
    LP_EXEC_FAIL = 1,
    LP_EXEC_TIMEOUT = 2,
    LP_EXEC_ERROR = 3,
    LP_EXEC_NOSANDBOX = 4 /* refused: no working sandbox and unsafe execution not allowed */
};
/* Run `program` with $LOPAD_PYTHON, else /usr/bin/python3, else python3 from PATH, killed
 * with everything it started after timeout_s. PASS = exit status 0.
 * The sandbox is bubblewrap ($LOPAD_BWRAP, else bwrap from PATH): new user, PID, network,
 * mount, IPC and UTS namespaces, the system read-only, a private tmpfs /tmp as the working
 * directory, run as nobody when lopad is root, and CPU / address-space / process / file-size
 * limits (prlimit). Without a working sandbox (see lp_eval_sandbox_check) the program is
 * refused (LP_EXEC_NOSANDBOX) unless unsafe execution is on: then it runs as before the
 * sandbox (a temporary directory, unshare -n where it works, rlimits, the user's file access). */
enum lp_exec_result lp_eval_exec_python(const char *program, double timeout_s);
/* allow running generated code unconfined when no sandbox works (`--unsafe-exec`) */
void lp_eval_set_unsafe_exec(bool on);
bool lp_eval_unsafe_exec(void);
/* 0 when the sandbox works (probed once, by running an empty program in it); else 1 with
 * the reason (naming what is missing or bwrap's own message) in why[cap] */
int lp_eval_sandbox_check(char *why, size_t cap);
const char *lp_exec_result_name(enum lp_exec_result r);

/* Built-in scorer cases; prints failures and "N passed, N failed" on stdout.
 * Returns the number of failures. */
int lp_eval_self_test(void);

#endif
