/*
 * test_dpad_lopa.c - DPad suffix dropout composed with LoPA on Fast-dLLM
 * (`--decoder fast --lopa K --dpad`, src/decode/lopa.c) and refused with D2F:
 *   - golden cases of tools/ref/dpad_lopa.py (tests/fixtures/dpad_lopa: fake predictor
 *     with a KV cache, LLaDA and Dream, cache none / prefix / dual, K = 0, 2, 3; the tiny
 *     models through the real engine, K = 2, every cache mode): the
 *     canvas, NFE, the winner of every iteration, and the fed positions of every
 *     sequence of every forward = [from, block end) ++ the block's kept set (the same
 *     for every branch, original position ids; the block alone in dual steps);
 *   - the one batched forward against one forward per branch, and against an engine
 *     batch of one canvas (groups of branches), on the golden cases;
 *   - keep = 1 everywhere equals no DPad token for token (K = 0, 2, 3, every cache mode);
 *   - --lopa 0 --dpad equals fast --dpad --rule threshold (same kept sets from the same
 *     PRNG), on the fake and on the tiny models, and batched = serial there with K = 2;
 *   - --decoder d2f --dpad (with and without --lopa) is refused, naming why;
 *   - allocation failures and a failing forward with DPad on: an error, nothing leaked.
 */
#define LP_TEST_D2F_LIBRARY
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "test_d2f.c"

#define DL_FIX_DIR LOPAD_SOURCE_DIR "/tests/fixtures/dpad_lopa"

/* ---------------------------------------------------------- the spy */

/* Records, per forward call, the positions fed to each sequence (up to 8), n_cache and
 * the hidden cache rows; forwards to the fake. */
#define DL_CALLS 128
#define DL_MAXP 64
struct dl_call {
    int n_seq, n_cache, skip_b, skip_e;
    int n_pos[8];
    int32_t pos[8][DL_MAXP];
};
struct dl_spy {
    struct fe_wrap w; /* the wrapped engine */
    struct dl_call calls[DL_CALLS];
    int n_calls;
};

static void dl_record(struct dl_spy *s, const struct lopad_batch *b) {
    if (s->n_calls < DL_CALLS) {
        struct dl_call *c = &s->calls[s->n_calls];
        memset(c, 0, sizeof *c);
        c->n_seq = b->n_seq;
        c->n_cache = b->n_cache;
        c->skip_b = b->cache_skip_begin;
        c->skip_e = b->cache_skip_end;
        for (int i = 0; i < b->n_tokens; i++) {
            int q = b->seq ? b->seq[i] : 0;
            if (q < 8 && c->n_pos[q] < DL_MAXP) c->pos[q][c->n_pos[q]++] = b->pos[i];
        }
    }
    s->n_calls++;
}
static enum lopad_status dl_forward(void *ud, const struct lopad_batch *b) {
    dl_record(ud, b);
    return fe_wrap_forward(ud, b);
}
static enum lopad_status dl_forward_scores(void *ud, const struct lopad_batch *b,
                                           struct lp_row_scores *sc) {
    dl_record(ud, b);
    return fe_wrap_forward_scores(ud, b, sc);
}
static void dl_wrap(struct lp_engine *e, struct dl_spy *s) {
    memset(s, 0, sizeof *s);
    fe_wrap_install(e, &s->w, dl_forward);
    if (e->forward_scores) e->forward_scores = dl_forward_scores;
}

/* ---------------------------------------------------------- fixtures */

struct dlfix {
    char model[32]; /* fake-llada | fake-dream | tiny-llada | tiny-dream */
    int shift, eos_from;
    int32_t prompt[16];
    int n_prompt;
    struct lp_decode_request rq;
    int nfe;
    int winners[256][2];
    int n_winners;
    int feeds[128][4]; /* from, eb, n_suffix, n_cache */
    int n_feeds;
    int32_t kept[32][64];
    int n_kept[32], n_blocks;
    int32_t canvas[256];
    int n_canvas;
};

static bool dl_load(const char *path, struct dlfix *fx) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(fx, 0, sizeof *fx);
    lp_decode_request_init(&fx->rq, LP_DEC_FAST, 24);
    fx->rq.rule = LP_RULE_THRESHOLD;
    static char line[16384];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = 0;
        const char *k = line;
        char *v = sp + 1;
        struct lp_decode_request *rq = &fx->rq;
        if (!strcmp(k, "model")) {
            snprintf(fx->model, sizeof fx->model, "%s", v);
            fx->shift = strstr(v, "dream") != NULL;
        } else if (!strcmp(k, "eos_from"))
            fx->eos_from = atoi(v);
        else if (!strcmp(k, "prompt"))
            fx->n_prompt = df_list(v, fx->prompt, 16);
        else if (!strcmp(k, "gen"))
            rq->gen_len = atoi(v);
        else if (!strcmp(k, "block"))
            rq->block_len = atoi(v);
        else if (!strcmp(k, "cache"))
            lp_cache_mode_parse(v, &rq->cache);
        else if (!strcmp(k, "threshold"))
            rq->threshold = strtod(v, NULL);
        else if (!strcmp(k, "confidence"))
            lp_confidence_parse(v, &rq->confidence);
        else if (!strcmp(k, "early_stop"))
            rq->early_stop = atoi(v);
        else if (!strcmp(k, "lopa"))
            rq->lopa = atoi(v);
        else if (!strcmp(k, "dpad"))
            rq->dpad = atoi(v);
        else if (!strcmp(k, "dpad_window"))
            rq->dpad_window = atoi(v);
        else if (!strcmp(k, "dpad_sigma"))
            rq->dpad_sigma = strtod(v, NULL);
        else if (!strcmp(k, "dpad_scale"))
            rq->dpad_scale = strtod(v, NULL);
        else if (!strcmp(k, "seed"))
            rq->seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "nfe"))
            fx->nfe = atoi(v);
        else if (!strcmp(k, "winners")) {
            for (char *s = v; *s && fx->n_winners < 256;) {
                char *e;
                fx->winners[fx->n_winners][0] = (int)strtol(s, &e, 10);
                fx->winners[fx->n_winners][1] = (int)strtol(e + 1, &e, 10);
                fx->n_winners++;
                s = *e == ',' ? e + 1 : e;
            }
        } else if (!strcmp(k, "feeds")) {
            for (char *s = v; *s && fx->n_feeds < 128;) {
                int *fd = fx->feeds[fx->n_feeds++];
                if (sscanf(s, "%d-%d+%d:%d", &fd[0], &fd[1], &fd[2], &fd[3]) != 4) return false;
                s = strchr(s, ',');
                if (!s) break;
                s++;
            }
        } else if (!strcmp(k, "kept")) {
            char *save = NULL;
            for (char *t = strtok_r(v, "|", &save); t && fx->n_blocks < 32;
                 t = strtok_r(NULL, "|", &save)) {
                fx->n_kept[fx->n_blocks] = df_list(t, fx->kept[fx->n_blocks], 64);
                fx->n_blocks++;
            }
        } else if (!strcmp(k, "canvas"))
            fx->n_canvas = df_list(v, fx->canvas, 256);
    }
    fclose(f);
    fx->rq.prompt = fx->prompt;
    fx->rq.n_prompt = fx->n_prompt;
    return fx->n_canvas > 0 && fx->n_feeds > 0;
}

/* ---------------------------------------------------------- golden cases */

static struct dl_spy g_spy;
static int n_golden, n_dropped, n_multi_branch_feeds;

/* every sequence of forward i fed [from, eb) ++ kept (n of them) at the original
 * positions; the block's kept set is the fixture's */
static int dl_check_feeds(const char *name, const struct dlfix *fx, const struct dl_spy *sp) {
    int bad = sp->n_calls != fx->n_feeds;
    const int P = fx->n_prompt, B = fx->rq.block_len;
    for (int i = 0; !bad && i < sp->n_calls && i < DL_CALLS; i++) {
        const struct dl_call *c = &sp->calls[i];
        const int *fd = fx->feeds[i];
        int blk = (fd[1] - P) / B - 1;
        if (blk < 0 || blk >= fx->n_blocks || c->n_cache != fd[3]) {
            bad = 1;
            break;
        }
        bool dual_step = fx->rq.cache == LP_CACHE_DUAL && fd[3] > 0;
        if (dual_step ? fd[2] != 0 || c->skip_b != fd[1] - B || c->skip_e != fd[1]
                      : fd[2] != fx->n_kept[blk])
            bad = 2;
        if (c->n_seq > 1) n_multi_branch_feeds++;
        for (int q = 0; q < c->n_seq && q < 8 && !bad; q++) {
            int n0 = fd[1] - fd[0];
            if (c->n_pos[q] != n0 + fd[2]) bad = 3;
            for (int r = 0; r < c->n_pos[q] && !bad; r++)
                bad = c->pos[q][r] != (r < n0 ? fd[0] + r : fx->kept[blk][r - n0]) ? 4 : 0;
        }
    }
    CHECK_MSG(!bad, "%s: fed positions differ from the reference (code %d, %d calls vs %d)", name,
              bad, sp->n_calls, fx->n_feeds);
    return bad;
}

/* run fx on e (wrapped by g_spy); compare canvas, nfe, winners, feeds (mode 0) */
static int dl_run_engine(const char *name, const struct dlfix *fx, int mode,
                         const struct lp_engine *e) {
    lp_decoder *d = NULL;
    enum lopad_status st = lp_decode_start(e, &fx->rq, &d);
    CHECK_MSG(st == LOPAD_OK, "%s: %s", name, lopad_errmsg());
    if (st != LOPAD_OK) return 1;
    if (mode == 1) lp_lopa_set_serial(d, true);
    struct df_rec rec;
    memset(&rec, 0, sizeof rec);
    while (!lp_decode_done(d) && st == LOPAD_OK) {
        struct lp_step_event ev;
        st = lp_decode_step(d, &ev);
        if (st == LOPAD_OK) df_on_step(&rec, &ev);
    }
    struct lp_decode_result res;
    if (st == LOPAD_OK) st = lp_decode_finish(d, &res);
    lp_decode_free(d);
    CHECK_MSG(st == LOPAD_OK, "%s: %s", name, lopad_errmsg());
    if (st != LOPAD_OK) return 1;
    int bad = res.n_canvas != fx->n_canvas || res.nfe != fx->nfe;
    for (int i = 0; !bad && i < fx->n_canvas; i++)
        bad |= res.canvas[i] != fx->canvas[i];
    CHECK_MSG(!bad, "%s (mode %d): canvas / nfe (%d vs %d) differ from the reference", name, mode,
              res.nfe, fx->nfe);
    bool wbad = rec.n != fx->n_winners;
    for (int i = 0; !wbad && i < rec.n; i++)
        wbad = rec.winners[i][0] != fx->winners[i][0] || rec.winners[i][1] != fx->winners[i][1];
    CHECK_MSG(!wbad, "%s (mode %d): winners differ (%d vs %d iterations)", name, mode, rec.n,
              fx->n_winners);
    /* early stop fills the rest with EOS without decoding it, so n_masked then differs
     * from the canvas's MASK count on purpose: the event check holds without it */
    CHECK_MSG(rec.bad == 0 || fx->rq.early_stop, "%s: consistent step events", name);
    int la_wins = 0;
    for (int i = 0; i < fx->n_winners; i++)
        la_wins += fx->winners[i][0] != fx->winners[i][1] - 1;
    CHECK_MSG(rec.la_commits == la_wins, "%s: %d lookahead tokens committed by their step, %d wins",
              name, rec.la_commits, la_wins);
    bad |= wbad;
    if (mode == 0) bad |= dl_check_feeds(name, fx, &g_spy);
    CHECK(res.n_winner_hist == fx->rq.lopa + 1);
    lp_decode_result_free(&res);
    return bad;
}

/* run fx (mode 0: batched, 1: one forward per branch, 2: an engine batch of one canvas)
 * on the fake or a tiny model; compare canvas, nfe, winners, feeds */
static int n_fused_fwd, n_fused_logits; /* modes 3, 4: fused forwards, those that took logits */

static int dl_run_case(const char *name, const struct dlfix *fx, int mode) {
    struct lp_engine e;
    static struct dfake f;
    lopad_model *m = NULL;
    lopad_ctx *c = NULL;
    const int L = fx->n_prompt + fx->rq.gen_len;
    if (!strncmp(fx->model, "tiny-", 5)) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, fx->model);
        enum lopad_status st = lopad_model_load(dir, NULL, &m);
        CHECK_MSG(st == LOPAD_OK, "load %s: %s", dir, lopad_errmsg());
        if (st != LOPAD_OK) return 1;
        int nb = (fx->rq.lopa + 1) * L;
        struct lopad_ctx_params cp = {.n_ctx = L, .n_batch_max = nb, .n_threads = 1};
        st = lopad_ctx_new(m, &cp, &c);
        CHECK_MSG(st == LOPAD_OK, "ctx: %s", lopad_errmsg());
        if (st != LOPAD_OK) {
            lopad_model_free(m);
            return 1;
        }
        lp_engine_from_ctx(&e, m, c, L, nb);
        CHECK(e.hp.shift_logits == (bool)fx->shift);
    } else {
        df_engine(&e, &f, fx->shift, fx->eos_from);
    }
    if (mode == 2) e.n_batch_max = L; /* one canvas per call: groups of branches */
    /* modes 3, 4: the fake through the fused-scores path (the head emulated from its
     * logits; 4: scores jittered by 0.9x the decoders' tolerance) */
    static struct fe_fused ff;
    bool fused = mode >= 3 && !m;
    if (fused && !fe_fused_install(&e, &ff, mode == 4)) return 1;
    dl_wrap(&e, &g_spy);
    int bad = dl_run_engine(name, fx, mode, &e);
    if (fused) {
        n_fused_fwd += ff.n_scores;
        n_fused_logits += ff.n_last;
        fe_fused_free(&ff);
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
    return bad;
}
static void dl_case(const char *name, const char *path) {
    static struct dlfix fx;
    CHECK_MSG(dl_load(path, &fx), "%s readable", name);
    CHECK(fx.rq.dpad && fx.rq.lopa >= 0);
    for (int b = 0; b < fx.n_blocks; b++)
        n_dropped += fx.n_canvas - (fx.n_prompt + (b + 1) * fx.rq.block_len) - fx.n_kept[b];
    int bad = dl_run_case(name, &fx, 0);
    bad |= dl_run_case(name, &fx, 1) << 1;
    bad |= dl_run_case(name, &fx, 2) << 2;
    if (strncmp(fx.model, "tiny-", 5)) { /* the fake: also through the fused-scores path */
        bad |= dl_run_case(name, &fx, 3) << 3;
        bad |= dl_run_case(name, &fx, 4) << 4;
    }
    n_golden++;
    fprintf(stderr, "  %-28s %s\n", name, bad ? "DIFFERS" : "ok");
}

static void test_golden(void) {
    DIR *dir = opendir(DL_FIX_DIR);
    CHECK_MSG(dir != NULL, "open %s", DL_FIX_DIR);
    if (!dir) return;
    static char names[64][256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) && n < 64)
        if (strstr(de->d_name, ".txt")) snprintf(names[n++], 256, "%s", de->d_name);
    closedir(dir);
    n_golden = n_dropped = n_multi_branch_feeds = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        const int len = snprintf(path, sizeof path, "%s/%s", DL_FIX_DIR, names[i]);
        CHECK_MSG(len > 0 && len < (int)sizeof path, "fixture path too long: %s", names[i]);
        if (len > 0 && len < (int)sizeof path) dl_case(names[i], path);
    }
    CHECK_MSG(n_golden >= 24, "found %d fixtures in %s", n_golden, DL_FIX_DIR);
    CHECK(n_dropped > 0);            /* DPad dropped something */
    CHECK(n_multi_branch_feeds > 0); /* and branches fed the kept set together */
    /* the fused path decided iterations on the scores */
    CHECK_MSG(n_fused_fwd > 0 && n_fused_logits < n_fused_fwd, "fused forwards %d, took logits %d",
              n_fused_fwd, n_fused_logits);
    fprintf(stderr, "  fused forwards %d, %d took logits\n", n_fused_fwd, n_fused_logits);
}

/* ---------------------------------------------- keep = 1 everywhere: no DPad */

static void lfast_rq(struct lp_decode_request *rq, int cache, int K, double tau) {
    lp_decode_request_init(rq, LP_DEC_FAST, 24);
    rq->prompt = df_prompt5;
    rq->n_prompt = 5;
    rq->block_len = 4;
    rq->cache = (enum lp_cache_mode)cache;
    rq->rule = LP_RULE_THRESHOLD;
    rq->threshold = tau;
    rq->lopa = K;
}

static bool same_result(const struct lp_decode_result *a, const struct lp_decode_result *b) {
    return a->n_canvas == b->n_canvas && a->nfe == b->nfe &&
           !memcmp(a->canvas, b->canvas, sizeof(int32_t) * (size_t)a->n_canvas) &&
           a->n_winner_hist == b->n_winner_hist &&
           (!a->n_winner_hist ||
            !memcmp(a->winner_hist, b->winner_hist, sizeof(int) * (size_t)a->n_winner_hist));
}

static void test_keep_all_is_plain(void) {
    int n = 0;
    for (int shift = 0; shift < 2; shift++)
        for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++)
            for (int K = 0; K <= 3; K += (K ? 1 : 2)) {
                struct lp_decode_request rq;
                lfast_rq(&rq, cache, K, 0.6);
                rq.early_stop = K != 2;
                rq.seed = 5;
                struct lp_engine e;
                static struct dfake f;
                struct df_rec rec;
                struct lp_decode_result a, b;
                df_engine(&e, &f, shift, 5 + 14);
                CHECK(df_run(&e, &rq, &rec, &a) == LOPAD_OK);
                rq.dpad = true;
                rq.dpad_window = 4096;
                rq.dpad_scale = 1e9; /* keep(d) = 1 for every d < W */
                df_engine(&e, &f, shift, 5 + 14);
                static struct dl_spy sp;
                dl_wrap(&e, &sp);
                CHECK(df_run(&e, &rq, &rec, &b) == LOPAD_OK);
                CHECK_MSG(same_result(&a, &b), "shift %d cache %d K %d: keep-all DPad differs",
                          shift, cache, K);
                /* the refresh feeds the whole canvas */
                CHECK(sp.n_calls > 0 && sp.calls[0].n_pos[0] == 29);
                lp_decode_result_free(&a);
                lp_decode_result_free(&b);
                n++;
            }
    CHECK(n == 18);
}

/* ----------------------------- --lopa 0 --dpad = fast --dpad (threshold rule) */

static void test_k0_is_fast_dpad(void) {
    int n = 0;
    for (int shift = 0; shift < 2; shift++)
        for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++)
            for (int seed = 1; seed <= 3; seed++) {
                struct lp_decode_request rq;
                lfast_rq(&rq, cache, -1, seed == 2 ? 0.9 : 0.5);
                rq.dpad = true;
                rq.dpad_window = 4 + 4 * seed;
                rq.dpad_sigma = 3;
                rq.dpad_scale = 1.8;
                rq.seed = (uint64_t)seed;
                rq.early_stop = seed != 3;
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
                CHECK_MSG(same, "shift %d cache %d seed %d: fast --dpad vs --lopa 0 --dpad", shift,
                          cache, seed);
                lp_decode_result_free(&a);
                lp_decode_result_free(&b);
                n++;
            }
    CHECK(n == 18);
    /* the tiny models through the real engine: K = 0 against fast; K = 2 batched
     * against one forward per branch */
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
            lfast_rq(&rq, cache, -1, 0.3);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            rq.gen_len = 16;
            rq.dpad = true;
            rq.dpad_window = 8;
            rq.dpad_sigma = 3;
            rq.dpad_scale = 1.6;
            rq.seed = 9;
            int r = fe_fast_lopa_paths(m, rq);
            CHECK_MSG(r == 0, "%s cache %d: %s", models[mi], cache,
                      r == 1   ? "fast --dpad vs --lopa 0 --dpad"
                      : r == 2 ? "batched vs serial with DPad"
                               : lopad_errmsg());
        }
        lopad_model_free(m);
    }
}

/* ------------------------------------------------------------ refusals */

static void test_d2f_refuses_dpad(void) {
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    for (int K = -1; K <= 2; K += 3) {
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_D2F, 16);
        rq.prompt = df_prompt5;
        rq.n_prompt = 5;
        rq.block_len = 4;
        rq.lopa = K;
        lp_decoder *d = NULL;
        CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_OK);
        lp_decode_free(d);
        rq.dpad = true;
        d = NULL;
        CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_ERR_ARG && d == NULL);
        CHECK_MSG(strstr(lopad_errmsg(), "--dpad has no effect") &&
                      strstr(lopad_errmsg(), "--decoder fast"),
                  "message: %s", lopad_errmsg());
    }
    /* LoPA on Fast-dLLM checks the DPad settings */
    struct lp_decode_request rq;
    lfast_rq(&rq, LP_CACHE_PREFIX, 2, 0.9);
    rq.dpad = true;
    rq.dpad_window = 0;
    lp_decoder *d = NULL;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_ERR_ARG && strstr(lopad_errmsg(), "--dpad-window"));
    rq.dpad_window = 8;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_OK);
    lp_decode_free(d);
}

/* allocation failures at every point of setup and a failing forward: an error, no
 * leak (the sanitizer build checks), no partial result */
static void test_errors_and_oom(void) {
    for (int cache = LP_CACHE_NONE; cache <= LP_CACHE_DUAL; cache++) {
        struct lp_decode_request rq;
        lfast_rq(&rq, cache, 2, 0.6);
        rq.dpad = true;
        rq.dpad_window = 8;
        rq.early_stop = false; /* every block decoded: more than 3 forwards */
        struct lp_engine e;
        static struct dfake f;
        struct lp_decode_result res;
        df_engine(&e, &f, cache == LP_CACHE_PREFIX, 1 << 30);
        f.fail_at = 3;
        enum lopad_status fst = lp_decode_run(&e, &rq, NULL, NULL, &res);
        CHECK_MSG(fst == LOPAD_ERR_IO, "cache %d: %d %s (%d forwards)", cache, fst, lopad_errmsg(),
                  f.n_forward);
        if (fst == LOPAD_OK) lp_decode_result_free(&res);
        CHECK(res.ids == NULL && res.canvas == NULL);
        int n_ok = 0;
        for (long n = 0; n < 200 && !n_ok; n++) {
            df_engine(&e, &f, cache == LP_CACHE_PREFIX, 1 << 30);
            lp_alloc_fail_after(n);
            enum lopad_status st = lp_decode_run(&e, &rq, NULL, NULL, &res);
            lp_alloc_fail_after(-1);
            CHECK(st == LOPAD_OK || st == LOPAD_ERR_NOMEM);
            if (st == LOPAD_OK) {
                n_ok++;
                CHECK(res.n_winner_hist == 3);
                lp_decode_result_free(&res);
            }
        }
        CHECK(n_ok == 1);
    }
}

int main(void) {
    TEST_RUN(test_errors_and_oom);
    TEST_RUN(test_d2f_refuses_dpad);
    TEST_RUN(test_keep_all_is_plain);
    TEST_RUN(test_k0_is_fast_dpad);
    TEST_RUN(test_golden);
    return test_report();
}
