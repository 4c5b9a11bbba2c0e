/*
 * test_safetensors.c - the safetensors reader and the JSON helpers: files are
 * written from C under LOPAD_BINARY_DIR, plus one fixture written by the
 * `safetensors` PyPI package (tests/fixtures/make_st_fixture.py).
 */
#include "test.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/common.h"
#include "core/types.h"
#include "formats/json.h"
#include "formats/safetensors.h"

#define TMP LOPAD_BINARY_DIR "/test_tmp_safetensors"

static char path_buf[512];
static const char *tmp_path(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", TMP, name);
    return path_buf;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

/* u64 LE header size + header (space-padded to a multiple of 8 like real
 * writers, unless raw) + data */
static void write_st_x(const char *path, const char *header, const void *data, size_t data_len,
                       bool raw) {
    size_t hl0 = strlen(header), hl = raw ? hl0 : (hl0 + 7) / 8 * 8;
    size_t n = 8 + hl + data_len;
    unsigned char *buf = malloc(n);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl0);
    memset(buf + 8 + hl0, ' ', hl - hl0);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    write_bytes(path, buf, n);
    free(buf);
}
static void write_st(const char *path, const char *header, const void *data, size_t data_len) {
    write_st_x(path, header, data, data_len, false);
}

static bool msg_has(const char *s) {
    return strstr(lopad_errmsg(), s) != NULL;
}

/* Open a file expected to fail with `want`; the message must contain each of
 * the given fragments. */
static void expect_fail(const char *path, enum lopad_status want, const char *frag1,
                        const char *frag2) {
    struct lp_st_file *f = (struct lp_st_file *)1;
    enum lopad_status st = lp_st_open(path, &f);
    CHECK_MSG(st == want, "%s: got status %d (%s), want %d", path, st, lopad_errmsg(), want);
    CHECK(f == NULL);
    if (frag1) CHECK_MSG(msg_has(frag1), "message '%s' lacks '%s'", lopad_errmsg(), frag1);
    if (frag2) CHECK_MSG(msg_has(frag2), "message '%s' lacks '%s'", lopad_errmsg(), frag2);
    if (st == LOPAD_OK) lp_st_close(f);
}

/* ------------------------------------------------------------------ good */

static void test_dtypes_and_dims(void) {
    /* bf16 [2, 3] = 1..6, f16 [2] = {0.5, -2}, f32 [1, 2, 2] = {1.5, 2.5, 3.5, 4.5} */
    unsigned char data[12 + 4 + 16];
    for (int i = 0; i < 6; i++) {
        uint16_t b = lp_f32_to_bf16((float)(i + 1));
        memcpy(data + 2 * i, &b, 2);
    }
    uint16_t h0 = lp_f32_to_f16(0.5f), h1 = lp_f32_to_f16(-2.0f);
    memcpy(data + 12, &h0, 2);
    memcpy(data + 14, &h1, 2);
    float fv[4] = {1.5f, 2.5f, 3.5f, 4.5f};
    memcpy(data + 16, fv, 16);
    const char *hdr = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[12,16]},"
                      "\"c\":{\"dtype\":\"F32\",\"shape\":[1,2,2],\"data_offsets\":[16,32]},"
                      "\"__metadata__\":{\"format\":\"pt\"}}    ";
    write_st(tmp_path("good.safetensors"), hdr, data, sizeof data);
    struct lp_st_file *f = NULL;
    enum lopad_status st = lp_st_open(tmp_path("good.safetensors"), &f);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    CHECK(f->n == 3);
    const struct lp_tensor *a = lp_st_find(f, "a"), *b = lp_st_find(f, "b"),
                           *c = lp_st_find(f, "c");
    CHECK(a && b && c);
    CHECK(lp_st_find(f, "__metadata__") == NULL);
    CHECK(lp_st_find(f, "d") == NULL);
    if (a && b && c) {
        CHECK(a->type == LOPAD_TYPE_BF16 && a->n_dims == 2);
        CHECK(a->ne[0] == 3 && a->ne[1] == 2 && a->ne[2] == 1 && a->ne[3] == 1); /* reversed */
        CHECK(a->nbytes == 12);
        uint16_t v;
        memcpy(&v, (const char *)a->data + 2 * 4, 2); /* row 1, col 1 = 5 */
        CHECK(lp_bf16_to_f32(v) == 5.0f);
        CHECK(b->type == LOPAD_TYPE_F16 && b->n_dims == 1 && b->ne[0] == 2);
        memcpy(&v, (const char *)b->data + 2, 2);
        CHECK(lp_f16_to_f32(v) == -2.0f);
        CHECK(c->type == LOPAD_TYPE_F32 && c->n_dims == 3);
        CHECK(c->ne[0] == 2 && c->ne[1] == 2 && c->ne[2] == 1);
        CHECK(((const float *)c->data)[3] == 4.5f);
        /* data points into the mapping, not a copy */
        CHECK((const char *)a->data == (const char *)f->map + 8 + (strlen(hdr) + 7) / 8 * 8);
    }
    CHECK(lp_st_meta(f, "format") && !strcmp(lp_st_meta(f, "format"), "pt"));
    CHECK(lp_st_meta(f, "nope") == NULL);

    /* handing the mapping over keeps views valid after close */
    void *map;
    size_t size;
    const float *cdata = c ? c->data : NULL;
    lp_st_take_mapping(f, &map, &size);
    CHECK(f->map == NULL && map != NULL && size == 8 + (strlen(hdr) + 7) / 8 * 8 + sizeof data);
    lp_st_close(f);
    if (cdata) CHECK(cdata[0] == 1.5f);
    munmap(map, size);
}

static void test_empty_and_scalar(void) {
    float one = 1.0f;
    write_st(tmp_path("scalar.safetensors"),
             "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
             "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,7],\"data_offsets\":[4,4]}}",
             &one, 4);
    struct lp_st_file *f = NULL;
    enum lopad_status st = lp_st_open(tmp_path("scalar.safetensors"), &f);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    const struct lp_tensor *s = lp_st_find(f, "s"), *z = lp_st_find(f, "z");
    CHECK(s && s->n_dims == 0 && lp_tensor_nelements(s) == 1 && *(const float *)s->data == 1.0f);
    CHECK(z && z->n_dims == 2 && z->ne[0] == 7 && z->ne[1] == 0 && z->nbytes == 0);
    lp_st_close(f);

    write_st(tmp_path("none.safetensors"), "{}", NULL, 0);
    st = lp_st_open(tmp_path("none.safetensors"), &f);
    CHECK(st == LOPAD_OK && f && f->n == 0);
    lp_st_close(f);
}

/* written by the python `safetensors` package */
static void test_python_fixture(void) {
    struct lp_st_file *f = NULL;
    enum lopad_status st = lp_st_open(LOPAD_SOURCE_DIR "/tests/fixtures/st_python.safetensors", &f);
    CHECK_MSG(st == LOPAD_OK, "%s", lopad_errmsg());
    if (st) return;
    CHECK(f->n == 4);
    CHECK(lp_st_meta(f, "note") && !strcmp(lp_st_meta(f, "note"), "lopad fixture"));
    struct {
        const char *name;
        int type, n_dims;
        int64_t ne[4];
        double c, s;
    } want[] = {
        {"w.bf16", LOPAD_TYPE_BF16, 2, {5, 3, 1, 1}, 7, 0.25},
        {"v.f16", LOPAD_TYPE_F16, 1, {4, 1, 1, 1}, 1, 0.5},
        {"x.f32", LOPAD_TYPE_F32, 3, {4, 3, 2, 1}, 11, 0.125},
        {"scalar.f32", LOPAD_TYPE_F32, 0, {1, 1, 1, 1}, -3, 1.0},
    };
    for (unsigned k = 0; k < sizeof want / sizeof want[0]; k++) {
        const struct lp_tensor *t = lp_st_find(f, want[k].name);
        CHECK_MSG(t != NULL, "%s", want[k].name);
        if (!t) continue;
        CHECK(t->type == want[k].type && t->n_dims == want[k].n_dims);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == want[k].ne[d]);
        int64_t n = lp_tensor_nelements(t);
        float *v = malloc(sizeof(float) * n);
        lp_type_traits(t->type)->to_float(t->data, v, n);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(v[i], (i - want[k].c) * want[k].s, 0, 0);
        free(v);
    }
    lp_st_close(f);
}

/* ------------------------------------------------------------------- bad */

static void test_bad_headers(void) {
    const char *p;
    /* missing file */
    expect_fail(tmp_path("does_not_exist.safetensors"), LOPAD_ERR_IO, "does_not_exist", NULL);
    /* shorter than the 8-byte header size */
    write_bytes(p = tmp_path("short.safetensors"), "\x10\x00\x00", 3);
    expect_fail(p, LOPAD_ERR_FORMAT, "short.safetensors", "too short");
    /* header size larger than the file */
    {
        unsigned char b[16] = {0xff, 0x10, 0, 0, 0, 0, 0, 0, '{', '}'};
        write_bytes(p = tmp_path("hsize.safetensors"), b, 10);
        expect_fail(p, LOPAD_ERR_FORMAT, "hsize.safetensors", "header size 4351");
        /* absurd u64 (would overflow a naive 8 + size) */
        memset(b, 0xff, 8);
        write_bytes(p, b, 10);
        expect_fail(p, LOPAD_ERR_FORMAT, "hsize.safetensors", "larger than");
    }
    /* header over the limit in a (sparse) file big enough to hold it */
    {
        uint64_t hs = LP_ST_MAX_HEADER + 1;
        unsigned char b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(hs >> (8 * i));
        write_bytes(p = tmp_path("huge.safetensors"), b, 8);
        CHECK(truncate(p, (off_t)(8 + hs + 16)) == 0);
        expect_fail(p, LOPAD_ERR_FORMAT, "huge.safetensors", "limit");
        unlink(p);
    }
    /* header size fits but the JSON is cut short */
    write_st(p = tmp_path("trunc.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"sha", NULL, 0);
    expect_fail(p, LOPAD_ERR_FORMAT, "trunc.safetensors", "malformed JSON");
    /* not an object */
    write_st(p = tmp_path("array.safetensors"), "[1, 2]", NULL, 0);
    expect_fail(p, LOPAD_ERR_FORMAT, "array.safetensors", "object");
    /* trailing garbage after the JSON */
    write_st(p = tmp_path("garbage.safetensors"), "{} x", NULL, 0);
    expect_fail(p, LOPAD_ERR_FORMAT, "garbage.safetensors", "malformed JSON");
    /* metadata must be strings */
    write_st(p = tmp_path("meta.safetensors"), "{\"__metadata__\":{\"k\":1}}", NULL, 0);
    expect_fail(p, LOPAD_ERR_FORMAT, "meta.safetensors", "'k'");
}

struct bad_case {
    const char *file, *header;
    size_t data_len;
    enum lopad_status want;
    const char *frag1, *frag2;
};

static void test_bad_tensors(void) {
    static const unsigned char zeros[64];
    const struct bad_case cases[] = {
        {"oob.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
         LOPAD_ERR_FORMAT, "'t'", "past the 8-byte"},
        {"rev.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
         LOPAD_ERR_FORMAT, "'t'", "[8, 4]"},
        {"size.safetensors", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}",
         16, LOPAD_ERR_FORMAT, "'t'", "needs 12"},
        {"i64.safetensors", "{\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
         16, LOPAD_ERR_UNSUPPORTED, "'ids'", "I64"},
        {"f8.safetensors", "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}",
         2, LOPAD_ERR_UNSUPPORTED, "'q'", "F8_E4M3"},
        {"rank.safetensors",
         "{\"r\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         LOPAD_ERR_UNSUPPORTED, "'r'", "5 dimensions"},
        {"neg.safetensors", "{\"n\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         LOPAD_ERR_FORMAT, "'n'", "shape"},
        {"frac.safetensors", "{\"n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}",
         8, LOPAD_ERR_FORMAT, "'n'", "data_offsets[1]"},
        {"huge_shape.safetensors",
         "{\"n\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}",
         4, LOPAD_ERR_FORMAT, "'n'", "overflow"},
        {"nodtype.safetensors", "{\"n\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         LOPAD_ERR_FORMAT, "'n'", "'dtype'"},
        {"noshape.safetensors", "{\"n\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
         LOPAD_ERR_FORMAT, "'n'", "'shape'"},
        {"offs3.safetensors", "{\"n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
         8, LOPAD_ERR_FORMAT, "'n'", "data_offsets"},
        {"overlap.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, LOPAD_ERR_FORMAT, "'a' and 'b'", "overlap"},
        {"dup.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, LOPAD_ERR_FORMAT, "'a'", "twice"},
        {"entry.safetensors", "{\"e\":[1,2]}", 0, LOPAD_ERR_FORMAT, "'e'", "object"},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_case *c = &cases[i];
        const char *p = tmp_path(c->file);
        write_st(p, c->header, zeros, c->data_len);
        expect_fail(p, c->want, c->file, c->frag1);
        if (c->frag2)
            CHECK_MSG(msg_has(c->frag2), "%s: '%s' lacks '%s'", c->file, lopad_errmsg(), c->frag2);
    }
    /* a BF16 tensor at an odd address: header of odd length puts data at an odd offset */
    const char *p = tmp_path("align.safetensors");
    write_st_x(p, "{\"u\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[1,3]}} ", zeros, 4,
               true);
    /* the header is 56 bytes, so data starts at 64 and offset 1 is odd */
    expect_fail(p, LOPAD_ERR_UNSUPPORTED, "'u'", "aligned");
}

/* Every allocation failure is reported as NOMEM, leaks nothing (ASan) and
 * leaves *out NULL. */
static void test_alloc_failures(void) {
    const char *p = LOPAD_SOURCE_DIR "/tests/fixtures/st_python.safetensors";
    int ok_at = -1;
    for (long k = 0; k < 200; k++) {
        struct lp_st_file *f = (struct lp_st_file *)1;
        lp_alloc_fail_after(k);
        enum lopad_status st = lp_st_open(p, &f);
        lp_alloc_fail_after(-1);
        if (st == LOPAD_OK) {
            ok_at = (int)k;
            lp_st_close(f);
            break;
        }
        CHECK_MSG(st == LOPAD_ERR_NOMEM, "k=%ld: %d %s", k, st, lopad_errmsg());
        CHECK(f == NULL);
    }
    CHECK(ok_at > 3);
}

/* ------------------------------------------------------------------ json */

static void test_json_helpers(void) {
    const char *js = "{\"i\": 7, \"big\": 1e300, \"f\": 0.5, \"s\": \"x\", \"b\": false, "
                     "\"n\": null, \"l\": [\"p\", \"q\"], \"bad\": [\"p\", 3]}";
    cJSON *r = NULL;
    CHECK(lp_json_parse(js, strlen(js), "t.json", &r) == LOPAD_OK);
    int i = 0;
    int64_t i64 = 0;
    double d = 0;
    const char *s = NULL;
    bool b = true;
    const char **l = NULL;
    int n = 0;
    CHECK(lp_json_get_int(r, "i", 0, 10, "t.json", &i) == LOPAD_OK && i == 7);
    CHECK(lp_json_get_int(r, "i", 8, 10, "t.json", &i) == LOPAD_ERR_FORMAT);
    CHECK(msg_has("t.json") && msg_has("'i'") && msg_has("outside"));
    CHECK(lp_json_get_i64(r, "big", 0, INT64_MAX, "t.json", &i64) == LOPAD_ERR_FORMAT);
    CHECK(lp_json_get_int(r, "f", 0, 10, "t.json", &i) == LOPAD_ERR_FORMAT && msg_has("'f'"));
    CHECK(lp_json_get_int(r, "s", 0, 10, "t.json", &i) == LOPAD_ERR_FORMAT && msg_has("string"));
    CHECK(lp_json_get_int(r, "missing", 0, 10, "t.json", &i) == LOPAD_ERR_FORMAT &&
          msg_has("missing key 'missing'") && msg_has("t.json"));
    CHECK(lp_json_opt_int(r, "missing", 0, 10, 4, "t.json", &i) == LOPAD_OK && i == 4);
    CHECK(lp_json_opt_int(r, "n", 0, 10, 5, "t.json", &i) == LOPAD_OK && i == 5);
    CHECK(lp_json_opt_int(r, "s", 0, 10, 5, "t.json", &i) == LOPAD_ERR_FORMAT);
    CHECK(lp_json_get_double(r, "f", "t.json", &d) == LOPAD_OK && d == 0.5);
    CHECK(lp_json_get_double(r, "i", "t.json", &d) == LOPAD_OK && d == 7);
    CHECK(lp_json_opt_double(r, "zz", 2.5, "t.json", &d) == LOPAD_OK && d == 2.5);
    CHECK(lp_json_get_string(r, "s", "t.json", &s) == LOPAD_OK && !strcmp(s, "x"));
    CHECK(lp_json_opt_string(r, "zz", NULL, "t.json", &s) == LOPAD_OK && s == NULL);
    CHECK(lp_json_get_bool(r, "b", "t.json", &b) == LOPAD_OK && !b);
    CHECK(lp_json_get_bool(r, "i", "t.json", &b) == LOPAD_ERR_FORMAT && msg_has("boolean"));
    CHECK(lp_json_opt_bool(r, "zz", true, "t.json", &b) == LOPAD_OK && b);
    CHECK(lp_json_get_strings(r, "l", false, "t.json", &l, &n) == LOPAD_OK && n == 2 &&
          !strcmp(l[1], "q"));
    lp_free(l);
    CHECK(lp_json_get_strings(r, "s", true, "t.json", &l, &n) == LOPAD_OK && n == 1 &&
          !strcmp(l[0], "x"));
    lp_free(l);
    CHECK(lp_json_get_strings(r, "s", false, "t.json", &l, &n) == LOPAD_ERR_FORMAT);
    CHECK(lp_json_get_strings(r, "bad", false, "t.json", &l, &n) == LOPAD_ERR_FORMAT &&
          msg_has("element 1") && l == NULL);
    CHECK(lp_json_opt_strings(r, "zz", true, "t.json", &l, &n) == LOPAD_OK && n == 0 && !l);
    cJSON_Delete(r);

    /* parse errors give the file, offset and line */
    r = (cJSON *)1;
    CHECK(lp_json_parse("{\"a\": 1,\n \"b\": }", 16, "cfg.json", &r) == LOPAD_ERR_FORMAT);
    CHECK(r == NULL && msg_has("cfg.json") && msg_has("line 2"));
    CHECK(lp_json_parse("{}\0", 3, "z.json", &r) == LOPAD_ERR_FORMAT && msg_has("NUL"));
    /* not NUL-terminated input (parsed from a prefix of a longer string) */
    CHECK(lp_json_parse("{\"a\":1}xyz", 7, "p.json", &r) == LOPAD_OK);
    cJSON_Delete(r);

    /* files: size bound and missing file */
    write_bytes(tmp_path("f.json"), "{\"k\": [1, 2, 3]}\n", 17);
    CHECK(lp_json_read_file(tmp_path("f.json"), 0, &r) == LOPAD_OK && r);
    cJSON_Delete(r);
    CHECK(lp_json_read_file(tmp_path("f.json"), 10, &r) == LOPAD_ERR_FORMAT && msg_has("f.json"));
    CHECK(lp_json_read_file(tmp_path("nope.json"), 0, &r) == LOPAD_ERR_IO && msg_has("nope.json"));
}

/* A JSON error never quotes the file's bytes: config.json may be a symlink to
 * a secret. It gives the position and the kind of character instead. */
static void test_json_no_echo(void) {
    const char *secrets[] = {
        "TOPSECRET-hunter2\n",                    /* not JSON at all */
        "{\"a\": 1,\n \"b\": TOPSECRET-hunter2}", /* a bare word inside */
        "{\"a\": [1, 2]} TOPSECRET-hunter2",      /* trailing bytes */
        "\"TOPSECRET-hunter2",                    /* unterminated string */
    };
    char p[600];
    snprintf(p, sizeof p, "%s/secret.txt", TMP);
    const char *link = tmp_path("config.json");
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        write_bytes(p, secrets[i], strlen(secrets[i]));
        unlink(link);
        CHECK(symlink(p, link) == 0);
        cJSON *r = NULL;
        CHECK(lp_json_read_file(link, 0, &r) == LOPAD_ERR_FORMAT && !r);
        CHECK_MSG(msg_has("config.json") && msg_has("byte") && !msg_has("TOPSECRET") &&
                      !msg_has("hunter") && !msg_has("SECRET"),
                  "%s", lopad_errmsg());
    }
    unlink(link);
    cJSON *r_dummy_ = NULL;
    CHECK(lp_json_parse("{\"a\": 1,\n \"b\": x}", 17, "c.json", &r_dummy_) == LOPAD_ERR_FORMAT);
    CHECK_MSG(msg_has("line 2, column 7") && msg_has("a letter"), "%s", lopad_errmsg());
}

/* A key repeated in one object keeps its last value, at every depth, as in
 * Python's json.load (transformers reads config.json that way). */
static void test_json_duplicate_keys(void) {
    const char *js = "{\"n\": 1, \"o\": {\"x\": \"first\", \"y\": 0, \"x\": \"last\"},"
                     " \"l\": [{\"k\": 1, \"k\": 2}], \"n\": 3, \"n\": 4}";
    write_bytes(tmp_path("dup.json"), js, strlen(js));
    cJSON *r = NULL;
    CHECK(lp_json_read_file(tmp_path("dup.json"), 0, &r) == LOPAD_OK && r);
    if (!r) return;
    int n = 0;
    const char *x = NULL;
    CHECK(lp_json_get_int(r, "n", 0, 10, "dup", &n) == LOPAD_OK && n == 4);
    const cJSON *o = lp_json_item(r, "o");
    CHECK(lp_json_get_string(o, "x", "dup", &x) == LOPAD_OK && x && !strcmp(x, "last"));
    CHECK(cJSON_GetArraySize(o) == 2 && cJSON_GetArraySize(r) == 3);
    const cJSON *k = lp_json_item(cJSON_GetArrayItem(lp_json_item(r, "l"), 0), "k");
    CHECK(cJSON_IsNumber(k) && k->valuedouble == 2);
    cJSON_Delete(r);
    /* every allocation failure is NOMEM, no leak */
    for (long f = 0; f < 64; f++) {
        lp_alloc_fail_after(f);
        enum lopad_status st = lp_json_read_file(tmp_path("dup.json"), 0, &r);
        lp_alloc_fail_after(-1);
        CHECK(st == LOPAD_OK || st == LOPAD_ERR_NOMEM);
        if (!st) {
            cJSON_Delete(r);
            break;
        }
    }
}

int main(void) {
    mkdir(TMP, 0755);
    TEST_RUN(test_dtypes_and_dims);
    TEST_RUN(test_empty_and_scalar);
    TEST_RUN(test_python_fixture);
    TEST_RUN(test_bad_headers);
    TEST_RUN(test_bad_tensors);
    TEST_RUN(test_alloc_failures);
    TEST_RUN(test_json_helpers);
    TEST_RUN(test_json_no_echo);
    TEST_RUN(test_json_duplicate_keys);
    return test_report();
}
