/*
 * test_fuzz_regress.c - replays the fuzz seed corpora (tests/fuzz/corpus/<t>/)
 * and every saved fuzz finding (tests/fuzz/regress/<t>/) through the same
 * entry points the libFuzzer harnesses call (tests/fuzz/fuzz_targets.h), so
 * a fixed parser bug stays fixed in every build, with or without clang.
 *
 * Besides "returns without crashing" (an ASan build also catches memory
 * errors and leaks), it checks:
 *   - seeds named seed_* load successfully, unless their name says they are
 *     broken (bad / trunc / unsupported): they exercise the deep paths;
 *   - allocation failure at every point of loading each valid seed yields OK
 *     or LOPAD_ERR_NOMEM, never a crash or a leak;
 *   - deterministic mutations of every seed (each prefix of its first KB,
 *     byte flips in its first 512 bytes) are handled cleanly.
 */
#include "../fuzz/fuzz_targets.h"

#include <dirent.h>

#include "test.h"

#ifndef LOPAD_SOURCE_DIR
#define LOPAD_SOURCE_DIR "."
#endif

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

struct target {
    const char *name;
    fuzz_fn fn;
};

static const struct target targets[] = {
    {"fuzz_gguf", lp_fuzz_gguf_both},
    {"fuzz_safetensors", lp_fuzz_safetensors},
    {"fuzz_json", lp_fuzz_json},
    {"fuzz_json_config", lp_fuzz_json_config},
    {"fuzz_tokenizer_json", lp_fuzz_tokenizer_json},
    {"fuzz_gguf_model", lp_fuzz_gguf_model},
    {"fuzz_lora", lp_fuzz_lora},
    {"fuzz_hf_dir", lp_fuzz_hf_dir},
    {"fuzz_load_forward", lp_fuzz_load_forward},
};
enum { N_TARGETS = sizeof targets / sizeof targets[0] };

/* Read a whole file into an exact-size heap buffer (so ASan flags a read one
 * past the end). */
static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n > 0 ? (size_t)n : 0;
    return buf;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted regular file names in dir (NULL-terminated; free with free_names). */
static char **list_dir(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **names = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n + 1 >= cap) {
            cap = cap ? 2 * cap : 16;
            names = realloc(names, (size_t)cap * sizeof *names);
        }
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (names) {
        qsort(names, (size_t)*n, sizeof *names, cmp_str);
        names[*n] = NULL;
    }
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bool broken_by_name(const char *name) {
    return strstr(name, "bad") || strstr(name, "trunc") || strstr(name, "unsupported");
}

static int n_files_run;

/* Run every file of <root>/<sub>/<target> through the target. */
static void replay_dir(const struct target *t, const char *sub, bool seeds) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", LOPAD_SOURCE_DIR, sub, t->name);
    int n = 0;
    char **names = list_dir(dir, &n);
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t size = 0;
        uint8_t *data = slurp(path, &size);
        CHECK_MSG(data != NULL, "cannot read %s", path);
        if (!data) continue;
        int st = t->fn(data, size);
        n_files_run++;
        if (seeds && !strncmp(names[i], "seed_", 5)) {
            bool want_ok = !broken_by_name(names[i]);
            CHECK_MSG((st == LOPAD_OK) == want_ok, "%s: %s (%s)", path,
                      lopad_status_name((enum lopad_status)st), lopad_errmsg());
        }
        free(data);
    }
    free_names(names, n);
}

static void test_corpus_and_regressions(void) {
    for (int k = 0; k < N_TARGETS; k++) {
        replay_dir(&targets[k], "corpus", true);
        replay_dir(&targets[k], "regress", false);
    }
    CHECK(n_files_run > 0); /* the corpus must be there */
    fprintf(stderr, "  replayed %d files\n", n_files_run);
}

/* Every allocation of loading a valid seed fails in turn: the loader must
 * report LOPAD_ERR_NOMEM (or succeed when the failed allocation was optional)
 * and release everything (LeakSanitizer checks at exit in ASan builds). */
static void test_alloc_failures(void) {
    int n_runs = 0;
    for (int k = 0; k < N_TARGETS; k++) {
        const struct target *t = &targets[k];
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", LOPAD_SOURCE_DIR, t->name);
        int n = 0;
        char **names = list_dir(dir, &n);
        for (int i = 0; i < n; i++) {
            if (strncmp(names[i], "seed_", 5) || broken_by_name(names[i])) continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            size_t size = 0;
            uint8_t *data = slurp(path, &size);
            if (!data) continue;
            for (long fail = 0; fail < 400; fail++) {
                lp_alloc_fail_after(fail);
                long before = lp_alloc_count();
                int st = t->fn(data, size);
                long used = lp_alloc_count() - before;
                lp_alloc_fail_after(-1);
                n_runs++;
                CHECK_MSG(st == LOPAD_OK || st == LOPAD_ERR_NOMEM,
                          "%s with allocation %ld failing: %s (%s)", path, fail,
                          lopad_status_name((enum lopad_status)st), lopad_errmsg());
                if (used <= fail) break; /* no allocation failed: all points covered */
            }
            free(data);
        }
        free_names(names, n);
    }
    fprintf(stderr, "  %d runs with an allocation failing\n", n_runs);
}

/* Cheap deterministic mutations of each seed, so plain CI (no libFuzzer)
 * also walks the error paths: every prefix of the first KB (and every 61st
 * beyond), and in the first 512 bytes each byte set to 0x00, 0xff and +1. */
static void test_mutations(void) {
    long n_runs = 0;
    for (int k = 0; k < N_TARGETS; k++) {
        const struct target *t = &targets[k];
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", LOPAD_SOURCE_DIR, t->name);
        int n = 0;
        char **names = list_dir(dir, &n);
        for (int i = 0; i < n; i++) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            size_t size = 0;
            uint8_t *data = slurp(path, &size);
            if (!data) continue;
            for (size_t len = 0; len < size; len += len < 1024 ? 1 : 61) {
                uint8_t *p = malloc(len ? len : 1); /* exact size: overreads are caught */
                memcpy(p, data, len);
                t->fn(p, len);
                free(p);
                n_runs++;
            }
            uint8_t *p = malloc(size ? size : 1);
            for (size_t j = 0; j < size && j < 512; j++) {
                static const int ops[3] = {0, 1, 2};
                for (int o = 0; o < 3; o++) {
                    memcpy(p, data, size);
                    p[j] = ops[o] == 0 ? 0x00 : ops[o] == 1 ? 0xff : (uint8_t)(data[j] + 1);
                    if (p[j] == data[j]) continue;
                    t->fn(p, size);
                    n_runs++;
                }
            }
            free(p);
            free(data);
        }
        free_names(names, n);
    }
    fprintf(stderr, "  %ld mutated inputs\n", n_runs);
}

int main(void) {
    TEST_RUN(test_corpus_and_regressions);
    TEST_RUN(test_alloc_failures);
    TEST_RUN(test_mutations);
    lp_fuzz_rm_dir();
    return test_report();
}
