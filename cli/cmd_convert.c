/* cmd_convert.c - `lopad convert IN OUT [--type T] [--lora DIR] [--force]`: write any loadable
 * model as GGUF. An existing OUT is replaced only with --force.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "run.h" /* lp_cli_synthetic_model */

static int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *lora = NULL, *type_s = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: lopad convert IN OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_k|q6_k] "
                   "[--lora DIR] [--force]\n"
                   "  IN is a .gguf file, a Hugging Face directory or "
                   "synthetic:SHAPE[:LAYERS][@TYPE]\n"
                   "  (random weights, as `lopad run -m`); without --type the stored\n"
                   "  types are kept. A LoRA adapter is merged into the written weights.\n"
                   "  OUT appears complete or not at all (written next to it, then renamed);\n"
                   "  an existing OUT is refused unless --force is given.\n");
            return 0;
        } else if (!strcmp(argv[i], "--type") && i + 1 < argc) {
            type_s = argv[++i];
        } else if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--lora") && i + 1 < argc) {
            lora = argv[++i];
        } else if (argv[i][0] == '-') {
            return lp_cli_usage_error("convert", "unknown option '%s'", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            return lp_cli_usage_error("convert", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!in || !out)
        return lp_cli_usage_error("convert", "usage: lopad convert IN OUT.gguf [--type T]");
    int type = -1;
    if (type_s) {
        type = lp_cli_weight_type(type_s);
        if (type < 0)
            return lp_cli_usage_error("convert", "unknown --type '%s' (" LP_CLI_WEIGHT_TYPES ")",
                                      type_s);
    }
    /* checked before the (long) load; lstat: a symlink at OUT counts as existing */
    struct stat sb;
    if (!force && lstat(out, &sb) == 0)
        return lp_cli_usage_error("convert", "'%s' exists; pass --force to replace it", out);
    if (!force && errno != ENOENT)
        return lp_cli_usage_error("convert", "cannot check '%s': %s", out, strerror(errno));
    struct lopad_load_opts opts = {.lora_dir = lora};
    lopad_model *m;
    enum lopad_status st;
    if (!strncmp(in, "synthetic:", strlen("synthetic:"))) { /* random weights as a file */
        if (lora) return lp_cli_usage_error("convert", "--lora needs a model file");
        int rc = lp_cli_synthetic_model("convert", in + strlen("synthetic:"), &m);
        if (rc) return rc;
    } else if ((st = lopad_model_load(in, &opts, &m))) {
        return lp_cli_fail("convert", st);
    }
    st = lopad_model_save_gguf(m, out, type);
    lopad_model_free(m);
    if (st) return lp_cli_fail("convert", st);
    fprintf(stderr, "lopad convert: wrote %s\n", out);
    return 0;
}

LP_CLI_COMMAND("convert", cmd_convert, "write a model (GGUF or HF directory, + LoRA) as GGUF")
