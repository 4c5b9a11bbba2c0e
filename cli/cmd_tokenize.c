/*
 * cmd_tokenize.c - `lopad tokenize`: run the tokenizer of a model (or of a
 * tokenizer.json / GGUF file) on text, decode ids, or measure throughput.
 * Only the tokenizer is loaded, never the weights.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "core/common.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lopad tokenize (-m MODEL | --tokenizer FILE) [--text TEXT] [--special]\n"
            "                      [--decode IDS] [--bench [SECONDS]]\n"
            "  -m MODEL          a .gguf model (its tokenizer.ggml.* keys) or a Hugging Face\n"
            "                    directory (its tokenizer.json + tokenizer_config.json)\n"
            "  --tokenizer FILE  a tokenizer.json or a .gguf file\n"
            "  --text TEXT       text to tokenize (default: all of stdin)\n"
            "  --special         recognise special tokens such as <|im_start|> in the text\n"
            "  --decode IDS      print the text of comma-separated ids instead\n"
            "  --bench [S]       tokenize the input repeatedly for S seconds (default 2) on one\n"
            "                    thread and print the throughput in MB/s\n"
            "Prints the ids as one JSON list.\n");
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    for (;;) {
        if (n == cap) {
            char *p = realloc(s, cap *= 2);
            if (!p) {
                free(s);
                return NULL;
            }
            s = p;
        }
        size_t k = fread(s + n, 1, cap - n, stdin);
        n += k;
        if (k == 0) break;
    }
    if (ferror(stdin)) {
        free(s);
        return NULL;
    }
    *len = n;
    return s;
}

static enum lopad_status load_for_model(const char *path, struct lp_tokenizer **t) {
    struct stat sb;
    if (stat(path, &sb) != 0) return lp_error(LOPAD_ERR_IO, "%s: no such file or directory", path);
    if (S_ISDIR(sb.st_mode)) return lp_tokenizer_load(path, t);
    return lp_tokenizer_from_gguf(path, t);
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tokfile = NULL, *text = NULL, *decode = NULL;
    bool special = false, bench = false;
    double bench_s = 2.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!has_val) return lp_cli_usage_error("tokenize", "%s needs a path", a);
            model = argv[++i];
        } else if (!strcmp(a, "--tokenizer")) {
            if (!has_val) return lp_cli_usage_error("tokenize", "%s needs a path", a);
            tokfile = argv[++i];
        } else if (!strcmp(a, "--text")) {
            if (!has_val) return lp_cli_usage_error("tokenize", "%s needs a value", a);
            text = argv[++i];
        } else if (!strcmp(a, "--decode")) {
            if (!has_val) return lp_cli_usage_error("tokenize", "%s needs a list of ids", a);
            decode = argv[++i];
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "--bench")) {
            bench = true;
            if (has_val && argv[i + 1][0] != '-') {
                if (!lp_cli_parse_float("tokenize", "--bench", argv[++i], &bench_s)) return 2;
                if (bench_s <= 0 || bench_s > 3600)
                    return lp_cli_usage_error("tokenize", "--bench expects seconds in (0, 3600]");
            }
        } else {
            return lp_cli_usage_error("tokenize", "unknown option '%s' (see lopad tokenize --help)",
                                      a);
        }
    }
    if (!model == !tokfile)
        return lp_cli_usage_error("tokenize", "give exactly one of -m MODEL or --tokenizer FILE");
    if (decode && (text || bench))
        return lp_cli_usage_error("tokenize", "--decode cannot be combined with --text or --bench");

    int32_t *ids = NULL;
    int n_ids = 0;
    if (decode && !lp_cli_parse_ids("tokenize", "--decode", decode, &ids, &n_ids)) return 2;

    struct lp_tokenizer *t = NULL;
    enum lopad_status st = model ? load_for_model(model, &t) : lp_tokenizer_load(tokfile, &t);
    if (st) {
        free(ids);
        return lp_cli_fail("tokenize", st);
    }
    int rc = 0;
    if (decode) {
        char *s = NULL;
        size_t len = 0;
        st = lp_tokenizer_decode(t, ids, (size_t)n_ids, false, &s, &len);
        if (st)
            rc = lp_cli_fail("tokenize", st);
        else
            fwrite(s, 1, len, stdout);
        lp_free(s);
        free(ids);
        lp_tokenizer_free(t);
        return rc;
    }

    char *owned = NULL;
    size_t len;
    if (text) {
        len = strlen(text);
    } else {
        owned = read_stdin(&len);
        if (!owned) {
            lp_tokenizer_free(t);
            fprintf(stderr, "lopad tokenize: cannot read stdin\n");
            return 1;
        }
        text = owned;
    }
    struct lp_ids out = {0};
    double t0 = lp_time();
    st = lp_tokenizer_encode(t, text, len, special, &out);
    double first = lp_time() - t0;
    if (st) {
        rc = lp_cli_fail("tokenize", st);
    } else if (bench) {
        /* the first run fills the piece cache; later runs are the steady state */
        int runs = 0;
        double t1 = lp_time(), now = t1;
        while (now - t1 < bench_s && !st) {
            out.n = 0;
            st = lp_tokenizer_encode(t, text, len, special, &out);
            runs++;
            now = lp_time();
        }
        if (st) {
            rc = lp_cli_fail("tokenize", st);
        } else {
            double warm = (double)len * runs / (now - t1) / 1e6;
            printf("{\"bytes\": %zu, \"tokens\": %zu, \"runs\": %d, \"first_run_mb_s\": %.2f, "
                   "\"mb_s\": %.2f, \"bytes_per_token\": %.3f}\n",
                   len, out.n, runs, first > 0 ? (double)len / first / 1e6 : 0.0, warm,
                   out.n ? (double)len / (double)out.n : 0.0);
        }
    } else {
        fputc('[', stdout);
        for (size_t i = 0; i < out.n; i++)
            printf(i ? ", %d" : "%d", (int)out.v[i]);
        fputs("]\n", stdout);
    }
    lp_ids_free(&out);
    free(owned);
    lp_tokenizer_free(t);
    return rc;
}

LP_CLI_COMMAND("tokenize", cmd_tokenize, "tokenize text, decode ids or time the tokenizer")
