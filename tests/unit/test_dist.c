/*
 * test_dist.c - the pieces of LoPA's branch parallelism that run in one process
 * (docs/DISTRIBUTED.md; the ranks themselves: tests/cli/test_mpi.sh):
 *   - the shares of branches over ranks partition them, contiguously, evenly;
 *   - K/V rows exported from one context and imported into another give that context
 *     the cache a commit would have given it, bit for bit (the next forward's logits);
 *     out-of-range rows and gaps are refused;
 *   - the model fingerprint tells apart two files of one shape, and not two loads of one;
 *   - the launcher's rank count from the environment; a build without MPI refuses R > 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dist/dist.h"
#include "forward/kv_rows.h"
#include "test.h"

static void test_shares(void) {
    for (int R = 1; R <= 9; R++)
        for (int nbr = 1; nbr <= 65; nbr++) {
            int prev = 0, lo = nbr, hi = 0;
            for (int r = 0; r < R; r++) {
                int b = lp_dist_share_begin(nbr, R, r), e = lp_dist_share_begin(nbr, R, r + 1);
                CHECK(b == prev && e >= b);
                lo = e - b < lo ? e - b : lo;
                hi = e - b > hi ? e - b : hi;
                for (int j = b; j < e; j++)
                    CHECK_MSG(lp_dist_owner(nbr, R, j) == r, "nbr %d R %d j %d", nbr, R, j);
                prev = e;
            }
            CHECK(prev == nbr);
            CHECK(hi - lo <= 1);
        }
}

static lopad_model *load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, name);
    struct lopad_load_opts o = {.no_tokenizer = true};
    lopad_model *m = NULL;
    if (lopad_model_load(path, &o, &m)) {
        fprintf(stderr, "load %s: %s\n", path, lopad_errmsg());
        exit(1);
    }
    return m;
}

static lopad_ctx *new_ctx(const lopad_model *m) {
    struct lopad_ctx_params p = {.n_ctx = 64, .n_batch_max = 32, .n_threads = 1};
    lopad_ctx *c = NULL;
    if (lopad_ctx_new(m, &p, &c)) {
        fprintf(stderr, "lopad_ctx_new: %s\n", lopad_errmsg());
        exit(1);
    }
    return c;
}

/* Feed tokens [0, n) at positions from p0 over the first n_cache cached rows; logits of
 * every fed row into out. */
static enum lopad_status feed(lopad_ctx *c, const int32_t *tok, int n, int p0, int n_cache,
                              float *out) {
    int32_t pos[32], rows[32];
    for (int i = 0; i < n; i++) {
        pos[i] = p0 + i;
        rows[i] = i;
    }
    struct lopad_batch b = {.n_tokens = n,
                            .tokens = tok,
                            .pos = pos,
                            .n_seq = 1,
                            .n_cache = n_cache,
                            .n_out = out ? n : 0,
                            .out_rows = rows,
                            .logits = out};
    return lopad_forward(c, &b);
}

static void test_kv_rows(void) {
    lopad_model *m = load("tiny-dream");
    const int V = lopad_model_hparams(m)->n_vocab;
    lopad_ctx *a = new_ctx(m), *b = new_ctx(m), *c = new_ctx(m);
    const int32_t prompt[10] = {5, 9, 14, 3, 7, 11, 2, 8, 13, 4}, next[4] = {6, 1, 12, 10};
    /* a: commit rows 2..9 of a forward at cache rows 0.. (after two rows of its own) */
    CHECK(feed(a, prompt, 10, 0, 0, NULL) == LOPAD_OK);
    CHECK(lopad_kv_commit(a, 0, 10, 0) == LOPAD_OK);
    /* b computes the same rows; c imports them from b's export */
    CHECK(feed(b, prompt, 10, 0, 0, NULL) == LOPAD_OK);
    size_t bytes = lp_kv_rows_bytes(b, 10);
    CHECK(bytes == (size_t)lopad_model_hparams(m)->n_layer * 2 * 10 *
                       lopad_model_hparams(m)->n_head_kv * lopad_model_hparams(m)->head_dim *
                       sizeof(float));
    void *buf = malloc(bytes);
    CHECK(lp_kv_export(b, 0, 10, buf) == LOPAD_OK);
    CHECK(lp_kv_import(c, buf, 4, 0) == LOPAD_OK); /* first a part, then the whole: rewrites */
    CHECK(lopad_kv_len(c) == 4);
    CHECK(lp_kv_import(c, buf, 10, 0) == LOPAD_OK);
    CHECK(lopad_kv_len(c) == 10);
    /* the next forward over the cache: the same logits, bit for bit */
    float *la = malloc(sizeof(float) * 4 * V), *lc = malloc(sizeof(float) * 4 * V);
    CHECK(feed(a, next, 4, 10, 10, la) == LOPAD_OK);
    CHECK(feed(c, next, 4, 10, 10, lc) == LOPAD_OK);
    CHECK(memcmp(la, lc, sizeof(float) * 4 * V) == 0);
    /* refused: rows outside the last forward, a gap, past n_ctx */
    CHECK(lp_kv_export(b, 8, 4, buf) == LOPAD_ERR_ARG);
    CHECK(strstr(lopad_errmsg(), "outside the last forward") != NULL);
    CHECK(lp_kv_import(c, buf, 2, 11) == LOPAD_ERR_ARG);
    CHECK(strstr(lopad_errmsg(), "gap") != NULL);
    CHECK(lp_kv_import(c, buf, 10, 60) == LOPAD_ERR_ARG);
    free(la);
    free(lc);
    free(buf);
    lopad_ctx_free(a);
    lopad_ctx_free(b);
    lopad_ctx_free(c);
    lopad_model_free(m);
}

static void test_model_hash(void) {
    lopad_model *a = load("tiny-dream"), *b = load("tiny-dream"), *q = load("tiny-dream-q8_0.gguf");
    lopad_model *l = load("tiny-llada");
    CHECK(lp_dist_model_hash(a) == lp_dist_model_hash(b));
    CHECK(lp_dist_model_hash(a) != lp_dist_model_hash(q));
    CHECK(lp_dist_model_hash(a) != lp_dist_model_hash(l));
    lopad_model_free(a);
    lopad_model_free(b);
    lopad_model_free(q);
    lopad_model_free(l);
}

static void test_env(void) {
    CHECK(lp_dist_world() == NULL); /* a test process is alone */
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_SIZE");
    unsetenv("MPI_LOCALNRANKS");
    unsetenv("SLURM_NTASKS");
    CHECK(lp_dist_env_size() == 1);
    CHECK(lp_dist_init(1) == LOPAD_OK && lp_dist_world() == NULL); /* one rank: nothing */
    setenv("PMI_SIZE", "4", 1);
    CHECK(lp_dist_env_size() == 4);
    if (!lp_dist_built()) {
        CHECK(lp_dist_init(1) == LOPAD_ERR_UNSUPPORTED);
        CHECK(strstr(lopad_errmsg(), "without MPI") != NULL);
    }
    unsetenv("PMI_SIZE");
}

int main(void) {
    TEST_RUN(test_shares);
    TEST_RUN(test_kv_rows);
    TEST_RUN(test_model_hash);
    TEST_RUN(test_env);
    return test_report();
}
