/*
 * test_dpad.c - DPad suffix dropout (src/decode/dpad.c and its use in fast.c): the keep
 * probability and the empirical keep rate of the per-block draw, keep = 1 everywhere
 * reproducing the decoders without DPad, the fed suffix keeping its original position
 * ids, and token-for-token equality with the PyTorch reference (same kept sets, drawn
 * from the same PRNG) in every cache mode on the cached fake and the tiny models.
 * Shares the fake / spy / fixture helpers of test_fast.c.
 */
#define LP_TEST_FAST_NO_MAIN
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_fast.c"

#include "decode/dpad.h"

#define DPAD_DIR LOPAD_SOURCE_DIR "/tests/fixtures/dpad"

/* ------------------------------------------------------------ keep(d) */

static void test_keep_prob(void) {
    struct lp_dpad p = {.window = 256, .sigma = 4, .scale = 2.0};
    const double s2pi = sqrt(2.0 * 3.14159265358979323846);
    CHECK_NEAR(lp_dpad_keep_prob(&p, 0), 2.0 / s2pi, 1e-15, 0);
    /* x = k d / (W - 1): d = W - 1 sits at x = k */
    CHECK_NEAR(lp_dpad_keep_prob(&p, 255), 2.0 * exp(-8.0) / s2pi, 1e-15, 0);
    CHECK_NEAR(lp_dpad_keep_prob(&p, 51), 2.0 * exp(-0.5 * pow(4.0 * 51 / 255, 2)) / s2pi, 1e-15,
               0);
    CHECK(lp_dpad_keep_prob(&p, 256) == 0.0 && lp_dpad_keep_prob(&p, 1000) == 0.0);
    CHECK(lp_dpad_keep_prob(&p, -1) == 0.0);
    for (int d = 1; d < 256; d++)
        CHECK(lp_dpad_keep_prob(&p, d) < lp_dpad_keep_prob(&p, d - 1));
    /* saturates at 1 for a >= sqrt(2 pi) */
    p.scale = 2.6;
    CHECK(lp_dpad_keep_prob(&p, 0) == 1.0);
    p.window = 1; /* x = 0 */
    CHECK(lp_dpad_keep_prob(&p, 0) == 1.0 && lp_dpad_keep_prob(&p, 1) == 0.0);
    /* the published worked values: peak a / sqrt(2 pi) */
    p.window = 256;
    p.scale = 1.6;
    CHECK_NEAR(lp_dpad_keep_prob(&p, 0), 0.638, 5e-4, 0);
    /* architecture defaults */
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_FAST, 64);
    CHECK(rq.dpad_window == 256 && rq.dpad_sigma == 4.0 && rq.dpad_scale == 0.0);
    lp_dpad_from_request(&p, &rq, LOPAD_ARCH_LLADA);
    CHECK(p.scale == 2.0 && p.window == 256 && p.sigma == 4.0);
    lp_dpad_from_request(&p, &rq, LOPAD_ARCH_DREAM);
    CHECK(p.scale == 1.6);
}

/* empirical keep rate per offset vs keep(d): binomial, 5 sigma per offset */
static void test_keep_rate(void) {
    struct lp_dpad p = {.window = 48, .sigma = 3, .scale = 1.9};
    enum { N = 20000, NS = 64 };
    static int cnt[NS];
    memset(cnt, 0, sizeof cnt);
    struct lp_rng rng;
    lp_rng_seed(&rng, 12345);
    int32_t out[NS];
    long total = 0;
    for (int it = 0; it < N; it++) {
        int n = lp_dpad_draw(&p, 100, NS, &rng, out);
        total += n;
        for (int i = 0; i < n; i++) {
            CHECK(out[i] >= 100 && out[i] < 100 + NS);
            if (i) CHECK(out[i] > out[i - 1]); /* ascending */
            cnt[out[i] - 100]++;
        }
    }
    int bad = 0;
    double expect_total = 0;
    for (int d = 0; d < NS; d++) {
        double q = lp_dpad_keep_prob(&p, d);
        expect_total += q * N;
        double sd = sqrt(N * q * (1 - q));
        if (fabs(cnt[d] - N * q) > 5 * sd + 1e-9) {
            fprintf(stderr, "  offset %d: kept %d of %d, expected %.1f (sd %.1f)\n", d, cnt[d], N,
                    N * q, sd);
            bad++;
        }
        if (d >= p.window && cnt[d]) bad++; /* outside the window: never */
    }
    CHECK_MSG(bad == 0, "%d offsets off their keep probability", bad);
    CHECK_NEAR((double)total, expect_total, 5 * sqrt(expect_total), 0);
    /* a suffix shorter than W: the profile is truncated, not rescaled */
    lp_rng_seed(&rng, 1);
    int n = lp_dpad_draw(&p, 10, 3, &rng, out);
    CHECK(n <= 3);
    for (int i = 0; i < n; i++)
        CHECK(out[i] >= 10 && out[i] < 13);
    /* keep = 1 everywhere draws nothing from the PRNG */
    struct lp_dpad all = {.window = 1000, .sigma = 0, .scale = 3};
    struct lp_rng a, b;
    lp_rng_seed(&a, 9);
    lp_rng_seed(&b, 9);
    CHECK(lp_dpad_draw(&all, 0, 50, &a, out) == 50);
    CHECK(lp_rng_u64(&a) == lp_rng_u64(&b));
}

/* ---------------------------------- keep = 1 everywhere: no DPad, token for token */

static void test_keep_all_is_plain(void) {
    int32_t pr[5] = {5, 17, 2, 30, 11};
    for (int dream = 0; dream < 2; dream++)
        for (int mode = -1; mode < 3; mode++) { /* -1: llada --dpad vs the llada decoder */
            if (mode < 0 && dream) continue;
            struct lp_engine e;
            struct tf_fake fk;
            struct lp_decode_request rq;
            lp_decode_request_init(&rq, mode < 0 ? LP_DEC_LLADA : LP_DEC_FAST, 40);
            rq.prompt = pr;
            rq.n_prompt = 5;
            rq.block_len = 8;
            rq.steps = 40;
            rq.temperature = 0.6; /* sampling too: the draw consumes no randomness */
            rq.seed = 4;
            rq.early_stop = mode >= 0;
            if (mode >= 0) rq.cache = (enum lp_cache_mode)mode;
            struct lp_decode_result a, b;
            tf_fake_engine(&e, &fk, dream);
            fk.mask_low = true;
            CHECK(lp_decode_run(&e, &rq, NULL, NULL, &a) == LOPAD_OK);
            rq.dpad = true;
            rq.dpad_window = 4096;
            rq.dpad_sigma = 4;
            rq.dpad_scale = 1e9; /* keep(d) = 1 for every d < W */
            tf_fake_engine(&e, &fk, dream);
            fk.mask_low = true;
            CHECK(lp_decode_run(&e, &rq, NULL, NULL, &b) == LOPAD_OK);
            int bad = a.n_canvas != b.n_canvas || a.nfe != b.nfe;
            for (int i = 0; !bad && i < a.n_canvas; i++)
                bad |= a.canvas[i] != b.canvas[i];
            CHECK_MSG(!bad, "dream %d mode %d: keep-all DPad differs from no DPad", dream, mode);
            lp_decode_result_free(&a);
            lp_decode_result_free(&b);
        }
}

/* ------------------------- fed positions are the original ones; golden fixtures */

static int n_dpad_fixtures;

/* the kept set of each block from the recorded forwards: a full feed must be
 * [0, eb) ++ kept[b] at the original positions for the current block b (or a later
 * one); cached steps feed the block (+ kept suffix in prefix mode) */
static bool full_feed_is(const struct tf_call *cl, const struct tf_fixture *fx, int b) {
    int eb = fx->n_prompt + (b + 1) * fx->rq.block_len;
    if (b >= fx->n_kept_blocks || cl->n_tokens != eb + fx->n_kept[b]) return false;
    for (int i = 0; i < eb; i++)
        if (cl->pos[i] != i) return false;
    for (int t = 0; t < fx->n_kept[b]; t++)
        if (cl->pos[eb + t] != fx->kept[b][t]) return false;
    return true;
}

static void check_feeds(const char *name, const struct tf_fixture *fx, const struct tf_spy *spy) {
    const int B = fx->rq.block_len;
    int blk = 0, bad = 0, last_refresh_n = -1;
    for (int c = 0; c < spy->n_calls && c < 160; c++) {
        const struct tf_call *cl = &spy->calls[c];
        if (cl->n_cache == 0) {
            while (blk < fx->n_kept_blocks && !full_feed_is(cl, fx, blk))
                blk++;
            if (blk >= fx->n_kept_blocks) {
                bad |= 1;
                break;
            }
            last_refresh_n = cl->n_tokens;
            continue;
        }
        int sb = cl->first_fed_pos;
        if (sb != fx->n_prompt + blk * B) bad |= 2;
        for (int i = 0; i < B && i < cl->n_tokens; i++)
            if (cl->pos[i] != sb + i) bad |= 4;
        if (fx->rq.cache == LP_CACHE_PREFIX) {
            if (cl->n_tokens != B + fx->n_kept[blk] || cl->n_cache != sb) bad |= 8;
            for (int t = 0; t < fx->n_kept[blk] && B + t < cl->n_tokens; t++)
                if (cl->pos[B + t] != fx->kept[blk][t]) bad |= 16;
        } else if (cl->n_tokens != B || cl->n_cache != last_refresh_n || cl->skip_b != sb ||
                   cl->skip_e != sb + B) {
            bad |= 32;
        }
    }
    CHECK_MSG(!bad, "%s: fed positions / kept sets differ from the reference (bits %d)", name, bad);
}

static void dpad_case(const char *name, const char *path) {
    static struct tf_fixture fx;
    static struct tf_spy spy;
    int mc = 0;
    int bad = tf_run_fixture_spy(path, name, &mc, &fx, &spy);
    CHECK(fx.rq.dpad && fx.n_kept_blocks > 0);
    /* some suffix was actually dropped */
    int dropped = 0;
    for (int b = 0; b < fx.n_kept_blocks; b++)
        dropped += fx.n_canvas - (fx.n_prompt + (b + 1) * fx.rq.block_len) - fx.n_kept[b];
    CHECK_MSG(dropped > 0, "%s drops nothing", name);
    check_feeds(name, &fx, &spy);
    n_dpad_fixtures++;
    fprintf(stderr, "  %-40s %s\n", name, bad ? "DIFFERS" : "ok");
}

static void test_golden_dpad(void) {
    int n = tf_for_each_fixture(DPAD_DIR, "", dpad_case);
    CHECK_MSG(n >= 12, "found %d fixtures in %s", n, DPAD_DIR);
}

/* ------------------------------------------------------ presets, checks */

static void test_presets_and_checks(void) {
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_FAST, 256);
    CHECK(lp_dpad_preset_apply("dpad-llada-humaneval", &rq) == LOPAD_OK);
    CHECK(rq.dpad && rq.dpad_sigma == 3 && rq.dpad_scale == 2.3 && rq.dpad_window == 512);
    CHECK(lp_dpad_preset_apply("dpad-dream-math", &rq) == LOPAD_OK);
    CHECK(rq.dpad_sigma == 4 && rq.dpad_scale == 1.6 && rq.dpad_window == 128);
    CHECK(lp_dpad_preset_apply("dpad-llada15-humaneval-parallel", &rq) == LOPAD_OK);
    CHECK(rq.dpad_scale == 2.3 && rq.dpad_window == 128);
    CHECK(lp_dpad_preset_apply("dpad-gpt", &rq) == LOPAD_ERR_ARG);
    CHECK(strstr(lopad_errmsg(), "dpad-llada-gsm8k") != NULL);

    int32_t pr[5] = {5, 17, 2, 30, 11};
    struct lp_engine e;
    struct tf_fake fk;
    tf_fake_engine(&e, &fk, false);
    lp_decode_request_init(&rq, LP_DEC_FAST, 32);
    rq.prompt = pr;
    rq.n_prompt = 5;
    rq.dpad = true;
    struct lp_decode_request r = rq;
    r.dpad_window = 0;
    expect_bad(&e, &r, "--dpad-window");
    r = rq, r.dpad_sigma = -1;
    expect_bad(&e, &r, "--dpad-sigma");
    r = rq, r.dpad_scale = NAN;
    expect_bad(&e, &r, "--dpad-scale");
    /* llada --dpad: the vanilla llada options it cannot honour are refused */
    lp_decode_request_init(&r, LP_DEC_LLADA, 32);
    r.prompt = pr;
    r.n_prompt = 5;
    r.dpad = true;
    r.cfg_scale = 1.0;
    expect_bad(&e, &r, "--cfg-scale");
}

int main(void) {
    TEST_RUN(test_keep_prob);
    TEST_RUN(test_keep_rate);
    TEST_RUN(test_keep_all_is_plain);
    TEST_RUN(test_presets_and_checks);
    TEST_RUN(test_golden_dpad);
    return test_report();
}
