/*
 * test_harden_load.c - weights that are NaN or inf are refused at load, with an
 * error naming the tensor: F32 / F16 / BF16 values and the f16 scales of the
 * quantised types, in GGUF files and Hugging Face directories. The fixtures are
 * copied under LOPAD_BINARY_DIR and one value is overwritten in the copy.
 */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/common.h"
#include "core/types.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model.h"

#define FIX LOPAD_SOURCE_DIR "/tests/fixtures"
#define TMP LOPAD_BINARY_DIR "/test_tmp_harden_load"

static bool msg_has(const char *s) {
    return strstr(lopad_errmsg(), s) != NULL;
}

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) {
        perror(in ? to : from);
        exit(2);
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
}

static void patch(const char *path, uint64_t off, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    if (!f || fseek(f, (long)off, SEEK_SET) || fwrite(bytes, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* Copy a GGUF fixture to `dst` and write `n` bytes at byte `at` of tensor `name`. */
static void gguf_patched(const char *src, const char *dst, const char *name, uint64_t at,
                         const void *bytes, size_t n) {
    struct lp_gguf *g;
    if (lp_gguf_open(src, &g)) {
        fprintf(stderr, "%s\n", lopad_errmsg());
        exit(2);
    }
    int64_t i = 0;
    while (i < lp_gguf_n_tensors(g) && strcmp(lp_gguf_tensors(g)[i].name, name))
        i++;
    CHECK(i < lp_gguf_n_tensors(g));
    uint64_t off = lp_gguf_data_offset(g) + lp_gguf_tensor_offset(g, i) + at;
    lp_gguf_close(g);
    copy_file(src, dst);
    patch(dst, off, bytes, n);
}

static void expect_refused(const char *path, const char *tensor) {
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(path, NULL, &m);
    CHECK_MSG(st == LOPAD_ERR_FORMAT, "%s: status %d (%s)", path, st, lopad_errmsg());
    CHECK_MSG(msg_has(tensor) && msg_has("non-finite"), "%s: '%s' lacks '%s'", path, lopad_errmsg(),
              tensor);
    CHECK(m == NULL);
    lopad_model_free(m);
}

static void expect_loads(const char *path) {
    lopad_model *m = NULL;
    CHECK_MSG(lopad_model_load(path, NULL, &m) == LOPAD_OK, "%s: %s", path, lopad_errmsg());
    lopad_model_free(m);
}

/* the scanner itself: every type, at chunk edges, finite extremes pass */
static void test_find_nonfinite(void) {
    enum { N = 3 * 4096 + 5 };
    float *f = malloc(sizeof(float) * N);
    uint16_t *h = malloc(2 * N), *b = malloc(2 * N);
    for (int i = 0; i < N; i++)
        f[i] = (i % 3 ? -1 : 1) * (i % 7 ? 3.4e38f : 1e-45f); /* max and subnormal */
    for (int i = 0; i < N; i++) {
        h[i] = i % 2 ? 0x7bff : 0x8001; /* 65504 and a negative subnormal */
        b[i] = i % 2 ? 0x7f7f : 0x8000; /* bf16 max and -0 */
    }
    CHECK(lp_find_nonfinite(LOPAD_TYPE_F32, f, N) == -1);
    CHECK(lp_find_nonfinite(LOPAD_TYPE_F16, h, N) == -1);
    CHECK(lp_find_nonfinite(LOPAD_TYPE_BF16, b, N) == -1);
    const int at[] = {0, 4095, 4096, 8191, N - 1};
    for (unsigned k = 0; k < sizeof at / sizeof at[0]; k++) {
        int i = at[k];
        float keep = f[i];
        f[i] = k % 2 ? -INFINITY : NAN;
        CHECK_MSG(lp_find_nonfinite(LOPAD_TYPE_F32, f, N) == i, "f32 at %d", i);
        f[i] = keep;
        h[i] = k % 2 ? 0xfc00 : 0x7e01; /* -inf, NaN */
        CHECK_MSG(lp_find_nonfinite(LOPAD_TYPE_F16, h, N) == i, "f16 at %d", i);
        h[i] = 0;
        b[i] = k % 2 ? 0x7f80 : 0xffc1; /* inf, NaN */
        CHECK_MSG(lp_find_nonfinite(LOPAD_TYPE_BF16, b, N) == i, "bf16 at %d", i);
        b[i] = 0;
    }
    /* quantised: the scales, never the quants (any byte is a legal quant) */
    lp_block_q8_0 q8[40];
    memset(q8, 0xff, sizeof q8);
    for (int i = 0; i < 40; i++)
        q8[i].d = 0x3c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q8_0, q8, 40 * LP_QK8_0) == -1);
    q8[37].d = 0x7c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q8_0, q8, 40 * LP_QK8_0) == 37 * LP_QK8_0);
    lp_block_q4_0 q4[9];
    memset(q4, 0xff, sizeof q4);
    for (int i = 0; i < 9; i++)
        q4[i].d = 0x3c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q4_0, q4, 9 * LP_QK4_0) == -1);
    q4[8].d = 0xfe00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q4_0, q4, 9 * LP_QK4_0) == 8 * LP_QK4_0);
    lp_block_q4_K k4[3];
    memset(k4, 0xff, sizeof k4);
    for (int i = 0; i < 3; i++)
        k4[i].d = k4[i].dmin = 0x3c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q4_K, k4, 3 * LP_QK_K) == -1);
    k4[2].dmin = 0x7c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q4_K, k4, 3 * LP_QK_K) == 2 * LP_QK_K);
    k4[2].dmin = 0;
    k4[1].d = 0x7d00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q4_K, k4, 3 * LP_QK_K) == LP_QK_K);
    lp_block_q6_K k6[3];
    memset(k6, 0xff, sizeof k6);
    for (int i = 0; i < 3; i++)
        k6[i].d = 0x3c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q6_K, k6, 3 * LP_QK_K) == -1);
    k6[1].d = 0x7c00;
    CHECK(lp_find_nonfinite(LOPAD_TYPE_Q6_K, k6, 3 * LP_QK_K) == LP_QK_K);
    free(f);
    free(h);
    free(b);
}

static void test_gguf_values(void) {
    const float nan = NAN, inf = INFINITY;
    /* F32 matrix, F32 norm */
    gguf_patched(FIX "/tiny-dream.gguf", TMP "/f32_nan.gguf", "blk.1.attn_k.weight", 4 * 100, &nan,
                 4);
    expect_refused(TMP "/f32_nan.gguf", "blk.1.attn_k.weight");
    gguf_patched(FIX "/tiny-dream.gguf", TMP "/f32_norm.gguf", "output_norm.weight", 4 * 63, &inf,
                 4);
    expect_refused(TMP "/f32_norm.gguf", "output_norm.weight");
    gguf_patched(FIX "/tiny-dream.gguf", TMP "/f32_bias.gguf", "blk.0.attn_v.bias", 0, &inf, 4);
    expect_refused(TMP "/f32_bias.gguf", "blk.0.attn_v.bias");
    /* BF16: the embedding's last element */
    const uint16_t bf_inf = 0xff80;
    gguf_patched(FIX "/tiny-dream-bf16.gguf", TMP "/bf16_inf.gguf", "token_embd.weight",
                 2 * (272 * 64 - 1), &bf_inf, 2);
    expect_refused(TMP "/bf16_inf.gguf", "token_embd.weight");
    /* Q8_0: the scale of the third block of a matrix */
    const uint16_t h_nan = 0x7e00;
    gguf_patched(FIX "/tiny-dream-q8_0.gguf", TMP "/q8_scale.gguf", "blk.0.ffn_down.weight",
                 2 * sizeof(lp_block_q8_0), &h_nan, 2);
    expect_refused(TMP "/q8_scale.gguf", "blk.0.ffn_down.weight");
    /* a quant byte is never refused: any value is a legal quant */
    const uint8_t q = 0xff;
    gguf_patched(FIX "/tiny-dream-q8_0.gguf", TMP "/q8_quant.gguf", "blk.0.ffn_down.weight", 2, &q,
                 1);
    expect_loads(TMP "/q8_quant.gguf");
    expect_loads(FIX "/tiny-dream.gguf");
}

/* a Hugging Face directory: one BF16 value of a q projection becomes NaN */
static void test_hf_values(void) {
    const char *dir = TMP "/hf";
    mkdir(dir, 0755);
    const char *files[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                           "model.safetensors"};
    char from[600], to[600];
    for (int i = 0; i < 4; i++) {
        snprintf(from, sizeof from, "%s/tiny-dream/%s", FIX, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        copy_file(from, to);
    }
    expect_loads(dir);
    struct lp_st_file *st = NULL;
    CHECK(lp_st_open(to, &st) == LOPAD_OK);
    if (!st) return;
    const struct lp_tensor *t = lp_st_find(st, "model.layers.1.self_attn.q_proj.weight");
    CHECK(t != NULL);
    uint64_t off = t ? (uint64_t)((const uint8_t *)t->data - (const uint8_t *)st->map) : 0;
    lp_st_close(st);
    if (!t) return;
    const uint16_t bf_nan = 0x7fc0;
    patch(to, off + 2 * 70, &bf_nan, 2);
    expect_refused(dir, "blk.1.attn_q.weight");
    CHECK(msg_has("row 1, column 6"));
}

/* ------------------------------------------- a GGUF written byte by byte */

static void gb_u32(FILE *f, uint32_t v) {
    fwrite(&v, 4, 1, f);
}
static void gb_u64(FILE *f, uint64_t v) {
    fwrite(&v, 8, 1, f);
}
static void gb_str(FILE *f, const char *s) {
    gb_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}
static void gb_kv_u32(FILE *f, const char *k, uint32_t v) {
    gb_str(f, k);
    gb_u32(f, 4); /* UINT32 */
    gb_u32(f, v);
}
static void gb_tensor(FILE *f, const char *name, int n_dims, int64_t ne0, int64_t ne1,
                      uint64_t offset) {
    gb_str(f, name);
    gb_u32(f, (uint32_t)n_dims);
    gb_u64(f, (uint64_t)ne0);
    if (n_dims == 2) gb_u64(f, (uint64_t)ne1);
    gb_u32(f, 0); /* F32 */
    gb_u64(f, offset);
}

/* A Dream model of width 2 with n_layer layers whose file also lists n_junk
 * unrelated tensors first. */
static bool write_wide_model(const char *path, int n_layer, int n_junk) {
    static const char *mats[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                 "ffn_gate", "ffn_up", "ffn_down"};
    const int n_t = n_junk + 2 + n_layer * 9;
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    gb_u32(f, 0x46554747);
    gb_u32(f, 3);
    gb_u64(f, (uint64_t)n_t);
    gb_u64(f, 8);
    gb_str(f, "general.architecture");
    gb_u32(f, 8); /* STRING */
    gb_str(f, "dream");
    gb_kv_u32(f, "dream.block_count", (uint32_t)n_layer);
    gb_kv_u32(f, "dream.embedding_length", 2);
    gb_kv_u32(f, "dream.feed_forward_length", 2);
    gb_kv_u32(f, "dream.attention.head_count", 1);
    gb_kv_u32(f, "dream.context_length", 64);
    gb_kv_u32(f, "tokenizer.ggml.mask_token_id", 3);
    gb_str(f, "dream.attention.layer_norm_rms_epsilon");
    gb_u32(f, 6); /* FLOAT32 */
    float eps = 1e-6f;
    fwrite(&eps, 4, 1, f);
    uint64_t off = 0;
    char name[64];
    for (int i = 0; i < n_junk; i++, off += 32) {
        snprintf(name, sizeof name, "a.junk.%d", i);
        gb_tensor(f, name, 1, 1, 1, off);
    }
    gb_tensor(f, "token_embd.weight", 2, 2, 4, off);
    off += 32;
    gb_tensor(f, "output_norm.weight", 1, 2, 1, off);
    off += 32;
    for (int l = 0; l < n_layer; l++) {
        for (int k = 0; k < 7; k++, off += 32) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, mats[k]);
            gb_tensor(f, name, 2, 2, 2, off);
        }
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        gb_tensor(f, name, 1, 2, 1, off);
        off += 32;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        gb_tensor(f, name, 1, 2, 1, off);
        off += 32;
    }
    long pos = ftell(f);
    while (pos++ % 32)
        fputc(0, f);
    float slot[8] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    for (uint64_t o = 0; o < off; o += 32)
        fwrite(slot, 4, 8, f);
    return fclose(f) == 0;
}

/* Binding looks up ~9 names per layer, which must not each scan the whole
 * tensor list (1024 layers, 200k extra tensors: ~2.5e9 compares, seconds). */
static void test_many_tensors(void) {
    const int n_layer = 1024;
    const char *path = TMP "/many.gguf";
    if (!write_wide_model(path, n_layer, 200000)) return;
    double t0 = lp_time();
    lopad_model *m = NULL;
    CHECK_MSG(lopad_model_load(path, NULL, &m) == LOPAD_OK, "%s", lopad_errmsg());
    double dt = lp_time() - t0;
    /* a guard against the quadratic lookup (minutes), not a speed target: generous
     * enough for sanitizer builds on a loaded machine */
    CHECK_MSG(dt < 60.0, "loading took %.1f s", dt);
    if (m) CHECK(m->hp.n_layer == n_layer && m->layers[n_layer - 1].w_down.n_in == 2);
    lopad_model_free(m);
    unlink(path);
}

/* A LoRA config listing ~30k target entries on a 1024-layer model: matching
 * is by sorted lookup, not entries x modules (~4e8 suffix compares). */
static void test_many_lora_targets(void) {
    const char *path = TMP "/wide.gguf", *dir = TMP "/wide-lora";
    if (!write_wide_model(path, 1024, 0)) return;
    mkdir(dir, 0755);
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    const uint64_t hl = 8;
    fwrite(&hl, 8, 1, f);
    fputs("{}      ", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    f = fopen(p, "wb");
    if (!f) return;
    fputs("{\"r\": 1, \"lora_alpha\": 1, \"target_modules\": [", f);
    for (int i = 0; i < 30000; i++)
        fprintf(f, "%s\"model.layers.1023.mlp.down_proj\"", i ? "," : "");
    fputs("]}", f);
    fclose(f);
    lopad_model *m = NULL;
    CHECK_MSG(lopad_model_load(path, NULL, &m) == LOPAD_OK, "%s", lopad_errmsg());
    if (!m) return;
    double t0 = lp_time();
    enum lopad_status st = lp_lora_merge(m, dir);
    double dt = lp_time() - t0;
    /* the one targeted module has no tensors in this adapter */
    CHECK_MSG(st == LOPAD_ERR_FORMAT && msg_has("model.layers.1023.mlp.down_proj") &&
                  msg_has("no lora_A"),
              "%d %s", st, lopad_errmsg());
    CHECK_MSG(dt < 60.0, "matching took %.1f s (a guard against the quadratic match)", dt);
    lopad_model_free(m);
    unlink(path);
}

int main(void) {
    mkdir(TMP, 0755);
    TEST_RUN(test_find_nonfinite);
    TEST_RUN(test_gguf_values);
    TEST_RUN(test_hf_values);
    TEST_RUN(test_many_tensors);
    TEST_RUN(test_many_lora_targets);
    return test_report();
}
