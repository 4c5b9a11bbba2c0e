/*
 * test_gguf.c - GGUF writer/reader round trip over every value and tensor type,
 * non-default alignment, typed getters, and hostile input: every truncation of
 * a valid file, bad magic/version, out-of-file or misaligned tensor data,
 * duplicates, huge lengths/counts, unknown types, too many dims, deep nesting,
 * allocation failures, and writer failures that must leave no file behind.
 */
#include <stdint.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/mman.h>

#include "test.h"
#include "core/common.h"
#include "core/types.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "model/tokenizer.h"

static char tmpdir[256];

static void path_in_tmp(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* no "<path>.tmp.*" file remains next to path */
static bool no_tmp_left(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    return !file_exists(tmp);
}

static uint8_t *read_file(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz ? sz : 1);
    if (fread(b, 1, sz, f) != (size_t)sz) sz = -1;
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* ------------------------------------------------------------ round trip */

#define NQ8 2
struct row_ctx {
    int calls;
    int fail_at; /* row index that fails, -1 = never */
};

/* rows of a Q8_0 tensor [ne0=64, ne1=3]: quantised from a ramp */
static enum lopad_status q8_rows(void *user, int64_t row, void *dst, size_t row_bytes) {
    struct row_ctx *c = user;
    c->calls++;
    if (row == c->fail_at)
        return lp_error(LOPAD_ERR_IO, "row producer failed at row %lld", (long long)row);
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(row * 64 + i) / 50.0f - 1.0f;
    CHECK(row_bytes == 2 * sizeof(lp_block_q8_0));
    lp_type_traits(LOPAD_TYPE_Q8_0)->from_float(x, dst, 64);
    return LOPAD_OK;
}

static void fill_bytes(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

struct tspec {
    const char *name;
    int type, n_dims;
    int64_t ne[4];
};

static const struct tspec tspecs[] = {
    {"t.f32", LOPAD_TYPE_F32, 2, {3, 5, 1, 1}},     {"t.f16", LOPAD_TYPE_F16, 1, {7, 1, 1, 1}},
    {"t.bf16", LOPAD_TYPE_BF16, 3, {2, 3, 4, 1}},   {"t.q8_0", LOPAD_TYPE_Q8_0, 2, {64, 2, 1, 1}},
    {"t.q4_0", LOPAD_TYPE_Q4_0, 2, {32, 3, 1, 1}},  {"t.q4_k", LOPAD_TYPE_Q4_K, 2, {256, 2, 1, 1}},
    {"t.q6_k", LOPAD_TYPE_Q6_K, 4, {256, 1, 2, 1}},
};
#define N_TSPEC (int)(sizeof tspecs / sizeof tspecs[0])

static size_t tspec_bytes(const struct tspec *s) {
    return lp_row_size(s->type, s->ne[0]) * s->ne[1] * s->ne[2] * s->ne[3];
}

/* Write a file with every value type and tensors of every type. */
static enum lopad_status write_full(const char *path, uint32_t alignment, uint8_t **tdata) {
    struct lp_gguf_writer *w;
    enum lopad_status st = lp_gguf_writer_create(path, &w);
    if (st) return st;
    if (alignment && (st = lp_gguf_writer_set_alignment(w, alignment))) goto fail;
#define TRY(x)                                                                                     \
    if ((st = (x))) goto fail
    TRY(lp_gguf_writer_add_u8(w, "v.u8", 200));
    TRY(lp_gguf_writer_add_i8(w, "v.i8", -100));
    TRY(lp_gguf_writer_add_u16(w, "v.u16", 60000));
    TRY(lp_gguf_writer_add_i16(w, "v.i16", -30000));
    TRY(lp_gguf_writer_add_u32(w, "v.u32", 4000000000u));
    TRY(lp_gguf_writer_add_i32(w, "v.i32", -2000000000));
    TRY(lp_gguf_writer_add_f32(w, "v.f32", 1.5e-5f));
    TRY(lp_gguf_writer_add_bool(w, "v.bool", true));
    TRY(lp_gguf_writer_add_bool(w, "v.false", false));
    TRY(lp_gguf_writer_add_str(w, "v.str", "h\xc3\xa9llo world"));
    TRY(lp_gguf_writer_add_str(w, "v.empty", ""));
    TRY(lp_gguf_writer_add_u64(w, "v.u64", UINT64_MAX));
    TRY(lp_gguf_writer_add_i64(w, "v.i64", INT64_MIN));
    TRY(lp_gguf_writer_add_f64(w, "v.f64", 3.141592653589793));
    {
        struct lp_gguf_value v = {.type = LP_GGUF_STRING};
        v.str.s = "a\0b";
        v.str.len = 3;
        TRY(lp_gguf_writer_add_value(w, "v.nul", &v));
    }
    const uint8_t au8[] = {0, 1, 255};
    const int8_t ai8[] = {-128, 0, 127};
    const uint16_t au16[] = {1, 65535};
    const int16_t ai16[] = {-32768, 5};
    const uint32_t au32[] = {1, 2, 3, 4000000000u};
    const int32_t ai32[] = {-1, 0, 7, INT32_MAX};
    const float af32[] = {0.5f, -2.25f, 1e30f};
    const uint8_t abool[] = {1, 0, 1};
    const uint64_t au64[] = {UINT64_MAX, 0};
    const int64_t ai64[] = {INT64_MIN, INT64_MAX, -5};
    const double af64[] = {1e-300, -0.0};
    const char *astr[] = {"<s>", "", "\xc4\xa0the", "a b"};
    TRY(lp_gguf_writer_add_arr(w, "a.u8", LP_GGUF_U8, au8, 3));
    TRY(lp_gguf_writer_add_arr(w, "a.i8", LP_GGUF_I8, ai8, 3));
    TRY(lp_gguf_writer_add_arr(w, "a.u16", LP_GGUF_U16, au16, 2));
    TRY(lp_gguf_writer_add_arr(w, "a.i16", LP_GGUF_I16, ai16, 2));
    TRY(lp_gguf_writer_add_arr(w, "a.u32", LP_GGUF_U32, au32, 4));
    TRY(lp_gguf_writer_add_arr(w, "a.i32", LP_GGUF_I32, ai32, 4));
    TRY(lp_gguf_writer_add_arr(w, "a.f32", LP_GGUF_F32, af32, 3));
    TRY(lp_gguf_writer_add_arr(w, "a.bool", LP_GGUF_BOOL, abool, 3));
    TRY(lp_gguf_writer_add_arr(w, "a.u64", LP_GGUF_U64, au64, 2));
    TRY(lp_gguf_writer_add_arr(w, "a.i64", LP_GGUF_I64, ai64, 3));
    TRY(lp_gguf_writer_add_arr(w, "a.f64", LP_GGUF_F64, af64, 2));
    TRY(lp_gguf_writer_add_arr(w, "a.str", LP_GGUF_STRING, astr, 4));
    TRY(lp_gguf_writer_add_arr(w, "a.empty", LP_GGUF_U32, NULL, 0));
    TRY(lp_gguf_writer_add_arr(w, "a.empty_str", LP_GGUF_STRING, NULL, 0));
    {
        /* [[1,2],[],[3]] of i32, [["x",""],[]] of strings, [[[]]] */
        static const int32_t r0[] = {1, 2}, r2[] = {3};
        struct lp_gguf_value rows[3], srows[2], sv[2], inner[1], mid[1];
        for (int i = 0; i < 3; i++)
            rows[i] = (struct lp_gguf_value){.type = LP_GGUF_ARRAY};
        rows[0].arr.type = rows[1].arr.type = rows[2].arr.type = LP_GGUF_I32;
        rows[0].arr.n = 2, rows[0].arr.data = r0;
        rows[2].arr.n = 1, rows[2].arr.data = r2;
        struct lp_gguf_value nested = {.type = LP_GGUF_ARRAY};
        nested.arr.type = LP_GGUF_ARRAY, nested.arr.n = 3, nested.arr.sub = rows;
        TRY(lp_gguf_writer_add_value(w, "n.i32", &nested));
        sv[0] = (struct lp_gguf_value){.type = LP_GGUF_STRING};
        sv[0].str.s = "x", sv[0].str.len = 1;
        sv[1] = (struct lp_gguf_value){.type = LP_GGUF_STRING};
        sv[1].str.s = "", sv[1].str.len = 0;
        srows[0] = srows[1] = (struct lp_gguf_value){.type = LP_GGUF_ARRAY};
        srows[0].arr.type = srows[1].arr.type = LP_GGUF_STRING;
        srows[0].arr.n = 2, srows[0].arr.sub = sv;
        struct lp_gguf_value snested = {.type = LP_GGUF_ARRAY};
        snested.arr.type = LP_GGUF_ARRAY, snested.arr.n = 2, snested.arr.sub = srows;
        TRY(lp_gguf_writer_add_value(w, "n.str", &snested));
        inner[0] = (struct lp_gguf_value){.type = LP_GGUF_ARRAY};
        inner[0].arr.type = LP_GGUF_F64;
        mid[0] = (struct lp_gguf_value){.type = LP_GGUF_ARRAY};
        mid[0].arr.type = LP_GGUF_ARRAY, mid[0].arr.n = 1, mid[0].arr.sub = inner;
        struct lp_gguf_value deep = {.type = LP_GGUF_ARRAY};
        deep.arr.type = LP_GGUF_ARRAY, deep.arr.n = 1, deep.arr.sub = mid;
        TRY(lp_gguf_writer_add_value(w, "n.deep", &deep));
    }
    for (int i = 0; i < N_TSPEC; i++) {
        const struct tspec *s = &tspecs[i];
        TRY(lp_gguf_writer_add_tensor(w, s->name, s->type, s->n_dims, s->ne, tdata[i],
                                      tspec_bytes(s)));
    }
    static struct row_ctx rc;
    rc = (struct row_ctx){0, -1};
    const int64_t ne_rows[2] = {64, 3};
    TRY(lp_gguf_writer_add_tensor_rows(w, "t.rows", LOPAD_TYPE_Q8_0, 2, ne_rows, q8_rows, &rc));
#undef TRY
    st = lp_gguf_writer_finish(w);
    if (!st) CHECK(rc.calls == 3);
    return st;
fail:
    lp_gguf_writer_abort(w);
    return st;
}

static void check_full(const struct lp_gguf *g, uint8_t **tdata, uint32_t alignment) {
    CHECK(lp_gguf_version(g) == 3);
    CHECK(lp_gguf_alignment(g) == alignment);
    CHECK(lp_gguf_data_offset(g) % alignment == 0);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f;
    bool b;
    const char *s;
    CHECK(!lp_gguf_get_u32(g, "v.u8", &u32) && u32 == 200);
    CHECK(!lp_gguf_get_i32(g, "v.i8", &i32) && i32 == -100);
    CHECK(!lp_gguf_get_u32(g, "v.u16", &u32) && u32 == 60000);
    CHECK(!lp_gguf_get_i32(g, "v.i16", &i32) && i32 == -30000);
    CHECK(!lp_gguf_get_u32(g, "v.u32", &u32) && u32 == 4000000000u);
    CHECK(!lp_gguf_get_i32(g, "v.i32", &i32) && i32 == -2000000000);
    CHECK(!lp_gguf_get_f32(g, "v.f32", &f) && f == 1.5e-5f);
    CHECK(!lp_gguf_get_bool(g, "v.bool", &b) && b);
    CHECK(!lp_gguf_get_bool(g, "v.false", &b) && !b);
    CHECK(!lp_gguf_get_str(g, "v.str", &s) && !strcmp(s, "h\xc3\xa9llo world"));
    CHECK(!lp_gguf_get_str(g, "v.empty", &s) && !strcmp(s, ""));
    CHECK(!lp_gguf_get_u64(g, "v.u64", &u64) && u64 == UINT64_MAX);
    CHECK(!lp_gguf_get_i64(g, "v.i64", &i64) && i64 == INT64_MIN);
    const struct lp_gguf_value *v = lp_gguf_get(g, "v.f64");
    CHECK(v && v->type == LP_GGUF_F64 && v->f64 == 3.141592653589793);
    v = lp_gguf_get(g, "v.nul");
    CHECK(v && v->type == LP_GGUF_STRING && v->str.len == 3 && !memcmp(v->str.s, "a\0b", 4));
    CHECK(lp_gguf_get(g, "v.u8")->type == LP_GGUF_U8);
    CHECK(lp_gguf_get(g, "v.i16")->type == LP_GGUF_I16);
    CHECK(lp_gguf_get(g, "general.alignment")->type == LP_GGUF_U32);

    /* typed conversion limits */
    CHECK(lp_gguf_get_i32(g, "v.u32", &i32) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "v.u32") != NULL);
    CHECK(lp_gguf_get_u32(g, "v.i8", &u32) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_i64(g, "v.u64", &i64) == LOPAD_ERR_FORMAT);
    CHECK(!lp_gguf_get_i64(g, "v.u32", &i64) && i64 == 4000000000ll);
    CHECK(lp_gguf_get_f32(g, "v.str", &f) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_str(g, "v.u8", &s) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_bool(g, "v.u8", &b) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_u32(g, "v.bool", &u32) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_u32(g, "a.u32", &u32) == LOPAD_ERR_FORMAT);
    CHECK(lp_gguf_get_u32(g, "no.such.key", &u32) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "no.such.key") && strstr(lopad_errmsg(), lp_gguf_path(g)));
    CHECK(lp_gguf_find(g, "no.such.key") == -1 && lp_gguf_get(g, "no.such.key") == NULL);

    /* arrays */
    const struct lp_gguf_value *a;
    CHECK(!lp_gguf_get_arr(g, "a.u8", LP_GGUF_U8, &a) && a->arr.n == 3);
    CHECK(lp_gguf_arr_u32(a, 2, &u32) && u32 == 255);
    CHECK(!lp_gguf_arr_u32(a, 3, &u32)); /* out of range */
    CHECK(lp_gguf_get_arr(g, "a.u8", LP_GGUF_I32, &a) == LOPAD_ERR_FORMAT);
    CHECK(!lp_gguf_get_arr(g, "a.i8", LP_GGUF_I8, &a) && lp_gguf_arr_i32(a, 0, &i32) &&
          i32 == -128);
    CHECK(!lp_gguf_arr_u32(a, 0, &u32)); /* negative */
    CHECK(!lp_gguf_get_arr(g, "a.u16", -1, &a) && lp_gguf_arr_i32(a, 1, &i32) && i32 == 65535);
    CHECK(!lp_gguf_get_arr(g, "a.i16", -1, &a) && lp_gguf_arr_i64(a, 0, &i64) && i64 == -32768);
    CHECK(!lp_gguf_get_arr(g, "a.u32", -1, &a) && lp_gguf_arr_u32(a, 3, &u32) &&
          u32 == 4000000000u);
    CHECK(!lp_gguf_arr_i32(a, 3, &i32)); /* too big */
    CHECK(!lp_gguf_get_arr(g, "a.i32", LP_GGUF_I32, &a) && a->arr.n == 4);
    for (int j = 0; j < 4; j++) {
        const int32_t want[] = {-1, 0, 7, INT32_MAX};
        CHECK(lp_gguf_arr_i32(a, j, &i32) && i32 == want[j]);
    }
    CHECK(!lp_gguf_arr_f32(a, 0, &f)); /* ints are not floats */
    CHECK(!lp_gguf_get_arr(g, "a.f32", LP_GGUF_F32, &a));
    CHECK(lp_gguf_arr_f32(a, 0, &f) && f == 0.5f);
    CHECK(lp_gguf_arr_f32(a, 1, &f) && f == -2.25f);
    CHECK(lp_gguf_arr_f32(a, 2, &f) && f == 1e30f);
    CHECK(!lp_gguf_get_arr(g, "a.bool", LP_GGUF_BOOL, &a) && lp_gguf_arr_i64(a, 0, &i64) &&
          i64 == 1 && lp_gguf_arr_i64(a, 1, &i64) && i64 == 0);
    CHECK(!lp_gguf_get_arr(g, "a.u64", -1, &a) && lp_gguf_arr_u64(a, 0, &u64) && u64 == UINT64_MAX);
    CHECK(!lp_gguf_arr_i64(a, 0, &i64));
    CHECK(!lp_gguf_get_arr(g, "a.i64", -1, &a) && lp_gguf_arr_i64(a, 0, &i64) && i64 == INT64_MIN &&
          lp_gguf_arr_i64(a, 1, &i64) && i64 == INT64_MAX);
    CHECK(!lp_gguf_get_arr(g, "a.f64", -1, &a) && lp_gguf_arr_f32(a, 0, &f) && f == 0.0f);
    {
        struct lp_gguf_value e;
        (void)e;
        double d = -1;
        const double *raw = NULL;
        (void)raw;
        uint64_t bits;
        memcpy(&bits, (const uint8_t *)a->arr.data + 8, 8);
        memcpy(&d, &bits, 8);
        CHECK(d == 0.0 && signbit(d));
    }
    CHECK(!lp_gguf_get_arr(g, "a.str", LP_GGUF_STRING, &a) && a->arr.n == 4);
    size_t len;
    CHECK(!strcmp(lp_gguf_arr_str(a, 0, &len), "<s>") && len == 3);
    CHECK(!strcmp(lp_gguf_arr_str(a, 1, &len), "") && len == 0);
    CHECK(!strcmp(lp_gguf_arr_str(a, 2, NULL), "\xc4\xa0the"));
    CHECK(!strcmp(lp_gguf_arr_str(a, 3, NULL), "a b"));
    CHECK(lp_gguf_arr_str(a, 4, NULL) == NULL);
    CHECK(!lp_gguf_get_arr(g, "a.empty", LP_GGUF_U32, &a) && a->arr.n == 0);
    CHECK(!lp_gguf_arr_u32(a, 0, &u32));
    CHECK(!lp_gguf_get_arr(g, "a.empty_str", LP_GGUF_STRING, &a) && a->arr.n == 0);
    CHECK(lp_gguf_arr_str(a, 0, NULL) == NULL);

    /* nested */
    CHECK(!lp_gguf_get_arr(g, "n.i32", LP_GGUF_ARRAY, &a) && a->arr.n == 3);
    const struct lp_gguf_value *r = lp_gguf_arr_sub(a, 0);
    CHECK(r && r->type == LP_GGUF_ARRAY && r->arr.type == LP_GGUF_I32 && r->arr.n == 2 &&
          lp_gguf_arr_i32(r, 1, &i32) && i32 == 2);
    r = lp_gguf_arr_sub(a, 1);
    CHECK(r && r->arr.type == LP_GGUF_I32 && r->arr.n == 0);
    r = lp_gguf_arr_sub(a, 2);
    CHECK(r && r->arr.n == 1 && lp_gguf_arr_i32(r, 0, &i32) && i32 == 3);
    CHECK(lp_gguf_arr_sub(a, 3) == NULL);
    CHECK(!lp_gguf_get_arr(g, "n.str", LP_GGUF_ARRAY, &a) && a->arr.n == 2);
    r = lp_gguf_arr_sub(a, 0);
    CHECK(r && r->arr.type == LP_GGUF_STRING && r->arr.n == 2 &&
          !strcmp(lp_gguf_arr_str(r, 0, NULL), "x") && !strcmp(lp_gguf_arr_str(r, 1, NULL), ""));
    r = lp_gguf_arr_sub(a, 1);
    CHECK(r && r->arr.type == LP_GGUF_STRING && r->arr.n == 0);
    CHECK(!lp_gguf_get_arr(g, "n.deep", LP_GGUF_ARRAY, &a) && a->arr.n == 1);
    r = lp_gguf_arr_sub(a, 0);
    CHECK(r && r->arr.type == LP_GGUF_ARRAY && r->arr.n == 1);
    r = r ? lp_gguf_arr_sub(r, 0) : NULL;
    CHECK(r && r->arr.type == LP_GGUF_F64 && r->arr.n == 0);

    /* keys in insertion order; general.alignment appended last when not set by caller */
    CHECK(!strcmp(lp_gguf_key(g, 0), "v.u8"));
    CHECK(lp_gguf_find(g, "v.i8") == 1);
    CHECK(lp_gguf_key(g, lp_gguf_n_kv(g)) == NULL);

    /* tensors */
    CHECK(lp_gguf_n_tensors(g) == N_TSPEC + 1);
    for (int i = 0; i < N_TSPEC; i++) {
        const struct tspec *sp = &tspecs[i];
        const struct lp_tensor *t = lp_gguf_find_tensor(g, sp->name);
        CHECK_MSG(t != NULL, "%s", sp->name);
        if (!t) continue;
        CHECK(t == &lp_gguf_tensors(g)[i]);
        CHECK(t->type == sp->type && t->n_dims == sp->n_dims);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == sp->ne[d]);
        CHECK(t->nbytes == tspec_bytes(sp));
        CHECK(!memcmp(t->data, tdata[i], t->nbytes));
        CHECK(lp_gguf_tensor_offset(g, i) % alignment == 0);
    }
    const struct lp_tensor *t = lp_gguf_find_tensor(g, "t.rows");
    CHECK(t && t->type == LOPAD_TYPE_Q8_0 && t->ne[0] == 64 && t->ne[1] == 3 && t->n_dims == 2);
    if (t) {
        float y[64];
        for (int row = 0; row < 3; row++) {
            lp_type_traits(LOPAD_TYPE_Q8_0)->to_float((const uint8_t *)t->data + row * 68, y, 64);
            for (int i = 0; i < 64; i++)
                CHECK_NEAR(y[i], (float)(row * 64 + i) / 50.0f - 1.0f, 0.02, 0);
        }
    }
    CHECK(lp_gguf_find_tensor(g, "t.none") == NULL);
}

static uint8_t *tensor_data[N_TSPEC];

static void make_tensor_data(void) {
    for (int i = 0; i < N_TSPEC; i++) {
        size_t n = tspec_bytes(&tspecs[i]);
        tensor_data[i] = malloc(n);
        fill_bytes(tensor_data[i], n, (unsigned)i + 1);
        if (tspecs[i].type == LOPAD_TYPE_F32) {
            /* finite floats, so equality after a round trip is meaningful */
            float *p = (float *)tensor_data[i];
            for (size_t j = 0; j < n / 4; j++)
                p[j] = (float)j * 0.25f - 1.0f;
        }
    }
}

static void test_roundtrip(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "full.gguf");
    CHECK(write_full(path, 0, tensor_data) == LOPAD_OK);
    CHECK(no_tmp_left(path));
    struct lp_gguf *g = NULL;
    enum lopad_status st = lp_gguf_open(path, &g);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (!g) return;
    check_full(g, tensor_data, 32);
    /* the mapping can be taken over; tensor data stays valid after close */
    void *map;
    size_t size;
    const struct lp_tensor *t = lp_gguf_find_tensor(g, "t.f32");
    const void *data = t->data;
    lp_gguf_release_mapping(g, &map, &size);
    CHECK(map != NULL && size == lp_gguf_file_size(g));
    lp_gguf_close(g);
    CHECK(!memcmp(data, tensor_data[0], tspec_bytes(&tspecs[0])));
    munmap(map, size);
}

static void test_alignment(void) {
    const uint32_t aligns[] = {8, 48, 64, 4096};
    for (unsigned k = 0; k < 4; k++) {
        char path[512];
        path_in_tmp(path, sizeof path, "align.gguf");
        CHECK(write_full(path, aligns[k], tensor_data) == LOPAD_OK);
        struct lp_gguf *g = NULL;
        CHECK(lp_gguf_open(path, &g) == LOPAD_OK);
        if (!g) continue;
        check_full(g, tensor_data, aligns[k]);
        uint32_t a;
        CHECK(!lp_gguf_get_u32(g, "general.alignment", &a) && a == aligns[k]);
        for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++)
            CHECK(((const uint8_t *)lp_gguf_tensors(g)[i].data -
                   (const uint8_t *)lp_gguf_tensors(g)[0].data) %
                      aligns[k] ==
                  0);
        lp_gguf_close(g);
        unlink(path);
    }
}

/* --------------------------------------------------- hand-built files */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void b_put(struct buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_u32(struct buf *b, uint32_t v) {
    b_put(b, &v, 4);
}
static void b_u64(struct buf *b, uint64_t v) {
    b_put(b, &v, 8);
}
static void b_str(struct buf *b, const char *s) {
    b_u64(b, strlen(s));
    b_put(b, s, strlen(s));
}
static void b_pad(struct buf *b, size_t a) {
    while (b->n % a)
        b_put(b, "", 1);
}

/* knobs of a small file: 3 KVs (one string array) + 2 tensors */
struct spec {
    uint32_t magic, version;
    bool dup_key, dup_tensor, huge_str, huge_arr, deep;
    uint32_t t1_type, t1_ndims;
    uint64_t t1_offset, t1_ne0;
    uint32_t align_kv; /* 0 = no general.alignment key */
    uint32_t align_type;
    uint64_t extra_tensors;    /* added to the tensor count */
    uint32_t kv_type_override; /* if nonzero: type of the first KV */
    uint8_t bool_val;
};

static struct spec spec_default(void) {
    struct spec s = {0};
    s.magic = LP_GGUF_MAGIC;
    s.version = 3;
    s.t1_type = LOPAD_TYPE_F32;
    s.t1_ndims = 2;
    s.t1_offset = 32;
    s.t1_ne0 = 4;
    s.align_type = LP_GGUF_U32;
    s.bool_val = 1;
    return s;
}

static struct buf build(const struct spec *s) {
    struct buf b = {0};
    uint64_t n_kv = 4 + (s->align_kv ? 1 : 0) + (s->dup_key ? 1 : 0) + (s->deep ? 1 : 0);
    b_u32(&b, s->magic);
    b_u32(&b, s->version);
    b_u64(&b, 2 + s->extra_tensors);
    b_u64(&b, n_kv);
    b_str(&b, "general.architecture");
    b_u32(&b, s->kv_type_override ? s->kv_type_override : LP_GGUF_STRING);
    if (s->huge_str)
        b_u64(&b, UINT64_MAX - 3);
    else
        b_str(&b, "llada");
    b_str(&b, "x.flag");
    b_u32(&b, LP_GGUF_BOOL);
    b_put(&b, &s->bool_val, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, LP_GGUF_ARRAY);
    b_u32(&b, LP_GGUF_STRING);
    b_u64(&b, s->huge_arr ? (UINT64_MAX / 2) : 3);
    b_str(&b, "a");
    b_str(&b, "");
    b_str(&b, "ccc");
    b_str(&b, "x.scores");
    b_u32(&b, LP_GGUF_ARRAY);
    b_u32(&b, LP_GGUF_F32);
    b_u64(&b, 2);
    float sc[2] = {-1.0f, 2.0f};
    b_put(&b, sc, 8);
    if (s->align_kv) {
        b_str(&b, "general.alignment");
        b_u32(&b, s->align_type);
        if (s->align_type == LP_GGUF_U64)
            b_u64(&b, s->align_kv);
        else
            b_u32(&b, s->align_kv);
    }
    if (s->dup_key) {
        b_str(&b, "x.flag");
        b_u32(&b, LP_GGUF_U8);
        b_put(&b, "\x01", 1);
    }
    if (s->deep) {
        b_str(&b, "x.deep");
        for (int i = 0; i < LP_GGUF_MAX_DEPTH + 1; i++) {
            b_u32(&b, LP_GGUF_ARRAY);
            b_u64(&b, 1);
        }
        b_u32(&b, LP_GGUF_U8);
        b_u64(&b, 0);
    }
    /* tensor 0: F32 [4, 2] at offset 0 (32 bytes); tensor 1 configurable */
    b_str(&b, "blk.0.a");
    b_u32(&b, 2);
    b_u64(&b, 4);
    b_u64(&b, 2);
    b_u32(&b, LOPAD_TYPE_F32);
    b_u64(&b, 0);
    b_str(&b, s->dup_tensor ? "blk.0.a" : "blk.0.b");
    b_u32(&b, s->t1_ndims);
    for (uint32_t d = 0; d < s->t1_ndims && d < 16; d++)
        b_u64(&b, d == 0 ? s->t1_ne0 : 1);
    b_u32(&b, s->t1_type);
    b_u64(&b, s->t1_offset);
    b_pad(&b, s->align_kv && s->align_kv <= 4096 ? s->align_kv : 32);
    /* tensor 0 at 0 (32 bytes), tensor 1 (16 bytes) at t1_offset: nothing after it, so
     * every proper prefix of the file is invalid */
    size_t nd = (s->t1_offset <= 64 ? s->t1_offset : 32) + 16;
    for (size_t i = 0; i < nd / 4; i++) {
        float v = (float)i;
        b_put(&b, &v, 4);
    }
    return b;
}

/* open an exact-size heap copy (so ASan sees any over-read) */
static enum lopad_status open_buf(const uint8_t *p, size_t n, struct lp_gguf **g) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    enum lopad_status st = lp_gguf_open_memory(copy, n, "test.gguf", g);
    if (st == LOPAD_OK) {
        /* keep the copy alive while g is used: callers close immediately */
        lp_gguf_close(*g);
        *g = NULL;
    }
    free(copy);
    return st;
}

static enum lopad_status open_spec(const struct spec *s) {
    struct buf b = build(s);
    struct lp_gguf *g = NULL;
    enum lopad_status st = open_buf(b.p, b.n, &g);
    free(b.p);
    return st;
}

static void test_small_valid(void) {
    struct spec s = spec_default();
    struct buf b = build(&s);
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open_memory(b.p, b.n, "small.gguf", &g) == LOPAD_OK);
    if (g) {
        const struct lp_gguf_value *a;
        CHECK(!lp_gguf_get_arr(g, "tokenizer.ggml.tokens", LP_GGUF_STRING, &a) && a->arr.n == 3);
        CHECK(!strcmp(lp_gguf_arr_str(a, 2, NULL), "ccc"));
        CHECK(!lp_gguf_get_arr(g, "x.scores", LP_GGUF_F32, &a));
        float f;
        CHECK(lp_gguf_arr_f32(a, 1, &f) && f == 2.0f);
        const struct lp_tensor *t = lp_gguf_find_tensor(g, "blk.0.b");
        CHECK(t && t->nbytes == 16 && ((const float *)t->data)[1] == 9.0f);
        CHECK(b.n == lp_gguf_data_offset(g) + 48);
        void *p;
        size_t n;
        lp_gguf_release_mapping(g, &p, &n);
        CHECK(p == NULL && n == 0); /* memory images are not ours to give */
        lp_gguf_close(g);
    }
    /* a version 2 file parses the same */
    s.version = 2;
    CHECK(open_spec(&s) == LOPAD_OK);
    free(b.p);
}

static void test_truncation(void) {
    struct spec s = spec_default();
    struct buf b = build(&s);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        struct lp_gguf *g = NULL;
        enum lopad_status st = open_buf(b.p, n, &g);
        if (st != LOPAD_ERR_FORMAT || lopad_errmsg()[0] == 0) bad++;
    }
    CHECK_MSG(bad == 0, "%d prefixes did not fail with a format error", bad);
    struct lp_gguf *g = NULL;
    CHECK(open_buf(b.p, b.n, &g) == LOPAD_OK);
    /* the same through real files, for a few prefixes */
    char path[512];
    path_in_tmp(path, sizeof path, "trunc.gguf");
    const size_t cuts[] = {0, 3, 4, 23, 24, 40, b.n / 2, b.n - 1};
    for (unsigned k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        FILE *f = fopen(path, "wb");
        fwrite(b.p, 1, cuts[k], f);
        fclose(f);
        enum lopad_status st = lp_gguf_open(path, &g);
        CHECK_MSG(st == LOPAD_ERR_FORMAT && g == NULL && strstr(lopad_errmsg(), path),
                  "cut %zu: %s", cuts[k], lopad_errmsg());
    }
    unlink(path);
    free(b.p);
}

static void expect_fail(const struct spec *s, enum lopad_status want, const char *needle,
                        const char *what) {
    enum lopad_status st = open_spec(s);
    CHECK_MSG(st == want, "%s: status %d (%s)", what, st, lopad_errmsg());
    if (needle)
        CHECK_MSG(strstr(lopad_errmsg(), needle) != NULL, "%s: message '%s'", what, lopad_errmsg());
}

static void test_bad_inputs(void) {
    struct spec s;
    s = spec_default(), s.magic = 0x46554746;
    expect_fail(&s, LOPAD_ERR_FORMAT, "magic", "bad magic");
    s = spec_default(), s.version = 4;
    expect_fail(&s, LOPAD_ERR_FORMAT, "version", "version 4");
    s = spec_default(), s.version = 0x03000000;
    expect_fail(&s, LOPAD_ERR_FORMAT, "version", "big-endian version");
    s = spec_default(), s.version = 1;
    expect_fail(&s, LOPAD_ERR_UNSUPPORTED, "version", "version 1");
    s = spec_default(), s.t1_offset = 96;
    expect_fail(&s, LOPAD_ERR_FORMAT, "blk.0.b", "data outside the file");
    s = spec_default(), s.t1_offset = UINT64_MAX - 31;
    expect_fail(&s, LOPAD_ERR_FORMAT, "blk.0.b", "offset overflow");
    s = spec_default(), s.t1_offset = 16;
    expect_fail(&s, LOPAD_ERR_FORMAT, "alignment", "misaligned offset");
    s = spec_default(), s.dup_key = true;
    expect_fail(&s, LOPAD_ERR_FORMAT, "x.flag", "duplicate key");
    s = spec_default(), s.dup_tensor = true;
    expect_fail(&s, LOPAD_ERR_FORMAT, "blk.0.a", "duplicate tensor");
    s = spec_default(), s.huge_str = true;
    expect_fail(&s, LOPAD_ERR_FORMAT, "general.architecture", "huge string");
    s = spec_default(), s.huge_arr = true;
    expect_fail(&s, LOPAD_ERR_FORMAT, "tokenizer.ggml.tokens", "huge array");
    s = spec_default(), s.t1_type = 7; /* Q5_1: valid ggml, not supported */
    expect_fail(&s, LOPAD_ERR_UNSUPPORTED, "blk.0.b", "unknown tensor type");
    CHECK(strstr(lopad_errmsg(), " 7") != NULL);
    s = spec_default(), s.t1_type = 1000;
    expect_fail(&s, LOPAD_ERR_UNSUPPORTED, "1000", "absurd tensor type");
    s = spec_default(), s.t1_ndims = 5;
    expect_fail(&s, LOPAD_ERR_FORMAT, "dimensions", "n_dims 5");
    s = spec_default(), s.t1_ndims = 0;
    expect_fail(&s, LOPAD_ERR_FORMAT, "dimensions", "n_dims 0");
    s = spec_default(), s.t1_ndims = 0xffffffffu;
    expect_fail(&s, LOPAD_ERR_FORMAT, "dimensions", "n_dims huge");
    s = spec_default(), s.t1_ne0 = 0;
    expect_fail(&s, LOPAD_ERR_FORMAT, "dimension", "zero dim");
    s = spec_default(), s.t1_ne0 = (uint64_t)1 << 63;
    expect_fail(&s, LOPAD_ERR_FORMAT, "blk.0.b", "giant dim");
    s = spec_default(), s.t1_ne0 = (uint64_t)1 << 61; /* nbytes overflows */
    expect_fail(&s, LOPAD_ERR_FORMAT, "blk.0.b", "size overflow");
    s = spec_default(), s.t1_type = LOPAD_TYPE_Q8_0, s.t1_ne0 = 4;
    expect_fail(&s, LOPAD_ERR_FORMAT, "blocks", "partial block");
    s = spec_default(), s.align_kv = 12;
    expect_fail(&s, LOPAD_ERR_FORMAT, "general.alignment", "alignment 12");
    s = spec_default(), s.align_kv = 0xffffffffu & ~7u; /* multiple of 8 but absurd */
    expect_fail(&s, LOPAD_ERR_FORMAT, "general.alignment", "alignment huge");
    s = spec_default(), s.align_kv = 64, s.align_type = LP_GGUF_STRING;
    expect_fail(&s, LOPAD_ERR_FORMAT, NULL, "alignment of type string");
    s = spec_default(), s.align_kv = 64, s.t1_offset = 64;
    expect_fail(&s, LOPAD_OK, NULL, "alignment 64");
    s = spec_default(), s.align_kv = 64, s.align_type = LP_GGUF_U64, s.t1_offset = 64;
    expect_fail(&s, LOPAD_OK, NULL, "alignment 64 as u64");
    s = spec_default(), s.align_kv = 64, s.t1_offset = 32; /* valid at 32, not 64 */
    expect_fail(&s, LOPAD_ERR_FORMAT, "alignment", "offset misaligned for 64");
    s = spec_default(), s.extra_tensors = UINT64_MAX - 10;
    expect_fail(&s, LOPAD_ERR_FORMAT, "tensors", "huge tensor count");
    s = spec_default(), s.extra_tensors = 1; /* one more info than present */
    expect_fail(&s, LOPAD_ERR_FORMAT, NULL, "tensor count too large");
    s = spec_default(), s.kv_type_override = 13;
    expect_fail(&s, LOPAD_ERR_FORMAT, "general.architecture", "unknown value type");
    s = spec_default(), s.bool_val = 2;
    expect_fail(&s, LOPAD_ERR_FORMAT, "x.flag", "bool 2");
    s = spec_default(), s.deep = true;
    expect_fail(&s, LOPAD_ERR_FORMAT, "x.deep", "nesting too deep");

    /* huge KV count in the header */
    struct buf b = {0};
    b_u32(&b, LP_GGUF_MAGIC);
    b_u32(&b, 3);
    b_u64(&b, 0);
    b_u64(&b, UINT64_MAX);
    b_str(&b, "k");
    struct lp_gguf *g = NULL;
    CHECK(open_buf(b.p, b.n, &g) == LOPAD_ERR_FORMAT);
    free(b.p);

    /* missing files and directories */
    CHECK(lp_gguf_open("/nonexistent/dir/x.gguf", &g) == LOPAD_ERR_IO && g == NULL);
    CHECK(strstr(lopad_errmsg(), "/nonexistent/dir/x.gguf") != NULL);
    CHECK(lp_gguf_open(tmpdir, &g) == LOPAD_ERR_IO);
}

/* every allocation inside open can fail without leaks or crashes */
static void test_alloc_failures(void) {
    struct spec s = spec_default();
    struct buf b = build(&s);
    int ok = 0;
    for (long k = 0; k < 200 && !ok; k++) {
        struct lp_gguf *g = NULL;
        lp_alloc_fail_after(k);
        enum lopad_status st = lp_gguf_open_memory(b.p, b.n, "oom.gguf", &g);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK) {
            ok = 1;
            lp_gguf_close(g);
        } else {
            CHECK(st == LOPAD_ERR_NOMEM && g == NULL);
        }
    }
    CHECK(ok);
    free(b.p);
}

/* ---------------------------------------------------------- writer errors */

static void test_writer_failures(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "wfail.gguf");
    unlink(path);
    struct lp_gguf_writer *w = NULL;
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    if (!w) return;
    CHECK(lp_gguf_writer_add_u32(w, "k", 1) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_i8(w, "k", 1) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_u32(w, "", 1) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_set_alignment(w, 12) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_set_alignment(w, 0) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_u64(w, "general.alignment", 64) == LOPAD_ERR_ARG); /* must be u32 */
    float x[8] = {0};
    int64_t ne[2] = {4, 2};
    CHECK(lp_gguf_writer_add_tensor(w, "t", LOPAD_TYPE_F32, 2, ne, x, sizeof x) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_tensor(w, "t", LOPAD_TYPE_F32, 2, ne, x, sizeof x) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_tensor(w, "u", LOPAD_TYPE_F32, 2, ne, x, 4) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_tensor(w, "u", LOPAD_TYPE_Q8_0, 2, ne, x, sizeof x) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_tensor(w, "u", 7, 2, ne, x, sizeof x) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_add_tensor(w, "u", LOPAD_TYPE_F32, 5, ne, x, sizeof x) == LOPAD_ERR_ARG);
    CHECK(lp_gguf_writer_set_alignment(w, 64) == LOPAD_ERR_ARG); /* after tensors */
    /* a failing row producer: finish fails and leaves nothing */
    struct row_ctx rc = {0, 1};
    int64_t ne2[2] = {64, 3};
    CHECK(lp_gguf_writer_add_tensor_rows(w, "r", LOPAD_TYPE_Q8_0, 2, ne2, q8_rows, &rc) ==
          LOPAD_OK);
    CHECK(lp_gguf_writer_finish(w) == LOPAD_ERR_IO);
    CHECK(strstr(lopad_errmsg(), "row producer") != NULL);
    CHECK(rc.calls == 2);
    CHECK(!file_exists(path));
    CHECK(no_tmp_left(path));

    /* abort leaves nothing */
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_str(w, "a", "b") == LOPAD_OK);
    lp_gguf_writer_abort(w);
    CHECK(!file_exists(path) && no_tmp_left(path));
    lp_gguf_writer_abort(NULL);

    /* an unwritable place */
    CHECK(lp_gguf_writer_create("/nonexistent/dir/out.gguf", &w) == LOPAD_ERR_IO && w == NULL);
    CHECK(strstr(lopad_errmsg(), "/nonexistent/dir/out.gguf") != NULL);

    /* allocation failures in the writer: never leave a file, never leak */
    int done = 0;
    for (long k = 0; k < 400 && !done; k++) {
        lp_alloc_fail_after(k);
        enum lopad_status st = write_full(path, 64, tensor_data);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK) {
            done = 1;
        } else {
            CHECK(st == LOPAD_ERR_NOMEM);
            CHECK(!file_exists(path) && no_tmp_left(path));
        }
    }
    CHECK(done);
    unlink(path);
}

/* an existing file is replaced only when the new one is complete */
static void test_writer_replace(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "replace.gguf");
    FILE *f = fopen(path, "wb");
    fputs("old", f);
    fclose(f);
    struct lp_gguf_writer *w;
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    struct row_ctx rc = {0, 0};
    int64_t ne2[2] = {64, 1};
    lp_gguf_writer_add_tensor_rows(w, "r", LOPAD_TYPE_Q8_0, 2, ne2, q8_rows, &rc);
    CHECK(lp_gguf_writer_finish(w) != LOPAD_OK);
    size_t n;
    uint8_t *p = read_file(path, &n);
    CHECK(p && n == 3 && !memcmp(p, "old", 3));
    free(p);
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_str(w, "general.architecture", "dream") == LOPAD_OK);
    CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(path, &g) == LOPAD_OK);
    if (g) {
        const char *s;
        CHECK(!lp_gguf_get_str(g, "general.architecture", &s) && !strcmp(s, "dream"));
        CHECK(lp_gguf_n_tensors(g) == 0 && lp_gguf_n_kv(g) == 2);
        lp_gguf_close(g);
    }
    unlink(path);
}

/* writer output round-trips through a reader value copy (as save_gguf does) */
static void test_copy_values(void) {
    char src[512], dst[512];
    path_in_tmp(src, sizeof src, "copy_src.gguf");
    path_in_tmp(dst, sizeof dst, "copy_dst.gguf");
    CHECK(write_full(src, 0, tensor_data) == LOPAD_OK);
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(src, &g) == LOPAD_OK);
    if (!g) return;
    struct lp_gguf_writer *w;
    CHECK(lp_gguf_writer_create(dst, &w) == LOPAD_OK);
    for (int64_t i = 0; i < lp_gguf_n_kv(g); i++)
        CHECK(lp_gguf_writer_add_value(w, lp_gguf_key(g, i), lp_gguf_value(g, i)) == LOPAD_OK);
    for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
        const struct lp_tensor *t = &lp_gguf_tensors(g)[i];
        CHECK(lp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                        t->nbytes) == LOPAD_OK);
    }
    CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
    struct lp_gguf *g2 = NULL;
    CHECK(lp_gguf_open(dst, &g2) == LOPAD_OK);
    if (g2) {
        check_full(g2, tensor_data, 32);
        CHECK(lp_gguf_n_kv(g2) == lp_gguf_n_kv(g));
        lp_gguf_close(g2);
    }
    /* byte-identical files */
    size_t n1, n2;
    uint8_t *a = read_file(src, &n1), *b = read_file(dst, &n2);
    CHECK(a && b && n1 == n2 && !memcmp(a, b, n1));
    free(a);
    free(b);
    lp_gguf_close(g);
    unlink(src);
    unlink(dst);
}

/* ------------------------------------------------------- model load/save */

#define FIX(name) LOPAD_SOURCE_DIR "/tests/fixtures/" name

static bool have_fixtures(void) {
    return file_exists(FIX("tiny-dream.gguf"));
}

/* largest |a - b| over all elements of two weights (any stored types) */
static double weight_diff(const struct lp_weight *a, const struct lp_weight *b) {
    if (a->n_in != b->n_in || a->n_out != b->n_out) return INFINITY;
    float *x = malloc(sizeof(float) * a->n_in), *y = malloc(sizeof(float) * a->n_in);
    double d = 0;
    for (int64_t r = 0; r < a->n_out; r++) {
        lp_type_traits(a->type)->to_float((const uint8_t *)a->data + r * a->row_bytes, x, a->n_in);
        lp_type_traits(b->type)->to_float((const uint8_t *)b->data + r * b->row_bytes, y, b->n_in);
        for (int64_t i = 0; i < a->n_in; i++)
            d = fmax(d, fabs((double)x[i] - y[i]));
    }
    free(x);
    free(y);
    return d;
}

static double vec_diff(const float *a, const float *b, int64_t n) {
    if (!a || !b) return a == b ? 0 : INFINITY;
    double d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* every weight of a and b within tol (tol < 0: byte-identical) */
static void compare_models(const struct lopad_model *a, const struct lopad_model *b, double tol) {
    const struct lopad_hparams *x = &a->hp, *y = &b->hp;
    CHECK(x->arch == y->arch && x->n_embd == y->n_embd && x->n_layer == y->n_layer &&
          x->n_head == y->n_head && x->n_head_kv == y->n_head_kv && x->head_dim == y->head_dim &&
          x->n_ff == y->n_ff && x->n_vocab == y->n_vocab && x->n_ctx_train == y->n_ctx_train &&
          x->rope_theta == y->rope_theta && x->norm_eps == y->norm_eps &&
          x->shift_logits == y->shift_logits && x->has_qkv_bias == y->has_qkv_bias &&
          x->mask_id == y->mask_id && x->bos_id == y->bos_id && x->eos_id == y->eos_id &&
          x->pad_id == y->pad_id && x->eot_id == y->eot_id);
    const struct lp_weight *wa[] = {&a->tok_embd, &a->output}, *wb[] = {&b->tok_embd, &b->output};
    for (int k = 0; k < 2; k++)
        CHECK(weight_diff(wa[k], wb[k]) <= (tol < 0 ? 0 : tol));
    CHECK(vec_diff(a->output_norm, b->output_norm, x->n_embd) == 0);
    for (int i = 0; i < x->n_layer && i < y->n_layer; i++) {
        const struct lp_layer *p = &a->layers[i], *q = &b->layers[i];
        const struct lp_weight *ma[] = {&p->wq,     &p->wk,   &p->wv,    &p->wo,
                                        &p->w_gate, &p->w_up, &p->w_down};
        const struct lp_weight *mb[] = {&q->wq,     &q->wk,   &q->wv,    &q->wo,
                                        &q->w_gate, &q->w_up, &q->w_down};
        for (int k = 0; k < 7; k++) {
            if (tol < 0)
                CHECK_MSG(ma[k]->type == mb[k]->type && ma[k]->row_bytes == mb[k]->row_bytes &&
                              !memcmp(ma[k]->data, mb[k]->data, ma[k]->row_bytes * ma[k]->n_out),
                          "layer %d matrix %d", i, k);
            else
                CHECK_MSG(weight_diff(ma[k], mb[k]) <= tol, "layer %d matrix %d", i, k);
        }
        CHECK(vec_diff(p->attn_norm, q->attn_norm, x->n_embd) == 0);
        CHECK(vec_diff(p->ffn_norm, q->ffn_norm, x->n_embd) == 0);
        int64_t QD = (int64_t)x->n_head * x->head_dim, KD = (int64_t)x->n_head_kv * x->head_dim;
        CHECK(vec_diff(p->bq, q->bq, QD) == 0 && vec_diff(p->bk, q->bk, KD) == 0 &&
              vec_diff(p->bv, q->bv, KD) == 0);
    }
}

static void test_load_gguf_fixtures(void) {
    if (!have_fixtures()) TEST_SKIP("no fixtures");
    lopad_model *d = NULL, *l = NULL, *dh = NULL;
    CHECK_MSG(lopad_model_load(FIX("tiny-dream.gguf"), NULL, &d) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK_MSG(lopad_model_load(FIX("tiny-llada.gguf"), NULL, &l) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK_MSG(lopad_model_load(FIX("tiny-dream"), NULL, &dh) == LOPAD_OK, "%s", lopad_errmsg());
    if (d) {
        struct lp_gguf *g;
        CHECK(lp_gguf_open(FIX("tiny-dream.gguf"), &g) == LOPAD_OK);
        uint32_t v;
        const struct lopad_hparams *hp = &d->hp;
        CHECK(hp->arch == LOPAD_ARCH_DREAM && hp->rope == LOPAD_ROPE_NEOX && hp->shift_logits);
        CHECK(hp->has_qkv_bias);
        CHECK(!lp_gguf_get_u32(g, "dream.block_count", &v) && (int)v == hp->n_layer);
        CHECK(!lp_gguf_get_u32(g, "dream.attention.head_count_kv", &v) && (int)v == hp->n_head_kv);
        CHECK(lp_gguf_find_tensor(g, "token_embd.weight")->ne[1] == hp->n_vocab);
        CHECK(!lp_gguf_get_u32(g, "tokenizer.ggml.mask_token_id", &v) && (int)v == hp->mask_id);
        CHECK(hp->head_dim * hp->n_head == hp->n_embd);
        const char *tpl;
        CHECK(!lp_gguf_get_str(g, "tokenizer.chat_template", &tpl) && d->chat_template &&
              !strcmp(tpl, d->chat_template));
        lp_gguf_close(g);
        if (dh) compare_models(d, dh, 0); /* the F32 GGUF holds the HF weights */
    }
    if (l) {
        const struct lopad_hparams *hp = &l->hp;
        CHECK(hp->arch == LOPAD_ARCH_LLADA && hp->rope == LOPAD_ROPE_NORM && !hp->shift_logits);
        CHECK(!hp->has_qkv_bias && l->layers[0].bq == NULL);
        CHECK(hp->eot_id == 269 && hp->bos_id == 264 && hp->eos_id == 265);
        CHECK(l->type_count[LOPAD_TYPE_F16] == 7 * hp->n_layer + 2);
    }
    lopad_model_free(d);
    lopad_model_free(l);
    lopad_model_free(dh);
}

static void check_same_tokenizer(const char *a, const char *b) {
    struct lp_gguf *x = NULL, *y = NULL;
    CHECK(lp_gguf_open(a, &x) == LOPAD_OK && lp_gguf_open(b, &y) == LOPAD_OK);
    if (x && y) {
        int n = 0;
        for (int64_t i = 0; i < lp_gguf_n_kv(x); i++) {
            const char *k = lp_gguf_key(x, i);
            if (strncmp(k, "tokenizer.", 10)) continue;
            const struct lp_gguf_value *u = lp_gguf_value(x, i), *v = lp_gguf_get(y, k);
            CHECK_MSG(v != NULL, "%s", k);
            if (!v) continue;
            n++;
            if (u->type == LP_GGUF_ARRAY && v->type == LP_GGUF_ARRAY) {
                CHECK(u->arr.n == v->arr.n && u->arr.type == v->arr.type);
                if (u->arr.type == LP_GGUF_STRING)
                    for (uint64_t j = 0; j < u->arr.n && j < v->arr.n; j++)
                        CHECK(!strcmp(lp_gguf_arr_str(u, j, NULL), lp_gguf_arr_str(v, j, NULL)));
                else if (u->arr.n == v->arr.n && u->arr.data)
                    CHECK(!memcmp(u->arr.data, v->arr.data,
                                  u->arr.n * lp_gguf_type_size(u->arr.type)));
            } else if (u->type == LP_GGUF_STRING) {
                CHECK_MSG(v->type == LP_GGUF_STRING && !strcmp(u->str.s, v->str.s), "%s", k);
            } else {
                int64_t p, q;
                CHECK(lp_gguf_value_i64(u, &p) && lp_gguf_value_i64(v, &q) && p == q);
            }
        }
        CHECK(n >= 5);
    }
    lp_gguf_close(x);
    lp_gguf_close(y);
}

static void test_save_roundtrip(void) {
    if (!have_fixtures()) TEST_SKIP("no fixtures");
    lopad_model *d = NULL;
    CHECK(lopad_model_load(FIX("tiny-dream.gguf"), NULL, &d) == LOPAD_OK);
    if (!d) return;
    char out[512];
    path_in_tmp(out, sizeof out, "saved.gguf");
    /* kept types: byte-identical weights */
    CHECK_MSG(lopad_model_save_gguf(d, out, -1) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK(no_tmp_left(out));
    lopad_model *e = NULL;
    CHECK_MSG(lopad_model_load(out, NULL, &e) == LOPAD_OK, "%s", lopad_errmsg());
    if (e) {
        compare_models(d, e, -1);
        CHECK(e->hp.rope == LOPAD_ROPE_NEOX && e->chat_template &&
              !strcmp(e->chat_template, d->chat_template));
        lopad_model_free(e);
    }
    check_same_tokenizer(FIX("tiny-dream.gguf"), out);
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(out, &g) == LOPAD_OK);
    if (g) {
        bool b;
        const char *s;
        CHECK(!lp_gguf_get_bool(g, "dream.attention.causal", &b) && !b);
        CHECK(!lp_gguf_get_bool(g, "diffusion.shift_logits", &b) && b);
        CHECK(!lp_gguf_get_str(g, "lopad.rope_type", &s) && !strcmp(s, "neox"));
        CHECK(lp_gguf_get(g, "general.quantization_version") == NULL);
        CHECK(lp_gguf_find_tensor(g, "output.weight") != NULL);
        CHECK(lp_gguf_find_tensor(g, "blk.0.attn_q.bias")->type == LOPAD_TYPE_F32);
        lp_gguf_close(g);
    }
    /* Q8_0 / Q4_0 / BF16 / F16: dequantised weights close to the originals */
    const struct {
        int type;
        double tol;
    } conv[] = {{LOPAD_TYPE_Q8_0, 0.02},
                {LOPAD_TYPE_Q4_0, 0.3},
                {LOPAD_TYPE_BF16, 0.01},
                {LOPAD_TYPE_F16, 0.001}};
    for (unsigned k = 0; k < sizeof conv / sizeof conv[0]; k++) {
        CHECK_MSG(lopad_model_save_gguf(d, out, conv[k].type) == LOPAD_OK, "%s", lopad_errmsg());
        e = NULL;
        CHECK_MSG(lopad_model_load(out, NULL, &e) == LOPAD_OK, "%s", lopad_errmsg());
        if (!e) continue;
        compare_models(d, e, conv[k].tol);
        CHECK(e->layers[0].wq.type == conv[k].type && e->tok_embd.type == conv[k].type);
        lopad_model_free(e);
        CHECK(lp_gguf_open(out, &g) == LOPAD_OK);
        if (g) {
            bool quant = conv[k].type == LOPAD_TYPE_Q8_0 || conv[k].type == LOPAD_TYPE_Q4_0;
            uint32_t qv = 0;
            CHECK(quant ? !lp_gguf_get_u32(g, "general.quantization_version", &qv) && qv == 2
                        : lp_gguf_get(g, "general.quantization_version") == NULL);
            lp_gguf_close(g);
        }
    }
    /* Q4_K rows must hold whole 256-blocks: 64-wide rows fall back to F16 */
    CHECK_MSG(lopad_model_save_gguf(d, out, LOPAD_TYPE_Q4_K) == LOPAD_OK, "%s", lopad_errmsg());
    e = NULL;
    CHECK(lopad_model_load(out, NULL, &e) == LOPAD_OK);
    if (e) {
        CHECK(e->layers[0].wq.type == LOPAD_TYPE_F16 && e->tok_embd.type == LOPAD_TYPE_F16);
        compare_models(d, e, 0.001);
        lopad_model_free(e);
    }
    /* the Q8_0 fixture written by gguf-py matches our Q8_0 conversion of the F32 model */
    lopad_model *q = NULL;
    CHECK(lopad_model_load(FIX("tiny-dream-q8_0.gguf"), NULL, &q) == LOPAD_OK);
    CHECK_MSG(lopad_model_save_gguf(d, out, LOPAD_TYPE_Q8_0) == LOPAD_OK, "%s", lopad_errmsg());
    e = NULL;
    CHECK(lopad_model_load(out, NULL, &e) == LOPAD_OK);
    if (q && e) compare_models(q, e, -1);
    lopad_model_free(q);
    lopad_model_free(e);

    /* types lopad does not write, and unwritable places */
    unlink(out);
    CHECK(lopad_model_save_gguf(d, out, 99) == LOPAD_ERR_ARG);
    CHECK(lopad_model_save_gguf(d, out, 3) == LOPAD_ERR_ARG);
    CHECK(!file_exists(out) && no_tmp_left(out));
    CHECK(lopad_model_save_gguf(d, "/nonexistent/dir/m.gguf", -1) == LOPAD_ERR_IO);
    /* allocation failures leave nothing behind */
    int done = 0;
    for (long k = 0; k < 300 && !done; k++) {
        lp_alloc_fail_after(k);
        enum lopad_status st = lopad_model_save_gguf(d, out, LOPAD_TYPE_Q8_0);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK)
            done = 1;
        else
            CHECK(st == LOPAD_ERR_NOMEM && !file_exists(out) && no_tmp_left(out));
    }
    CHECK(done);
    unlink(out);
    lopad_model_free(d);
}

/* LLaDA from Hugging Face (rotate-half q/k) is written the way llama.cpp's
 * converter writes it: q/k rows interleaved, RoPE NORM */
static void test_save_llada_permuted(void) {
    if (!have_fixtures()) TEST_SKIP("no fixtures");
    lopad_model *h = NULL, *ref = NULL, *e = NULL;
    CHECK_MSG(lopad_model_load(FIX("tiny-llada"), NULL, &h) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK(lopad_model_load(FIX("tiny-llada.gguf"), NULL, &ref) == LOPAD_OK);
    if (!h || !ref) goto out;
    CHECK(h->hp.rope == LOPAD_ROPE_NEOX);
    char out[512];
    path_in_tmp(out, sizeof out, "llada.gguf");
    CHECK_MSG(lopad_model_save_gguf(h, out, LOPAD_TYPE_F16) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK_MSG(lopad_model_load(out, NULL, &e) == LOPAD_OK, "%s", lopad_errmsg());
    if (e) {
        CHECK(e->hp.rope == LOPAD_ROPE_NORM);
        /* same bytes as the fixture made with gguf-py and the LLaMA permutation */
        compare_models(ref, e, -1);
        /* and saving the NORM model again changes nothing */
        char out2[512];
        path_in_tmp(out2, sizeof out2, "llada2.gguf");
        CHECK(lopad_model_save_gguf(e, out2, -1) == LOPAD_OK);
        lopad_model *e2 = NULL;
        CHECK(lopad_model_load(out2, NULL, &e2) == LOPAD_OK);
        if (e2) compare_models(e, e2, -1);
        lopad_model_free(e2);
        unlink(out2);
    }
    unlink(out);
out:
    lopad_model_free(h);
    lopad_model_free(ref);
    lopad_model_free(e);
}

/* Copy src to dst, dropping key `drop` and adding one string key. */
static void rewrite(const char *src, const char *dst, const char *drop, const char *add_key,
                    const char *add_val) {
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(src, &g) == LOPAD_OK);
    if (!g) return;
    struct lp_gguf_writer *w;
    CHECK(lp_gguf_writer_create(dst, &w) == LOPAD_OK);
    if (add_key) CHECK(lp_gguf_writer_add_str(w, add_key, add_val) == LOPAD_OK);
    for (int64_t i = 0; i < lp_gguf_n_kv(g); i++) {
        const char *k = lp_gguf_key(g, i);
        if ((drop && !strcmp(k, drop)) || (add_key && !strcmp(k, add_key))) continue;
        CHECK(lp_gguf_writer_add_value(w, k, lp_gguf_value(g, i)) == LOPAD_OK);
    }
    for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
        const struct lp_tensor *t = &lp_gguf_tensors(g)[i];
        CHECK(lp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                        t->nbytes) == LOPAD_OK);
    }
    CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
    lp_gguf_close(g);
}

static void test_load_gguf_errors(void) {
    if (!have_fixtures()) TEST_SKIP("no fixtures");
    char p[512];
    path_in_tmp(p, sizeof p, "bad_model.gguf");
    lopad_model *m = NULL;

    rewrite(FIX("tiny-dream.gguf"), p, NULL, "general.architecture", "llama");
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_UNSUPPORTED && m == NULL);
    CHECK(strstr(lopad_errmsg(), "llama") && strstr(lopad_errmsg(), p));

    rewrite(FIX("tiny-llada.gguf"), p, "llada.block_count", NULL, NULL);
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "llada.block_count") && strstr(lopad_errmsg(), p));

    rewrite(FIX("tiny-llada.gguf"), p, "llada.attention.layer_norm_rms_epsilon", NULL, NULL);
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "layer_norm_rms_epsilon") != NULL);

    rewrite(FIX("tiny-dream.gguf"), p, NULL, "lopad.rope_type", "sideways");
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "lopad.rope_type") != NULL);

    rewrite(FIX("tiny-dream.gguf"), p, NULL, "dream.block_count", "two"); /* wrong type */
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT);
    CHECK(strstr(lopad_errmsg(), "dream.block_count") != NULL);

    rewrite(FIX("tiny-dream.gguf"), p, NULL, "lopad.rope_type", "norm");
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_OK);
    if (m) CHECK(m->hp.rope == LOPAD_ROPE_NORM);
    lopad_model_free(m);
    m = NULL;

    /* absent head_count_kv defaults to head_count; absent shift_logits: llada -> false */
    rewrite(FIX("tiny-llada.gguf"), p, "diffusion.shift_logits", NULL, NULL);
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_OK);
    if (m) CHECK(!m->hp.shift_logits && m->hp.n_head_kv == 4);
    lopad_model_free(m);
    m = NULL;
    rewrite(FIX("tiny-llada.gguf"), p, "llada.attention.head_count_kv", NULL, NULL);
    CHECK(lopad_model_load(p, NULL, &m) == LOPAD_OK);
    if (m) CHECK(m->hp.n_head_kv == m->hp.n_head);
    lopad_model_free(m);
    m = NULL;

    /* a missing tensor is named */
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(FIX("tiny-dream.gguf"), &g) == LOPAD_OK);
    if (g) {
        struct lp_gguf_writer *w;
        CHECK(lp_gguf_writer_create(p, &w) == LOPAD_OK);
        for (int64_t i = 0; i < lp_gguf_n_kv(g); i++)
            lp_gguf_writer_add_value(w, lp_gguf_key(g, i), lp_gguf_value(g, i));
        for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
            const struct lp_tensor *t = &lp_gguf_tensors(g)[i];
            if (!strcmp(t->name, "blk.1.ffn_up.weight")) continue;
            lp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
        }
        CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
        lp_gguf_close(g);
        CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT);
        CHECK(strstr(lopad_errmsg(), "blk.1.ffn_up.weight") != NULL);
    }

    /* allocation failures while loading */
    int done = 0;
    for (long k = 0; k < 400 && !done; k++) {
        lp_alloc_fail_after(k);
        enum lopad_status st = lopad_model_load(FIX("tiny-llada.gguf"), NULL, &m);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK)
            done = 1, lopad_model_free(m);
        else
            CHECK(st == LOPAD_ERR_NOMEM && m == NULL);
    }
    CHECK(done);
    unlink(p);
}

/* a Hugging Face model's tokenizer.json becomes tokenizer.ggml.* keys that
 * tokenise exactly like the original */
static void test_save_hf_tokenizer(void) {
    if (!have_fixtures()) TEST_SKIP("no fixtures");
    const char *dirs[] = {FIX("tiny-dream"), FIX("tiny-llada")};
    const char *ggufs[] = {FIX("tiny-dream.gguf"), FIX("tiny-llada.gguf")};
    for (int k = 0; k < 2; k++) {
        lopad_model *m = NULL;
        CHECK(lopad_model_load(dirs[k], NULL, &m) == LOPAD_OK);
        if (!m) continue;
        char out[512];
        path_in_tmp(out, sizeof out, "hf_tok.gguf");
        CHECK_MSG(lopad_model_save_gguf(m, out, -1) == LOPAD_OK, "%s", lopad_errmsg());
        lopad_model_free(m);
        /* same vocabulary, types and merges as the gguf-py fixture */
        check_same_tokenizer(ggufs[k], out);
        struct lp_tokenizer *a = NULL, *b = NULL;
        CHECK_MSG(lp_tokenizer_load(dirs[k], &a) == LOPAD_OK, "%s", lopad_errmsg());
        CHECK_MSG(lp_tokenizer_from_gguf(out, &b) == LOPAD_OK, "%s", lopad_errmsg());
        if (a && b) {
            CHECK(lp_tokenizer_n_vocab(a) <= lp_tokenizer_n_vocab(b));
            const char *texts[] = {"Hello world, the cat sat.", "  spaces\tand\nnewlines 123",
                                   "<|im_start|>user\nhi<|im_end|>", "caf\xc3\xa9 \xe2\x82\xac"};
            for (unsigned t = 0; t < sizeof texts / sizeof texts[0]; t++) {
                struct lp_ids x = {0}, y = {0};
                CHECK(lp_tokenizer_encode(a, texts[t], strlen(texts[t]), true, &x) == LOPAD_OK);
                CHECK(lp_tokenizer_encode(b, texts[t], strlen(texts[t]), true, &y) == LOPAD_OK);
                CHECK_MSG(x.n == y.n && x.n > 0 && !memcmp(x.v, y.v, x.n * sizeof *x.v), "text %u",
                          t);
                lp_ids_free(&x);
                lp_ids_free(&y);
            }
        }
        lp_tokenizer_free(a);
        lp_tokenizer_free(b);
        unlink(out);
    }
}

/* A string value with an embedded NUL is kept whole by the reader (str.len),
 * but every C-string consumer refuses it, naming the key, instead of reading
 * its prefix: lp_gguf_get_str, the model loader, the tokenizer loader. */
static void test_nul_strings(void) {
    static const char *const keys[] = {"general.architecture", "tokenizer.ggml.model",
                                       "tokenizer.chat_template"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char p[600];
        snprintf(p, sizeof p, "%s/nul.gguf", tmpdir);
        struct lp_gguf_writer *w;
        CHECK(lp_gguf_writer_create(p, &w) == LOPAD_OK);
        struct lp_gguf_value v = {.type = LP_GGUF_STRING, .str = {"dream\0x", 7}};
        for (size_t o = 0; o < sizeof keys / sizeof keys[0]; o++) {
            if (o == k)
                CHECK(lp_gguf_writer_add_value(w, keys[o], &v) == LOPAD_OK);
            else
                CHECK(lp_gguf_writer_add_str(w, keys[o], o ? "gpt2" : "dream") == LOPAD_OK);
        }
        CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
        struct lp_gguf *g = NULL;
        CHECK(lp_gguf_open(p, &g) == LOPAD_OK);
        if (!g) continue;
        const struct lp_gguf_value *got = lp_gguf_get(g, keys[k]);
        CHECK(got && got->str.len == 7 && !memcmp(got->str.s, "dream\0x", 7));
        const char *s = NULL;
        CHECK(lp_gguf_get_str(g, keys[k], &s) == LOPAD_ERR_FORMAT && !s);
        CHECK_MSG(strstr(lopad_errmsg(), keys[k]) && strstr(lopad_errmsg(), "NUL"), "%s",
                  lopad_errmsg());
        struct lp_tokenizer *t = NULL;
        if (k == 1) {
            CHECK(lp_tokenizer_from_gguf_ctx(g, p, &t) == LOPAD_ERR_FORMAT && !t);
            CHECK_MSG(strstr(lopad_errmsg(), keys[k]) && strstr(lopad_errmsg(), "NUL"), "%s",
                      lopad_errmsg());
        }
        lp_gguf_close(g);
        if (k == 0) {
            lopad_model *m = NULL;
            CHECK(lopad_model_load(p, NULL, &m) == LOPAD_ERR_FORMAT && !m);
            CHECK_MSG(strstr(lopad_errmsg(), keys[k]) && strstr(lopad_errmsg(), "NUL"), "%s",
                      lopad_errmsg());
        }
        unlink(p);
    }
}

/* A FIFO or directory given as the model is refused at once (open() must not
 * block), with an error naming it. */
static void test_special_files(void) {
    char p[600];
    snprintf(p, sizeof p, "%s/fifo.gguf", tmpdir);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0);
    struct lp_gguf *g = NULL;
    CHECK(lp_gguf_open(p, &g) == LOPAD_ERR_IO && !g);
    CHECK_MSG(strstr(lopad_errmsg(), "fifo.gguf") && strstr(lopad_errmsg(), "FIFO"), "%s",
              lopad_errmsg());
    lopad_model *m = NULL;
    CHECK(lopad_model_load(p, NULL, &m) != LOPAD_OK && !m);
    CHECK_MSG(strstr(lopad_errmsg(), "fifo.gguf") && strstr(lopad_errmsg(), "FIFO"), "%s",
              lopad_errmsg());
    unlink(p);
    CHECK(lp_gguf_open("/dev/null", &g) == LOPAD_ERR_IO && !g);
    CHECK_MSG(strstr(lopad_errmsg(), "character device"), "%s", lopad_errmsg());
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_gguf_tmp_%ld", LOPAD_BINARY_DIR, (long)getpid());
    mkdir(tmpdir, 0755);
    make_tensor_data();
    TEST_RUN(test_roundtrip);
    TEST_RUN(test_alignment);
    TEST_RUN(test_small_valid);
    TEST_RUN(test_truncation);
    TEST_RUN(test_bad_inputs);
    TEST_RUN(test_alloc_failures);
    TEST_RUN(test_writer_failures);
    TEST_RUN(test_writer_replace);
    TEST_RUN(test_copy_values);
    TEST_RUN(test_load_gguf_fixtures);
    TEST_RUN(test_save_roundtrip);
    TEST_RUN(test_save_llada_permuted);
    TEST_RUN(test_load_gguf_errors);
    TEST_RUN(test_save_hf_tokenizer);
    TEST_RUN(test_nul_strings);
    alarm(120); /* a blocking open() fails the test instead of hanging it */
    TEST_RUN(test_special_files);
    alarm(0);
    for (int i = 0; i < N_TSPEC; i++)
        free(tensor_data[i]);
    rmdir(tmpdir);
    return test_report();
}
