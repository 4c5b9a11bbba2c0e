/*
 * cli.h - the `lopad` command line. Each command lives in its own cli/cmd_*.c
 * and registers itself with LP_CLI_COMMAND, so adding one touches no shared file.
 * Commands return the process exit status (0 ok, 1 runtime error, 2 usage error).
 */
#ifndef LP_CLI_H
#define LP_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include "lopad.h"

typedef int (*lp_cli_fn)(int argc, char **argv); /* argv[0] is the command name */

void lp_cli_register(const char *name, lp_cli_fn fn, const char *summary);

#define LP_CLI_COMMAND(name, fn, summary)                                                          \
    __attribute__((constructor)) static void lp_cli_register_##fn(void) {                          \
        lp_cli_register(name, fn, summary);                                                        \
    }

/* Print "lopad CMD: message" to stderr; returns 2 (usage) for convenience. */
int lp_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "lopad CMD: <lopad_errmsg()>" to stderr; returns 1. */
int lp_cli_fail(const char *cmd, enum lopad_status st);

/* The environment knobs, CLI conveniences the library takes as parameters:
 * LOPAD_KERNELS caps the CPU kernels, LOPAD_REPACK=0|1 never / always repacks Q8_0.
 * 0, or 2 with a message for a bad value. */
int lp_cli_env_ctx_params(const char *cmd, const char **kernels, int *repack);

/* Argument helpers: strict parsing, false (with a message naming `opt`) on junk. */
bool lp_cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
bool lp_cli_parse_float(const char *cmd, const char *opt, const char *s, double *out);
/* Parse "1,2,3" into a new array (free with free()); false on junk or empty. */
bool lp_cli_parse_ids(const char *cmd, const char *opt, const char *s, int32_t **out, int *n);
/* Weight type by name (convert, bench, synthetic models): a LOPAD_TYPE_*, -1 if unknown. */
#define LP_CLI_WEIGHT_TYPES "f32, f16, bf16, q8_0, q4_0, q4_k, q6_k"
int lp_cli_weight_type(const char *name);

#endif
