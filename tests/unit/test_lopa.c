/*
 * test_lopa.c - LoPA on D2F (src/decode/lopa.c): token-for-token and winner-for-winner
 * equality with tools/ref/d2f_lopa.py (the "-lopa" fixtures of tests/fixtures/d2f:
 * fake predictor and tiny models, pmax / negent / margin, K = 0, 1, 2, 3, 4, full and
 * block-causal windows); the one batched forward against the branches verified one
 * per forward (and against an engine batch too small for all branches); --lopa 0
 * with block-causal windows against the d2f decoder; scripted cases for a lookahead
 * branch that completes a block and wins, EOS proposed in a lookahead branch, and
 * the fixtures' coverage of these paths.
 */
#define LP_TEST_D2F_LIBRARY
#include "test_d2f.c"

static void set_serial(lp_decoder *d) {
    lp_lopa_set_serial(d, true);
}

static void test_golden_fake(void) {
    df_tweak = NULL;
    int n = df_each("fake-", "-lopa", df_fake_case);
    CHECK_MSG(n >= 16, "found %d fake lopa fixtures in %s", n, D2F_FIX_DIR);
}

/* the fake fixtures through the fused-scores path (the head emulated from the fake's
 * logits), plain and jittered: still the reference */
static void test_golden_fake_fused(void) {
    g_fused_fwd = g_fused_logits = 0;
    CHECK(df_each("fake-", "-lopa", df_fused_case) >= 16);
    CHECK_MSG(g_fused_fwd > 0 && g_fused_logits < g_fused_fwd, "fused forwards %d, took logits %d",
              g_fused_fwd, g_fused_logits);
    fprintf(stderr, "  fused forwards %d, %d took logits\n", g_fused_fwd, g_fused_logits);
}

static void test_golden_tiny(void) {
    df_tweak = NULL;
    int n = df_each("tiny-", "-lopa", df_tiny_case);
    CHECK_MSG(n >= 16, "found %d tiny lopa fixtures in %s", n, D2F_FIX_DIR);
}

/* the branches verified one per forward: the same decisions (the reference runs
 * them one by one); also on the real engine, where the K/V of the winner come from
 * a second feed of its sequence when it was not the last one run */
static void test_serial_equals_batched(void) {
    df_tweak = set_serial;
    int n = df_each("fake-", "-lopa", df_fake_case);
    n += df_each("tiny-", "-lopa", df_tiny_case);
    df_tweak = NULL;
    CHECK(n >= 32);
}

/* an engine batch that holds only some branches: groups, still one NFE */
static void small_batch_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK(df_load(path, &fx));
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, fx.shift, fx.eos_from);
    e.n_batch_max = fx.n_prompt + fx.rq.gen_len; /* one canvas */
    int bad = df_check(&fx, &e, name, NULL);
    fprintf(stderr, "  %-34s %s (small batch)\n", name, bad ? "DIFFERS" : "ok");
}

static void test_small_batch(void) {
    CHECK(df_each("fake-", "-lopa4", small_batch_case) >= 4);
}

/* proposals on a pool of 3 threads: the same decisions */
static void threads_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK(df_load(path, &fx));
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, fx.shift, fx.eos_from);
    e.n_threads = 3;
    int bad = df_check(&fx, &e, name, NULL);
    fprintf(stderr, "  %-34s %s (3 threads)\n", name, bad ? "DIFFERS" : "ok");
}

static void test_threads(void) {
    CHECK(df_each("fake-", "-lopa2", threads_case) >= 4);
    CHECK(df_each("fake-", "-d2f", threads_case) >= 4);
}

static int g_cov[4];

static void coverage_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK_MSG(df_load(path, &fx), "%s", name);
    g_cov[0] += fx.ev_la_win;
    g_cov[1] += fx.ev_la_block;
    g_cov[2] += fx.ev_la_eos;
    g_cov[3] += fx.ev_early_end;
}

static void test_fixture_coverage(void) {
    /* the golden cases (equal to the reference above) include lookahead winners, a
     * lookahead token completing its block, EOS proposed in a lookahead branch and
     * generations that end inside the window (blocks never added) */
    memset(g_cov, 0, sizeof g_cov);
    df_each("fake-", "-lopa", coverage_case);
    df_each("tiny-", "-lopa", coverage_case);
    CHECK_MSG(g_cov[0] > 0 && g_cov[1] > 0 && g_cov[2] > 0 && g_cov[3] > 0,
              "coverage: la_win %d, la_block %d, la_eos %d, early_end %d", g_cov[0], g_cov[1],
              g_cov[2], g_cov[3]);
}

/* --lopa 0 --lopa-window-attention block-causal is the d2f decoder */
static void test_k0_block_causal_is_d2f(void) {
    static const double taus[4][3] = {
        {0.3, 0.5, 0.6}, {0.1, 0.95, 0.9}, {0.0, 0.2, 0.4}, {0.8, 1.0, 0.5}};
    int n_cmp = 0;
    for (int shift = 0; shift < 2; shift++)
        for (int t = 0; t < 4; t++)
            for (int conf = LP_CONF_PMAX; conf <= LP_CONF_NEGENT; conf++) {
                struct lp_decode_request rq;
                lp_decode_request_init(&rq, LP_DEC_D2F, 24);
                rq.prompt = df_prompt5;
                rq.n_prompt = 5;
                rq.block_len = 4;
                rq.tau_add = taus[t][0];
                rq.tau_act = taus[t][1];
                rq.tau_conf = taus[t][2];
                rq.confidence = (enum lp_confidence)conf;
                struct lp_engine e;
                static struct dfake f;
                struct df_rec rec;
                struct lp_decode_result a, b;
                df_engine(&e, &f, shift, 5 + 14);
                CHECK(df_run(&e, &rq, &rec, &a) == LOPAD_OK);
                rq.lopa = 0;
                rq.lopa_window = LP_WINDOW_BLOCK_CAUSAL;
                df_engine(&e, &f, shift, 5 + 14);
                CHECK(df_run(&e, &rq, &rec, &b) == LOPAD_OK);
                CHECK(a.nfe == b.nfe && !memcmp(a.canvas, b.canvas, sizeof(int32_t) * 29));
                CHECK(b.n_winner_hist == 1 && b.winner_hist[0] == b.nfe);
                /* full window attention decodes differently in general */
                n_cmp++;
                lp_decode_result_free(&a);
                lp_decode_result_free(&b);
            }
    CHECK(n_cmp == 24);
    /* and on the tiny models through the real engine */
    const char *models[2] = {"tiny-llada", "tiny-dream"};
    for (int mi = 0; mi < 2; mi++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, models[mi]);
        lopad_model *m = NULL;
        if (lopad_model_load(dir, NULL, &m) != LOPAD_OK) {
            CHECK_MSG(0, "load %s: %s", dir, lopad_errmsg());
            continue;
        }
        int32_t prompt[6] = {12, 200, 7, 99, 31, 150};
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_D2F, 16);
        rq.prompt = prompt;
        rq.n_prompt = 6;
        rq.block_len = 4;
        rq.tau_add = 0.3;
        rq.tau_act = 0.5;
        rq.tau_conf = 0.3;
        struct lopad_ctx_params cp = {.n_ctx = 22, .n_batch_max = 22, .n_threads = 1};
        lopad_ctx *c = NULL;
        CHECK(lopad_ctx_new(m, &cp, &c) == LOPAD_OK);
        struct lp_engine e;
        lp_engine_from_ctx(&e, m, c, 22, 22);
        struct lp_decode_result a, b;
        CHECK(lp_decode_run(&e, &rq, NULL, NULL, &a) == LOPAD_OK);
        rq.lopa = 0;
        rq.lopa_window = LP_WINDOW_BLOCK_CAUSAL;
        CHECK(lp_decode_run(&e, &rq, NULL, NULL, &b) == LOPAD_OK);
        CHECK(a.nfe == b.nfe && !memcmp(a.canvas, b.canvas, sizeof(int32_t) * 22));
        lp_decode_result_free(&a);
        lp_decode_result_free(&b);
        lopad_ctx_free(c);
        lopad_model_free(m);
    }
}

/* ------------------------------------------------------- scripted cases */

/* position p predicts token 1 + p % 30 (EOS at g_eos_pos) with pmax g_conf[p]; when
 * position g_bonus_pos holds a token in the row's view, every later position is
 * predicted with pmax 0.96 (the branch that placed it wins) */
static int g_bonus_pos = -1;

static void script_bonus(struct dfake *f, const int32_t *tok, const int32_t *pos, int n, int p,
                         float *lg) {
    LP_UNUSED(f);
    bool bonus = false;
    for (int i = 0; i < n; i++)
        bonus |= pos[i] == g_bonus_pos && tok[i] != 39;
    float c = bonus && p > g_bonus_pos ? 0.96f : g_conf[p];
    peaked(lg, p == g_eos_pos ? 38 : 1 + p % 30, c);
}

static void test_lookahead_completes_block(void) {
    /* P 5, B 4, G 12, K 1, pmax. Forward 1: the anchor commits 5, 6, 7 (> 0.9); the
     * lookahead branch fills 8 (the only candidate): its block 1 is complete but stays
     * ACTIVE (only blocks the anchor completed go TO_CACHE). Forward 2: both add block
     * 2; the lookahead branch sees 8 and wins (0.96 vs the anchor's mean with 0.8),
     * its fill commits block 2; blocks 1 and 2 go TO_CACHE. Forward 3 feeds them with
     * block 3 and commits their K/V: rows [0, 8) to cache rows [5, 13). */
    for (int p = 0; p < 256; p++)
        g_conf[p] = 0.3f + 0.01f * (p % 7);
    g_conf[5] = g_conf[6] = g_conf[7] = 0.95f;
    g_conf[8] = 0.8f;
    g_bonus_pos = 8;
    g_eos_pos = -1;
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    f.script = script_bonus;
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_D2F, 12);
    rq.prompt = df_prompt5;
    rq.n_prompt = 5;
    rq.block_len = 4;
    rq.tau_add = 0.5;
    rq.tau_act = 0.75;
    rq.confidence = LP_CONF_PMAX;
    rq.lopa = 1;
    struct df_rec rec;
    struct lp_decode_result res;
    CHECK(df_run(&e, &rq, &rec, &res) == LOPAD_OK);
    CHECK(rec.n >= 3);
    CHECK(rec.winners[0][0] == 0 && rec.winners[0][1] == 1); /* the anchor alone */
    CHECK(rec.winners[1][0] == 0 && rec.winners[1][1] == 2); /* the lookahead branch */
    CHECK(f.n_seq[1] == 2 && f.seq_len[1][0] == 8 && f.seq_len[1][1] == 8);
    CHECK(f.n_commit >= 2 && f.commits[0][1] == 5);
    CHECK_MSG(f.commits[1][1] == 8 && f.commits[1][2] == 5, "commit (%d, %d, %d)", f.commits[1][0],
              f.commits[1][1], f.commits[1][2]);
    CHECK(res.canvas[8] == 9 && res.n_committed == 12);
    for (int j = 9; j < 13; j++)
        CHECK(res.canvas[j] == 1 + j % 30);
    lp_decode_result_free(&res);
    g_bonus_pos = -1;
}

static void test_eos_in_lookahead(void) {
    /* the best candidate (position 6, pmax 0.85) proposes EOS: that lookahead branch
     * adds no block while the anchor does (sequence lengths of forward 2) */
    for (int p = 0; p < 256; p++)
        g_conf[p] = 0.3f + 0.01f * (p % 7);
    g_conf[5] = 0.95f;
    g_conf[6] = 0.85f;
    g_conf[7] = 0.4f;
    g_conf[8] = 0.45f;
    g_eos_pos = 6;
    g_bonus_pos = -1;
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    f.script = script_bonus;
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_D2F, 12);
    rq.prompt = df_prompt5;
    rq.n_prompt = 5;
    rq.block_len = 4;
    rq.tau_add = 0.25;
    rq.tau_act = 0.75;
    rq.confidence = LP_CONF_PMAX;
    rq.lopa = 1;
    struct df_rec rec;
    struct lp_decode_result res;
    CHECK(df_run(&e, &rq, &rec, &res) == LOPAD_OK);
    CHECK(f.n_seq[1] == 2);
    CHECK_MSG(f.seq_len[1][0] == 4 && f.seq_len[1][1] == 8, "lengths %d %d", f.seq_len[1][0],
              f.seq_len[1][1]);
    /* the anchor wins forward 2 (mean .434 vs .425), later EOS is committed at 6
     * (block 1 is full): the ids stop before it */
    CHECK(rec.winners[1][0] == 1);
    CHECK(res.canvas[6] == 38 && res.n_ids == 1);
    lp_decode_result_free(&res);
    g_eos_pos = -1;
}

/* ------------------------------------------------------ LoPA on Fast-dLLM */

static void fast_rq(struct lp_decode_request *rq, int cache, int conf, double tau) {
    lp_decode_request_init(rq, LP_DEC_FAST, 24);
    rq->prompt = df_prompt5;
    rq->n_prompt = 5;
    rq->block_len = 4;
    rq->cache = (enum lp_cache_mode)cache;
    rq->rule = LP_RULE_THRESHOLD;
    rq->threshold = tau;
    rq->confidence = (enum lp_confidence)conf;
}

/* --decoder fast --lopa 0 is the fast decoder (threshold rule), token for token */
static void test_fast_k0_is_fast(void) {
    int n_cmp = 0;
    for (int shift = 0; shift < 2; shift++)
        for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++)
            for (int conf = LP_CONF_AUTO; conf <= LP_CONF_NEGENT; conf++)
                for (int t = 0; t < 2; t++) {
                    struct lp_decode_request rq;
                    fast_rq(&rq, cache, conf, t ? 0.3 : 0.9);
                    rq.early_stop = t == 0;
                    struct lp_engine e;
                    static struct dfake f;
                    struct df_rec rec;
                    struct lp_decode_result a, b;
                    df_engine(&e, &f, shift, 5 + 14);
                    CHECK(df_run(&e, &rq, &rec, &a) == LOPAD_OK);
                    rq.lopa = 0;
                    df_engine(&e, &f, shift, 5 + 14);
                    CHECK(df_run(&e, &rq, &rec, &b) == LOPAD_OK);
                    bool same = a.nfe == b.nfe && !memcmp(a.canvas, b.canvas, sizeof(int32_t) * 29);
                    CHECK_MSG(same, "shift %d cache %d conf %d tau %d: nfe %d vs %d", shift, cache,
                              conf, t, a.nfe, b.nfe);
                    CHECK(b.n_winner_hist == 1 && a.n_committed == b.n_committed);
                    n_cmp++;
                    lp_decode_result_free(&a);
                    lp_decode_result_free(&b);
                }
    CHECK(n_cmp == 48);
    /* the tiny models through the real engine, every cache mode */
    const char *models[2] = {"tiny-llada", "tiny-dream"};
    for (int mi = 0; mi < 2; mi++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, models[mi]);
        lopad_model *m = NULL;
        if (lopad_model_load(dir, NULL, &m) != LOPAD_OK) {
            CHECK_MSG(0, "load %s: %s", dir, lopad_errmsg());
            continue;
        }
        int32_t prompt[6] = {12, 200, 7, 99, 31, 150};
        for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++) {
            struct lp_decode_request rq;
            fast_rq(&rq, cache, LP_CONF_AUTO, 0.3);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            rq.gen_len = 16;
            /* K = 0 against fast; K = 2 batched against one forward per branch */
            int r = fe_fast_lopa_paths(m, rq);
            CHECK_MSG(r == 0, "%s cache %d: %s", models[mi], cache,
                      r == 1   ? "fast vs --lopa 0"
                      : r == 2 ? "batched vs serial"
                               : lopad_errmsg());
        }
        lopad_model_free(m);
    }
}

/* K > 0 on the fake: branches appear, decisions do not depend on batching or threads,
 * every lookahead winner's token is committed in its step */
static void test_fast_lopa_fake(void) {
    for (int shift = 0; shift < 2; shift++)
        for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++) {
            struct lp_decode_request rq;
            fast_rq(&rq, cache, LP_CONF_AUTO, 0.6);
            rq.lopa = 3;
            rq.early_stop = false;
            struct lp_engine e;
            static struct dfake f;
            struct df_rec r1, r2, r3;
            struct lp_decode_result a, b, c;
            df_engine(&e, &f, shift, 5 + 14);
            CHECK(df_run(&e, &rq, &r1, &a) == LOPAD_OK);
            CHECK(r1.bad == 0 && a.n_committed == 24);
            int la = 0, maxb = 0;
            for (int i = 0; i < r1.n; i++) {
                la += r1.winners[i][0] < r1.winners[i][1] - 1;
                maxb = r1.winners[i][1] > maxb ? r1.winners[i][1] : maxb;
            }
            CHECK(maxb == 4);
            CHECK(la == r1.la_commits);
            df_engine(&e, &f, shift, 5 + 14);
            e.n_batch_max = 29; /* one canvas: groups of branches */
            CHECK(df_run(&e, &rq, &r2, &b) == LOPAD_OK);
            df_engine(&e, &f, shift, 5 + 14);
            e.n_threads = 3;
            CHECK(df_run(&e, &rq, &r3, &c) == LOPAD_OK);
            CHECK(!memcmp(a.canvas, b.canvas, sizeof(int32_t) * 29) && a.nfe == b.nfe);
            CHECK(!memcmp(a.canvas, c.canvas, sizeof(int32_t) * 29) && a.nfe == c.nfe);
            CHECK(r2.n == r1.n && !memcmp(r1.winners, r2.winners, sizeof(int) * 2 * r1.n));
            int tot = 0;
            for (int i = 0; i < a.n_winner_hist; i++)
                tot += a.winner_hist[i];
            CHECK(tot == r1.n);
            lp_decode_result_free(&a);
            lp_decode_result_free(&b);
            lp_decode_result_free(&c);
        }
    /* options LoPA on Fast-dLLM does not take */
    struct lp_decode_request rq;
    fast_rq(&rq, LP_CACHE_PREFIX, LP_CONF_AUTO, 0.9);
    rq.lopa = 2;
    rq.rule = LP_RULE_FACTOR;
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    lp_decoder *d = NULL;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_ERR_ARG && strstr(lopad_errmsg(), "threshold"));
    rq.rule = LP_RULE_THRESHOLD;
    rq.lopa_window = LP_WINDOW_BLOCK_CAUSAL;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_ERR_ARG && strstr(lopad_errmsg(), "full"));
}

static void test_names(void) {
    enum lp_window_attn a;
    CHECK(lp_window_attn_parse("block-causal", &a) == LOPAD_OK && a == LP_WINDOW_BLOCK_CAUSAL);
    CHECK(lp_window_attn_parse("full", &a) == LOPAD_OK && a == LP_WINDOW_FULL);
    CHECK(lp_window_attn_parse("causal", &a) == LOPAD_ERR_ARG &&
          strstr(lopad_errmsg(), "block-causal"));
    CHECK(!strcmp(lp_window_attn_name(LP_WINDOW_FULL), "full"));
}

int main(void) {
    TEST_RUN(test_names);
    TEST_RUN(test_lookahead_completes_block);
    TEST_RUN(test_eos_in_lookahead);
    TEST_RUN(test_k0_block_causal_is_d2f);
    TEST_RUN(test_fixture_coverage);
    TEST_RUN(test_golden_fake);
    TEST_RUN(test_golden_fake_fused);
    TEST_RUN(test_golden_tiny);
    TEST_RUN(test_serial_equals_batched);
    TEST_RUN(test_small_batch);
    TEST_RUN(test_threads);
    TEST_RUN(test_fast_k0_is_fast);
    TEST_RUN(test_fast_lopa_fake);
    return test_report();
}
