/*
 * test_lora.c - merging PEFT LoRA adapters: the fixtures written by PEFT's
 * layout (tests/fixtures/tiny-*-lora, plain and rslora scaling) and adapters
 * written from C under LOPAD_BINARY_DIR. Every merged matrix is compared with
 * W + scale * B A computed here in double precision from the base model and
 * the adapter file; refusals (DoRA, unknown targets, bad shapes, ...) must
 * return the right status with a message naming the file / tensor / key.
 */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/common.h"
#include "core/types.h"
#include "formats/safetensors.h"
#include "model/model.h"

#define FIX LOPAD_SOURCE_DIR "/tests/fixtures"
#define TMP LOPAD_BINARY_DIR "/test_tmp_lora"

static bool msg_has(const char *s) {
    return strstr(lopad_errmsg(), s) != NULL;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------ a small safetensors writer */

struct tw {
    char name[128];
    int64_t d0, d1; /* PyTorch shape [d0, d1] */
    float *v;
};
struct adapter {
    struct tw t[64];
    int n;
};

static float lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((int)(*s >> 24) - 128) / 256.0f; /* exact in f32, multiples of 1/256 */
}

static void ad_add(struct adapter *a, const char *name, int64_t d0, int64_t d1, uint32_t seed) {
    struct tw *t = &a->t[a->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->d0 = d0;
    t->d1 = d1;
    t->v = malloc(sizeof(float) * d0 * d1);
    for (int64_t i = 0; i < d0 * d1; i++)
        t->v[i] = lcg(&seed);
}

static void ad_write(struct adapter *a, const char *dir, const char *config) {
    char p[600];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    write_text(p, config);
    char *hdr = malloc(1 << 16);
    size_t hl = (size_t)sprintf(hdr, "{"), off = 0;
    for (int i = 0; i < a->n; i++) {
        size_t nb = (size_t)(a->t[i].d0 * a->t[i].d1) * 4;
        hl += (size_t)sprintf(hdr + hl,
                              "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                              "\"data_offsets\":[%zu,%zu]}",
                              i ? "," : "", a->t[i].name, (long long)a->t[i].d0,
                              (long long)a->t[i].d1, off, off + nb);
        off += nb;
    }
    hdr[hl++] = '}';
    while (hl % 8)
        hdr[hl++] = ' ';
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((uint64_t)hl >> (8 * i)) & 0xff, f);
    fwrite(hdr, 1, hl, f);
    for (int i = 0; i < a->n; i++)
        fwrite(a->t[i].v, 4, (size_t)(a->t[i].d0 * a->t[i].d1), f);
    fclose(f);
    free(hdr);
    for (int i = 0; i < a->n; i++)
        free(a->t[i].v);
    a->n = 0;
}

/* ------------------------------------------------------------- reference */

static void weight_to_f32(const struct lp_weight *w, float *out) {
    for (int64_t r = 0; r < w->n_out; r++)
        lp_type_traits(w->type)->to_float((const char *)w->data + r * w->row_bytes,
                                          out + r * w->n_in, w->n_in);
}

/* merged must equal base + scale * B A (A, B read from the adapter file);
 * perm: B row used for output row o (NULL = identity) */
static void check_merged(const struct lp_weight *base, const struct lp_weight *merged,
                         const struct lp_st_file *ad, const char *module, double scale,
                         int64_t (*perm)(int64_t, void *), void *perm_arg) {
    char na[256], nb[256];
    snprintf(na, sizeof na, "base_model.model.%s.lora_A.weight", module);
    snprintf(nb, sizeof nb, "base_model.model.%s.lora_B.weight", module);
    const struct lp_tensor *A = lp_st_find(ad, na), *B = lp_st_find(ad, nb);
    CHECK_MSG(A && B, "%s: adapter tensors missing", module);
    if (!A || !B) return;
    int64_t r = A->ne[1], n_in = base->n_in, n_out = base->n_out;
    CHECK(A->ne[0] == n_in && B->ne[1] == n_out && B->ne[0] == r);
    CHECK_MSG(merged->type == base->type, "%s: type %d -> %d", module, base->type, merged->type);
    CHECK(merged->data != base->data);
    float *a = malloc(sizeof(float) * r * n_in), *b = malloc(sizeof(float) * r * n_out);
    float *w0 = malloc(sizeof(float) * n_in * n_out), *w1 = malloc(sizeof(float) * n_in * n_out);
    lp_type_traits(A->type)->to_float(A->data, a, r * n_in);
    lp_type_traits(B->type)->to_float(B->data, b, r * n_out);
    weight_to_f32(base, w0);
    weight_to_f32(merged, w1);
    int bad = 0;
    double max_delta = 0;
    for (int64_t o = 0; o < n_out; o++) {
        int64_t ob = perm ? perm(o, perm_arg) : o;
        for (int64_t i = 0; i < n_in; i++) {
            double d = 0;
            for (int64_t k = 0; k < r; k++)
                d += (double)b[ob * r + k] * a[k * n_in + i];
            double want = w0[o * n_in + i] + scale * d;
            double got = w1[o * n_in + i];
            /* f32 accumulation then one rounding to the stored type */
            double tol = 1e-5 + fabs(want) * (merged->type == LOPAD_TYPE_BF16  ? 1.0 / 256
                                              : merged->type == LOPAD_TYPE_F16 ? 1.0 / 1024
                                                                               : 1e-5);
            if (fabs(got - want) > tol) {
                if (bad < 3)
                    fprintf(stderr, "  %s[%lld,%lld] = %.8g, want %.8g\n", module, (long long)o,
                            (long long)i, got, want);
                bad++;
            }
            max_delta = fmax(max_delta, fabs(scale * d));
        }
    }
    CHECK_MSG(bad == 0, "%s: %d values differ", module, bad);
    CHECK_MSG(max_delta > 1e-3, "%s: the adapter changed nothing (delta %g)", module, max_delta);
    free(a);
    free(b);
    free(w0);
    free(w1);
}

static void check_same(const struct lp_weight *x, const struct lp_weight *y, const char *what) {
    CHECK_MSG(x->type == y->type && x->row_bytes == y->row_bytes &&
                  !memcmp(x->data, y->data, x->row_bytes * x->n_out),
              "%s changed", what);
}

static struct lp_weight *layer_w(lopad_model *m, int il, int k) {
    struct lp_layer *L = &m->layers[il];
    struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
    return ws[k];
}

static const char *dream_mod[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                   "mlp.down_proj"};
static const char *llada_mod[7] = {"q_proj",  "k_proj",  "v_proj", "attn_out",
                                   "ff_proj", "up_proj", "ff_out"};

static void module_path(int arch, int il, int k, char *buf, size_t n) {
    if (arch == LOPAD_ARCH_DREAM)
        snprintf(buf, n, "model.layers.%d.%s", il, dream_mod[k]);
    else
        snprintf(buf, n, "model.transformer.blocks.%d.%s", il, llada_mod[k]);
}

/* Load base and base+adapter; modules with mask bit (il*7+k) set must be merged
 * with `scale`, all others unchanged. */
static void check_adapter(const char *model_dir, const char *adapter_dir, double scale,
                          uint64_t mask) {
    lopad_model *base = NULL, *m = NULL;
    struct lopad_load_opts opts = {.lora_dir = adapter_dir};
    enum lopad_status st = lopad_model_load(model_dir, NULL, &base);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    st = lopad_model_load(model_dir, &opts, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", adapter_dir);
    struct lp_st_file *ad = NULL;
    CHECK(lp_st_open(p, &ad) == LOPAD_OK);
    if (base && m && ad) {
        CHECK(m->lora_path && !strcmp(m->lora_path, adapter_dir));
        CHECK(base->lora_path == NULL);
        int arch = m->hp.arch;
        for (int il = 0; il < m->hp.n_layer; il++)
            for (int k = 0; k < 7; k++) {
                char mod[128];
                module_path(arch, il, k, mod, sizeof mod);
                if (mask >> (il * 7 + k) & 1)
                    check_merged(layer_w(base, il, k), layer_w(m, il, k), ad, mod, scale, NULL,
                                 NULL);
                else
                    check_same(layer_w(base, il, k), layer_w(m, il, k), mod);
            }
        check_same(&base->tok_embd, &m->tok_embd, "token_embd");
        check_same(&base->output, &m->output, "output");
    }
    lp_st_close(ad);
    lopad_model_free(base);
    lopad_model_free(m);
}

#define QKVO(il) (0xfull << ((il)*7))

/* written by tools/ref/make_fixtures.py: r 4, alpha 8, plain scale 2, BF16 base */
static void test_fixture_dream(void) {
    check_adapter(FIX "/tiny-dream", FIX "/tiny-dream-lora", 8.0 / 4, QKVO(0) | QKVO(1));
}

/* r 4, alpha 8, use_rslora: scale 8 / sqrt(4) = 4, F32 base, sharded */
static void test_fixture_llada_rslora(void) {
    check_adapter(FIX "/tiny-llada", FIX "/tiny-llada-lora", 8.0 / 2, QKVO(0) | QKVO(1));
}

/* ------------------------------------------------ adapters written from C */

struct dims {
    int64_t n_in, n_out;
};

static struct dims mod_dims(lopad_model *m, int il, int k) {
    struct lp_weight *w = layer_w(m, il, k);
    return (struct dims){w->n_in, w->n_out};
}

/* adapter with lora_A/B for the given (layer, kind) list on `arch` */
static void add_pairs(struct adapter *a, lopad_model *m, const int (*lk)[2], int n, int r) {
    for (int i = 0; i < n; i++) {
        char mod[128], nm[200];
        module_path(m->hp.arch, lk[i][0], lk[i][1], mod, sizeof mod);
        struct dims d = mod_dims(m, lk[i][0], lk[i][1]);
        snprintf(nm, sizeof nm, "base_model.model.%s.lora_A.weight", mod);
        ad_add(a, nm, r, d.n_in, 100u + (uint32_t)i);
        snprintf(nm, sizeof nm, "base_model.model.%s.lora_B.weight", mod);
        ad_add(a, nm, d.n_out, r, 200u + (uint32_t)i);
    }
}

static lopad_model *load_base(const char *dir) {
    lopad_model *m = NULL;
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    return m;
}

static char adir_buf[512];
static const char *adir(const char *name) {
    snprintf(adir_buf, sizeof adir_buf, "%s/%s", TMP, name);
    return adir_buf;
}

#define CFG(extra, targets, r, alpha)                                                              \
    "{\"peft_type\": \"LORA\", \"r\": " #r ", \"lora_alpha\": " #alpha ", \"bias\": \"none\","     \
    " \"target_modules\": " targets extra "}"

/* rslora with r 3 (scale 5/sqrt 3) on LLaDA's ff_proj (gate) and per-block
 * ff_out (down), and an F16 base built by converting the F32 fixture here */
static void test_rslora_mlp(void) {
    lopad_model *m = load_base(FIX "/tiny-llada");
    if (!m) return;
    struct adapter *a = calloc(1, sizeof *a);
    const int lk[4][2] = {{0, 4}, {0, 6}, {1, 4}, {1, 6}};
    add_pairs(a, m, lk, 4, 3);
    const char *dir = adir("rslora");
    ad_write(a, dir,
             CFG(", \"use_rslora\": true",
                 "[\"ff_proj\", \"blocks.0.ff_out\", "
                 "\"transformer.blocks.1.ff_out\"]",
                 3, 5));
    free(a);
    uint64_t mask = 1ull << 4 | 1ull << 6 | 1ull << 11 | 1ull << 13;
    check_adapter(FIX "/tiny-llada", dir, 5.0 / sqrt(3.0), mask);
    lopad_model_free(m);
}

/* a single-string target is a regular expression (PEFT: re.fullmatch);
 * layers_to_transform restricts the layers */
static void test_regex_and_layers(void) {
    lopad_model *m = load_base(FIX "/tiny-dream");
    if (!m) return;
    struct adapter *a = calloc(1, sizeof *a);
    const int lk[2][2] = {{1, 0}, {1, 2}}; /* q and v of layer 1 */
    add_pairs(a, m, lk, 2, 2);
    const char *dir = adir("regex");
    ad_write(a, dir, CFG(", \"layers_to_transform\": [1]", "\".*\\\\.(q_proj|v_proj)\"", 2, 3));
    free(a);
    check_adapter(FIX "/tiny-dream", dir, 3.0 / 2, 1ull << 7 | 1ull << 9);
    lopad_model_free(m);
}

/* A quantised or tied source: the merge goes to F32 / a fresh buffer. */
static void test_quantised_source(void) {
    lopad_model *m = load_base(FIX "/tiny-dream");
    if (!m) return;
    /* re-store layer 0's q as Q8_0 (the test keeps the buffer alive) */
    struct lp_weight *wq = &m->layers[0].wq;
    int64_t n_in = wq->n_in, n_out = wq->n_out;
    float *f = malloc(sizeof(float) * n_in * n_out);
    weight_to_f32(wq, f);
    size_t rb = lp_row_size(LOPAD_TYPE_Q8_0, n_in);
    uint8_t *q = malloc(rb * n_out);
    for (int64_t r = 0; r < n_out; r++)
        lp_type_traits(LOPAD_TYPE_Q8_0)->from_float(f + r * n_in, q + r * rb, n_in);
    wq->type = LOPAD_TYPE_Q8_0;
    wq->row_bytes = rb;
    wq->data = q;
    struct lp_weight before = *wq;
    struct adapter *a = calloc(1, sizeof *a);
    const int lk[1][2] = {{0, 0}};
    add_pairs(a, m, lk, 1, 2);
    const char *dir = adir("quant");
    ad_write(a, dir, CFG("", "[\"q_proj\"]", 2, 2));
    free(a);
    /* q_proj of layer 1 has no adapter tensors: refused */
    enum lopad_status st = lp_lora_merge(m, dir);
    CHECK(st == LOPAD_ERR_FORMAT && msg_has("model.layers.1.self_attn.q_proj"));
    CHECK(wq->data == q); /* nothing touched on failure */
    /* restricted to layer 0 (an int, as PEFT also allows) it merges */
    a = calloc(1, sizeof *a);
    add_pairs(a, m, lk, 1, 2);
    ad_write(a, dir, CFG(", \"layers_to_transform\": 0", "[\"q_proj\"]", 2, 2));
    free(a);
    st = lp_lora_merge(m, dir);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (!st) {
        CHECK(wq->type == LOPAD_TYPE_F32 && wq->row_bytes == (size_t)n_in * 4);
        struct lp_st_file *ad = NULL;
        char p[600];
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        CHECK(lp_st_open(p, &ad) == LOPAD_OK);
        if (ad) {
            /* compare with the dequantised Q8_0 base, through an F32 copy */
            float *bf = malloc(sizeof(float) * n_in * n_out);
            weight_to_f32(&before, bf);
            struct lp_weight bfw = {"base", LOPAD_TYPE_F32, n_in, n_out, (size_t)n_in * 4, bf};
            check_merged(&bfw, wq, ad, "model.layers.0.self_attn.q_proj", 1.0, NULL, NULL);
            free(bf);
        }
        lp_st_close(ad);
        /* a second adapter is refused */
        CHECK(lp_lora_merge(m, dir) == LOPAD_ERR_ARG && msg_has("already"));
    }
    lopad_model_free(m);
    free(q);
    free(f);
}

/* LoRA on the output head; with llama.cpp's permuted q/k rows (ROPE_NORM)
 * B's rows are permuted the same way. */
struct perm_arg {
    int64_t hd;
};
static int64_t norm_perm(int64_t row, void *p) {
    int64_t hd = ((struct perm_arg *)p)->hd, h = row / hd, k = row % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

static void test_head_and_rope_norm(void) {
    lopad_model *base = load_base(FIX "/tiny-llada"), *m = load_base(FIX "/tiny-llada");
    if (!base || !m) {
        lopad_model_free(base);
        lopad_model_free(m);
        return;
    }
    m->hp.rope = LOPAD_ROPE_NORM; /* as if loaded from llama.cpp's LLaDA GGUF */
    struct adapter *a = calloc(1, sizeof *a);
    const int lk[2][2] = {{0, 0}, {0, 1}};
    add_pairs(a, m, lk, 2, 2);
    ad_add(a, "base_model.model.model.transformer.ff_out.lora_A.weight", 2, m->output.n_in, 7);
    ad_add(a, "base_model.model.model.transformer.ff_out.lora_B.weight", m->output.n_out, 2, 8);
    const char *dir = adir("head");
    ad_write(a, dir,
             CFG(", \"layers_to_transform\": null",
                 "\"model\\\\.transformer\\\\.(blocks\\\\.0\\\\.[qk]_proj|ff_out)\"", 2, 2));
    free(a);
    enum lopad_status st = lp_lora_merge(m, dir);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (!st) {
        struct lp_st_file *ad = NULL;
        char p[600];
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        CHECK(lp_st_open(p, &ad) == LOPAD_OK);
        struct perm_arg pa = {m->hp.head_dim};
        if (ad) {
            check_merged(&base->layers[0].wq, &m->layers[0].wq, ad,
                         "model.transformer.blocks.0.q_proj", 1.0, norm_perm, &pa);
            check_merged(&base->layers[0].wk, &m->layers[0].wk, ad,
                         "model.transformer.blocks.0.k_proj", 1.0, norm_perm, &pa);
            check_merged(&base->output, &m->output, ad, "model.transformer.ff_out", 1.0, NULL,
                         NULL);
        }
        check_same(&base->layers[0].wv, &m->layers[0].wv, "v");
        check_same(&base->tok_embd, &m->tok_embd, "token_embd");
        lp_st_close(ad);
    }
    lopad_model_free(base);
    lopad_model_free(m);
}

/* ------------------------------------------------------------ refusals */

static void expect_refused(const char *name, const char *config, const int (*lk)[2], int n, int r,
                           void (*tweak)(struct adapter *), enum lopad_status want,
                           const char *frag1, const char *frag2) {
    lopad_model *m = load_base(FIX "/tiny-dream");
    if (!m) return;
    struct adapter *a = calloc(1, sizeof *a);
    add_pairs(a, m, lk, n, r);
    if (tweak) tweak(a);
    const char *dir = adir(name);
    ad_write(a, dir, config);
    free(a);
    struct lp_weight q0 = m->layers[0].wq;
    enum lopad_status st = lp_lora_merge(m, dir);
    CHECK_MSG(st == want, "%s: status %d (%s), want %d", name, st, lopad_errmsg(), want);
    if (frag1) CHECK_MSG(msg_has(frag1), "%s: '%s' lacks '%s'", name, lopad_errmsg(), frag1);
    if (frag2) CHECK_MSG(msg_has(frag2), "%s: '%s' lacks '%s'", name, lopad_errmsg(), frag2);
    CHECK(m->layers[0].wq.data == q0.data && m->lora_path == NULL);
    lopad_model_free(m);
}

static void drop_last(struct adapter *a) {
    free(a->t[--a->n].v);
}
static void bad_a_shape(struct adapter *a) {
    a->t[0].d1 -= 1;
    free(a->t[0].v);
    a->t[0].v = calloc(a->t[0].d0 * a->t[0].d1, 4);
}
static void extra_module(struct adapter *a) {
    ad_add(a, "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight", 2, 64, 1);
}
static void dora_tensor(struct adapter *a) {
    ad_add(a, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", 1, 64, 1);
}
static void odd_name(struct adapter *a) {
    ad_add(a, "something.else", 1, 1, 1);
}

static void test_refusals(void) {
    const int q0[1][2] = {{0, 0}};
    const int q01[2][2] = {{0, 0}, {1, 0}};
    expect_refused("dora", CFG(", \"use_dora\": true", "[\"q_proj\"]", 2, 2), q01, 2, 2, NULL,
                   LOPAD_ERR_UNSUPPORTED, "DoRA", "adapter_config.json");
    expect_refused("dora_tensor", CFG("", "[\"q_proj\"]", 2, 2), q01, 2, 2, dora_tensor,
                   LOPAD_ERR_UNSUPPORTED, "DoRA", "lora_magnitude_vector");
    expect_refused("unknown_target", CFG("", "[\"q_proj\", \"foo_proj\"]", 2, 2), q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "'foo_proj'", "adapter_config.json");
    expect_refused("regex_none", CFG("", "\"nothing.*\"", 2, 2), q01, 2, 2, NULL, LOPAD_ERR_FORMAT,
                   "select no", NULL);
    expect_refused("a_without_b", CFG("", "[\"q_proj\"]", 2, 2), q01, 2, 2, drop_last,
                   LOPAD_ERR_FORMAT, "model.layers.1.self_attn.q_proj", "lora_B");
    expect_refused("bad_shape", CFG("", "[\"q_proj\"]", 2, 2), q01, 2, 2, bad_a_shape,
                   LOPAD_ERR_FORMAT, "model.layers.0.self_attn.q_proj.lora_A.weight",
                   "[2, 63] (2 dims), expected [2, 64]");
    expect_refused("rank_mismatch", CFG("", "[\"q_proj\"]", 4, 2), q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "lora_A.weight", "expected [4, 64]");
    expect_refused("unknown_module", CFG("", "[\"q_proj\"]", 2, 2), q01, 2, 2, extra_module,
                   LOPAD_ERR_FORMAT, "x_proj", "not a linear layer");
    expect_refused("odd_name", CFG("", "[\"q_proj\"]", 2, 2), q01, 2, 2, odd_name, LOPAD_ERR_FORMAT,
                   "'something.else'", NULL);
    expect_refused("untargeted", CFG(", \"layers_to_transform\": [1]", "[\"q_proj\"]", 2, 2), q01,
                   2, 2, NULL, LOPAD_ERR_FORMAT, "model.layers.0.self_attn.q_proj",
                   "does not target");
    expect_refused("missing_module", CFG("", "[\"q_proj\"]", 2, 2), q0, 1, 2, NULL,
                   LOPAD_ERR_FORMAT, "model.layers.1.self_attn.q_proj", NULL);
    expect_refused("rank_pattern", CFG(", \"rank_pattern\": {\"q_proj\": 8}", "[\"q_proj\"]", 2, 2),
                   q01, 2, 2, NULL, LOPAD_ERR_UNSUPPORTED, "rank_pattern", NULL);
    expect_refused("peft_type",
                   "{\"peft_type\": \"IA3\", \"r\": 2, \"lora_alpha\": 2, "
                   "\"target_modules\": [\"q_proj\"]}",
                   q01, 2, 2, NULL, LOPAD_ERR_UNSUPPORTED, "IA3", NULL);
    expect_refused("empty_adapter", CFG("", "[\"q_proj\"]", 2, 2), q01, 0, 2, NULL,
                   LOPAD_ERR_FORMAT, "model.layers.0.self_attn.q_proj", NULL);
    expect_refused("bias_all",
                   "{\"r\": 2, \"lora_alpha\": 2, \"bias\": \"all\", "
                   "\"target_modules\": [\"q_proj\"]}",
                   q01, 2, 2, NULL, LOPAD_ERR_UNSUPPORTED, "bias 'all'", NULL);
    expect_refused("no_r", "{\"lora_alpha\": 2, \"target_modules\": [\"q_proj\"]}", q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "'r'", "adapter_config.json");
    expect_refused("bad_regex", CFG("", "\"(q_proj\"", 2, 2), q01, 2, 2, NULL, LOPAD_ERR_FORMAT,
                   "regular expression", NULL);
    expect_refused("fan_in", CFG(", \"fan_in_fan_out\": true", "[\"q_proj\"]", 2, 2), q01, 2, 2,
                   NULL, LOPAD_ERR_UNSUPPORTED, "fan_in_fan_out", NULL);

    /* missing files */
    lopad_model *m = load_base(FIX "/tiny-dream");
    if (!m) return;
    char p[600];
    const char *dir = adir("no_weights");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    write_text(p, CFG("", "[\"q_proj\"]", 2, 2));
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    unlink(p);
    CHECK(lp_lora_merge(m, dir) == LOPAD_ERR_IO && msg_has("adapter_model.safetensors"));
    CHECK(lp_lora_merge(m, adir("no_such_dir")) == LOPAD_ERR_IO && msg_has("adapter_config.json"));
    lopad_model_free(m);
    /* through the public API: the failed merge frees the model */
    struct lopad_load_opts o = {.lora_dir = adir("dora")};
    lopad_model *mm = (lopad_model *)1;
    CHECK(lopad_model_load(FIX "/tiny-dream", &o, &mm) == LOPAD_ERR_UNSUPPORTED && mm == NULL);
}

/* range checks on r, lora_alpha and layers_to_transform name the key and the config */
static void huge_a(struct adapter *a) {
    a->t[2].v[5] = 3e38f; /* layer 1's A: finite, but scale * B * A overflows f32 */
}
static void test_ranges(void) {
    const int q01[2][2] = {{0, 0}, {1, 0}};
    const int k01[2][2] = {{0, 1}, {1, 1}}; /* k_proj: [32, 64] */
    expect_refused("alpha_huge", CFG("", "[\"q_proj\"]", 2, 1e7), q01, 2, 2, NULL, LOPAD_ERR_FORMAT,
                   "'lora_alpha'", "adapter_config.json");
    expect_refused("alpha_neg", CFG("", "[\"q_proj\"]", 2, -2e6), q01, 2, 2, NULL, LOPAD_ERR_FORMAT,
                   "'lora_alpha'", "adapter_config.json");
    expect_refused("alpha_inf", CFG("", "[\"q_proj\"]", 2, 1e999), q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "'lora_alpha'", "adapter_config.json");
    expect_refused("r_over_dims", CFG("", "[\"k_proj\"]", 33, 2), k01, 2, 33, NULL,
                   LOPAD_ERR_FORMAT, "key 'r' is 33", "adapter_config.json");
    expect_refused("r_zero", CFG("", "[\"q_proj\"]", 0, 2), q01, 2, 2, NULL, LOPAD_ERR_FORMAT,
                   "'r'", "adapter_config.json");
    expect_refused("layer_out_of_range",
                   CFG(", \"layers_to_transform\": [0, 2]", "[\"q_proj\"]", 2, 2), q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "'layers_to_transform' names layer 2", "adapter_config.json");
    /* in range, but the merged values overflow: refused naming the tensor,
     * and layer 0 (merged fine before it) keeps its weights */
    expect_refused("merge_inf", CFG("", "[\"q_proj\"]", 2, 1000), q01, 2, 2, huge_a,
                   LOPAD_ERR_FORMAT, "blk.1.attn_q.weight", "non-finite");
}

/* an F16 base and lora_alpha 1e6 (allowed): the merged values exceed 65504 and
 * become inf in F16; refused naming the tensor, the model untouched */
static void test_merge_overflows_f16(void) {
    lopad_model *m = load_base(FIX "/tiny-dream");
    if (!m) return;
    struct lp_weight *wq = &m->layers[1].wq;
    int64_t n_in = wq->n_in, n_out = wq->n_out;
    float *f = malloc(sizeof(float) * n_in * n_out);
    weight_to_f32(wq, f);
    size_t rb = lp_row_size(LOPAD_TYPE_F16, n_in);
    uint8_t *h = malloc(rb * n_out);
    for (int64_t r = 0; r < n_out; r++)
        lp_type_traits(LOPAD_TYPE_F16)->from_float(f + r * n_in, h + r * rb, n_in);
    *wq = (struct lp_weight){wq->name, LOPAD_TYPE_F16, n_in, n_out, rb, h};
    struct adapter *a = calloc(1, sizeof *a);
    const int lk[1][2] = {{1, 0}};
    add_pairs(a, m, lk, 1, 1);
    const char *dir = adir("f16_overflow");
    ad_write(a, dir, CFG(", \"layers_to_transform\": [1]", "[\"q_proj\"]", 1, 1e6));
    free(a);
    enum lopad_status st = lp_lora_merge(m, dir);
    CHECK_MSG(st == LOPAD_ERR_FORMAT && msg_has("blk.1.attn_q.weight") && msg_has("non-finite") &&
                  msg_has("lora_alpha"),
              "%d %s", st, lopad_errmsg());
    CHECK(wq->data == h && wq->type == LOPAD_TYPE_F16 && m->lora_path == NULL);
    lopad_model_free(m);
    free(h);
    free(f);
}

/* A pattern with nested repeats backtracks exponentially on a module name;
 * the match is bounded and the error says so (not "select no linear layer"). */
static void test_regex_limits(void) {
    const int q01[2][2] = {{0, 0}, {1, 0}};
    double t0 = lp_time();
    expect_refused("regex_bomb", CFG("", "\"([a-z_.0-9]+)+[A-Z]\"", 2, 2), q01, 2, 2, NULL,
                   LOPAD_ERR_FORMAT, "target_modules regex '([a-z_.0-9]+)+[A-Z]' exceeded the",
                   "on module 'model.layers.0.self_attn.q_proj'");
    double t1 = lp_time();
    CHECK_MSG(t1 - t0 < 30.0, "took %.1f s (unbounded backtracking takes minutes)", t1 - t0);
    expect_refused("exclude_bomb",
                   CFG(", \"exclude_modules\": \"(.*.*)*[A-Z]\"", "[\"q_proj\"]", 2, 2), q01, 2, 2,
                   NULL, LOPAD_ERR_FORMAT, "exclude_modules regex", "limit on module");
    CHECK_MSG(lp_time() - t1 < 30.0, "took %.1f s (a guard, not a speed target)", lp_time() - t1);
    /* a pattern of megabytes is not compiled */
    size_t big = 5000;
    char *cfg = malloc(big + 256), *q = cfg;
    q += sprintf(q, "{\"r\": 2, \"lora_alpha\": 2, \"target_modules\": \"");
    for (size_t i = 0; i < big; i++)
        *q++ = 'a';
    sprintf(q, "\"}");
    expect_refused("regex_long", cfg, q01, 2, 2, NULL, LOPAD_ERR_FORMAT, "'target_modules'",
                   "5000 bytes long");
    free(cfg);
    /* an ordinary alternation still matches under the limits */
    expect_refused(
        "regex_ok", CFG("", "\"model\\\\.layers\\\\.(0|1)\\\\.self_attn\\\\.(q|k)_proj\"", 2, 2),
        q01, 2, 2, NULL, LOPAD_ERR_FORMAT, "model.layers.0.self_attn.k_proj", "no lora_A");
}

/* every allocation failure inside the merge returns NOMEM and leaks nothing */
static void test_alloc_failures(void) {
    int ok_at = -1;
    for (long k = 0; k < 400; k++) {
        lopad_model *m = load_base(FIX "/tiny-dream");
        if (!m) return;
        lp_alloc_fail_after(k);
        enum lopad_status st = lp_lora_merge(m, FIX "/tiny-dream-lora");
        lp_alloc_fail_after(-1);
        lopad_model_free(m);
        if (st == LOPAD_OK) {
            ok_at = (int)k;
            break;
        }
        CHECK_MSG(st == LOPAD_ERR_NOMEM, "k=%ld: %d %s", k, st, lopad_errmsg());
    }
    CHECK(ok_at > 8);
}

int main(void) {
    mkdir(TMP, 0755);
    TEST_RUN(test_fixture_dream);
    TEST_RUN(test_fixture_llada_rslora);
    TEST_RUN(test_rslora_mlp);
    TEST_RUN(test_regex_and_layers);
    TEST_RUN(test_quantised_source);
    TEST_RUN(test_head_and_rope_norm);
    TEST_RUN(test_refusals);
    TEST_RUN(test_ranges);
    TEST_RUN(test_regex_limits);
    TEST_RUN(test_merge_overflows_f16);
    TEST_RUN(test_alloc_failures);
    return test_report();
}
