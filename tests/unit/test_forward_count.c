/*
 * test_forward_count.c - where lopad runs fewer forwards than the references for the
 * same tokens (docs/DECODERS.md, "Forwards lopad does not run"):
 *   - a Dream grid step whose count is 0 commits nothing, so no forward runs (the
 *     reference calls the model and transfers nothing);
 *   - a Fast-dLLM block that its refresh forward completes needs no further forward
 *     (the reference runs one more forward for it and discards it).
 */
#include <string.h>

#include "fake_engine.h"
#include "test.h"

static int g_calls;

/* every row sure of one token (pmax ~ 0.998), never EOS / EoT / MASK */
static enum lopad_status sure_forward(void *ud, const struct lopad_batch *b) {
    (void)ud;
    g_calls++;
    for (int o = 0; o < b->n_out; o++) {
        float *row = b->logits + (size_t)o * FE_V;
        for (int v = 0; v < FE_V; v++)
            row[v] = 0.0f;
        row[1 + (b->out_rows[o] + o) % 20] = 10.0f;
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

static const int32_t prompt[] = {1, 2, 3, 4};

/* Dream's grid with more steps than positions: the count int(N (1 - t_{i+1}/t_i)) is 0
 * on some steps; those run no forward and commit nothing, the others commit the count. */
static void test_dream_zero_count_steps(void) {
    const int G = 8, S = 20;
    struct lp_engine e;
    fe_engine_init(&e, NULL, sure_forward, true, 64);
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_DREAM, G);
    rq.steps = S;
    rq.prompt = prompt;
    rq.n_prompt = 4;
    lp_decoder *d = NULL;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_OK);
    g_calls = 0;
    int masked = G, with_forward = 0;
    for (int i = 0; d && i < S; i++) {
        double t = 1.0 - (1.0 - rq.eps) * i / S, tn = 1.0 - (1.0 - rq.eps) * (i + 1) / S;
        int k = i == S - 1 ? masked : (int)(masked * (1.0 - tn / t));
        int before = g_calls;
        struct lp_step_event ev;
        CHECK(lp_decode_step(d, &ev) == LOPAD_OK);
        CHECK_MSG(ev.n_committed == k, "step %d: %d committed, grid count %d", i, ev.n_committed,
                  k);
        CHECK_MSG((g_calls > before) == (k > 0), "step %d: count %d, %d forwards", i, k,
                  g_calls - before);
        with_forward += k > 0;
        masked -= k;
    }
    struct lp_decode_result res;
    CHECK(d && lp_decode_finish(d, &res) == LOPAD_OK);
    CHECK_MSG(res.nfe == with_forward && res.nfe < S, "nfe %d, steps with a count %d of %d",
              res.nfe, with_forward, S);
    CHECK(res.n_committed == G);
    lp_decode_result_free(&res);
    lp_decode_free(d);
}

/* Every block completed by its refresh forward: one forward per block, in every cache
 * mode (the reference's loop runs a second, discarded one). */
static void test_fast_block_done_by_refresh(void) {
    const int G = 32, B = 8;
    for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++)
        for (int shift = 0; shift < 2; shift++) {
            struct lp_engine e;
            fe_engine_init(&e, NULL, sure_forward, shift, 64);
            e.kv_commit = no_commit;
            e.kv_truncate = no_truncate;
            struct lp_decode_request rq;
            lp_decode_request_init(&rq, LP_DEC_FAST, G);
            rq.block_len = B;
            rq.cache = (enum lp_cache_mode)cache;
            rq.early_stop = false;
            rq.prompt = prompt;
            rq.n_prompt = 4;
            struct lp_decode_result res;
            g_calls = 0;
            CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
            /* Dream's cached blocks: the first position's prediction is the previous
             * block's last logit, so those blocks are done by the refresh as well */
            CHECK_MSG(res.nfe == G / B && g_calls == G / B && res.n_committed == G,
                      "cache %d shift %d: nfe %d, calls %d, committed %d", cache, shift, res.nfe,
                      g_calls, res.n_committed);
            lp_decode_result_free(&res);
        }
}

int main(void) {
    TEST_RUN(test_dream_zero_count_steps);
    TEST_RUN(test_fast_block_done_by_refresh);
    return test_report();
}
