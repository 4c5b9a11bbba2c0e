/* cmd_info.c - `lopad info MODEL [--lora DIR]`: what a model file holds. */
#include <stdio.h>
#include <string.h>
#include "cli.h"

static int cmd_info(int argc, char **argv) {
    const char *path = NULL, *lora = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: lopad info MODEL [--lora DIR]\n"
                   "  MODEL is a .gguf file or a Hugging Face directory.\n");
            return 0;
        } else if (!strcmp(argv[i], "--lora") && i + 1 < argc) {
            lora = argv[++i];
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            path = argv[++i];
        } else if (argv[i][0] == '-') {
            return lp_cli_usage_error("info", "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return lp_cli_usage_error("info", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!path) return lp_cli_usage_error("info", "no model given (usage: lopad info MODEL)");
    struct lopad_load_opts opts = {.lora_dir = lora};
    lopad_model *m;
    enum lopad_status st = lopad_model_load(path, &opts, &m);
    if (st) return lp_cli_fail("info", st);
    lopad_model_print_info(m, stdout);
    lopad_model_free(m);
    return 0;
}

LP_CLI_COMMAND("info", cmd_info, "print a model's architecture, hyper-parameters, tensor types")
