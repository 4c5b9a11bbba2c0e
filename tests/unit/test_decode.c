/*
 * test_decode.c - the vanilla decoders (src/decode/): token-for-token equality with
 * the PyTorch reference (tests/fixtures/decode/NAME.txt, from tools/ref/decoders.py) on
 * a fake predictor shared with the reference and on the tiny fixture models; the
 * PRNG, the samplers (statistically), the transfer schedule, the logit shift,
 * streaming events, request validation and allocation failures.
 */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "decode/decode.h"
#include "decode/predict.h"
#include "fake_engine.h"
#include "forward/forward.h"
#include "model/synthetic.h"
#include "test.h"

#define FIX_DIR LOPAD_SOURCE_DIR "/tests/fixtures/decode"

/* ------------------------------------------------------------ fake model */

/* The formula of fake_forward() in tools/ref/decoders.py: exact f32 logits that
 * depend on the whole canvas of a sequence. */
#define FAKE_V FE_V

static uint64_t fake_ctx(const int32_t *tok, const int32_t *pos, int n) {
    uint64_t ctx = 0;
    for (int j = 0; j < n; j++)
        ctx += (uint64_t)(tok[j] + 1) * (uint64_t)(pos[j] + 1);
    return ctx;
}

struct fake {
    int n_forward; /* lopad_forward calls */
    int n_tokens;  /* fed tokens over all calls */
    int last_rows[64];
    int n_last_rows;
    int fail_at; /* make the n-th forward fail (0 = never) */
    int peaked;  /* 1: row i strongly predicts token i % 30 (shift test) */
};

static enum lopad_status fake_forward(void *ud, const struct lopad_batch *b) {
    struct fake *f = ud;
    f->n_forward++;
    f->n_tokens += b->n_tokens;
    if (f->fail_at && f->n_forward == f->fail_at)
        return lp_error(LOPAD_ERR_IO, "fake forward failure");
    f->n_last_rows = b->n_out < 64 ? b->n_out : 64;
    for (int o = 0; o < f->n_last_rows; o++)
        f->last_rows[o] = b->out_rows[o];
    for (int o = 0; o < b->n_out; o++) {
        int r = b->out_rows[o];
        int beg, end; /* this sequence's contiguous span */
        fe_seq_span(b, r, &beg, &end);
        int L = end - beg;
        uint64_t ctx = fake_ctx(b->tokens + beg, b->pos + beg, L);
        int i = b->pos[r];
        uint64_t base = fe_row_base(ctx, i);
        float *lg = b->logits + (size_t)o * FAKE_V;
        for (int v = 0; v < FAKE_V; v++) {
            float x = fe_hash_logit(base, v);
            if (v == FE_EOS && i >= L - 3) x += 3.0f;
            if (f->peaked) x = (v == i % 30) ? 10.0f : 0.0f;
            lg[v] = x;
        }
    }
    return LOPAD_OK;
}

static void fake_engine(struct lp_engine *e, struct fake *f, bool shift) {
    memset(f, 0, sizeof *f);
    fe_engine_init(e, f, fake_forward, shift, 4096);
}

/* --------------------------------------------------------------- fixtures */

struct fixture {
    char model[64];
    int n_vocab, mask_id, eos_id, eot_id, shift;
    int32_t prompt[256];
    int n_prompt;
    struct lp_decode_request rq;
    int nfe;
    int32_t canvas[1024];
    int n_canvas;
    int32_t ids[1024];
    int n_ids;
};

static int parse_list(const char *s, int32_t *out, int cap) {
    if (!strcmp(s, "-")) return 0;
    int n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = (int32_t)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s) break;
    }
    return n;
}

static bool load_fixture(const char *path, struct fixture *fx) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(fx, 0, sizeof *fx);
    lp_decode_request_init(&fx->rq, LP_DEC_LLADA, 16);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = 0;
        const char *k = line, *v = sp + 1;
        struct lp_decode_request *rq = &fx->rq;
        if (!strcmp(k, "model"))
            snprintf(fx->model, sizeof fx->model, "%s", v);
        else if (!strcmp(k, "n_vocab"))
            fx->n_vocab = atoi(v);
        else if (!strcmp(k, "mask_id"))
            fx->mask_id = atoi(v);
        else if (!strcmp(k, "eos_id"))
            fx->eos_id = atoi(v);
        else if (!strcmp(k, "eot_id"))
            fx->eot_id = atoi(v);
        else if (!strcmp(k, "shift_logits"))
            fx->shift = atoi(v);
        else if (!strcmp(k, "prompt"))
            fx->n_prompt = parse_list(v, fx->prompt, 256);
        else if (!strcmp(k, "decoder"))
            lp_decoder_parse(v, &rq->decoder);
        else if (!strcmp(k, "gen"))
            rq->gen_len = atoi(v);
        else if (!strcmp(k, "steps"))
            rq->steps = atoi(v);
        else if (!strcmp(k, "block"))
            rq->block_len = atoi(v);
        else if (!strcmp(k, "remasking"))
            lp_remasking_parse(v, &rq->remasking);
        else if (!strcmp(k, "temperature"))
            rq->temperature = strtod(v, NULL);
        else if (!strcmp(k, "cfg_scale"))
            rq->cfg_scale = strtod(v, NULL);
        else if (!strcmp(k, "logits_eos_inf"))
            rq->logits_eos_inf = atoi(v);
        else if (!strcmp(k, "confidence_eos_eot_inf"))
            rq->confidence_eos_eot_inf = atoi(v);
        else if (!strcmp(k, "eps"))
            rq->eps = strtod(v, NULL);
        else if (!strcmp(k, "alg"))
            lp_dream_alg_parse(v, &rq->alg);
        else if (!strcmp(k, "alg_temp"))
            rq->alg_temp = strtod(v, NULL);
        else if (!strcmp(k, "top_p"))
            rq->top_p = strtod(v, NULL);
        else if (!strcmp(k, "top_k"))
            rq->top_k = atoi(v);
        else if (!strcmp(k, "seed"))
            rq->seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "nfe"))
            fx->nfe = atoi(v);
        else if (!strcmp(k, "canvas"))
            fx->n_canvas = parse_list(v, fx->canvas, 1024);
        else if (!strcmp(k, "ids"))
            fx->n_ids = parse_list(v, fx->ids, 1024);
    }
    fclose(f);
    fx->rq.prompt = fx->prompt;
    fx->rq.n_prompt = fx->n_prompt;
    return fx->n_canvas > 0;
}

static int check_against(const struct fixture *fx, const struct lp_engine *e, const char *name) {
    struct lp_decode_result res;
    enum lopad_status st = lp_decode_run(e, &fx->rq, NULL, NULL, &res);
    CHECK_MSG(st == LOPAD_OK, "%s: %s", name, lopad_errmsg());
    if (st != LOPAD_OK) return 1;
    int bad = res.n_canvas != fx->n_canvas;
    for (int i = 0; !bad && i < fx->n_canvas; i++)
        bad |= res.canvas[i] != fx->canvas[i];
    if (bad) {
        fprintf(stderr, "  %s: canvas differs\n    want", name);
        for (int i = 0; i < fx->n_canvas; i++)
            fprintf(stderr, " %d", fx->canvas[i]);
        fprintf(stderr, "\n    got ");
        for (int i = 0; i < res.n_canvas; i++)
            fprintf(stderr, " %d", res.canvas[i]);
        fputc('\n', stderr);
    }
    CHECK_MSG(!bad, "%s: canvas equals the reference", name);
    CHECK_MSG(res.n_ids == fx->n_ids, "%s: %d ids vs %d", name, res.n_ids, fx->n_ids);
    for (int i = 0; i < res.n_ids && i < fx->n_ids; i++)
        CHECK(res.ids[i] == fx->ids[i]);
    CHECK_MSG(res.nfe == fx->nfe, "%s: nfe %d vs %d", name, res.nfe, fx->nfe);
    int n_done = 0; /* a proposed MASK token leaves its position masked */
    for (int i = fx->n_prompt; i < fx->n_canvas; i++)
        n_done += fx->canvas[i] != fx->mask_id;
    CHECK_MSG(res.n_committed == n_done, "%s: committed %d vs %d", name, res.n_committed, n_done);
    CHECK_NEAR(res.tpf, (double)n_done / fx->nfe, 1e-12, 0);
    lp_decode_result_free(&res);
    return bad;
}

/* every fixture whose name starts with `prefix` */
static int for_each_fixture(const char *prefix, void (*fn)(const char *name, const char *path)) {
    DIR *dir = opendir(FIX_DIR);
    if (!dir) return -1;
    struct dirent *de;
    char names[64][256];
    int n = 0;
    while ((de = readdir(dir)) && n < 64)
        if (!strncmp(de->d_name, prefix, strlen(prefix)) && strstr(de->d_name, ".txt"))
            snprintf(names[n++], 256, "%s", de->d_name);
    closedir(dir);
    for (int i = 0; i < n; i++) {
        char path[1024];
        if (snprintf(path, sizeof path, "%s/%s", FIX_DIR, names[i]) >= (int)sizeof path) continue;
        fn(names[i], path);
    }
    return n;
}

static int g_fused_fwd, g_fused_logits;

static void fake_case(const char *name, const char *path) {
    struct fixture fx;
    CHECK_MSG(load_fixture(path, &fx), "%s readable", name);
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, fx.shift);
    CHECK(fx.n_vocab == FAKE_V && fx.mask_id == 39);
    int bad = check_against(&fx, &e, name);
    /* through the decoders' fused-scores path (the head emulated from the fake's
     * logits), plain and with the scores jittered by 0.9x the tolerance */
    static struct fe_fused ff;
    for (int jitter = 0; jitter < 2; jitter++) {
        fake_engine(&e, &f, fx.shift);
        CHECK(fe_fused_install(&e, &ff, jitter));
        bad |= check_against(&fx, &e, name);
        g_fused_fwd += ff.n_scores;
        g_fused_logits += ff.n_last;
        fe_fused_free(&ff);
    }
    fprintf(stderr, "  %-34s %s\n", name, bad ? "DIFFERS" : "ok");
}

static void test_golden_fake(void) {
    g_fused_fwd = g_fused_logits = 0;
    int n = for_each_fixture("fake-", fake_case);
    CHECK_MSG(n >= 17, "found %d fake fixtures in %s", n, FIX_DIR);
    /* the fused path ran and decided steps on the scores */
    CHECK_MSG(g_fused_fwd > 0 && g_fused_logits < g_fused_fwd, "fused forwards %d, took logits %d",
              g_fused_fwd, g_fused_logits);
    fprintf(stderr, "  fused forwards %d, %d took logits\n", g_fused_fwd, g_fused_logits);
}

/* the tiny fixture models through the real engine */
static void tiny_case(const char *name, const char *path) {
    struct fixture fx;
    CHECK_MSG(load_fixture(path, &fx), "%s readable", name);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, fx.model);
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "load %s: %s", dir, lopad_errmsg());
    if (st != LOPAD_OK) return;
    int L = fx.n_prompt + fx.rq.gen_len;
    struct lopad_ctx_params cp = {.n_ctx = L, .n_batch_max = 2 * L, .n_threads = 1};
    lopad_ctx *c = NULL;
    st = lopad_ctx_new(m, &cp, &c);
    CHECK_MSG(st == LOPAD_OK, "ctx: %s", lopad_errmsg());
    if (st == LOPAD_OK) {
        struct lp_engine e;
        lp_engine_from_ctx(&e, m, c, L, 2 * L);
        CHECK(e.hp.n_vocab == fx.n_vocab && e.hp.mask_id == fx.mask_id);
        CHECK(e.hp.eos_id == fx.eos_id && e.hp.shift_logits == (bool)fx.shift);
        /* the fixture's special ids are the ones the reference used */
        e.hp.eot_id = fx.eot_id;
        int bad = check_against(&fx, &e, name);
        fprintf(stderr, "  %-34s %s\n", name, bad ? "DIFFERS" : "ok");
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
}

static void test_golden_tiny(void) {
    int n = for_each_fixture("tiny-", tiny_case);
    CHECK_MSG(n >= 10, "found %d tiny fixtures in %s", n, FIX_DIR);
}

/* ------------------------------------------------------------------ PRNG */

static void test_rng(void) {
    struct lp_rng a, b;
    lp_rng_seed(&a, 42);
    lp_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        CHECK(lp_rng_u64(&a) == lp_rng_u64(&b));
    lp_rng_seed(&b, 43);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += lp_rng_u64(&a) == lp_rng_u64(&b);
    CHECK(same == 0);
    /* uniform: mean 1/2, variance 1/12, never 0 or 1 */
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = lp_rng_u01(&a);
        CHECK(u > 0 && u < 1);
        s += u;
        s2 += u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    CHECK_NEAR(mean, 0.5, 5 * sqrt(1.0 / 12 / n), 0); /* 5 sigma */
    CHECK_NEAR(var, 1.0 / 12, 0.002, 0);
    /* counter noise: deterministic and order independent */
    CHECK(lp_counter_u01(7, 100) == lp_counter_u01(7, 100));
    CHECK(lp_counter_u01(7, 100) != lp_counter_u01(7, 101));
    CHECK(lp_counter_u01(7, 100) != lp_counter_u01(8, 100));
    /* same stream as tools/ref/decoders.py: Rng(0).u64() */
    lp_rng_seed(&a, 0);
    uint64_t first = lp_rng_u64(&a);
    CHECK(first == 0x99ec5f36cb75f2b4ull);
}

/* ---------------------------------------------------------------- scoring */

static void test_softmax_stats(void) {
    float x[5] = {1.0f, 3.0f, 3.0f, -FLT_MAX, 0.0f}, p[5];
    lp_softmax_f32(p, x, 5);
    double z = exp(1) + 2 * exp(3) + exp(0);
    CHECK_NEAR(p[0], exp(1) / z, 1e-7, 1e-6);
    CHECK(p[3] == 0.0f);
    CHECK(lp_argmax_f32(x, 5) == 1); /* tie -> lower index */
    struct lp_pstats st;
    lp_prob_stats(p, 5, &st);
    CHECK(st.argmax == 1);
    CHECK_NEAR(st.pmax, exp(3) / z, 1e-7, 1e-6);
    CHECK_NEAR(st.margin, 0.0, 1e-9, 0);
    double ne = 0;
    for (int i = 0; i < 5; i++)
        ne += p[i] * log(p[i] + 1e-10);
    CHECK_NEAR(st.negent, ne, 1e-6, 1e-5);
    CHECK_NEAR(lp_softmax_prob_f64(x, 5, 4), 1.0 / z, 1e-15, 1e-12);
    /* top-k keeps ties at the k-th value */
    float y[6] = {5, 1, 4, 4, 2, 0}, sc[6];
    lp_top_k_filter(y, 6, 2, sc);
    CHECK(y[0] == 5 && y[2] == 4 && y[3] == 4 && y[1] == -FLT_MAX && y[5] == -FLT_MAX);
    /* top-p: probs .5 .3 .15 .05; p = .7 keeps the first crossing (.5, .3) */
    float w[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    int32_t is[8];
    lp_top_p_filter(w, 4, 0.7, is);
    CHECK(w[1] != -FLT_MAX && w[3] != -FLT_MAX && w[0] == -FLT_MAX && w[2] == -FLT_MAX);
    float w2[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    lp_top_p_filter(w2, 4, 0.4, is);
    CHECK(w2[1] != -FLT_MAX && w2[0] == -FLT_MAX && w2[2] == -FLT_MAX && w2[3] == -FLT_MAX);
    float w3[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    lp_top_p_filter(w3, 4, 0.9, is);
    CHECK(w3[2] == -FLT_MAX && w3[0] != -FLT_MAX);
}

/* chi-square statistic of counts against probabilities */
static double chi2(const int *cnt, const double *p, int k, int n) {
    double c = 0;
    for (int i = 0; i < k; i++)
        if (p[i] > 0) c += (cnt[i] - n * p[i]) * (cnt[i] - n * p[i]) / (n * p[i]);
    return c;
}

static void test_categorical_topk_topp(void) {
    /* fixed logits; T = 1.5, top-k 4 then top-p 0.9: the sampler must draw from
     * the renormalised survivors with the right frequencies */
    const int V = 8;
    const float base[8] = {2.0f, 0.5f, 1.7f, -1.0f, 1.0f, 0.2f, 1.9f, -0.3f};
    float lg[8], p[8], sc[8];
    int32_t is[16];
    for (int v = 0; v < V; v++)
        lg[v] = base[v] / 1.5f;
    lp_top_p_filter(lg, V, 0.9, is);
    lp_top_k_filter(lg, V, 4, sc);
    lp_softmax_f32(p, lg, V);
    /* expected: top-p 0.9 on softmax(base / 1.5) removes the tail, top-k keeps 4 */
    double q[8] = {0}, z = 0;
    int keep[4] = {0, 6, 2, 4};
    for (int i = 0; i < 4; i++)
        z += exp(base[keep[i]] / 1.5);
    for (int i = 0; i < 4; i++)
        q[keep[i]] = exp(base[keep[i]] / 1.5) / z;
    for (int v = 0; v < V; v++)
        CHECK_NEAR(p[v], q[v], 1e-6, 1e-5);
    struct lp_rng r;
    lp_rng_seed(&r, 1);
    int cnt[8] = {0}, n = 100000;
    for (int i = 0; i < n; i++)
        cnt[lp_sample_categorical(p, V, lp_rng_u01(&r))]++;
    CHECK(cnt[1] == 0 && cnt[3] == 0 && cnt[5] == 0 && cnt[7] == 0);
    /* 3 degrees of freedom: P(chi2 > 21.1) = 1e-4 */
    double c = chi2(cnt, q, V, n);
    CHECK_MSG(c < 21.1, "chi2 %.2f", c);
}

static void test_gumbel_proportional(void) {
    /* Gumbel-max over logits x at temperature T draws from softmax(x / T) */
    const int V = 6;
    const float x[6] = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f, 1.5f};
    const double T = 0.8;
    double q[6], z = 0;
    for (int v = 0; v < V; v++)
        z += exp(x[v] / T);
    for (int v = 0; v < V; v++)
        q[v] = exp(x[v] / T) / z;
    int cnt[6] = {0}, n = 60000;
    for (int i = 0; i < n; i++)
        cnt[lp_gumbel_argmax(x, V, T, 12345, (uint64_t)i * V)]++;
    double c = chi2(cnt, q, V, n);
    CHECK_MSG(c < 25.7, "chi2 %.2f (5 dof, p = 1e-4)", c);
    /* -inf (logits_eos_inf) is never chosen */
    float y[3] = {0.0f, -INFINITY, 0.0f};
    for (int i = 0; i < 1000; i++)
        CHECK(lp_gumbel_argmax(y, 3, 1.0, 99, (uint64_t)i * 3) != 1);
}

static void test_without_replacement(void) {
    /* first pick proportional to w; all k distinct */
    const int n = 5;
    const double w0[5] = {1, 2, 3, 0, 4};
    double q[5];
    for (int i = 0; i < n; i++)
        q[i] = w0[i] / 10.0;
    struct lp_rng r;
    lp_rng_seed(&r, 3);
    int cnt[5] = {0}, N = 50000;
    for (int t = 0; t < N; t++) {
        double w[5];
        memcpy(w, w0, sizeof w);
        int32_t out[3];
        lp_sample_without_replacement(w, w0, n, 3, &r, out);
        cnt[out[0]]++;
        CHECK(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
        CHECK(out[0] != 3 && out[1] != 3 && out[2] != 3);
    }
    double c = chi2(cnt, q, n, N);
    CHECK_MSG(c < 21.1, "chi2 %.2f", c);
    /* underflowed weights fall back to the best remaining */
    double wz[4] = {0, 0, 0, 0}, fb[4] = {0.1, 0.7, 0.3, 0.7};
    int32_t out[3];
    lp_sample_without_replacement(wz, fb, 4, 3, &r, out);
    CHECK(out[0] == 1 && out[1] == 3 && out[2] == 2);
}

static void test_select_topk(void) {
    double conf[6] = {0.2, 0.9, 0.5, 0.9, -INFINITY, 0.5};
    int32_t pos[6] = {10, 14, 11, 12, 13, 9};
    int32_t out[6], sc[6];
    lp_select_topk(conf, pos, 6, 6, out, sc);
    /* 0.9 at pos 12 before 0.9 at pos 14; 0.5 at pos 9 before pos 11 */
    CHECK(out[0] == 3 && out[1] == 1 && out[2] == 5 && out[3] == 2 && out[4] == 0 && out[5] == 4);
}

/* --------------------------------------------------------------- decoders */

static int32_t prompt5[5] = {5, 17, 2, 30, 11};

struct rec {
    int n_events;
    int committed[64];
    int last_prefix;
    int bad;
    int stop_after;
};

static int on_step(void *ud, const struct lp_step_event *ev) {
    struct rec *r = ud;
    if (r->n_events < 64) r->committed[r->n_events] = ev->n_committed;
    r->n_events++;
    if (ev->final_prefix < r->last_prefix) r->bad++;
    r->last_prefix = ev->final_prefix;
    int masked = 0;
    for (int i = ev->n_prompt; i < ev->n_canvas; i++)
        masked += ev->canvas[i] == ev->mask_id;
    if (masked != ev->n_masked) r->bad++;
    for (int i = 0; i < ev->n_committed; i++)
        if (ev->canvas[ev->committed[i]] == ev->mask_id) r->bad++;
    for (int i = 0; i < ev->final_prefix; i++)
        if (ev->canvas[ev->n_prompt + i] == ev->mask_id) r->bad++;
    return r->stop_after && r->n_events >= r->stop_after;
}

static void test_schedule_and_events(void) {
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, false);
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_LLADA, 16);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    rq.block_len = 8;
    rq.steps = 6; /* S = 3 per block, M = 8: 3, 3, 2 */
    struct rec r = {0};
    struct lp_decode_result res;
    CHECK(lp_decode_run(&e, &rq, on_step, &r, &res) == LOPAD_OK);
    CHECK(r.n_events == 6);
    int want[6] = {3, 3, 2, 3, 3, 2};
    for (int i = 0; i < 6; i++)
        CHECK(r.committed[i] == want[i]);
    CHECK(r.bad == 0);
    CHECK(r.last_prefix == 16);
    CHECK(res.nfe == 6 && f.n_forward == 6);
    CHECK_NEAR(res.tpf, 16.0 / 6, 1e-12, 0);
    lp_decode_result_free(&res);

    /* more steps than tokens: k_i = 0 steps commit nothing and run no forward */
    rq.gen_len = 4;
    rq.block_len = 4;
    rq.steps = 6; /* 1, 1, 1, 1, 0, 0 */
    memset(&r, 0, sizeof r);
    fake_engine(&e, &f, false);
    CHECK(lp_decode_run(&e, &rq, on_step, &r, &res) == LOPAD_OK);
    CHECK(r.n_events == 6 && r.committed[4] == 0 && r.committed[5] == 0);
    CHECK(res.nfe == 4 && f.n_forward == 4 && res.n_committed == 4);
    lp_decode_result_free(&res);

    /* CFG: one batched call of 2 canvases per step, counted as one NFE */
    lp_decode_request_init(&rq, LP_DEC_LLADA, 16);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    rq.cfg_scale = 1.0;
    fake_engine(&e, &f, false);
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    CHECK(res.nfe == 16 && res.n_seq_evals == 32 && f.n_forward == 16);
    CHECK(f.n_tokens == 16 * 2 * 21);
    lp_decode_result_free(&res);
    /* ... split into two calls when the engine's batch is too small: same tokens */
    struct lp_decode_result res2;
    fake_engine(&e, &f, false);
    e.n_batch_max = 21;
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res2) == LOPAD_OK);
    CHECK(res2.nfe == 16 && f.n_forward == 32);
    fake_engine(&e, &f, false);
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    CHECK(!memcmp(res.canvas, res2.canvas, sizeof(int32_t) * 21));
    lp_decode_result_free(&res);
    lp_decode_result_free(&res2);

    /* cancel from the callback */
    memset(&r, 0, sizeof r);
    r.stop_after = 2;
    fake_engine(&e, &f, false);
    rq.cfg_scale = 0;
    CHECK(lp_decode_run(&e, &rq, on_step, &r, &res) == LOPAD_OK);
    CHECK(res.cancelled && res.nfe == 2 && res.n_committed < 16);
    lp_decode_result_free(&res);
}

static void test_shift(void) {
    /* raw row i predicts token i % 30; with the shift, position j takes row j-1 */
    struct lp_engine e;
    struct fake f;
    for (int shift = 0; shift < 2; shift++) {
        for (int dec = 0; dec < 2; dec++) {
            fake_engine(&e, &f, shift);
            f.peaked = 1;
            struct lp_decode_request rq;
            lp_decode_request_init(&rq, dec ? LP_DEC_DREAM : LP_DEC_LLADA, 8);
            rq.prompt = prompt5;
            rq.n_prompt = 5;
            struct lp_decode_result res;
            CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
            for (int j = 5; j < 13; j++)
                CHECK(res.canvas[j] == (shift ? j - 1 : j) % 30);
            lp_decode_result_free(&res);
        }
    }
    CHECK(lp_pred_row(true, 0) == 0 && lp_pred_row(true, 5) == 4 && lp_pred_row(false, 5) == 5);
    /* the rows asked for: dream on a shift model asks for masked position - 1 */
    fake_engine(&e, &f, true);
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_DREAM, 4);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    rq.steps = 1;
    struct lp_decode_result res;
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    CHECK(f.n_last_rows == 4);
    for (int i = 0; i < 4; i++)
        CHECK(f.last_rows[i] == 4 + i);
    lp_decode_result_free(&res);
}

static void run_seeded_threads(enum lp_decoder_kind k, uint64_t seed, int threads, int32_t *out) {
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, k == LP_DEC_DREAM);
    e.n_threads = threads;
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, k, 32);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    rq.temperature = 1.0;
    rq.seed = seed;
    if (k == LP_DEC_DREAM) rq.top_p = 0.95;
    struct lp_decode_result res;
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    memcpy(out, res.canvas + 5, sizeof(int32_t) * 32);
    lp_decode_result_free(&res);
}

static void run_seeded(enum lp_decoder_kind k, uint64_t seed, int32_t *out) {
    run_seeded_threads(k, seed, 1, out);
}

static void test_threads(void) {
    /* proposals on 3 threads: the same tokens as on 1 */
    for (int k = 0; k < 2; k++) {
        int32_t a[32], b[32];
        run_seeded_threads((enum lp_decoder_kind)k, 5, 1, a);
        run_seeded_threads((enum lp_decoder_kind)k, 5, 3, b);
        CHECK(!memcmp(a, b, sizeof a));
    }
    /* and the golden fixtures hold with a pool */
    struct fixture fx;
    CHECK(load_fixture(FIX_DIR "/fake-llada-temp-cfg-random.txt", &fx));
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, false);
    e.n_threads = 2;
    CHECK(check_against(&fx, &e, "fake-llada-temp-cfg-random (2 threads)") == 0);
    CHECK(load_fixture(FIX_DIR "/fake-dream-temp-topp.txt", &fx));
    fake_engine(&e, &f, true);
    e.n_threads = 2;
    CHECK(check_against(&fx, &e, "fake-dream-temp-topp (2 threads)") == 0);
}

static void test_seeds(void) {
    for (int k = 0; k < 2; k++) {
        int32_t a[32], b[32], c[32];
        run_seeded((enum lp_decoder_kind)k, 1, a);
        run_seeded((enum lp_decoder_kind)k, 1, b);
        run_seeded((enum lp_decoder_kind)k, 2, c);
        CHECK(!memcmp(a, b, sizeof a));
        int diff = 0;
        for (int i = 0; i < 32; i++)
            diff += a[i] != c[i];
        CHECK_MSG(diff > 0, "decoder %d: seeds 1 and 2 gave the same 32 tokens", k);
    }
}

static void test_eos_cut(void) {
    /* the fake model boosts EOS (38) on the last 3 raw rows: ids stop before it */
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, false);
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_LLADA, 8);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    struct lp_decode_result res;
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    int first = 8;
    for (int i = 0; i < 8; i++)
        if (res.canvas[5 + i] == 38 || res.canvas[5 + i] == 37 || res.canvas[5 + i] == 39) {
            first = i;
            break;
        }
    CHECK(res.n_ids == first);
    CHECK(first < 8); /* the boost makes EOS appear */
    lp_decode_result_free(&res);
    /* logits_eos_inf: EOS never appears */
    rq.logits_eos_inf = true;
    CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_OK);
    for (int i = 0; i < 8; i++)
        CHECK(res.canvas[5 + i] != 38);
    lp_decode_result_free(&res);
}

/* ------------------------------------------------------------- validation */

static void expect_bad(const struct lp_decode_request *rq, const char *needle) {
    struct lp_engine e;
    struct fake f;
    fake_engine(&e, &f, rq->decoder == LP_DEC_DREAM);
    e.n_ctx = 64;
    lp_decoder *d = (lp_decoder *)1;
    enum lopad_status st = lp_decode_start(&e, rq, &d);
    CHECK_MSG(st == LOPAD_ERR_ARG, "expected LOPAD_ERR_ARG for '%s'", needle);
    CHECK(d == NULL);
    CHECK_MSG(strstr(lopad_errmsg(), needle) != NULL, "message '%s' should name '%s'",
              lopad_errmsg(), needle);
    CHECK(f.n_forward == 0);
}

static void test_validation(void) {
    struct lp_decode_request rq, base;
    lp_decode_request_init(&base, LP_DEC_LLADA, 16);
    base.prompt = prompt5;
    base.n_prompt = 5;
    rq = base;
    rq.n_prompt = 0;
    expect_bad(&rq, "empty prompt");
    rq = base;
    rq.prompt = NULL;
    expect_bad(&rq, "empty prompt");
    rq = base;
    rq.gen_len = 0;
    expect_bad(&rq, "--gen");
    rq = base;
    rq.gen_len = 64;
    rq.block_len = 32;
    rq.steps = 64;
    expect_bad(&rq, "context length 64");
    rq = base;
    rq.block_len = 5;
    expect_bad(&rq, "multiple of --block");
    rq = base;
    rq.block_len = 8;
    rq.steps = 7;
    expect_bad(&rq, "divisible by the number of blocks");
    rq = base;
    rq.block_len = 0;
    expect_bad(&rq, "--block");
    rq = base;
    rq.steps = 0;
    expect_bad(&rq, "--steps");
    rq = base;
    rq.temperature = -0.1;
    expect_bad(&rq, "--temperature");
    rq = base;
    rq.temperature = NAN;
    expect_bad(&rq, "--temperature");
    rq = base;
    rq.top_p = 0;
    expect_bad(&rq, "--top-p");
    rq = base;
    rq.top_p = 1.5;
    expect_bad(&rq, "--top-p");
    rq = base;
    rq.top_k = -1;
    expect_bad(&rq, "--top-k");
    rq = base;
    rq.top_k = 5;
    expect_bad(&rq, "not used by the llada decoder");
    rq = base;
    rq.cfg_scale = -1;
    expect_bad(&rq, "--cfg-scale");
    rq = base;
    rq.alg_temp = -1;
    expect_bad(&rq, "--alg-temp");
    rq = base;
    rq.decoder = (enum lp_decoder_kind)7;
    expect_bad(&rq, "unknown decoder");
    rq = base;
    rq.alg = (enum lp_dream_alg)9;
    expect_bad(&rq, "unknown algorithm");
    int32_t badp[2] = {3, 40};
    rq = base;
    rq.prompt = badp;
    rq.n_prompt = 2;
    expect_bad(&rq, "outside the vocabulary");
    int32_t maskp[2] = {3, 39};
    rq = base;
    rq.prompt = maskp;
    rq.n_prompt = 2;
    expect_bad(&rq, "mask token");
    lp_decode_request_init(&base, LP_DEC_DREAM, 16);
    base.prompt = prompt5;
    base.n_prompt = 5;
    rq = base;
    rq.block_len = 8;
    expect_bad(&rq, "--block");
    rq = base;
    rq.cfg_scale = 1;
    expect_bad(&rq, "--cfg-scale");
    rq = base;
    rq.eps = 0;
    expect_bad(&rq, "--eps");
    rq = base;
    rq.eps = 1;
    expect_bad(&rq, "--eps");
    rq = base;
    rq.remasking = LP_REMASK_RANDOM;
    expect_bad(&rq, "--remasking");
    /* the name parsers */
    enum lp_decoder_kind k;
    enum lp_dream_alg a;
    enum lp_remasking rm;
    CHECK(lp_decoder_parse("dream", &k) == LOPAD_OK && k == LP_DEC_DREAM);
    CHECK(lp_decoder_parse("fast", &k) == LOPAD_OK && k == LP_DEC_FAST);
    CHECK(lp_decoder_parse("bogus", &k) == LOPAD_ERR_ARG && strstr(lopad_errmsg(), "'bogus'"));
    CHECK(lp_dream_alg_parse("topk_margin", &a) == LOPAD_OK && a == LP_ALG_TOPK_MARGIN);
    CHECK(lp_dream_alg_parse("greedy", &a) == LOPAD_ERR_ARG);
    CHECK(lp_remasking_parse("random", &rm) == LOPAD_OK && rm == LP_REMASK_RANDOM);
    CHECK(lp_remasking_parse("high", &rm) == LOPAD_ERR_ARG);
    CHECK(lp_decoder_default(LOPAD_ARCH_LLADA) == LP_DEC_LLADA);
    CHECK(lp_decoder_default(LOPAD_ARCH_DREAM) == LP_DEC_DREAM);
    /* defaults */
    lp_decode_request_init(&rq, LP_DEC_LLADA, 64);
    CHECK(rq.steps == 64 && rq.block_len == 32);
    lp_decode_request_init(&rq, LP_DEC_LLADA, 20);
    CHECK(rq.block_len == 20);
    lp_decode_request_init(&rq, LP_DEC_DREAM, 64);
    CHECK(rq.block_len == 64 && rq.eps == 1e-3 && rq.top_p == 1.0);
}

/* ------------------------------------------------------------ robustness */

static void test_errors_and_oom(void) {
    struct lp_engine e;
    struct fake f;
    for (int dec = 0; dec < 2; dec++) {
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, (enum lp_decoder_kind)dec, 16);
        rq.prompt = prompt5;
        rq.n_prompt = 5;
        rq.cfg_scale = dec == 0 ? 1.0 : 0.0;
        rq.top_p = dec == 1 ? 0.9 : 1.0;
        rq.temperature = 0.5;
        /* a failing forward is reported, nothing leaks */
        fake_engine(&e, &f, dec == 1);
        f.fail_at = 3;
        struct lp_decode_result res;
        CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_ERR_IO);
        CHECK(res.ids == NULL && res.canvas == NULL);
        /* every allocation failing in turn */
        int n_ok = 0;
        for (long n = 0; n < 100; n++) {
            fake_engine(&e, &f, dec == 1);
            lp_alloc_fail_after(n);
            enum lopad_status st = lp_decode_run(&e, &rq, NULL, NULL, &res);
            lp_alloc_fail_after(-1);
            CHECK(st == LOPAD_OK || st == LOPAD_ERR_NOMEM);
            if (st == LOPAD_OK) {
                n_ok++;
                lp_decode_result_free(&res);
                break;
            }
            CHECK(res.ids == NULL);
        }
        CHECK(n_ok == 1);
    }
}

/* ------------------------------------------------------------ fused scores */

struct fused_tally {
    int runs, nfe_scores, nfe_scores_logits;
};

/* rq through the fused engine, the jittered one and the logits-only one: the same
 * canvas and NFE */
static void fused_case(const char *what, const struct lp_engine *ef,
                       const struct lp_decode_request *rq, struct fused_tally *t) {
    struct lp_engine el = *ef;
    el.forward_scores = NULL;
    el.last_logits = NULL;
    static struct fe_jitter_wrap jt; /* scores moved by 0.9x the decoders' tolerance */
    struct lp_engine ej = *ef;
    fe_jitter_install(&ej, &jt);
    struct lp_decode_result rf, rl, rj;
    enum lopad_status s1 = lp_decode_run(ef, rq, NULL, NULL, &rf);
    enum lopad_status s2 = lp_decode_run(&el, rq, NULL, NULL, &rl);
    enum lopad_status s3 = lp_decode_run(&ej, rq, NULL, NULL, &rj);
    CHECK_MSG(s1 == LOPAD_OK && s2 == LOPAD_OK && s3 == LOPAD_OK, "%s: %s", what, lopad_errmsg());
    if (s1 == LOPAD_OK && s2 == LOPAD_OK && s3 == LOPAD_OK) {
        bool same = rf.n_canvas == rl.n_canvas && rj.n_canvas == rl.n_canvas;
        for (int i = 0; same && i < rl.n_canvas; i++)
            same = rf.canvas[i] == rl.canvas[i] && rj.canvas[i] == rl.canvas[i];
        CHECK_MSG(same, "%s: fused, jittered and logits canvases are equal", what);
        CHECK_MSG(rf.nfe == rl.nfe && rj.nfe == rl.nfe, "%s: nfe %d / %d / %d", what, rf.nfe,
                  rj.nfe, rl.nfe);
        CHECK_MSG(rf.n_committed == rl.n_committed, "%s: committed", what);
        CHECK(rl.nfe_scores == 0 && rl.nfe_scores_logits == 0);
        CHECK(rf.nfe_scores <= rf.nfe && rf.nfe_scores_logits <= rf.nfe_scores);
        fprintf(stderr, "  %-44s nfe %3d  on scores %3d  took logits %3d (jittered %d)\n", what,
                rf.nfe, rf.nfe_scores - rf.nfe_scores_logits, rf.nfe_scores_logits,
                rj.nfe_scores_logits);
        t->runs++;
        t->nfe_scores += rf.nfe_scores;
        t->nfe_scores_logits += rf.nfe_scores_logits;
    }
    if (s1 == LOPAD_OK) lp_decode_result_free(&rf);
    if (s2 == LOPAD_OK) lp_decode_result_free(&rl);
    if (s3 == LOPAD_OK) lp_decode_result_free(&rj);
}

static void test_fused_scores(void) {
    static const int32_t prompt[6] = {12, 250, 7, 99, 180, 3};
    for (int dream = 0; dream < 2; dream++) {
        const char *shape = dream ? "tiny" : "tiny-llada";
        lopad_model *m = NULL;
        CHECK(lp_model_synthetic(shape, LOPAD_TYPE_F32, 11, &m) == LOPAD_OK);
        if (!m) return;
        const int L = 6 + 32;
        struct lopad_ctx_params cp = {.n_ctx = 3 * L, .n_batch_max = 3 * L, .n_threads = 1};
        lopad_ctx *c = NULL;
        CHECK(lopad_ctx_new(m, &cp, &c) == LOPAD_OK);
        struct lp_engine e;
        lp_engine_from_ctx(&e, m, c, 3 * L, 3 * L);
        CHECK_MSG(e.forward_scores && e.last_logits, "the CPU backend has the fused head");
        struct fused_tally t = {0};
        char what[96];
        struct lp_decode_request rq;
        /* the vanilla decoder of the architecture */
        for (int v = 0; v < 4; v++) {
            lp_decode_request_init(&rq, dream ? LP_DEC_DREAM : LP_DEC_LLADA, 32);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            if (dream) {
                rq.alg = (enum lp_dream_alg)v;
                rq.steps = v == 3 ? 8 : 32;
            } else {
                rq.block_len = v < 2 ? 8 : 32;
                rq.steps = v == 1 ? 16 : 32;
                rq.confidence_eos_eot_inf = v == 2;
                if (v == 3) rq.remasking = LP_REMASK_RANDOM;
            }
            snprintf(what, sizeof what, "%s %s v%d", shape, dream ? "dream" : "llada", v);
            fused_case(what, &e, &rq, &t);
        }
        if (!dream) { /* CFG: logits both ways */
            rq.cfg_scale = 1.0;
            rq.remasking = LP_REMASK_LOW_CONFIDENCE;
            fused_case("tiny-llada llada cfg", &e, &rq, &t);
        }
        /* Fast-dLLM: caches x rules, DPad, dream first-token commit, llada --dpad */
        for (int cache = 0; cache < 3; cache++)
            for (int rule = 0; rule < 3; rule++) {
                lp_decode_request_init(&rq, LP_DEC_FAST, 32);
                rq.prompt = prompt;
                rq.n_prompt = 6;
                rq.block_len = 8;
                rq.cache = (enum lp_cache_mode)cache;
                rq.rule = (enum lp_commit_rule)rule;
                rq.threshold = 0.05;
                rq.factor = 1.3;
                rq.dpad = cache == 1 && rule == 0;
                rq.dream_first_token_commit = dream && cache == 2;
                if (rule == 1) rq.confidence = LP_CONF_MARGIN;
                snprintf(what, sizeof what, "%s fast %s %s%s", shape, lp_cache_mode_name(rq.cache),
                         lp_commit_rule_name(rq.rule), rq.dpad ? " dpad" : "");
                fused_case(what, &e, &rq, &t);
            }
        lp_decode_request_init(&rq, LP_DEC_FAST, 32);
        rq.prompt = prompt;
        rq.n_prompt = 6;
        rq.confidence = LP_CONF_NEGENT;
        rq.threshold = 0.02;
        fused_case(dream ? "tiny fast negent" : "tiny-llada fast negent", &e, &rq, &t);
        if (!dream) {
            lp_decode_request_init(&rq, LP_DEC_LLADA, 32);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            rq.block_len = 8;
            rq.dpad = true;
            fused_case("tiny-llada llada --dpad", &e, &rq, &t);
        }
        /* LoPA on Fast-dLLM */
        for (int cache = 0; cache < 3; cache++) {
            lp_decode_request_init(&rq, LP_DEC_FAST, 32);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            rq.block_len = 8;
            rq.cache = (enum lp_cache_mode)cache;
            rq.lopa = 2;
            rq.threshold = 0.05;
            rq.dpad = cache == 1;
            snprintf(what, sizeof what, "%s fast --lopa 2 %s%s", shape,
                     lp_cache_mode_name(rq.cache), rq.dpad ? " dpad" : "");
            fused_case(what, &e, &rq, &t);
        }
        /* D2F / LoPA: bounds of the MASK-free pmax */
        for (int lopa = -1; lopa <= 2; lopa += 3) {
            lp_decode_request_init(&rq, LP_DEC_D2F, 32);
            rq.prompt = prompt;
            rq.n_prompt = 6;
            rq.block_len = 8;
            rq.lopa = lopa;
            rq.tau_conf = 0.05;
            snprintf(what, sizeof what, "%s d2f lopa %d", shape, lopa);
            fused_case(what, &e, &rq, &t);
        }
        /* the scores decided most fused steps (the test is not vacuous) */
        CHECK_MSG(t.nfe_scores > 0 && 2 * t.nfe_scores_logits < t.nfe_scores,
                  "%s: %d fused forwards, %d took logits", shape, t.nfe_scores,
                  t.nfe_scores_logits);
        lopad_ctx_free(c);
        lopad_model_free(m);
    }
}

/* the clearance test of a top-k set, and the fused head's bad-input paths */
static void test_fused_helpers(void) {
    double scr[8];
    const double a[5] = {0.9, 0.5, 0.5004, 0.1, 0.2};
    CHECK(lp_dec_topk_clear(a, 5, 1, 1e-3, scr));  /* 0.9 vs 0.5004 */
    CHECK(!lp_dec_topk_clear(a, 5, 2, 1e-3, scr)); /* 0.5004 vs 0.5: too close */
    CHECK(lp_dec_topk_clear(a, 5, 2, 1e-4, scr));
    CHECK(lp_dec_topk_clear(a, 5, 3, 1e-3, scr)); /* 0.5 vs 0.2 */
    CHECK(lp_dec_topk_clear(a, 5, 0, 1.0, scr) && lp_dec_topk_clear(a, 5, 5, 1.0, scr));
    const double t[3] = {0.3, 0.3, 0.1}; /* an exact tie at the cut */
    CHECK(!lp_dec_topk_clear(t, 3, 1, 0.0, scr) && lp_dec_topk_clear(t, 3, 2, 0.0, scr));
    const double ninf[4] = {0.7, -INFINITY, -INFINITY, -INFINITY}; /* EOS ranked last */
    CHECK(lp_dec_topk_clear(ninf, 4, 1, 1e-3, scr) && lp_dec_topk_clear(ninf, 4, 2, 1e-3, scr));
    struct lp_row_scores r = {.argmax = 3, .pmax = 0.5f, .margin = 0.0f};
    CHECK(!lp_scores_argmax_clear(&r, false)); /* an exact tie */
    r.margin = 1e-7f;
    CHECK(lp_scores_argmax_clear(&r, false) && !lp_scores_argmax_clear(&r, true));
    r.margin = 1e-3f;
    CHECK(lp_scores_argmax_clear(&r, true));

    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny-llada", LOPAD_TYPE_F32, 3, &m) == LOPAD_OK);
    if (!m) return;
    struct lopad_ctx_params cp = {.n_ctx = 16, .n_batch_max = 16, .n_threads = 1};
    lopad_ctx *c = NULL;
    CHECK(lopad_ctx_new(m, &cp, &c) == LOPAD_OK);
    if (c) {
        int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, pos[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        int32_t rows[2] = {2, 7}, bad[1] = {8};
        float *lg = lp_malloc(sizeof(float) * 2 * 300, "test logits");
        struct lp_row_scores sc[2];
        CHECK(lp_forward_last_logits(c, rows, 2, lg) == LOPAD_ERR_ARG); /* no forward yet */
        struct lopad_batch b = {
            .n_tokens = 8, .tokens = tok, .pos = pos, .n_seq = 1, .n_out = 2, .out_rows = rows};
        CHECK(lp_forward_scores(c, &b, sc) == LOPAD_OK);
        CHECK(lp_forward_last_logits(c, bad, 1, lg) == LOPAD_ERR_ARG); /* not a fed row */
        CHECK(lp_forward_last_logits(c, rows, 2, lg) == LOPAD_OK);
        /* the logits behind the scores: the same argmax */
        for (int o = 0; lg && o < 2; o++)
            CHECK(lp_argmax_f32(lg + (size_t)o * 300, 300) == sc[o].argmax);
        b.n_out = 0; /* a prefill: the last layer is cut short, no logits to give */
        b.out_rows = NULL;
        struct lopad_batch pre = b;
        pre.logits = NULL;
        CHECK(lopad_forward(c, &pre) == LOPAD_OK);
        CHECK(lp_forward_last_logits(c, rows, 2, lg) == LOPAD_ERR_ARG);
        lp_free(lg);
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
}

int main(void) {
    TEST_RUN(test_rng);
    TEST_RUN(test_softmax_stats);
    TEST_RUN(test_categorical_topk_topp);
    TEST_RUN(test_gumbel_proportional);
    TEST_RUN(test_without_replacement);
    TEST_RUN(test_select_topk);
    TEST_RUN(test_schedule_and_events);
    TEST_RUN(test_shift);
    TEST_RUN(test_seeds);
    TEST_RUN(test_threads);
    TEST_RUN(test_eos_cut);
    TEST_RUN(test_validation);
    TEST_RUN(test_errors_and_oom);
    TEST_RUN(test_golden_fake);
    TEST_RUN(test_golden_tiny);
    TEST_RUN(test_fused_helpers);
    TEST_RUN(test_fused_scores);
    return test_report();
}
