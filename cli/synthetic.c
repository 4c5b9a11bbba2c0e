/*
 * synthetic.c - "synthetic:SHAPE[:LAYERS][@TYPE]" models for `lopad run` / `bench`:
 * random weights built in memory (src/model/synthetic.h), no tokenizer. A
 * developer tool, so it reaches into src/; the commands themselves use lopad.h.
 */
#include <string.h>

#include "cli.h"
#include "run.h"
#include "model/synthetic.h"

int lp_cli_synthetic_model(const char *cmd, const char *body, lopad_model **out) {
    char spec[128];
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
    enum lopad_status st = lp_model_synthetic(spec, type, 1234, out);
    if (st) return lp_cli_fail(cmd, st) + (st == LOPAD_ERR_ARG); /* a bad name: usage error */
    return 0;
}
