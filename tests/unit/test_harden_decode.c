/*
 * test_harden_decode.c - no model output makes a decoder hang or decide on garbage:
 * non-finite logits (and fused scores) stop every decoder with an error naming the
 * step and the row (before the fix, fast / LoPA / llada --dpad spun forever on them),
 * and a model that prefers the mask token everywhere still finishes.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fake_engine.h"
#include "test.h"

enum fill { FILL_NAN, FILL_INF, FILL_MASK };

static enum fill g_fill;

static enum lopad_status fill_forward(void *ud, const struct lopad_batch *b) {
    (void)ud;
    for (int o = 0; o < b->n_out; o++) {
        float *row = b->logits + (size_t)o * FE_V;
        for (int v = 0; v < FE_V; v++)
            row[v] = (float)(v % 7) * 0.1f;
        if (g_fill == FILL_NAN) row[o % FE_V] = NAN;
        if (g_fill == FILL_INF) row[(o + 3) % FE_V] = INFINITY;
        if (g_fill == FILL_MASK) row[FE_MASK] = 50.0f; /* the mask token wins every row */
    }
    return LOPAD_OK;
}
static enum lopad_status no_commit(void *ud, int src, int n, int dst) {
    (void)ud, (void)src, (void)n, (void)dst;
    return LOPAD_OK;
}
static void no_truncate(void *ud, int n) {
    (void)ud, (void)n;
}

struct config {
    const char *name;
    enum lp_decoder_kind kind;
    enum lp_cache_mode cache;
    int lopa;
    bool dpad;
    bool fixed_steps; /* finishes its plan even when nothing can be committed */
};

static const struct config configs[] = {
    {"llada", LP_DEC_LLADA, LP_CACHE_NONE, -1, false, true},
    {"dream", LP_DEC_DREAM, LP_CACHE_NONE, -1, false, true},
    {"llada --dpad", LP_DEC_LLADA, LP_CACHE_NONE, -1, true, false},
    {"fast none", LP_DEC_FAST, LP_CACHE_NONE, -1, false, false},
    {"fast prefix", LP_DEC_FAST, LP_CACHE_PREFIX, -1, false, false},
    {"fast dual", LP_DEC_FAST, LP_CACHE_DUAL, -1, false, false},
    {"fast dual --lopa 2", LP_DEC_FAST, LP_CACHE_DUAL, 2, false, false},
    {"d2f", LP_DEC_D2F, LP_CACHE_NONE, -1, false, false},
    {"d2f --lopa 3", LP_DEC_D2F, LP_CACHE_NONE, 3, false, false},
};

static enum lopad_status run(const struct config *c, bool shift, bool fused, int *nfe) {
    struct lp_engine e;
    fe_engine_init(&e, NULL, fill_forward, shift, 4096);
    e.kv_commit = no_commit;
    e.kv_truncate = no_truncate;
    struct fe_fused ff;
    if (fused) fe_fused_install(&e, &ff, false);
    static const int32_t prompt[] = {1, 2, 3, 4};
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, c->kind, 32);
    rq.prompt = prompt;
    rq.n_prompt = 4;
    if (c->kind != LP_DEC_DREAM) rq.block_len = 8;
    rq.cache = c->cache;
    rq.lopa = c->lopa;
    rq.dpad = c->dpad;
    rq.dpad_window = 16;
    struct lp_decode_result res;
    lp_clear_error();
    alarm(60); /* a hang fails the test instead of blocking the suite */
    enum lopad_status st = lp_decode_run(&e, &rq, NULL, NULL, &res);
    alarm(0);
    *nfe = st == LOPAD_OK ? res.nfe : -1;
    if (st == LOPAD_OK) lp_decode_result_free(&res);
    if (fused) fe_fused_free(&ff);
    return st;
}

static void test_nonfinite_logits(void) {
    for (int f = FILL_NAN; f <= FILL_INF; f++)
        for (int shift = 0; shift < 2; shift++)
            for (int fused = 0; fused < 2; fused++)
                for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
                    g_fill = (enum fill)f;
                    int nfe;
                    enum lopad_status st = run(&configs[i], shift, fused, &nfe);
                    CHECK_MSG(st == LOPAD_ERR_FORMAT, "%s (%s, shift %d, fused %d): status %d",
                              configs[i].name, f == FILL_NAN ? "nan" : "inf", shift, fused, st);
                    CHECK_MSG(strstr(lopad_errmsg(), "non-finite") &&
                                  strstr(lopad_errmsg(), "at step ") &&
                                  strstr(lopad_errmsg(), "row"),
                              "%s: message '%s'", configs[i].name, lopad_errmsg());
                }
}

/* A model whose every row prefers the mask token: decoders never propose it (the
 * references take the best other token), so each finishes within its bound. */
static void test_mask_forever(void) {
    g_fill = FILL_MASK;
    for (int shift = 0; shift < 2; shift++)
        for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
            int nfe;
            enum lopad_status st = run(&configs[i], shift, false, &nfe);
            int bound = 2 * 32 + 2 * (32 / 8 + 1) + 8; /* lp_dec_max_steps */
            CHECK_MSG(st == LOPAD_OK && nfe >= 1 && nfe <= bound, "%s (shift %d): status %d nfe %d",
                      configs[i].name, shift, st, nfe);
        }
}

int main(void) {
    TEST_RUN(test_nonfinite_logits);
    TEST_RUN(test_mask_forever);
    return test_report();
}
