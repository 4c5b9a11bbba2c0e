/*
 * test_fast.c - the Fast-dLLM decoder (src/decode/fast.c): token-for-token equality
 * with the PyTorch reference of the same cached algorithm (tests/fixtures/fast/NAME.txt
 * from tools/ref/fast_dllm.py) on a cached fake predictor with controlled confidences
 * and on the tiny fixture models with a real KV cache; `--cache none --rule topk`
 * against the vanilla decoders; the work the cache saves (fed rows, cache ranges,
 * requested logits); early stop; validation and failures.
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
#include "test.h"

/* ======================================================================
 * Shared with test_dpad.c (which includes this file with
 * LP_TEST_FAST_NO_MAIN): the cached fake predictor, a recording engine
 * wrapper, the tiny models and the fixture runner.
 * ====================================================================== */

/* ------------------------------------------------- the cached fake model */

/* The formula of FakeEngine in tools/ref/fast_dllm.py. ctx = sum of the visible
 * cached rows' values + sum over fed tokens of (tok+1)(pos+1); a fed row's value is
 * (tok+1)(pos+1) + (mix64(ctx) >> 61), so a cached row remembers the context it was
 * computed in. Logits: the vanilla fake's hash scaled by a per-row sharpness in
 * {1, 6, 11, 16} (confidences from flat to almost 1); EOS (38) gets +6 from canvas
 * position eos_from on. Exact in f32 on both sides. */
#define TF_V FE_V
#define TF_MAXL 512

struct tf_fake {
    bool shift;
    int eos_from;
    bool mask_low; /* MASK logit -FLT_MAX: the vanilla decoders never propose it either */
    int fail_at, n_forward;
    uint64_t cache[TF_MAXL];
    int cache_len;
    uint64_t last[TF_MAXL];
    int n_last;
};

static enum lopad_status tf_fake_forward(void *ud, const struct lopad_batch *b) {
    struct tf_fake *f = ud;
    f->n_forward++;
    if (f->fail_at && f->n_forward == f->fail_at)
        return lp_error(LOPAD_ERR_IO, "fake forward failure");
    if (b->n_tokens > TF_MAXL || b->n_cache > f->cache_len)
        return lp_error(LOPAD_ERR_ARG, "fake: bad batch");
    uint64_t ctx = 0;
    for (int r = 0; r < b->n_cache; r++)
        if (r < b->cache_skip_begin || r >= b->cache_skip_end) ctx += f->cache[r];
    for (int i = 0; i < b->n_tokens; i++)
        ctx += (uint64_t)(b->tokens[i] + 1) * (uint64_t)(b->pos[i] + 1);
    uint64_t top = lp_mix64(ctx) >> 61;
    for (int i = 0; i < b->n_tokens; i++)
        f->last[i] = (uint64_t)(b->tokens[i] + 1) * (uint64_t)(b->pos[i] + 1) + top;
    f->n_last = b->n_tokens;
    for (int o = 0; o < b->n_out; o++) {
        int p = b->pos[b->out_rows[o]];
        uint64_t base = fe_row_base(ctx, p);
        float sh = (float)(1 + 5 * (int)(lp_mix64(base ^ 0x5851F42D4C957F2Dull) >> 62));
        float *lg = b->logits + (size_t)o * TF_V;
        for (int v = 0; v < TF_V; v++) {
            float x = fe_hash_logit(base, v);
            if (v == FE_EOS && p >= f->eos_from) x = x + 6.0f;
            lg[v] = x * sh;
        }
        if (f->mask_low) lg[FE_MASK] = -FLT_MAX;
    }
    return LOPAD_OK;
}

static enum lopad_status tf_fake_commit(void *ud, int src, int n, int dst) {
    struct tf_fake *f = ud;
    if (src < 0 || n < 0 || src + n > f->n_last || dst < 0 || dst > f->cache_len ||
        dst + n > TF_MAXL)
        return lp_error(LOPAD_ERR_ARG, "fake: bad kv commit");
    for (int i = 0; i < n; i++)
        f->cache[dst + i] = f->last[src + i];
    if (dst + n > f->cache_len) f->cache_len = dst + n;
    return LOPAD_OK;
}

static void tf_fake_truncate(void *ud, int n) {
    struct tf_fake *f = ud;
    if (n < f->cache_len) f->cache_len = n;
}

/* ------------------------------------------------------ the recording spy */

struct tf_call {
    int n_tokens, n_cache, skip_b, skip_e, n_out;
    int first_fed_pos;
    int out_pos_min, out_pos_max;
    int32_t pos[TF_MAXL];
};

struct tf_spy {
    struct fe_wrap w; /* the wrapped engine */
    struct tf_call calls[160];
    int n_calls;
    int n_commits;
    int fail_at;
};

static void tf_spy_record(struct tf_spy *s, const struct lopad_batch *b) {
    if (s->n_calls < 160) {
        struct tf_call *c = &s->calls[s->n_calls];
        c->n_tokens = b->n_tokens;
        c->n_cache = b->n_cache;
        c->skip_b = b->cache_skip_begin;
        c->skip_e = b->cache_skip_end;
        c->n_out = b->n_out;
        c->first_fed_pos = b->pos[0];
        c->out_pos_min = 1 << 30;
        c->out_pos_max = -1;
        for (int o = 0; o < b->n_out; o++) {
            int p = b->pos[b->out_rows[o]];
            c->out_pos_min = p < c->out_pos_min ? p : c->out_pos_min;
            c->out_pos_max = p > c->out_pos_max ? p : c->out_pos_max;
        }
        for (int i = 0; i < b->n_tokens && i < TF_MAXL; i++)
            c->pos[i] = b->pos[i];
    }
    s->n_calls++;
}

static enum lopad_status tf_spy_forward(void *ud, const struct lopad_batch *b) {
    tf_spy_record(ud, b);
    return fe_wrap_forward(ud, b);
}

static enum lopad_status tf_spy_forward_scores(void *ud, const struct lopad_batch *b,
                                               struct lp_row_scores *scores) {
    tf_spy_record(ud, b);
    return fe_wrap_forward_scores(ud, b, scores);
}

static enum lopad_status tf_spy_commit(void *ud, int src, int n, int dst) {
    struct tf_spy *s = ud;
    s->n_commits++;
    return fe_wrap_kv_commit(ud, src, n, dst);
}

/* record the engine's calls (forwards with or without the fused head) in s */
static void tf_spy_wrap(struct lp_engine *e, struct tf_spy *s) {
    memset(s, 0, sizeof *s);
    fe_wrap_install(e, &s->w, tf_spy_forward);
    if (e->kv_commit) e->kv_commit = tf_spy_commit;
    if (e->forward_scores) e->forward_scores = tf_spy_forward_scores;
}

static void tf_fake_engine(struct lp_engine *e, struct tf_fake *f, bool shift) {
    memset(f, 0, sizeof *f);
    f->shift = shift;
    f->eos_from = 1 << 30;
    fe_engine_init(e, f, tf_fake_forward, shift, TF_MAXL);
    e->kv_commit = tf_fake_commit;
    e->kv_truncate = tf_fake_truncate;
}

/* ------------------------------------------------------------ tiny models */

struct tf_tiny {
    lopad_model *m;
    lopad_ctx *c;
    struct lp_engine e;
};

static bool tf_tiny_open(struct tf_tiny *t, const char *name, int n_ctx) {
    memset(t, 0, sizeof *t);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", LOPAD_SOURCE_DIR, name);
    enum lopad_status st = lopad_model_load(dir, NULL, &t->m);
    CHECK_MSG(st == LOPAD_OK, "load %s: %s", dir, lopad_errmsg());
    if (st != LOPAD_OK) return false;
    struct lopad_ctx_params cp = {.n_ctx = n_ctx, .n_batch_max = n_ctx, .n_threads = 1};
    st = lopad_ctx_new(t->m, &cp, &t->c);
    CHECK_MSG(st == LOPAD_OK, "ctx: %s", lopad_errmsg());
    if (st != LOPAD_OK) {
        lopad_model_free(t->m);
        return false;
    }
    lp_engine_from_ctx(&t->e, t->m, t->c, n_ctx, n_ctx);
    /* the reference's special ids (tools/ref/fast_dllm.py TinyEngine) */
    t->e.hp.eot_id = t->e.hp.arch == LOPAD_ARCH_LLADA ? 269 : 266;
    return true;
}

static void tf_tiny_close(struct tf_tiny *t) {
    lopad_ctx_free(t->c);
    lopad_model_free(t->m);
}

/* --------------------------------------------------------------- fixtures */

struct tf_fixture {
    char model[64];
    int eos_from;
    int32_t prompt[64];
    int n_prompt;
    struct lp_decode_request rq;
    int nfe, n_decoded, max_commits;
    int32_t canvas[TF_MAXL];
    int n_canvas;
    int32_t kept[64][TF_MAXL / 4]; /* per block */
    int n_kept[64];
    int n_kept_blocks;
};

static int tf_parse_list(const char *s, int32_t *out, int cap) {
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

static bool tf_load_fixture(const char *path, struct tf_fixture *fx) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    memset(fx, 0, sizeof *fx);
    lp_decode_request_init(&fx->rq, LP_DEC_FAST, 32);
    static char line[16384];
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
        else if (!strcmp(k, "prompt"))
            fx->n_prompt = tf_parse_list(v, fx->prompt, 64);
        else if (!strcmp(k, "gen"))
            rq->gen_len = atoi(v);
        else if (!strcmp(k, "block"))
            rq->block_len = atoi(v);
        else if (!strcmp(k, "steps"))
            rq->steps = atoi(v);
        else if (!strcmp(k, "cache"))
            lp_cache_mode_parse(v, &rq->cache);
        else if (!strcmp(k, "rule"))
            lp_commit_rule_parse(v, &rq->rule);
        else if (!strcmp(k, "threshold"))
            rq->threshold = strtod(v, NULL);
        else if (!strcmp(k, "factor"))
            rq->factor = strtod(v, NULL);
        else if (!strcmp(k, "confidence"))
            lp_confidence_parse(v, &rq->confidence);
        else if (!strcmp(k, "early_stop"))
            rq->early_stop = atoi(v);
        else if (!strcmp(k, "first_token"))
            rq->dream_first_token_commit = atoi(v);
        else if (!strcmp(k, "temperature"))
            rq->temperature = strtod(v, NULL);
        else if (!strcmp(k, "top_p"))
            rq->top_p = strtod(v, NULL);
        else if (!strcmp(k, "top_k"))
            rq->top_k = atoi(v);
        else if (!strcmp(k, "eps"))
            rq->eps = strtod(v, NULL);
        else if (!strcmp(k, "logits_eos_inf"))
            rq->logits_eos_inf = atoi(v);
        else if (!strcmp(k, "seed"))
            rq->seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "via_llada"))
            rq->decoder = atoi(v) ? LP_DEC_LLADA : LP_DEC_FAST;
        else if (!strcmp(k, "dpad"))
            rq->dpad = atoi(v);
        else if (!strcmp(k, "dpad_window"))
            rq->dpad_window = atoi(v);
        else if (!strcmp(k, "dpad_sigma"))
            rq->dpad_sigma = strtod(v, NULL);
        else if (!strcmp(k, "dpad_scale"))
            rq->dpad_scale = strtod(v, NULL);
        else if (!strcmp(k, "nfe"))
            fx->nfe = atoi(v);
        else if (!strcmp(k, "n_decoded"))
            fx->n_decoded = atoi(v);
        else if (!strcmp(k, "max_commits"))
            fx->max_commits = atoi(v);
        else if (!strcmp(k, "canvas"))
            fx->n_canvas = tf_parse_list(v, fx->canvas, TF_MAXL);
        else if (!strcmp(k, "kept")) {
            char *save = NULL;
            for (char *tok = strtok_r(sp + 1, "|", &save); tok && fx->n_kept_blocks < 64;
                 tok = strtok_r(NULL, "|", &save)) {
                fx->n_kept[fx->n_kept_blocks] =
                    tf_parse_list(tok, fx->kept[fx->n_kept_blocks], TF_MAXL / 4);
                fx->n_kept_blocks++;
            }
        }
    }
    fclose(f);
    fx->rq.prompt = fx->prompt;
    fx->rq.n_prompt = fx->n_prompt;
    return fx->n_canvas > 0;
}

static int tf_max_commit_cb(void *ud, const struct lp_step_event *ev) {
    int *mc = ud;
    if (ev->n_committed > *mc) *mc = ev->n_committed;
    return 0;
}

/* 1: fake fixtures run with the fused head emulated from the fake's logits, 2: and its
 * scores jittered by 0.9x the decoders' tolerance (fake_engine.h); fused forwards and
 * steps that took their logits are counted */
static int tf_fused_mode, tf_fused_fwd, tf_fused_logits;

/* Run a fixture through the fake or a tiny model; 0 when it equals the reference.
 * With spy != NULL the engine calls are recorded there. */
static int tf_run_fixture_spy(const char *path, const char *name, int *max_commits,
                              struct tf_fixture *fx, struct tf_spy *spy) {
    CHECK_MSG(tf_load_fixture(path, fx), "%s readable", name);
    if (fx->n_canvas == 0) return 1;
    struct lp_engine e;
    struct tf_fake fk;
    struct tf_tiny t;
    bool tiny = !strncmp(fx->model, "tiny-", 5);
    if (tiny) {
        if (!tf_tiny_open(&t, fx->model, fx->n_canvas)) return 1;
        e = t.e;
    } else {
        tf_fake_engine(&e, &fk, !strcmp(fx->model, "fake-dream"));
        fk.eos_from = fx->eos_from;
    }
    static struct fe_fused ff; /* tf_fused_mode: the fused head emulated on the fake */
    bool fused = !tiny && tf_fused_mode > 0;
    if (fused && !fe_fused_install(&e, &ff, tf_fused_mode == 2)) return 1;
    tf_spy_wrap(&e, spy);
    struct lp_decode_result res;
    *max_commits = 0;
    enum lopad_status st = lp_decode_run(&e, &fx->rq, tf_max_commit_cb, max_commits, &res);
    CHECK_MSG(st == LOPAD_OK, "%s: %s", name, lopad_errmsg());
    int bad = 1;
    if (st == LOPAD_OK) {
        bad = res.n_canvas != fx->n_canvas;
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
        CHECK_MSG(res.n_committed == fx->n_decoded, "%s: decoded %d vs %d", name, res.n_committed,
                  fx->n_decoded);
        CHECK_MSG(*max_commits == fx->max_commits, "%s: most commits per step %d vs %d", name,
                  *max_commits, fx->max_commits);
        bad |= res.nfe != fx->nfe || res.n_committed != fx->n_decoded;
        lp_decode_result_free(&res);
    }
    if (tiny) tf_tiny_close(&t);
    if (fused) {
        tf_fused_fwd += ff.n_scores;
        tf_fused_logits += ff.n_last;
        fe_fused_free(&ff);
    }
    return bad;
}

static struct tf_spy tf_spy_buf;
static struct tf_fixture tf_fx_buf;

static int tf_run_fixture(const char *path, const char *name, int *max_commits) {
    return tf_run_fixture_spy(path, name, max_commits, &tf_fx_buf, &tf_spy_buf);
}

/* every fixture in dir whose name starts with prefix */
static int tf_for_each_fixture(const char *dirpath, const char *prefix,
                               void (*fn)(const char *name, const char *path)) {
    DIR *dir = opendir(dirpath);
    if (!dir) return -1;
    struct dirent *de;
    static char names[128][256];
    int n = 0;
    while ((de = readdir(dir)) && n < 128)
        if (!strncmp(de->d_name, prefix, strlen(prefix)) && strstr(de->d_name, ".txt"))
            snprintf(names[n++], 256, "%s", de->d_name);
    closedir(dir);
    for (int i = 0; i < n; i++) {
        char path[1024];
        if (snprintf(path, sizeof path, "%s/%s", dirpath, names[i]) >= (int)sizeof path) continue;
        fn(names[i], path);
    }
    return n;
}

#define FIX_DIR LOPAD_SOURCE_DIR "/tests/fixtures/fast"

static int n_fake_cases, n_tiny_cases, max_commits_seen;

static void golden_case(const char *name, const char *path) {
    int mc = 0;
    int bad = tf_run_fixture(path, name, &mc);
    if (!strncmp(name, "fake-", 5))
        n_fake_cases++;
    else
        n_tiny_cases++;
    if (mc > max_commits_seen) max_commits_seen = mc;
    fprintf(stderr, "  %-40s %s\n", name, bad ? "DIFFERS" : "ok");
}

static void test_golden(void) {
    int n = tf_for_each_fixture(FIX_DIR, "", golden_case);
    CHECK_MSG(n >= 40, "found %d fixtures in %s", n, FIX_DIR);
    CHECK(n_fake_cases >= 30 && n_tiny_cases >= 10);
    /* the fake's confidences make threshold / factor commit several tokens per step */
    CHECK_MSG(max_commits_seen >= 4, "most commits in one step: %d", max_commits_seen);
}

/* the fake fixtures through the decoders' fused-scores path: still the reference */
static void fused_golden_case(const char *name, const char *path) {
    if (strncmp(name, "fake-", 5)) return;
    for (tf_fused_mode = 1; tf_fused_mode <= 2; tf_fused_mode++) {
        int mc = 0;
        int bad = tf_run_fixture(path, name, &mc);
        fprintf(stderr, "  %-40s %s (fused%s)\n", name, bad ? "DIFFERS" : "ok",
                tf_fused_mode == 2 ? ", jittered" : "");
    }
    tf_fused_mode = 0;
}

static void test_golden_fused(void) {
    tf_fused_fwd = tf_fused_logits = 0;
    CHECK(tf_for_each_fixture(FIX_DIR, "fake-", fused_golden_case) >= 30);
    CHECK_MSG(tf_fused_fwd > 0 && 2 * tf_fused_logits < tf_fused_fwd,
              "fused forwards %d, took logits %d", tf_fused_fwd, tf_fused_logits);
    fprintf(stderr, "  fused forwards %d, %d took logits\n", tf_fused_fwd, tf_fused_logits);
}

/* ------------------------------------------------- equal to the vanilla decoders */

static int32_t prompt5[5] = {5, 17, 2, 30, 11};

static void run_req(const struct lp_engine *e, const struct lp_decode_request *rq,
                    struct lp_decode_result *res) {
    enum lopad_status st = lp_decode_run(e, rq, NULL, NULL, res);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
}

static void same_canvas(const struct lp_decode_result *a, const struct lp_decode_result *b,
                        const char *what) {
    int bad = a->n_canvas != b->n_canvas;
    for (int i = 0; !bad && i < a->n_canvas; i++)
        bad |= a->canvas[i] != b->canvas[i];
    CHECK_MSG(!bad, "%s: canvases differ", what);
    CHECK_MSG(a->nfe == b->nfe, "%s: nfe %d vs %d", what, a->nfe, b->nfe);
}

/* run both requests on e: same canvas, same NFE */
static void same_run(const struct lp_engine *e, const struct lp_decode_request *a,
                     const struct lp_decode_request *b, const char *what) {
    struct lp_decode_result ra, rb;
    run_req(e, a, &ra);
    run_req(e, b, &rb);
    same_canvas(&ra, &rb, what);
    lp_decode_result_free(&ra);
    lp_decode_result_free(&rb);
}

static void vanilla_pair(const struct lp_engine *e, bool dream, int gen, int block, int steps,
                         double temp, const int32_t *prompt, int n_prompt, const char *what) {
    struct lp_decode_request v, f;
    lp_decode_request_init(&v, dream ? LP_DEC_DREAM : LP_DEC_LLADA, gen);
    v.prompt = prompt;
    v.n_prompt = n_prompt;
    v.steps = steps;
    v.block_len = block;
    v.temperature = temp;
    f = v;
    f.decoder = LP_DEC_FAST;
    f.cache = LP_CACHE_NONE;
    f.rule = LP_RULE_TOPK;
    f.early_stop = false;
    same_run(e, &v, &f, what);
}

static void test_topk_none_is_vanilla(void) {
    struct lp_engine e;
    struct tf_fake fk;
    /* LLaDA: several blocks and schedules (k_i = 0 steps skipped alike), sampling */
    tf_fake_engine(&e, &fk, false);
    fk.mask_low = true;
    vanilla_pair(&e, false, 32, 8, 32, 0, prompt5, 5, "fake llada 32/8/32");
    vanilla_pair(&e, false, 32, 8, 8, 0, prompt5, 5, "fake llada 32/8/8");
    vanilla_pair(&e, false, 24, 8, 48, 0, prompt5, 5, "fake llada 24/8/48 (k_i = 0 steps)");
    vanilla_pair(&e, false, 32, 8, 16, 0.7, prompt5, 5, "fake llada T 0.7");
    /* Dream: one block = the whole-canvas vanilla decoder */
    tf_fake_engine(&e, &fk, true);
    fk.mask_low = true;
    vanilla_pair(&e, true, 32, 32, 32, 0, prompt5, 5, "fake dream 32/32");
    vanilla_pair(&e, true, 32, 32, 10, 0, prompt5, 5, "fake dream 32 steps 10");
    vanilla_pair(&e, true, 24, 24, 24, 0.9, prompt5, 5, "fake dream T 0.9");

    /* the tiny models through the real engine */
    for (int fam = 0; fam < 2; fam++) {
        struct tf_tiny t;
        if (!tf_tiny_open(&t, fam ? "tiny-dream" : "tiny-llada", 64)) continue;
        int32_t pr[6] = {17, 200, 3, 45, 99, 120};
        if (fam == 0) {
            vanilla_pair(&t.e, false, 16, 4, 16, 0, pr, 6, "tiny llada 16/4/16");
            vanilla_pair(&t.e, false, 16, 8, 8, 0, pr, 6, "tiny llada 16/8/8");
        } else {
            vanilla_pair(&t.e, true, 16, 16, 16, 0, pr, 6, "tiny dream 16/16");
            vanilla_pair(&t.e, true, 16, 16, 6, 0, pr, 6, "tiny dream 16 steps 6");
        }
        tf_tiny_close(&t);
    }
}

/* `dream --dpad` is Dream by blocks on this decoder (DPad's Dream _sample): with keep = 1
 * everywhere and one step per position it equals `fast --cache none --rule topk` with
 * --alg's confidence, token for token (both skip grid step 0, whose count is 0) */
static void dream_dpad_pair(const struct lp_engine *e, int gen, int block, enum lp_dream_alg alg,
                            enum lp_confidence conf, const int32_t *prompt, int n_prompt,
                            const char *what) {
    struct lp_decode_request v, f;
    lp_decode_request_init(&v, LP_DEC_DREAM, gen);
    v.prompt = prompt;
    v.n_prompt = n_prompt;
    v.steps = gen;
    v.block_len = block;
    v.alg = alg;
    v.early_stop = false;
    v.dpad = true;
    v.dpad_window = 256; /* >= the suffix, and a scale that keeps every position */
    v.dpad_scale = 100.0;
    f = v;
    f.decoder = LP_DEC_FAST;
    f.dpad = false;
    f.cache = LP_CACHE_NONE;
    f.rule = LP_RULE_TOPK;
    f.confidence = conf;
    same_run(e, &v, &f, what);
}

static void test_dream_dpad_is_dream_by_blocks(void) {
    struct lp_engine e;
    struct tf_fake fk;
    tf_fake_engine(&e, &fk, true);
    fk.mask_low = true;
    dream_dpad_pair(&e, 32, 8, LP_ALG_ENTROPY, LP_CONF_NEGENT, prompt5, 5, "fake entropy");
    dream_dpad_pair(&e, 32, 8, LP_ALG_MASKGIT_PLUS, LP_CONF_PMAX, prompt5, 5, "fake maskgit");
    dream_dpad_pair(&e, 32, 16, LP_ALG_TOPK_MARGIN, LP_CONF_MARGIN, prompt5, 5, "fake margin");
    /* fewer steps than positions: the reference's grid steps i = 1 .. S-1 per block
     * (docs/research/dpad_fastdllm.md 5.5), S = 4 here: counts int(8 (1 - t2/t1)) = 2,
     * int(6 (1 - t3/t2)) = 2, then the remaining 4: 3 forwards per block, where Fast-dLLM's
     * Dream grid (from i = 0: 1, 1, 2, 4) takes 4 */
    {
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_DREAM, 32);
        rq.prompt = prompt5;
        rq.n_prompt = 5;
        rq.steps = 16;
        rq.block_len = 8;
        rq.early_stop = false;
        rq.dpad = true;
        rq.dpad_window = 256;
        rq.dpad_scale = 100.0;
        struct lp_decode_result r;
        run_req(&e, &rq, &r);
        CHECK_MSG(r.nfe == 12, "dream --dpad, 4 steps per block of 8: nfe %d, want 12", r.nfe);
        lp_decode_result_free(&r);
        rq.decoder = LP_DEC_FAST;
        rq.dpad = false;
        rq.cache = LP_CACHE_NONE;
        rq.rule = LP_RULE_TOPK;
        run_req(&e, &rq, &r);
        CHECK_MSG(r.nfe == 16, "fast topk, 4 steps per block of 8: nfe %d, want 16", r.nfe);
        lp_decode_result_free(&r);
    }
    struct tf_tiny t;
    if (tf_tiny_open(&t, "tiny-dream", 64)) {
        int32_t pr[6] = {17, 200, 3, 45, 99, 120};
        dream_dpad_pair(&t.e, 16, 4, LP_ALG_ENTROPY, LP_CONF_NEGENT, pr, 6, "tiny entropy");
        /* with real dropout it still runs and decodes every position */
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_DREAM, 32);
        rq.prompt = pr;
        rq.n_prompt = 6;
        rq.block_len = 8;
        rq.dpad = true;
        rq.dpad_window = 8;
        rq.early_stop = false;
        struct lp_decode_result res;
        run_req(&t.e, &rq, &res);
        int masked = 0;
        for (int i = 0; i < res.n_canvas; i++)
            masked += res.canvas[i] == t.e.hp.mask_id;
        CHECK_MSG(masked == 0, "dream --dpad left %d masked positions", masked);
        lp_decode_result_free(&res);
        /* --alg origin has no ranking */
        rq.alg = LP_ALG_ORIGIN;
        CHECK(lp_decode_run(&t.e, &rq, NULL, NULL, &res) == LOPAD_ERR_ARG);
        CHECK(strstr(lopad_errmsg(), "origin") != NULL);
        tf_tiny_close(&t);
    }
}

/* ------------------------------------------------------ the cache saves work */

static void test_cache_feeds(void) {
    static struct tf_spy spy;
    for (int mode = 0; mode < 3; mode++)
        for (int dream = 0; dream < 2; dream++) {
            struct lp_engine e;
            struct tf_fake fk;
            tf_fake_engine(&e, &fk, dream);
            tf_spy_wrap(&e, &spy);
            struct lp_decode_request rq;
            lp_decode_request_init(&rq, LP_DEC_FAST, 32);
            rq.prompt = prompt5;
            rq.n_prompt = 5;
            rq.block_len = 8;
            rq.cache = (enum lp_cache_mode)mode;
            rq.early_stop = false;
            struct lp_decode_result res;
            run_req(&e, &rq, &res);
            const int P = 5, L = 37, B = 8;
            int bad = 0, refreshes = 0;
            for (int c = 0; c < spy.n_calls; c++) {
                const struct tf_call *cl = &spy.calls[c];
                bool full = cl->n_cache == 0;
                refreshes += full;
                int sb = full ? -1 : cl->first_fed_pos;
                if (full) {
                    /* refresh (or cache none): the whole canvas at positions 0..L-1 */
                    if (cl->n_tokens != L || cl->first_fed_pos != 0) bad |= 1;
                    for (int i = 0; i < cl->n_tokens; i++)
                        if (cl->pos[i] != i) bad |= 1;
                } else if (mode == 1) {
                    /* prefix: block + suffix over the cached prefix [0, sb) */
                    if ((sb - P) % B || cl->n_tokens != L - sb || cl->n_cache != sb ||
                        cl->skip_b != cl->skip_e)
                        bad |= 2;
                } else if (mode == 2) {
                    /* dual: the block alone, its cached rows hidden */
                    if ((sb - P) % B || cl->n_tokens != B || cl->n_cache != L || cl->skip_b != sb ||
                        cl->skip_e != sb + B)
                        bad |= 4;
                } else {
                    bad |= 8; /* cache none never reads the cache */
                }
                /* logits only for the block's masked positions (+ the last-logit row) */
                if (cl->n_out < 1 || cl->n_out > B + 1) bad |= 16;
                if (!full && (cl->out_pos_min < sb - (dream ? 0 : 0) || cl->out_pos_max >= sb + B))
                    bad |= 32;
            }
            CHECK_MSG(!bad, "mode %d dream %d: feed check bits %d", mode, dream, bad);
            CHECK(res.nfe == spy.n_calls);
            CHECK(mode == 0 || refreshes == (L - P) / B);
            CHECK(mode == 0 ? spy.n_commits == 0 : spy.n_commits == (L - P) / B);
            CHECK(res.n_committed == 32);
            lp_decode_result_free(&res);
        }
}

/* ------------------------------------------------------------ early stop */

static void test_early_stop(void) {
    for (int mode = 0; mode < 3; mode++)
        for (int dream = 0; dream < 2; dream++) {
            struct lp_engine e;
            struct tf_fake fk;
            tf_fake_engine(&e, &fk, dream);
            fk.eos_from = 5 + 12; /* EOS strongly predicted from generated position 12 */
            struct lp_decode_request rq;
            lp_decode_request_init(&rq, LP_DEC_FAST, 64);
            rq.prompt = prompt5;
            rq.n_prompt = 5;
            rq.block_len = 8;
            rq.cache = (enum lp_cache_mode)mode;
            struct lp_decode_result on, off;
            run_req(&e, &rq, &on);
            rq.early_stop = false;
            tf_fake_engine(&e, &fk, dream);
            fk.eos_from = 5 + 12;
            run_req(&e, &rq, &off);
            /* the first finished block holding EOS in the run without early stop */
            int cut = -1;
            for (int b = 0; b < 8 && cut < 0; b++)
                for (int j = 5 + 8 * b; j < 5 + 8 * (b + 1); j++)
                    if (off.canvas[j] == 38) cut = 5 + 8 * (b + 1);
            CHECK(cut > 0 && cut < 69);
            int bad = 0;
            for (int j = 0; j < 69; j++)
                bad |= j < cut ? on.canvas[j] != off.canvas[j] : on.canvas[j] != 38;
            CHECK_MSG(!bad, "mode %d dream %d: early stop cuts at %d", mode, dream, cut);
            CHECK(on.nfe < off.nfe);
            CHECK(on.n_committed == cut - 5); /* the fill is not counted as decoded */
            lp_decode_result_free(&on);
            lp_decode_result_free(&off);
        }
}

/* ------------------------------------------------------------ validation */

static void expect_bad(const struct lp_engine *e, const struct lp_decode_request *rq,
                       const char *needle) {
    struct lp_decode_result res;
    enum lopad_status st = lp_decode_run(e, rq, NULL, NULL, &res);
    CHECK_MSG(st == LOPAD_ERR_ARG, "expected an error mentioning '%s'", needle);
    CHECK_MSG(strstr(lopad_errmsg(), needle) != NULL, "message '%s' lacks '%s'", lopad_errmsg(),
              needle);
}

static void test_validation(void) {
    struct lp_engine e;
    struct tf_fake fk;
    tf_fake_engine(&e, &fk, false);
    struct lp_decode_request rq, r;
    lp_decode_request_init(&rq, LP_DEC_FAST, 32);
    CHECK(rq.block_len == 32 && rq.cache == LP_CACHE_PREFIX && rq.rule == LP_RULE_THRESHOLD);
    CHECK(rq.threshold == 0.9 && rq.factor == 1.0 && rq.early_stop && !rq.dpad);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    r = rq, r.threshold = 0;
    expect_bad(&e, &r, "--threshold");
    r = rq, r.threshold = 1.5;
    expect_bad(&e, &r, "--threshold");
    r = rq, r.rule = LP_RULE_FACTOR, r.factor = -1;
    expect_bad(&e, &r, "--factor");
    r = rq, r.rule = LP_RULE_TOPK, r.block_len = 8, r.steps = 6;
    expect_bad(&e, &r, "--steps");
    r = rq, r.block_len = 5;
    expect_bad(&e, &r, "--block");
    r = rq, r.dream_first_token_commit = true;
    expect_bad(&e, &r, "--dream-first-token-commit");
    r = rq, r.cfg_scale = 1;
    expect_bad(&e, &r, "--cfg-scale");
    r = rq, r.top_p = 0.5;
    expect_bad(&e, &r, "--top-p");
    r = rq, r.confidence = (enum lp_confidence)9;
    expect_bad(&e, &r, "confidence");
    /* a cache needs an engine with kv operations */
    struct lp_engine nokv = e;
    nokv.kv_commit = NULL;
    r = rq;
    expect_bad(&nokv, &r, "KV cache");
    r.cache = LP_CACHE_NONE;
    struct lp_decode_result res;
    CHECK(lp_decode_run(&nokv, &r, NULL, NULL, &res) == LOPAD_OK);
    lp_decode_result_free(&res);
    /* names */
    enum lp_cache_mode cm;
    enum lp_commit_rule cr;
    enum lp_confidence cc;
    CHECK(lp_cache_mode_parse("dual", &cm) == LOPAD_OK && cm == LP_CACHE_DUAL);
    CHECK(lp_cache_mode_parse("full", &cm) == LOPAD_ERR_ARG);
    CHECK(lp_commit_rule_parse("factor", &cr) == LOPAD_OK && cr == LP_RULE_FACTOR);
    CHECK(lp_commit_rule_parse("x", &cr) == LOPAD_ERR_ARG);
    CHECK(lp_confidence_parse("negent", &cc) == LOPAD_OK && cc == LP_CONF_NEGENT);
    CHECK(lp_confidence_parse("entropy", &cc) == LOPAD_ERR_ARG);
    CHECK(!strcmp(lp_cache_mode_name(LP_CACHE_PREFIX), "prefix"));
    CHECK(!strcmp(lp_commit_rule_name(LP_RULE_TOPK), "topk"));
    enum lp_decoder_kind k;
    CHECK(lp_decoder_parse("fast", &k) == LOPAD_OK && k == LP_DEC_FAST);
}

/* --------------------------------------------------------- robustness */

static void test_errors_and_oom(void) {
    for (int mode = 0; mode < 3; mode++) {
        struct lp_engine e;
        struct tf_fake fk;
        struct lp_decode_request rq;
        lp_decode_request_init(&rq, LP_DEC_FAST, 16);
        rq.prompt = prompt5;
        rq.n_prompt = 5;
        rq.block_len = 8;
        rq.cache = (enum lp_cache_mode)mode;
        rq.dpad = mode == 2;
        struct lp_decode_result res;
        tf_fake_engine(&e, &fk, mode == 1);
        fk.fail_at = 3;
        CHECK(lp_decode_run(&e, &rq, NULL, NULL, &res) == LOPAD_ERR_IO);
        CHECK(res.ids == NULL && res.canvas == NULL);
        int n_ok = 0;
        for (long n = 0; n < 100; n++) {
            tf_fake_engine(&e, &fk, mode == 1);
            lp_alloc_fail_after(n);
            enum lopad_status st = lp_decode_run(&e, &rq, NULL, NULL, &res);
            lp_alloc_fail_after(-1);
            CHECK(st == LOPAD_OK || st == LOPAD_ERR_NOMEM);
            if (st == LOPAD_OK) {
                n_ok++;
                lp_decode_result_free(&res);
                break;
            }
        }
        CHECK(n_ok == 1);
    }
}

/* stepping reports one forward per step, committed positions inside the block */
static void test_events(void) {
    struct lp_engine e;
    struct tf_fake fk;
    tf_fake_engine(&e, &fk, true);
    struct lp_decode_request rq;
    lp_decode_request_init(&rq, LP_DEC_FAST, 32);
    rq.prompt = prompt5;
    rq.n_prompt = 5;
    rq.block_len = 8;
    rq.cache = LP_CACHE_DUAL;
    rq.early_stop = false;
    lp_decoder *d;
    CHECK(lp_decode_start(&e, &rq, &d) == LOPAD_OK);
    int steps = 0, total = 0, bad = 0, final_prev = 0;
    while (!lp_decode_done(d) && steps < 100) {
        struct lp_step_event ev;
        CHECK(lp_decode_step(d, &ev) == LOPAD_OK);
        steps++;
        if (ev.nfe > steps) bad |= 1; /* a step may run no forward (last logit only) */
        int blk = (ev.committed[0] - 5) / 8;
        for (int c = 0; c < ev.n_committed; c++)
            if ((ev.committed[c] - 5) / 8 != blk) bad |= 2;
        if (ev.final_prefix < final_prev) bad |= 4;
        final_prev = ev.final_prefix;
        total += ev.n_committed;
        /* no planned step count; progress = decided positions */
        if (ev.n_steps != -1 || ev.n_masked != 32 - total) bad |= 8;
    }
    CHECK_MSG(!bad, "event bits %d", bad);
    CHECK(total == 32 && lp_decode_done(d));
    lp_decode_free(d);
}

#ifndef LP_TEST_FAST_NO_MAIN
int main(void) {
    TEST_RUN(test_validation);
    TEST_RUN(test_cache_feeds);
    TEST_RUN(test_early_stop);
    TEST_RUN(test_events);
    TEST_RUN(test_errors_and_oom);
    TEST_RUN(test_topk_none_is_vanilla);
    TEST_RUN(test_dream_dpad_is_dream_by_blocks);
    TEST_RUN(test_golden);
    TEST_RUN(test_golden_fused);
    return test_report();
}
#endif
