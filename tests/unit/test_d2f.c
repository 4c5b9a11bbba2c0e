/*
 * test_d2f.c - the D2F decoder (src/decode/d2f.c): token-for-token equality with the
 * PyTorch reference tools/ref/d2f_lopa.py (the "-d2f" fixtures of tests/fixtures/d2f) on a fake
 * predictor with a KV cache (same formula as the reference) and on the tiny fixture
 * models; the block pipeline's rules on a scripted model (semi-activated blocks,
 * strict left-to-right caching, the window feed and the Dream last logit), EOS
 * ending generation inside the window, validation and allocation failures.
 *
 * The first half (fake engine, fixture reader, runner) is shared with test_lopa.c,
 * which includes this file with LP_TEST_D2F_LIBRARY defined.
 */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "decode/d2f_impl.h"
#include "decode/decode.h"
#include "decode/predict.h"
#include "fake_engine.h"
#include "test.h"

#define D2F_FIX_DIR LOPAD_SOURCE_DIR "/tests/fixtures/d2f"

/* ------------------------------------------------------- the fake engine */

/* A fake model with a KV cache: a row's "K/V" is its (token, position); its logits
 * depend on the pairs it sees (the cached rows plus the visible fed rows of its own
 * sequence), as FakeCached in tools/ref/d2f_lopa.py. A script may replace them. */
#define DF_V FE_V
#define DF_MAXR 8192

struct dfake;
typedef void (*df_script)(struct dfake *f, const int32_t *tok, const int32_t *pos, int n, int row,
                          float *lg);

struct dfake {
    int32_t ctok[DF_MAXR], cpos[DF_MAXR];
    int n_cache;
    int32_t ftok[DF_MAXR], fpos[DF_MAXR];
    int n_fed;
    int eos_from;
    int n_forward, n_commit, fail_at;
    int commits[64][3]; /* (src, n, dst) of the first kv_commit calls */
    int seq_len[64][8]; /* fed length of sequences 0..7 in the first forwards */
    int n_seq[64];
    df_script script;
    void *ud;
};

static void df_row(uint64_t ctx, int p, int eos_from, float *out) {
    uint64_t base = fe_row_base(ctx, p);
    for (int v = 0; v < DF_V; v++)
        out[v] = fe_hash_logit(base, v);
    int peak = (int)(lp_mix64(base ^ 0x5555) % DF_V);
    int s = (int)((lp_mix64(base ^ 0xAAAA) >> 62) & 3);
    out[peak] += 2.0f * (float)s;
    if (p >= eos_from) out[FE_EOS] += 3.0f;
}

static enum lopad_status df_forward(void *ud, const struct lopad_batch *b) {
    struct dfake *f = ud;
    f->n_forward++;
    if (f->fail_at && f->n_forward == f->fail_at)
        return lp_error(LOPAD_ERR_IO, "fake forward failure");
    if (b->n_cache > f->n_cache || b->n_tokens > DF_MAXR)
        return lp_error(LOPAD_ERR_ARG, "fake: n_cache %d > cached %d", b->n_cache, f->n_cache);
    if (f->n_forward <= 64) {
        int k = f->n_forward - 1;
        f->n_seq[k] = b->n_seq;
        for (int i = 0; i < b->n_tokens; i++)
            if ((b->seq ? b->seq[i] : 0) < 8) f->seq_len[k][b->seq ? b->seq[i] : 0]++;
    }
    uint64_t cbase = 0; /* visible cached rows: [0, n_cache) but the skipped ones */
    for (int i = 0; i < b->n_cache; i++)
        if (i < b->cache_skip_begin || i >= b->cache_skip_end)
            cbase += (uint64_t)(f->ctok[i] + 1) * (uint64_t)(f->cpos[i] + 1);
    static int32_t vt[DF_MAXR * 2], vp[DF_MAXR * 2];
    for (int o = 0; o < b->n_out; o++) {
        int r = b->out_rows[o], beg, end;
        fe_seq_span(b, r, &beg, &end);
        float *lg = b->logits + (size_t)o * DF_V;
        if (f->script) {
            int n = 0;
            for (int i = 0; i < b->n_cache; i++) {
                if (i >= b->cache_skip_begin && i < b->cache_skip_end) continue;
                vt[n] = f->ctok[i];
                vp[n++] = f->cpos[i];
            }
            for (int j = beg; j < end; j++)
                if (!b->block || b->block[j] <= b->block[r]) {
                    vt[n] = b->tokens[j];
                    vp[n++] = b->pos[j];
                }
            f->script(f, vt, vp, n, b->pos[r], lg);
            continue;
        }
        uint64_t ctx = cbase;
        for (int j = beg; j < end; j++)
            if (!b->block || b->block[j] <= b->block[r])
                ctx += (uint64_t)(b->tokens[j] + 1) * (uint64_t)(b->pos[j] + 1);
        df_row(ctx, b->pos[r], f->eos_from, lg);
    }
    memcpy(f->ftok, b->tokens, sizeof(int32_t) * b->n_tokens);
    memcpy(f->fpos, b->pos, sizeof(int32_t) * b->n_tokens);
    f->n_fed = b->n_tokens;
    return LOPAD_OK;
}

static enum lopad_status df_commit(void *ud, int src, int n, int dst) {
    struct dfake *f = ud;
    if (src < 0 || n < 0 || src + n > f->n_fed || dst > f->n_cache || dst + n > DF_MAXR)
        return lp_error(LOPAD_ERR_ARG, "fake commit [%d,+%d) -> %d out of range", src, n, dst);
    if (f->n_commit < 64) {
        f->commits[f->n_commit][0] = src;
        f->commits[f->n_commit][1] = n;
        f->commits[f->n_commit][2] = dst;
    }
    f->n_commit++;
    memcpy(f->ctok + dst, f->ftok + src, sizeof(int32_t) * n);
    memcpy(f->cpos + dst, f->fpos + src, sizeof(int32_t) * n);
    if (dst + n > f->n_cache) f->n_cache = dst + n;
    return LOPAD_OK;
}

static void df_truncate(void *ud, int n) {
    struct dfake *f = ud;
    if (n < f->n_cache) f->n_cache = n < 0 ? 0 : n;
}

static void df_engine(struct lp_engine *e, struct dfake *f, bool shift, int eos_from) {
    memset(f, 0, sizeof *f);
    f->eos_from = eos_from;
    fe_engine_init(e, f, df_forward, shift, 4096);
    e->kv_commit = df_commit;
    e->kv_truncate = df_truncate;
}

/* ------------------------------------------------------------ fixtures */

struct dfix {
    char model[64];
    int eos_from, n_vocab, mask_id, eos_id, eot_id, pad_id, shift;
    int32_t prompt[256];
    int n_prompt;
    struct lp_decode_request rq;
    int nfe;
    int winners[512][2]; /* (winner, branches) */
    int n_winners;
    int ev_la_win, ev_la_block, ev_la_eos, ev_early_end;
    int32_t canvas[1024];
    int n_canvas;
    int32_t ids[1024];
    int n_ids;
};

static int df_list(const char *s, int32_t *out, int cap) {
    if (!strcmp(s, "-")) return 0;
    int n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = (int32_t)strtol(s, &end, 10);
        if (end == s) break;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static bool df_load(const char *path, struct dfix *fx) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(fx, 0, sizeof *fx);
    lp_decode_request_init(&fx->rq, LP_DEC_D2F, 16);
    fx->eos_from = 1 << 30;
    char line[16384];
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
        else if (!strcmp(k, "eos_from"))
            fx->eos_from = atoi(v);
        else if (!strcmp(k, "n_vocab"))
            fx->n_vocab = atoi(v);
        else if (!strcmp(k, "mask_id"))
            fx->mask_id = atoi(v);
        else if (!strcmp(k, "eos_id"))
            fx->eos_id = atoi(v);
        else if (!strcmp(k, "eot_id"))
            fx->eot_id = atoi(v);
        else if (!strcmp(k, "pad_id"))
            fx->pad_id = atoi(v);
        else if (!strcmp(k, "shift_logits"))
            fx->shift = atoi(v);
        else if (!strcmp(k, "prompt"))
            fx->n_prompt = df_list(v, fx->prompt, 256);
        else if (!strcmp(k, "gen"))
            rq->gen_len = atoi(v);
        else if (!strcmp(k, "block"))
            rq->block_len = atoi(v);
        else if (!strcmp(k, "tau_add"))
            rq->tau_add = strtod(v, NULL);
        else if (!strcmp(k, "tau_act"))
            rq->tau_act = strtod(v, NULL);
        else if (!strcmp(k, "tau_conf"))
            rq->tau_conf = strtod(v, NULL);
        else if (!strcmp(k, "confidence"))
            lp_confidence_parse(v, &rq->confidence);
        else if (!strcmp(k, "lopa"))
            rq->lopa = atoi(v);
        else if (!strcmp(k, "window"))
            lp_window_attn_parse(v, &rq->lopa_window);
        else if (!strcmp(k, "nfe"))
            fx->nfe = atoi(v);
        else if (!strcmp(k, "winners")) {
            const char *s = v;
            while (strcmp(s, "-") && *s && fx->n_winners < 512) {
                char *e;
                fx->winners[fx->n_winners][0] = (int)strtol(s, &e, 10);
                fx->winners[fx->n_winners][1] = (int)strtol(e + 1, &e, 10);
                fx->n_winners++;
                s = *e == ',' ? e + 1 : e;
            }
        } else if (!strcmp(k, "events")) {
            const char *s;
            if ((s = strstr(v, "la_win="))) fx->ev_la_win = atoi(s + 7);
            if ((s = strstr(v, "la_block="))) fx->ev_la_block = atoi(s + 9);
            if ((s = strstr(v, "la_eos="))) fx->ev_la_eos = atoi(s + 7);
            if ((s = strstr(v, "early_end="))) fx->ev_early_end = atoi(s + 10);
        } else if (!strcmp(k, "canvas"))
            fx->n_canvas = df_list(v, fx->canvas, 1024);
        else if (!strcmp(k, "ids"))
            fx->n_ids = df_list(v, fx->ids, 1024);
    }
    fclose(f);
    fx->rq.prompt = fx->prompt;
    fx->rq.n_prompt = fx->n_prompt;
    return fx->n_canvas > 0;
}

/* winners seen through the step events */
struct df_rec {
    int winners[512][2];
    int n;
    int n_steps, bad;
    int la_commits; /* steps whose committed list holds the winner's lookahead token */
};

static int df_on_step(void *ud, const struct lp_step_event *ev) {
    struct df_rec *r = ud;
    r->n_steps++;
    if (ev->winner >= 0 && r->n < 512) {
        r->winners[r->n][0] = ev->winner;
        r->winners[r->n][1] = ev->n_branches;
        r->n++;
        if (ev->winner_pos >= 0) {
            bool in = false;
            for (int i = 0; i < ev->n_committed; i++)
                in |= ev->committed[i] == ev->winner_pos;
            r->la_commits += in;
            r->bad += !in || (ev->winner != ev->n_branches - 1) != (ev->winner_pos >= 0);
        }
    }
    int masked = 0;
    for (int i = ev->n_prompt; i < ev->n_canvas; i++)
        masked += ev->canvas[i] == ev->mask_id;
    r->bad += masked != ev->n_masked;
    return 0;
}

/* Run fx on e; compare with the reference. Returns nonzero when it differs. */
static int df_check(const struct dfix *fx, const struct lp_engine *e, const char *name,
                    void (*tweak)(lp_decoder *d)) {
    struct df_rec rec;
    memset(&rec, 0, sizeof rec);
    struct lp_decode_result res;
    lp_decoder *d = NULL;
    enum lopad_status st = lp_decode_start(e, &fx->rq, &d);
    CHECK_MSG(st == LOPAD_OK, "%s: %s", name, lopad_errmsg());
    if (st != LOPAD_OK) return 1;
    if (tweak) tweak(d);
    while (!lp_decode_done(d) && st == LOPAD_OK) {
        struct lp_step_event ev;
        st = lp_decode_step(d, &ev);
        if (st == LOPAD_OK) df_on_step(&rec, &ev);
    }
    CHECK_MSG(st == LOPAD_OK, "%s: step: %s", name, lopad_errmsg());
    if (st == LOPAD_OK) st = lp_decode_finish(d, &res);
    lp_decode_free(d);
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
    CHECK_MSG(res.nfe == fx->nfe, "%s: nfe %d vs %d", name, res.nfe, fx->nfe);
    bad |= res.nfe != fx->nfe;
    CHECK_MSG(res.n_ids == fx->n_ids, "%s: %d ids vs %d", name, res.n_ids, fx->n_ids);
    for (int i = 0; i < res.n_ids && i < fx->n_ids; i++)
        CHECK(res.ids[i] == fx->ids[i]);
    /* winners per forward (LoPA) */
    bool wbad = rec.n != fx->n_winners;
    for (int i = 0; !wbad && i < rec.n; i++)
        wbad = rec.winners[i][0] != fx->winners[i][0] || rec.winners[i][1] != fx->winners[i][1];
    CHECK_MSG(!wbad, "%s: winners per iteration equal the reference (%d vs %d forwards)", name,
              rec.n, fx->n_winners);
    bad |= wbad;
    CHECK_MSG(rec.bad == 0, "%s: consistent step events", name);
    CHECK_MSG(rec.la_commits == fx->ev_la_win, "%s: %d lookahead wins vs %d", name, rec.la_commits,
              fx->ev_la_win);
    /* statistics */
    int nonpad = 0;
    for (int i = fx->n_prompt; i < fx->n_canvas; i++)
        nonpad += fx->canvas[i] != fx->mask_id && !(fx->pad_id >= 0 && fx->canvas[i] == fx->pad_id);
    CHECK(res.n_nonpad == nonpad);
    CHECK_NEAR(res.tpf, fx->nfe ? (double)nonpad / fx->nfe : 0.0, 1e-12, 0);
    if (fx->rq.lopa >= 0) {
        CHECK(res.n_winner_hist == fx->rq.lopa + 1 && res.winner_hist);
        int tot = 0, anchor = 0;
        for (int i = 0; i < res.n_winner_hist; i++)
            tot += res.winner_hist[i];
        for (int i = 0; i < fx->n_winners; i++)
            anchor += fx->winners[i][0] == fx->winners[i][1] - 1;
        CHECK(tot == fx->nfe);
        CHECK(res.n_winner_hist < 1 || res.winner_hist[fx->rq.lopa] == anchor);
    } else {
        CHECK(res.n_winner_hist == 0 && !res.winner_hist);
    }
    lp_decode_result_free(&res);
    return bad;
}

typedef void (*df_case_fn)(const char *name, const char *path);

/* every fixture whose name starts with prefix and contains `has` */
static int df_each(const char *prefix, const char *has, df_case_fn fn) {
    DIR *dir = opendir(D2F_FIX_DIR);
    if (!dir) return -1;
    struct dirent *de;
    static char names[128][256];
    int n = 0;
    while ((de = readdir(dir)) && n < 128)
        if (!strncmp(de->d_name, prefix, strlen(prefix)) && strstr(de->d_name, has) &&
            strstr(de->d_name, ".txt"))
            snprintf(names[n++], 256, "%s", de->d_name);
    closedir(dir);
    for (int i = 0; i < n; i++) {
        char path[1024];
        if (snprintf(path, sizeof path, "%s/%s", D2F_FIX_DIR, names[i]) >= (int)sizeof path)
            continue;
        fn(names[i], path);
    }
    return n;
}

static void (*df_tweak)(lp_decoder *d);

static void df_fake_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK_MSG(df_load(path, &fx), "%s readable", name);
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, fx.shift, fx.eos_from);
    CHECK(fx.n_vocab == DF_V && fx.mask_id == 39);
    int bad = df_check(&fx, &e, name, df_tweak);
    fprintf(stderr, "  %-34s %s\n", name, bad ? "DIFFERS" : "ok");
}

/* a tiny fixture model through the real engine (n_batch: all branches at once) */
static void df_tiny_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK_MSG(df_load(path, &fx), "%s readable", name);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, fx.model);
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "load %s: %s", dir, lopad_errmsg());
    if (st != LOPAD_OK) return;
    int L = fx.n_prompt + fx.rq.gen_len, nb = (fx.rq.lopa > 0 ? fx.rq.lopa + 1 : 1) * L;
    struct lopad_ctx_params cp = {.n_ctx = L, .n_batch_max = nb, .n_threads = 1};
    lopad_ctx *c = NULL;
    st = lopad_ctx_new(m, &cp, &c);
    CHECK_MSG(st == LOPAD_OK, "ctx: %s", lopad_errmsg());
    if (st == LOPAD_OK) {
        struct lp_engine e;
        lp_engine_from_ctx(&e, m, c, L, nb);
        CHECK(e.hp.n_vocab == fx.n_vocab && e.hp.mask_id == fx.mask_id);
        CHECK(e.hp.eos_id == fx.eos_id && e.hp.shift_logits == (bool)fx.shift);
        e.hp.eot_id = fx.eot_id; /* the ids the reference used */
        e.hp.pad_id = fx.pad_id;
        int bad = df_check(&fx, &e, name, df_tweak);
        fprintf(stderr, "  %-34s %s\n", name, bad ? "DIFFERS" : "ok");
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
}

/* run a request on the fake (or scripted) engine; res owned by the caller */
static enum lopad_status df_run(struct lp_engine *e, const struct lp_decode_request *rq,
                                struct df_rec *rec, struct lp_decode_result *res) {
    memset(rec, 0, sizeof *rec);
    lp_decoder *d = NULL;
    enum lopad_status st = lp_decode_start(e, rq, &d);
    if (st != LOPAD_OK) return st;
    while (!lp_decode_done(d) && st == LOPAD_OK) {
        struct lp_step_event ev;
        st = lp_decode_step(d, &ev);
        if (st == LOPAD_OK) df_on_step(rec, &ev);
    }
    if (st == LOPAD_OK) st = lp_decode_finish(d, res);
    lp_decode_free(d);
    return st;
}

static int32_t df_prompt5[5] = {5, 17, 2, 30, 11};

/* Scripted model: position p predicts token 1 + p % 30 with probability set by
 * g_conf[p]; the EOS position predicts EOS. Shared by the scripted cases. */
static float g_conf[256];
static int g_eos_pos = -1;

static void peaked(float *lg, int tok, float pmax) {
    /* p(tok) = pmax, the rest uniform over the other 38 non-mask tokens */
    float rest = (1.0f - pmax) / (DF_V - 2);
    for (int v = 0; v < DF_V; v++)
        lg[v] = logf(rest);
    lg[tok] = logf(pmax);
    lg[39] = -30.0f;
}

/* the fake fixtures through the fused-scores path (the head emulated from the fake's
 * logits, plain and jittered by 0.9x the decoders' tolerance): still the reference */
static int g_fused_fwd, g_fused_logits; /* fused forwards, those that took logits */

static void df_fused_case(const char *name, const char *path) {
    struct dfix fx;
    CHECK_MSG(df_load(path, &fx), "%s readable", name);
    static struct fe_fused ff;
    for (int jitter = 0; jitter < 2; jitter++) {
        struct lp_engine e;
        static struct dfake f;
        df_engine(&e, &f, fx.shift, fx.eos_from);
        CHECK(fe_fused_install(&e, &ff, jitter));
        int bad = df_check(&fx, &e, name, NULL);
        g_fused_fwd += ff.n_scores;
        g_fused_logits += ff.n_last;
        fe_fused_free(&ff);
        fprintf(stderr, "  %-34s %s (fused%s)\n", name, bad ? "DIFFERS" : "ok",
                jitter ? ", jittered" : "");
    }
}

#ifndef LP_TEST_D2F_LIBRARY

/* ------------------------------------------------------------ the tests */

static void test_golden_fake(void) {
    int n = df_each("fake-", "-d2f", df_fake_case);
    CHECK_MSG(n >= 4, "found %d fake d2f fixtures in %s", n, D2F_FIX_DIR);
}

static void test_golden_fake_fused(void) {
    g_fused_fwd = g_fused_logits = 0;
    CHECK(df_each("fake-", "-d2f", df_fused_case) >= 4);
    CHECK_MSG(g_fused_fwd > 0 && g_fused_logits < g_fused_fwd, "fused forwards %d, took logits %d",
              g_fused_fwd, g_fused_logits);
    fprintf(stderr, "  fused forwards %d, %d took logits\n", g_fused_fwd, g_fused_logits);
}

static void test_golden_tiny(void) {
    int n = df_each("tiny-", "-d2f", df_tiny_case);
    CHECK_MSG(n >= 2, "found %d tiny d2f fixtures in %s", n, D2F_FIX_DIR);
}

static void script_conf(struct dfake *f, const int32_t *tok, const int32_t *pos, int n, int p,
                        float *lg) {
    LP_UNUSED(f);
    LP_UNUSED(tok);
    LP_UNUSED(pos);
    LP_UNUSED(n);
    peaked(lg, p == g_eos_pos ? 38 : 1 + p % 30, g_conf[p]);
}

static void test_pipeline_rules(void) {
    /* P = 5, B = 4, G = 12. tau_add 0.5, tau_act 0.75, tau_conf 0.9.
     * block 1 [5,9): positions 5, 6 confident; block 2 [9,13): 9, 10, 11 confident
     * (semi-activated: it may commit without the fallback); block 3 [13,17) none. */
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    f.script = script_conf;
    for (int p = 0; p < 256; p++)
        g_conf[p] = 0.3f + 0.01f * (p % 7);
    g_conf[5] = g_conf[6] = 0.95f;
    g_conf[9] = g_conf[10] = g_conf[11] = 0.97f;
    g_eos_pos = -1;
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_D2F, 12);
    CHECK(rq.block_len == 12 && rq.tau_add == 0.1 && rq.tau_act == 0.95 && rq.tau_conf == 0.9);
    CHECK(rq.lopa == -1 && rq.lopa_window == LP_WINDOW_FULL);
    rq.prompt = df_prompt5;
    rq.n_prompt = 5;
    rq.block_len = 4;
    rq.tau_add = 0.5;
    rq.tau_act = 0.75;
    struct df_rec rec;
    struct lp_decode_result res;
    CHECK(df_run(&e, &rq, &rec, &res) == LOPAD_OK);
    /* it 1: feed prompt + block 1 (9 rows, prompt -> cache); commit 5, 6 (ratio .5)
     * it 2: add block 2 (semi); feed blocks 1-2 (8 rows); block 1 full: 7 forced (lowest
     *       position among equal... conf 7 = .3 + .0 < 8 = .31: 8 wins); block 2 commits
     *       9, 10, 11 (threshold, not full yet: ratio of block 1 was .5)
     * all decoded in the end, every block cached left to right */
    CHECK(f.n_seq[0] == 1 && f.seq_len[0][0] == 9);
    CHECK(f.seq_len[1][0] == 8);
    CHECK(res.canvas[5] == 6 && res.canvas[6] == 7);
    CHECK(res.n_committed == 12 && res.n_ids == 12);
    /* strict left-to-right caching: commits are contiguous and ordered */
    int next = 0;
    for (int i = 0; i < f.n_commit && i < 64; i++) {
        CHECK(f.commits[i][2] == next);
        next += f.commits[i][1];
    }
    CHECK(f.commits[0][0] == 0 && f.commits[0][1] == 5);
    lp_decode_result_free(&res);

    /* EOS at position 6 (block 1): no block is added after it is committed; the
     * generation ends inside the window with never-added blocks left MASK */
    df_engine(&e, &f, false, 1 << 30);
    f.script = script_conf;
    g_eos_pos = 6;
    rq.tau_add = 0.5;
    CHECK(df_run(&e, &rq, &rec, &res) == LOPAD_OK);
    CHECK(res.canvas[6] == 38);
    CHECK(res.n_ids == 1 && res.ids[0] == 6);
    int masked = 0;
    for (int i = 5; i < 17; i++)
        masked += res.canvas[i] == 39;
    CHECK_MSG(masked == 8, "blocks 2-3 never added: %d masked", masked);
    lp_decode_result_free(&res);
    g_eos_pos = -1;
}

static void test_dream_last_logit(void) {
    /* shift model: the prediction of the window's first position is the stored raw
     * output of the last cached row: script = token depends on the row's position */
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, true, 1 << 30);
    f.script = script_conf;
    for (int p = 0; p < 256; p++)
        g_conf[p] = 0.95f;
    g_conf[4] = 0.3f; /* position 5 (row 4) stays masked after the first forward; the next
                         window starts at 5 without a TO_CACHE block: row 4 = last logit */
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_D2F, 8);
    rq.prompt = df_prompt5;
    rq.n_prompt = 5;
    rq.block_len = 4;
    rq.tau_add = 1.0; /* one block at a time: each window starts right after the cache */
    struct df_rec rec;
    struct lp_decode_result res;
    CHECK(df_run(&e, &rq, &rec, &res) == LOPAD_OK);
    /* position j takes raw row j-1, whose token is 1 + (j-1) % 30 */
    CHECK(f.seq_len[1][0] == 4); /* second forward: block 1 alone, from the cache end */
    for (int j = 5; j < 13; j++)
        CHECK_MSG(res.canvas[j] == 1 + (j - 1) % 30, "pos %d: %d", j, res.canvas[j]);
    lp_decode_result_free(&res);
}

static void expect_bad(struct lp_decode_request rq, const char *needle) {
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    lp_decoder *d = (lp_decoder *)1;
    enum lopad_status st = lp_decode_start(&e, &rq, &d);
    CHECK_MSG(st == LOPAD_ERR_ARG, "expected LOPAD_ERR_ARG for '%s'", needle);
    CHECK(d == NULL);
    CHECK_MSG(strstr(lopad_errmsg(), needle) != NULL, "message '%s' should name '%s'",
              lopad_errmsg(), needle);
}

static void test_validation(void) {
    struct lp_decode_request b, rq;
    lp_decode_request_init(&b, LP_DEC_D2F, 16);
    b.prompt = df_prompt5;
    b.n_prompt = 5;
    b.block_len = 4;
    rq = b;
    rq.block_len = 5;
    expect_bad(rq, "multiple of --block");
    rq = b;
    rq.tau_add = 1.5;
    expect_bad(rq, "--tau-add");
    rq = b;
    rq.tau_act = -0.1;
    expect_bad(rq, "--tau-act");
    rq = b;
    rq.tau_conf = NAN;
    expect_bad(rq, "--tau-conf");
    rq = b;
    rq.temperature = 0.5;
    expect_bad(rq, "--temperature");
    rq = b;
    rq.lopa = 65;
    expect_bad(rq, "--lopa");
    rq = b;
    rq.lopa = -2;
    expect_bad(rq, "--lopa");
    rq = b;
    rq.cfg_scale = 1;
    expect_bad(rq, "--cfg-scale");
    /* an engine without cache operations */
    struct lp_engine e;
    static struct dfake f;
    df_engine(&e, &f, false, 1 << 30);
    e.kv_commit = NULL;
    lp_decoder *d = NULL;
    CHECK(lp_decode_start(&e, &b, &d) == LOPAD_ERR_ARG && !d);
    CHECK(strstr(lopad_errmsg(), "KV cache") != NULL);
    enum lp_decoder_kind k;
    CHECK(lp_decoder_parse("d2f", &k) == LOPAD_OK && k == LP_DEC_D2F);
    CHECK(!strcmp(lp_decoder_name(LP_DEC_D2F), "d2f"));
}

static void test_errors_and_oom(void) {
    for (int lopa = -1; lopa <= 2; lopa += 3) {
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_D2F, 16);
        rq.prompt = df_prompt5;
        rq.n_prompt = 5;
        rq.block_len = 4;
        rq.tau_add = 0.3;
        rq.tau_act = 0.5;
        rq.tau_conf = 0.6;
        rq.lopa = lopa;
        struct lp_engine e;
        static struct dfake f;
        df_engine(&e, &f, true, 12);
        f.fail_at = 3;
        struct lp_decode_result res;
        CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_ERR_IO);
        CHECK(res.ids == NULL && res.canvas == NULL);
        int n_ok = 0;
        for (long n = 0; n < 200; n++) {
            df_engine(&e, &f, true, 12);
            lp_alloc_fail_after(n);
            enum lopad_status st = lp_decode_run(&e, &rq, NULL, NULL, &res);
            lp_alloc_fail_after(-1);
            CHECK(st == LOPAD_OK || st == LOPAD_ERR_NOMEM);
            if (st == LOPAD_OK) {
                n_ok++;
                lp_decode_result_free(&res);
                break;
            }
            CHECK(res.ids == NULL && res.winner_hist == NULL);
        }
        CHECK(n_ok == 1);
    }
}

int main(void) {
    TEST_RUN(test_validation);
    TEST_RUN(test_pipeline_rules);
    TEST_RUN(test_dream_last_logit);
    TEST_RUN(test_errors_and_oom);
    TEST_RUN(test_golden_fake);
    TEST_RUN(test_golden_fake_fused);
    TEST_RUN(test_golden_tiny);
    return test_report();
}

#endif /* LP_TEST_D2F_LIBRARY */
