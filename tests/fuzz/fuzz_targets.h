/*
 * fuzz_targets.h - the fuzz entry points, shared by the libFuzzer harnesses
 * (tests/fuzz/fuzz_*.c, one target each) and the plain regression test
 * (tests/unit/test_fuzz_regress.c), which replays every saved input through
 * exactly the same code without libFuzzer.
 *
 * Each lp_fuzz_<target>(data, size) feeds one untrusted input to a parser,
 * walks everything the parser claims to have validated, and returns the
 * parser's status. Error statuses are fine; what counts as a bug:
 *   - a crash, a sanitizer report, a leak, a hang (caught by the tools);
 *   - a broken contract, reported through lp_fuzz_fail() (prints and aborts):
 *     a tensor view outside the input, a byte count that does not match the
 *     shape and type, an error status without a message, a lookup by a name
 *     the reader listed that fails.
 *
 * Include this header FIRST (it sets _GNU_SOURCE for memfd_create / mkdtemp).
 * Every function is static inline: a harness only pulls in the parsers it
 * actually calls.
 */
#ifndef LP_FUZZ_TARGETS_H
#define LP_FUZZ_TARGETS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/tensor.h"
#include "core/types.h"
#include "formats/gguf.h"
#include "formats/json.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "model/tok_internal.h" /* byte_id: which texts must round-trip */
#include "lopad.h"

/* ------------------------------------------------------------------ helpers */

__attribute__((noreturn, format(printf, 1, 2))) static inline void lp_fuzz_fail(const char *fmt,
                                                                                ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lopad fuzz: contract violation: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* An error status must come with a message (the brief: messages name the
 * file / key / tensor). */
static inline enum lopad_status lp_fuzz_check_status(enum lopad_status st, const char *what) {
    if (st != LOPAD_OK && lopad_errmsg()[0] == 0)
        lp_fuzz_fail("%s returned %s without an error message", what, lopad_status_name(st));
    return st;
}

/* Read bytes so that ASan sees an access; the volatile sink keeps it. */
static volatile uint8_t lp_fuzz_sink;
static inline void lp_fuzz_touch(const void *p, size_t n) {
    if (!n) return;
    const volatile uint8_t *b = p;
    lp_fuzz_sink ^= b[0];
    lp_fuzz_sink ^= b[n - 1];
}

/* A view [data, data+nbytes) must lie inside [lo, lo+size). */
static inline void lp_fuzz_check_inside(const char *what, const char *name, const void *data,
                                        size_t nbytes, const void *lo, size_t size) {
    uintptr_t p = (uintptr_t)data, b = (uintptr_t)lo;
    if (nbytes == 0) return;
    if (!data || p < b || p - b > size || nbytes > size - (p - b))
        lp_fuzz_fail("%s: tensor '%s' view [%p, +%zu) is outside the input [%p, +%zu)", what,
                     name ? name : "(null)", data, nbytes, lo, size);
}

/* Check one tensor view: dims, byte count vs shape and type, then read its
 * first and last byte and dequantise (part of) its first row. */
static inline void lp_fuzz_check_tensor(const char *what, const struct lp_tensor *t, const void *lo,
                                        size_t size) {
    if (!t->name) lp_fuzz_fail("%s: tensor without a name", what);
    (void)strlen(t->name);
    if (t->n_dims < 0 || t->n_dims > LP_MAX_DIMS)
        lp_fuzz_fail("%s: tensor '%s' has n_dims %d", what, t->name, t->n_dims);
    uint64_t nel = 1;
    for (int d = 0; d < LP_MAX_DIMS; d++) {
        if (t->ne[d] < 0)
            lp_fuzz_fail("%s: tensor '%s' ne[%d] = %lld", what, t->name, d, (long long)t->ne[d]);
        if (d >= t->n_dims && t->n_dims > 0 && t->ne[d] != 1)
            lp_fuzz_fail("%s: tensor '%s' unused ne[%d] = %lld (must be 1)", what, t->name, d,
                         (long long)t->ne[d]);
        if (!lp_mul_ok(nel, (uint64_t)t->ne[d], &nel))
            lp_fuzz_fail("%s: tensor '%s' element count overflows", what, t->name);
    }
    const struct lp_type_traits *tr = lp_type_traits(t->type);
    if (tr) {
        /* (rows, row_bytes): rows = ne1*ne2*ne3 */
        size_t row = lp_row_size(t->type, t->ne[0]);
        uint64_t rows = nel && t->ne[0] ? nel / (uint64_t)t->ne[0] : 0, want = 0;
        if (t->ne[0] && row == 0)
            lp_fuzz_fail("%s: tensor '%s' ne[0] = %lld is not a multiple of the %s block", what,
                         t->name, (long long)t->ne[0], tr->name);
        if (!lp_mul_ok(rows, row, &want) || want != t->nbytes)
            lp_fuzz_fail("%s: tensor '%s' (%s) has nbytes %zu, shape says %llu", what, t->name,
                         tr->name, t->nbytes, (unsigned long long)want);
        lp_fuzz_check_inside(what, t->name, t->data, t->nbytes, lo, size);
        lp_fuzz_touch(t->data, t->nbytes);
        /* dequantise up to 4096 elements of row 0 (all whole blocks) */
        if (t->nbytes && tr->to_float && tr->blck_size > 0) {
            int64_t n = t->ne[0] < 4096 ? t->ne[0] : 4096;
            n -= n % tr->blck_size;
            if (n > 0) {
                static float buf[4096];
                tr->to_float(t->data, buf, n);
                lp_fuzz_sink ^= (uint8_t)(buf[n - 1] != buf[n - 1]);
            }
        }
    } else {
        lp_fuzz_check_inside(what, t->name, t->data, t->nbytes, lo, size);
        lp_fuzz_touch(t->data, t->nbytes);
    }
}

/* -------------------------------------------------------------- tokenizer */

/* Must decode(encode(text)) give text back? Yes for byte-level BPE without
 * NFC when every byte of the text has a token (a byte without one is dropped
 * or becomes unk by design). */
static inline bool lp_fuzz_tok_roundtrips(const struct lp_tokenizer *t, const char *s, size_t n) {
    if (lp_tokenizer_nfc(t)) return false;
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[(uint8_t)s[i]] < 0) return false;
    return true;
}

/* Exercise a loaded tokenizer: queries over every id, then encode a fixed text
 * (and `extra`, raw fuzz bytes) and decode it back. Without NFC, byte-level BPE
 * must reproduce the text exactly (see lp_fuzz_tok_roundtrips). */
static inline void lp_fuzz_tokenizer_use(struct lp_tokenizer *t, const char *extra,
                                         size_t extra_len) {
    int32_t nv = lp_tokenizer_n_vocab(t);
    if (nv < 0) lp_fuzz_fail("tokenizer: n_vocab %d", nv);
    for (int32_t id = 0; id < nv && id < 4096; id++) {
        size_t len = 0;
        const char *s = lp_tokenizer_token(t, id, &len);
        if (s) lp_fuzz_touch(s, len);
        lp_fuzz_sink ^= (uint8_t)lp_tokenizer_is_special(t, id);
    }
    if (lp_tokenizer_token(t, nv, NULL)) lp_fuzz_fail("tokenizer: token(n_vocab) is not NULL");
    if (lp_tokenizer_token(t, -1, NULL)) lp_fuzz_fail("tokenizer: token(-1) is not NULL");
    int32_t ids3[3] = {lp_tokenizer_bos_id(t), lp_tokenizer_eos_id(t), lp_tokenizer_pad_id(t)};
    for (int k = 0; k < 3; k++)
        if (ids3[k] < -1) lp_fuzz_fail("tokenizer: special id %d", ids3[k]);
    const char *tmpl = lp_tokenizer_chat_template(t);
    if (tmpl) (void)strlen(tmpl);
    (void)lp_tokenizer_find(t, "<|mask|>");
    (void)lp_tokenizer_n_patterns(t);

    static const char text[] =
        "Hello, world! It's 2024: \xc3\xa9t\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\n\t"
        "<|endoftext|> <|mask|> ab abab 123 \xff\xfe bad \xf0\x9f\x98\x80";
    const char *texts[2] = {text, extra};
    size_t lens[2] = {sizeof text - 1, extra_len};
    /* Steering around a known open bug (docs/FUZZING.md, finding 1b) so that
     * fuzzing can still reach deeper: LOPAD_FUZZ_AVOID=tok-empty-piece drops
     * the bytes that have no token from the texts. Off by default (and never
     * set by test_fuzz_regress), so the bug stays visible. */
    static char filtered[2][512];
    const char *avoid = getenv("LOPAD_FUZZ_AVOID");
    if (avoid && strstr(avoid, "tok-empty-piece")) {
        for (int k = 0; k < 2; k++) {
            if (!texts[k]) continue;
            size_t m = 0;
            for (size_t i = 0; i < lens[k] && m < sizeof filtered[k]; i++)
                if (t->byte_id[(uint8_t)texts[k][i]] >= 0) filtered[k][m++] = texts[k][i];
            texts[k] = filtered[k];
            lens[k] = m;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (!texts[k]) continue;
        for (int special = 0; special < 2; special++) {
            struct lp_ids ids = {0};
            lp_clear_error();
            enum lopad_status st = lp_tokenizer_encode(t, texts[k], lens[k], special, &ids);
            lp_fuzz_check_status(st, "lp_tokenizer_encode");
            if (st == LOPAD_OK) {
                for (size_t i = 0; i < ids.n; i++)
                    if (ids.v[i] < 0 || ids.v[i] >= nv)
                        lp_fuzz_fail("tokenizer: encode gave id %d (n_vocab %d)", ids.v[i], nv);
                char *dec = NULL;
                size_t dlen = 0;
                lp_clear_error();
                st = lp_tokenizer_decode(t, ids.v, ids.n, false, &dec, &dlen);
                lp_fuzz_check_status(st, "lp_tokenizer_decode");
                if (st == LOPAD_OK) {
                    if (dec[dlen] != 0) lp_fuzz_fail("tokenizer: decode not NUL-terminated");
                    if (lp_fuzz_tok_roundtrips(t, texts[k], lens[k]) &&
                        (dlen != lens[k] || memcmp(dec, texts[k], dlen)))
                        lp_fuzz_fail("tokenizer: decode(encode(text)) != text (%zu vs %zu bytes, "
                                     "parse_special %d)",
                                     dlen, lens[k], special);
                }
                lp_free(dec);
                /* streaming decode must produce the same bytes */
                struct lp_tok_stream ts = {0};
                size_t got = 0;
                enum lopad_status sst = LOPAD_OK;
                for (size_t i = 0; i < ids.n; i++) {
                    const char *piece;
                    size_t plen;
                    lp_clear_error();
                    sst = lp_tok_stream_push(t, &ts, ids.v[i], false, &piece, &plen);
                    lp_fuzz_check_status(sst, "lp_tok_stream_push");
                    if (sst) break;
                    lp_fuzz_touch(piece, plen);
                    got += plen;
                }
                const char *rest;
                size_t rlen;
                lp_tok_stream_flush(&ts, &rest, &rlen);
                got += rlen;
                if (st == LOPAD_OK && sst == LOPAD_OK && got != dlen)
                    lp_fuzz_fail("tokenizer: stream decode gave %zu bytes, decode %zu", got, dlen);
                lp_tok_stream_free(&ts);
            }
            lp_ids_free(&ids);
        }
    }
    /* out-of-range ids must be refused */
    int32_t bad = nv;
    char *dec = NULL;
    lp_clear_error();
    if (lp_fuzz_check_status(lp_tokenizer_decode(t, &bad, 1, false, &dec, NULL),
                             "lp_tokenizer_decode") == LOPAD_OK)
        lp_fuzz_fail("tokenizer: decode accepted id n_vocab");
    lp_free(dec);
}

/* The tokenizer.ggml.* reader on an open GGUF. */
static inline void lp_fuzz_tokenizer_use_gguf(const struct lp_gguf *g) {
    struct lp_tokenizer *t = NULL;
    lp_clear_error();
    enum lopad_status st = lp_tokenizer_from_gguf_ctx(g, "fuzz.gguf", &t);
    lp_fuzz_check_status(st, "lp_tokenizer_from_gguf_ctx");
    if (st == LOPAD_OK)
        lp_fuzz_tokenizer_use(t, NULL, 0);
    else if (t)
        lp_fuzz_fail("tokenizer: error status but a tokenizer was returned");
    lp_tokenizer_free(t);
}

/* ------------------------------------------------------------------- GGUF */

#define LP_FUZZ_ARR_WALK 64 /* elements read at each end of an array */

static inline void lp_fuzz_gguf_value(const struct lp_gguf_value *v, int depth) {
    if (depth > LP_GGUF_MAX_DEPTH + 1) lp_fuzz_fail("gguf: arrays nested deeper than the limit");
    int64_t i64;
    uint64_t u64;
    double f64;
    switch (v->type) {
    case LP_GGUF_STRING:
        if (!v->str.s) lp_fuzz_fail("gguf: string value without data");
        if (v->str.s[v->str.len] != 0) lp_fuzz_fail("gguf: string value not NUL-terminated");
        lp_fuzz_touch(v->str.s, v->str.len + 1);
        break;
    case LP_GGUF_ARRAY: {
        const struct lp_gguf_value *a = v;
        uint64_t n = a->arr.n;
        for (uint64_t k = 0; k < n && k < 2 * LP_FUZZ_ARR_WALK; k++) {
            uint64_t j = k < LP_FUZZ_ARR_WALK ? k : n - 1 - (k - LP_FUZZ_ARR_WALK);
            if (k >= LP_FUZZ_ARR_WALK && n <= 2 * LP_FUZZ_ARR_WALK) break;
            if (a->arr.type == LP_GGUF_STRING) {
                size_t len = 0;
                const char *s = lp_gguf_arr_str(a, j, &len);
                if (!s)
                    lp_fuzz_fail("gguf: string array element %llu missing", (unsigned long long)j);
                lp_fuzz_touch(s, len + 1);
                if (s[len] != 0) lp_fuzz_fail("gguf: string array element not NUL-terminated");
            } else if (a->arr.type == LP_GGUF_ARRAY) {
                const struct lp_gguf_value *sub = lp_gguf_arr_sub(a, j);
                if (!sub)
                    lp_fuzz_fail("gguf: nested array element %llu missing", (unsigned long long)j);
                lp_fuzz_gguf_value(sub, depth + 1);
            } else {
                int32_t i32;
                uint32_t u32;
                float f32;
                lp_fuzz_sink ^= (uint8_t)lp_gguf_arr_i64(a, j, &i64);
                lp_fuzz_sink ^= (uint8_t)lp_gguf_arr_u64(a, j, &u64);
                lp_fuzz_sink ^= (uint8_t)lp_gguf_arr_i32(a, j, &i32);
                lp_fuzz_sink ^= (uint8_t)lp_gguf_arr_u32(a, j, &u32);
                lp_fuzz_sink ^= (uint8_t)lp_gguf_arr_f32(a, j, &f32);
            }
        }
        /* out-of-range index must be refused, not read */
        if (lp_gguf_arr_i64(a, n, &i64)) lp_fuzz_fail("gguf: arr_i64 accepted index n");
        if (lp_gguf_arr_str(a, n, NULL)) lp_fuzz_fail("gguf: arr_str accepted index n");
        if (lp_gguf_arr_sub(a, n)) lp_fuzz_fail("gguf: arr_sub accepted index n");
        break;
    }
    default:
        lp_fuzz_sink ^= (uint8_t)lp_gguf_value_i64(v, &i64);
        lp_fuzz_sink ^= (uint8_t)lp_gguf_value_u64(v, &u64);
        lp_fuzz_sink ^= (uint8_t)lp_gguf_value_f64(v, &f64);
        break;
    }
}

/* Walk an open GGUF: every KV (typed getters too), every tensor. `lo, size`:
 * the bytes the tensor views must stay inside. */
static inline void lp_fuzz_gguf_walk(const struct lp_gguf *g, const void *lo, size_t size) {
    (void)lp_gguf_version(g);
    (void)lp_gguf_alignment(g);
    int64_t nkv = lp_gguf_n_kv(g);
    if (nkv < 0) lp_fuzz_fail("gguf: n_kv %lld", (long long)nkv);
    for (int64_t i = 0; i < nkv; i++) {
        const char *key = lp_gguf_key(g, i);
        const struct lp_gguf_value *v = lp_gguf_value(g, i);
        if (!key || !v) lp_fuzz_fail("gguf: KV %lld has no key or value", (long long)i);
        lp_fuzz_gguf_value(v, 0);
        int64_t at = lp_gguf_find(g, key);
        if (at < 0 || at > i)
            lp_fuzz_fail("gguf: lp_gguf_find('%s') = %lld, listed at %lld", key, (long long)at,
                         (long long)i);
        if (!lp_gguf_get(g, key)) lp_fuzz_fail("gguf: lp_gguf_get('%s') is NULL", key);
        /* typed getters: errors are fine, but must carry a message */
        union {
            uint32_t u32;
            int32_t i32;
            uint64_t u64;
            int64_t i64;
            float f32;
            bool b;
            const char *s;
            const struct lp_gguf_value *a;
        } out;
        lp_clear_error();
        lp_fuzz_check_status(lp_gguf_get_u32(g, key, &out.u32), "lp_gguf_get_u32");
        lp_fuzz_check_status(lp_gguf_get_i32(g, key, &out.i32), "lp_gguf_get_i32");
        lp_fuzz_check_status(lp_gguf_get_u64(g, key, &out.u64), "lp_gguf_get_u64");
        lp_fuzz_check_status(lp_gguf_get_i64(g, key, &out.i64), "lp_gguf_get_i64");
        lp_fuzz_check_status(lp_gguf_get_f32(g, key, &out.f32), "lp_gguf_get_f32");
        lp_fuzz_check_status(lp_gguf_get_bool(g, key, &out.b), "lp_gguf_get_bool");
        lp_clear_error();
        if (lp_fuzz_check_status(lp_gguf_get_str(g, key, &out.s), "lp_gguf_get_str") == LOPAD_OK)
            (void)strlen(out.s);
        lp_fuzz_check_status(lp_gguf_get_arr(g, key, -1, &out.a), "lp_gguf_get_arr");
    }
    if (lp_gguf_get(g, "lopad.fuzz.surely-absent")) lp_fuzz_fail("gguf: found an absent key");

    int64_t nt = lp_gguf_n_tensors(g);
    if (nt < 0) lp_fuzz_fail("gguf: n_tensors %lld", (long long)nt);
    const struct lp_tensor *ts = lp_gguf_tensors(g);
    if (nt > 0 && !ts) lp_fuzz_fail("gguf: %lld tensors but no array", (long long)nt);
    for (int64_t i = 0; i < nt; i++) {
        const struct lp_tensor *t = &ts[i];
        lp_fuzz_check_tensor("gguf", t, lo, size);
        (void)lp_gguf_tensor_offset(g, i);
        if (!lp_gguf_find_tensor(g, t->name))
            lp_fuzz_fail("gguf: lp_gguf_find_tensor('%s') is NULL", t->name);
    }
}

/* The GGUF reader on an in-memory image (ASan guards the exact input bounds). */
static inline int lp_fuzz_gguf(const uint8_t *data, size_t size) {
    struct lp_gguf *g = NULL;
    lp_clear_error();
    enum lopad_status st = lp_gguf_open_memory(data, size, "fuzz.gguf", &g);
    lp_fuzz_check_status(st, "lp_gguf_open_memory");
    if (st == LOPAD_OK) {
        if (!g) lp_fuzz_fail("gguf: LOPAD_OK without a handle");
        if (lp_gguf_file_size(g) != size)
            lp_fuzz_fail("gguf: file size %zu, input %zu", lp_gguf_file_size(g), size);
        lp_fuzz_gguf_walk(g, data, size);
        lp_fuzz_tokenizer_use_gguf(g);
        void *p = (void *)1;
        size_t n = 1;
        lp_gguf_release_mapping(g, &p, &n); /* memory images: nothing to hand over */
        if (p || n) lp_fuzz_fail("gguf: release_mapping of a memory image gave %p/%zu", p, n);
    } else if (g) {
        lp_fuzz_fail("gguf: error status but a handle was returned");
    }
    lp_gguf_close(g);
    return (int)st;
}

/* ---------------------------------------------------- temporary file store */

/* Parsers that only open paths get the input through a file. Inputs go into
 * one private directory (under $LOPAD_FUZZ_TMP, else /dev/shm when present)
 * created on first use and removed at exit (not after a crash). */
static char lp_fuzz_dir_path[256];

static inline void lp_fuzz_rm_dir(void) {
    if (!lp_fuzz_dir_path[0]) return;
    static const char *const names[] = {"input.safetensors",
                                        "tokenizer.json",
                                        "model.gguf",
                                        "gguf_model.gguf",
                                        "hf/config.json",
                                        "hf/model.safetensors",
                                        "hf",
                                        "lora/base/config.json",
                                        "lora/base/model.safetensors",
                                        "lora/base",
                                        "lora/adapter/adapter_config.json",
                                        "lora/adapter/adapter_model.safetensors",
                                        "lora/adapter",
                                        "lora",
                                        "hfdir/config.json",
                                        "hfdir/generation_config.json",
                                        "hfdir/tokenizer_config.json",
                                        "hfdir/model.safetensors.index.json",
                                        "hfdir/chat_template.jinja",
                                        "hfdir/model.safetensors",
                                        "hfdir",
                                        "lf/config.json",
                                        "lf/model.safetensors",
                                        "lf/tokenizer.json",
                                        "lf/tokenizer_config.json",
                                        "lf/adapter/adapter_config.json",
                                        "lf/adapter/adapter_model.safetensors",
                                        "lf/adapter",
                                        "lf",
                                        "lf.gguf"};
    char p[512];
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", lp_fuzz_dir_path, names[i]);
        if (unlink(p) != 0) rmdir(p);
    }
    rmdir(lp_fuzz_dir_path);
    lp_fuzz_dir_path[0] = 0;
}

static inline const char *lp_fuzz_dir(void) {
    if (lp_fuzz_dir_path[0]) return lp_fuzz_dir_path;
    struct stat sb;
    const char *base = getenv("LOPAD_FUZZ_TMP"); /* scripts/fuzz.sh points it at its scratch */
    if (!base || stat(base, &sb) != 0 || !S_ISDIR(sb.st_mode))
        base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(lp_fuzz_dir_path, sizeof lp_fuzz_dir_path, "%s/lopad-fuzz-XXXXXX", base);
    if (!mkdtemp(lp_fuzz_dir_path)) {
        snprintf(lp_fuzz_dir_path, sizeof lp_fuzz_dir_path, "/tmp/lopad-fuzz-XXXXXX");
        if (!mkdtemp(lp_fuzz_dir_path)) {
            perror("lopad fuzz: mkdtemp");
            abort(); /* the harness cannot work at all */
        }
    }
    /* directories of the config and LoRA targets */
    static const char *const sub[] = {"hf",    "lora", "lora/base", "lora/adapter",
                                      "hfdir", "lf",   "lf/adapter"};
    for (unsigned i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        char d[300];
        snprintf(d, sizeof d, "%s/%s", lp_fuzz_dir_path, sub[i]);
        mkdir(d, 0700);
    }
    atexit(lp_fuzz_rm_dir);
    return lp_fuzz_dir_path;
}

/* Write data into <dir>/<name> (replacing it); returns the path (static).
 * Each target uses its own names, so targets run in one process (the
 * regression test) do not disturb each other's files. */
static inline const char *lp_fuzz_put(const char *name, const void *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", lp_fuzz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = data;
    size_t left = size;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    return path;
}

/* Same GGUF input through the file path (mmap): lp_gguf_open. */
static inline int lp_fuzz_gguf_file(const uint8_t *data, size_t size) {
    const char *path = lp_fuzz_put("model.gguf", data, size);
    struct lp_gguf *g = NULL;
    lp_clear_error();
    enum lopad_status st = lp_gguf_open(path, &g);
    lp_fuzz_check_status(st, "lp_gguf_open");
    if (st == LOPAD_OK) {
        if (!g) lp_fuzz_fail("gguf: LOPAD_OK without a handle");
        /* take the mapping so the views can be checked against its bounds;
         * it must cover the whole file */
        void *map = NULL;
        size_t map_size = 0;
        lp_gguf_release_mapping(g, &map, &map_size);
        if (!map || map_size != size)
            lp_fuzz_fail("gguf: release_mapping gave %p/%zu for a %zu-byte file", map, map_size,
                         size);
        lp_fuzz_gguf_walk(g, map, map_size);
        lp_gguf_close(g); /* must not unmap: we own the mapping now */
        lp_fuzz_touch(map, map_size);
        munmap(map, map_size);
        return (int)st;
    } else if (g) {
        lp_fuzz_fail("gguf: error status but a handle was returned");
    }
    lp_gguf_close(g);
    return (int)st;
}

/* Both GGUF paths on one input; they parse the same bytes so they must agree
 * on accepting it (which error is reported first may differ, e.g. a short
 * file with a bad version; allocation failures aside). */
static inline int lp_fuzz_gguf_both(const uint8_t *data, size_t size) {
    int a = lp_fuzz_gguf(data, size);
    int b = lp_fuzz_gguf_file(data, size);
    if ((a == LOPAD_OK) != (b == LOPAD_OK) && a != LOPAD_ERR_NOMEM && b != LOPAD_ERR_NOMEM &&
        size > 0)
        lp_fuzz_fail("gguf: open_memory says %s, open (file) says %s",
                     lopad_status_name((enum lopad_status)a),
                     lopad_status_name((enum lopad_status)b));
    return a;
}

/* ------------------------------------------------------------ safetensors */

static inline void lp_fuzz_st_walk(const struct lp_st_file *f) {
    if (f->n < 0) lp_fuzz_fail("safetensors: n = %d", f->n);
    const uint8_t *map = f->map;
    if (!map) lp_fuzz_fail("safetensors: no mapping after open");
    /* data buffer inside the mapping */
    lp_fuzz_check_inside("safetensors(data buffer)", "-", f->data, (size_t)f->data_size, map,
                         f->map_size);
    for (int i = 0; i < f->n; i++) {
        const struct lp_tensor *t = &f->t[i];
        if (t->type != LOPAD_TYPE_F32 && t->type != LOPAD_TYPE_F16 && t->type != LOPAD_TYPE_BF16)
            lp_fuzz_fail("safetensors: tensor '%s' has type %d", t->name ? t->name : "?", t->type);
        lp_fuzz_check_tensor("safetensors", t, f->data, (size_t)f->data_size);
        const struct lp_tensor *u = lp_st_find(f, t->name);
        if (!u) lp_fuzz_fail("safetensors: lp_st_find('%s') is NULL", t->name);
    }
    for (int i = 0; i < f->n_meta; i++) {
        const struct lp_st_meta_kv *kv = &f->meta[i];
        if (!kv->key || !kv->value) lp_fuzz_fail("safetensors: metadata %d without key/value", i);
        (void)strlen(kv->value);
        if (!lp_st_meta(f, kv->key)) lp_fuzz_fail("safetensors: lp_st_meta('%s') is NULL", kv->key);
    }
    if (lp_st_find(f, "lopad.fuzz.surely-absent"))
        lp_fuzz_fail("safetensors: found an absent name");
}

static inline int lp_fuzz_safetensors(const uint8_t *data, size_t size) {
    const char *path = lp_fuzz_put("input.safetensors", data, size);
    struct lp_st_file *f = NULL;
    lp_clear_error();
    enum lopad_status st = lp_st_open(path, &f);
    lp_fuzz_check_status(st, "lp_st_open");
    if (st == LOPAD_OK) {
        if (!f) lp_fuzz_fail("safetensors: LOPAD_OK without a handle");
        if (f->map_size != size)
            lp_fuzz_fail("safetensors: mapping %zu bytes, file %zu", f->map_size, size);
        lp_fuzz_st_walk(f);
    } else if (f) {
        lp_fuzz_fail("safetensors: error status but a handle was returned");
    }
    lp_st_close(f);
    return (int)st;
}

/* ------------------------------------------------------------------- JSON */

/* The generic JSON helpers on arbitrary text: parse, then run every typed
 * getter over every member of an object root (and of its nested objects). */
static inline void lp_fuzz_json_getters(const cJSON *obj, int depth) {
    if (!cJSON_IsObject(obj) || depth > 4) return;
    int n = 0;
    for (const cJSON *it = obj->child; it && n < 256; it = it->next, n++) {
        const char *k = it->string;
        if (!k) continue;
        int64_t i64;
        int iv;
        double d;
        const char *s;
        bool b;
        const char **strs = NULL;
        int ns = 0;
        const cJSON *item = NULL;
        lp_clear_error();
        lp_fuzz_check_status(lp_json_get_i64(obj, k, INT64_MIN, INT64_MAX, "fuzz.json", &i64),
                             "lp_json_get_i64");
        lp_fuzz_check_status(lp_json_opt_int(obj, k, -5, 5, 0, "fuzz.json", &iv),
                             "lp_json_opt_int");
        lp_fuzz_check_status(lp_json_get_double(obj, k, "fuzz.json", &d), "lp_json_get_double");
        lp_fuzz_check_status(lp_json_get_string(obj, k, "fuzz.json", &s), "lp_json_get_string");
        lp_fuzz_check_status(lp_json_opt_bool(obj, k, false, "fuzz.json", &b), "lp_json_opt_bool");
        lp_fuzz_check_status(lp_json_get_item(obj, k, cJSON_Array, "fuzz.json", &item),
                             "lp_json_get_item");
        if (lp_fuzz_check_status(lp_json_opt_strings(obj, k, true, "fuzz.json", &strs, &ns),
                                 "lp_json_opt_strings") == LOPAD_OK) {
            for (int j = 0; j < ns; j++)
                (void)strlen(strs[j]);
            lp_free(strs);
        }
        if (cJSON_IsArray(it)) {
            int m = 0;
            for (const cJSON *e = it->child; e && m < 64; e = e->next, m++)
                lp_fuzz_check_status(lp_json_as_i64(e, 0, 1000, "fuzz.json", "element", &i64),
                                     "lp_json_as_i64");
        }
        lp_fuzz_json_getters(it, depth + 1);
    }
}

static inline int lp_fuzz_json(const uint8_t *data, size_t size) {
    cJSON *root = NULL;
    lp_clear_error();
    enum lopad_status st = lp_json_parse((const char *)data, size, "fuzz.json", &root);
    lp_fuzz_check_status(st, "lp_json_parse");
    if (st == LOPAD_OK) {
        if (!root) lp_fuzz_fail("json: LOPAD_OK without a tree");
        lp_fuzz_json_getters(root, 0);
    }
    cJSON_Delete(root);
    return (int)st;
}

/* ---------------------------------------------------------- tokenizer.json */

/* lp_tokenizer_from_hf_json on a fuzzed tokenizer.json, then use it (the
 * input's first 256 bytes double as text to encode). */
static inline int lp_fuzz_tokenizer_json(const uint8_t *data, size_t size) {
    const char *path = lp_fuzz_put("tokenizer.json", data, size);
    struct lp_tokenizer *t = NULL;
    lp_clear_error();
    enum lopad_status st = lp_tokenizer_from_hf_json(path, NULL, &t);
    lp_fuzz_check_status(st, "lp_tokenizer_from_hf_json");
    if (st == LOPAD_OK) {
        if (!t) lp_fuzz_fail("tokenizer: LOPAD_OK without a tokenizer");
        lp_fuzz_tokenizer_use(t, (const char *)data, size < 256 ? size : 256);
    } else if (t) {
        lp_fuzz_fail("tokenizer: error status but a tokenizer was returned");
    }
    lp_tokenizer_free(t);
    return (int)st;
}

/* What a successfully loaded model must satisfy, whatever the file said. */
static inline void lp_fuzz_check_model(const lopad_model *m, const char *what) {
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->head_dim <= 0 || hp->n_ff <= 0 || hp->n_vocab <= 0 || hp->n_head % hp->n_head_kv)
        lp_fuzz_fail("%s: accepted hyper-parameters embd %d layer %d head %d/%d dim %d ff %d "
                     "vocab %d",
                     what, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim,
                     hp->n_ff, hp->n_vocab);
    if (!(hp->norm_eps > 0) || !(hp->rope_theta > 0) || hp->norm_eps != hp->norm_eps)
        lp_fuzz_fail("%s: accepted norm_eps %g rope_theta %g", what, (double)hp->norm_eps,
                     (double)hp->rope_theta);
    int32_t sp[5] = {hp->mask_id, hp->bos_id, hp->eos_id, hp->pad_id, hp->eot_id};
    for (int k = 0; k < 5; k++)
        if (sp[k] < -1 || sp[k] >= hp->n_vocab)
            lp_fuzz_fail("%s: special id %d outside the vocabulary (%d)", what, sp[k], hp->n_vocab);
    /* every weight row must be readable: touch the first and last byte of
     * each matrix and norm */
    const struct lp_weight *ws[2] = {&m->tok_embd, &m->output};
    for (int k = 0; k < 2; k++) {
        if (!ws[k]->data) lp_fuzz_fail("%s: %s has no data", what, k ? "output" : "tok_embd");
        lp_fuzz_touch(ws[k]->data, ws[k]->row_bytes * (size_t)ws[k]->n_out);
    }
    lp_fuzz_touch(m->output_norm, (size_t)hp->n_embd * sizeof(float));
    for (int il = 0; il < hp->n_layer; il++) {
        const struct lp_layer *L = &m->layers[il];
        const struct lp_weight *lw[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (int k = 0; k < LP_N_LAYER_MATRICES; k++) {
            if (!lw[k]->data) lp_fuzz_fail("%s: layer %d matrix %d has no data", what, il, k);
            lp_fuzz_touch(lw[k]->data, lw[k]->row_bytes * (size_t)lw[k]->n_out);
        }
        lp_fuzz_touch(L->attn_norm, (size_t)hp->n_embd * sizeof(float));
        lp_fuzz_touch(L->ffn_norm, (size_t)hp->n_embd * sizeof(float));
    }
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        lopad_model_print_info(m, devnull);
        fclose(devnull);
    }
}

/* ------------------------------------------------------------- config.json */

/* A tiny checkpoint that matches the seed configs (n_embd 8, 1 layer, 2 heads
 * of 4, n_ff 16, vocab 16) under both the LLaDA and the Dream tensor names
 * (the loader ignores names of the other family), so a well-formed config
 * gets through binding. Written once per process next to config.json. */
static inline void lp_fuzz_write_tiny_checkpoint(const char *subdir, int *done) {
    if (*done) return;
    static const struct {
        const char *name;
        int rows, cols; /* PyTorch shape [rows, cols]; cols 0 = 1-D */
    } tt[] = {
        {"model.transformer.wte.weight", 16, 8},
        {"model.transformer.ln_f.weight", 8, 0},
        {"model.transformer.ff_out.weight", 16, 8},
        {"model.transformer.blocks.0.q_proj.weight", 8, 8},
        {"model.transformer.blocks.0.k_proj.weight", 8, 8},
        {"model.transformer.blocks.0.v_proj.weight", 8, 8},
        {"model.transformer.blocks.0.attn_out.weight", 8, 8},
        {"model.transformer.blocks.0.ff_proj.weight", 16, 8},
        {"model.transformer.blocks.0.up_proj.weight", 16, 8},
        {"model.transformer.blocks.0.ff_out.weight", 8, 16},
        {"model.transformer.blocks.0.attn_norm.weight", 8, 0},
        {"model.transformer.blocks.0.ff_norm.weight", 8, 0},
        {"model.embed_tokens.weight", 16, 8},
        {"model.norm.weight", 8, 0},
        {"lm_head.weight", 16, 8},
        {"model.layers.0.input_layernorm.weight", 8, 0},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8},
        {"model.layers.0.self_attn.k_proj.weight", 8, 8},
        {"model.layers.0.self_attn.v_proj.weight", 8, 8},
        {"model.layers.0.self_attn.q_proj.bias", 8, 0},
        {"model.layers.0.self_attn.k_proj.bias", 8, 0},
        {"model.layers.0.self_attn.v_proj.bias", 8, 0},
        {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.post_attention_layernorm.weight", 8, 0},
        {"model.layers.0.mlp.gate_proj.weight", 16, 8},
        {"model.layers.0.mlp.up_proj.weight", 16, 8},
        {"model.layers.0.mlp.down_proj.weight", 8, 16},
    };
    enum { NT = sizeof tt / sizeof tt[0] };
    static char hdr[8192];
    size_t h = 0, off = 0;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < NT; i++) {
        size_t n = (size_t)tt[i].rows * (size_t)(tt[i].cols ? tt[i].cols : 1) * 4;
        if (tt[i].cols)
            h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                                  ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],"
                                  "\"data_offsets\":[%zu,%zu]}",
                                  tt[i].name, tt[i].rows, tt[i].cols, off, off + n);
        else
            h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                                  ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],"
                                  "\"data_offsets\":[%zu,%zu]}",
                                  tt[i].name, tt[i].rows, off, off + n);
        off += n;
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while (h % 8)
        hdr[h++] = ' ';
    size_t total = 8 + h + off;
    uint8_t *buf = calloc(1, total);
    if (!buf) abort();
    uint64_t hl = h;
    for (int k = 0; k < 8; k++)
        buf[k] = (uint8_t)(hl >> (8 * k));
    memcpy(buf + 8, hdr, h);
    float *w = (float *)(void *)(buf + 8 + h); /* 8 + h is a multiple of 8 */
    for (size_t i = 0; i < off / 4; i++)
        w[i] = (float)((int)(i % 7) - 3) * 0.125f;
    char name[64];
    snprintf(name, sizeof name, "%s/model.safetensors", subdir);
    lp_fuzz_put(name, buf, total);
    free(buf);
    *done = 1;
}

/* config.json parsing is inside lp_load_hf: a directory with the fuzzed
 * config.json and the tiny checkpoint, loaded through lopad_model_load. */
static inline int lp_fuzz_json_config(const uint8_t *data, size_t size) {
    static int ckpt_done;
    lp_fuzz_write_tiny_checkpoint("hf", &ckpt_done);
    lp_fuzz_put("hf/config.json", data, size);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/hf", lp_fuzz_dir());
    lopad_model *m = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    lp_fuzz_check_status(st, "lopad_model_load");
    if (st == LOPAD_OK) {
        if (!m) lp_fuzz_fail("config: LOPAD_OK without a model");
        lp_fuzz_check_model(m, "config");
    } else if (m) {
        lp_fuzz_fail("config: error status but a model was returned");
    }
    lopad_model_free(m);
    return (int)st;
}

/* ------------------------------------------------------------ GGUF model */

/* The GGUF model loader (metadata -> hyper-parameters, tensor directory,
 * binding) through lopad_model_load on a file. */
static inline int lp_fuzz_gguf_model(const uint8_t *data, size_t size) {
    const char *path = lp_fuzz_put("gguf_model.gguf", data, size);
    lopad_model *m = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_model_load(path, NULL, &m);
    lp_fuzz_check_status(st, "lopad_model_load (gguf)");
    if (st == LOPAD_OK) {
        if (!m) lp_fuzz_fail("gguf model: LOPAD_OK without a model");
        lp_fuzz_check_model(m, "gguf model");
    } else if (m) {
        lp_fuzz_fail("gguf model: error status but a model was returned");
    }
    lopad_model_free(m);
    return (int)st;
}

/* ------------------------------------------------------------ LoRA adapter */

/* Input layout: u16 little-endian n, then n bytes of adapter_config.json,
 * then the rest as adapter_model.safetensors. The base model is the tiny
 * LLaDA checkpoint with a fixed, valid config. */
#define LP_FUZZ_LORA_BASE_CONFIG                                                                   \
    "{\"model_type\":\"llada\",\"d_model\":8,\"n_layers\":1,\"n_heads\":2,"                        \
    "\"n_kv_heads\":2,\"mlp_hidden_size\":16,\"vocab_size\":16,\"rope_theta\":500000.0,"           \
    "\"rms_norm_eps\":1e-5,\"mask_token_id\":15}"

static inline int lp_fuzz_lora(const uint8_t *data, size_t size) {
    static int base_done;
    if (!base_done) {
        lp_fuzz_put("lora/base/config.json", LP_FUZZ_LORA_BASE_CONFIG,
                    sizeof LP_FUZZ_LORA_BASE_CONFIG - 1);
    }
    lp_fuzz_write_tiny_checkpoint("lora/base", &base_done);
    size_t n = size >= 2 ? (size_t)data[0] | (size_t)data[1] << 8 : 0;
    if (n > size - (size >= 2 ? 2 : size)) n = size >= 2 ? size - 2 : 0;
    const uint8_t *cfg = data + (size >= 2 ? 2 : size);
    lp_fuzz_put("lora/adapter/adapter_config.json", cfg, n);
    lp_fuzz_put("lora/adapter/adapter_model.safetensors", cfg + n,
                (size_t)(data + size - (cfg + n)));
    char base[300], adapter[300];
    snprintf(base, sizeof base, "%s/lora/base", lp_fuzz_dir());
    snprintf(adapter, sizeof adapter, "%s/lora/adapter", lp_fuzz_dir());
    struct lopad_load_opts opts = {.lora_dir = adapter};
    lopad_model *m = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_model_load(base, &opts, &m);
    lp_fuzz_check_status(st, "lopad_model_load (lora)");
    if (st == LOPAD_OK) {
        if (!m) lp_fuzz_fail("lora: LOPAD_OK without a model");
        lp_fuzz_check_model(m, "lora");
    } else if (m) {
        lp_fuzz_fail("lora: error status but a model was returned");
    }
    lopad_model_free(m);
    return (int)st;
}

/* ------------------------------------------------- Hugging Face directory */

/* The side files lp_load_hf reads next to config.json. Input: sections, each
 * a line "@@<file name>" followed by the file's bytes up to the next "\n@@"
 * (or the end); files without a section are absent. model.safetensors is the
 * tiny checkpoint (an index may list it as its only shard). */
static const char *const lp_fuzz_hf_files[] = {
    "config.json", "generation_config.json", "tokenizer_config.json",
    "model.safetensors.index.json", "chat_template.jinja"};
enum { LP_FUZZ_HF_NFILES = sizeof lp_fuzz_hf_files / sizeof lp_fuzz_hf_files[0] };

static inline int lp_fuzz_hf_dir(const uint8_t *data, size_t size) {
    static int ckpt_done;
    lp_fuzz_write_tiny_checkpoint("hfdir", &ckpt_done);
    const char *text = (const char *)data;
    bool present[LP_FUZZ_HF_NFILES] = {0};
    size_t pos = 0;
    while (pos + 2 <= size) {
        /* at a section header "@@name\n" */
        if (text[pos] != '@' || text[pos + 1] != '@') break;
        const char *nl = memchr(text + pos, '\n', size - pos);
        if (!nl) break;
        size_t name_len = (size_t)(nl - text) - pos - 2, body = (size_t)(nl - text) + 1, end = size;
        for (size_t j = body; j + 2 < size; j++)
            if (text[j] == '\n' && text[j + 1] == '@' && text[j + 2] == '@') {
                end = j;
                break;
            }
        for (int k = 0; k < LP_FUZZ_HF_NFILES; k++)
            if (!present[k] && strlen(lp_fuzz_hf_files[k]) == name_len &&
                !memcmp(lp_fuzz_hf_files[k], text + pos + 2, name_len)) {
                char name[96];
                snprintf(name, sizeof name, "hfdir/%s", lp_fuzz_hf_files[k]);
                lp_fuzz_put(name, text + body, end - body);
                present[k] = true;
            }
        pos = end + 1;
    }
    for (int k = 0; k < LP_FUZZ_HF_NFILES; k++)
        if (!present[k]) {
            char path[512];
            snprintf(path, sizeof path, "%s/hfdir/%s", lp_fuzz_dir(), lp_fuzz_hf_files[k]);
            unlink(path);
        }
    char dir[300];
    snprintf(dir, sizeof dir, "%s/hfdir", lp_fuzz_dir());
    lopad_model *m = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_model_load(dir, NULL, &m);
    lp_fuzz_check_status(st, "lopad_model_load (hf dir)");
    if (st == LOPAD_OK) {
        if (!m) lp_fuzz_fail("hf dir: LOPAD_OK without a model");
        lp_fuzz_check_model(m, "hf dir");
        if (m->chat_template) (void)strlen(m->chat_template);
    } else if (m) {
        lp_fuzz_fail("hf dir: error status but a model was returned");
    }
    lopad_model_free(m);
    return (int)st;
}

/* ------------------------------------------- whole load path + one forward */

/* Split "@@<name>\n<bytes>" sections (a section ends at the next "\n@@") and
 * write each known name under <subdir>/; names[k] without a section are
 * removed. present[k] says which were written. */
static inline void lp_fuzz_sections(const uint8_t *data, size_t size, const char *subdir,
                                    const char *const *names, int n, bool *present) {
    const char *text = (const char *)data;
    for (int k = 0; k < n; k++)
        present[k] = false;
    size_t pos = 0;
    while (pos + 2 <= size) {
        if (text[pos] != '@' || text[pos + 1] != '@') break;
        const char *nl = memchr(text + pos, '\n', size - pos);
        if (!nl) break;
        size_t name_len = (size_t)(nl - text) - pos - 2, body = (size_t)(nl - text) + 1, end = size;
        for (size_t j = body; j + 2 < size; j++)
            if (text[j] == '\n' && text[j + 1] == '@' && text[j + 2] == '@') {
                end = j;
                break;
            }
        for (int k = 0; k < n; k++)
            if (!present[k] && strlen(names[k]) == name_len &&
                !memcmp(names[k], text + pos + 2, name_len)) {
                char name[128];
                snprintf(name, sizeof name, "%s/%s", subdir, names[k]);
                lp_fuzz_put(name, text + body, end - body);
                present[k] = true;
            }
        pos = end + 1;
    }
    for (int k = 0; k < n; k++)
        if (!present[k]) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s/%s", lp_fuzz_dir(), subdir, names[k]);
            unlink(path);
        }
}

/* One forward of a few tokens (from the tokenizer when there is one) on a
 * small context: every accepted model must run, whatever its numbers. */
static inline void lp_fuzz_forward(const lopad_model *m, struct lp_tokenizer *tok) {
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    int32_t ids[4] = {0, 1, 2, 3}, pos[4] = {0, 1, 2, 3}, rows[4] = {0, 1, 2, 3};
    int n = 4;
    if (tok) {
        struct lp_ids e = {0};
        if (lp_tokenizer_encode(tok, "ab c<|mask|>", 12, true, &e) == LOPAD_OK && e.n > 0) {
            n = e.n < 4 ? (int)e.n : 4;
            memcpy(ids, e.v, (size_t)n * sizeof *ids);
        }
        lp_ids_free(&e);
    }
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((uint32_t)ids[i] % (uint32_t)hp->n_vocab);
    struct lopad_ctx_params cp = {.n_ctx = 8, .n_batch_max = 8, .n_threads = 1};
    lopad_ctx *c = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_ctx_new(m, &cp, &c);
    lp_fuzz_check_status(st, "lopad_ctx_new");
    if (st) return;
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)hp->n_vocab);
    if (!logits) abort();
    struct lopad_batch b = {.n_tokens = n,
                            .tokens = ids,
                            .pos = pos,
                            .n_seq = 1,
                            .n_out = n,
                            .out_rows = rows,
                            .logits = logits};
    lp_clear_error();
    st = lopad_forward(c, &b);
    lp_fuzz_check_status(st, "lopad_forward");
    if (!st) lp_fuzz_touch(logits, sizeof(float) * (size_t)n * (size_t)hp->n_vocab);
    /* an id outside the vocabulary is the caller's error: reported, never read */
    ids[0] = hp->n_vocab;
    lp_clear_error();
    st = lopad_forward(c, &b);
    if (st == LOPAD_OK) lp_fuzz_fail("lopad_forward accepted token id %d = n_vocab", hp->n_vocab);
    lp_fuzz_check_status(st, "lopad_forward (bad id)");
    free(logits);
    lopad_ctx_free(c);
}

static const char *const lp_fuzz_lf_files[] = {
    "config.json",           "model.safetensors",           "tokenizer.json",
    "tokenizer_config.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"};
enum { LP_FUZZ_LF_NFILES = sizeof lp_fuzz_lf_files / sizeof lp_fuzz_lf_files[0] };

/* Input: a GGUF file (starts with "GGUF": model + tokenizer), or sections
 * "@@<name>\n<bytes>" for a Hugging Face directory (config.json,
 * model.safetensors, tokenizer.json, tokenizer_config.json) with an optional
 * LoRA adapter (adapter/adapter_config.json, adapter/adapter_model.safetensors).
 * Load the model (and adapter), then its tokenizer, then one forward. */
static inline int lp_fuzz_load_forward(const uint8_t *data, size_t size) {
    static char path[512], adapter[512];
    struct lopad_load_opts opts = {0};
    if (size >= 4 && !memcmp(data, "GGUF", 4)) {
        snprintf(path, sizeof path, "%s", lp_fuzz_put("lf.gguf", data, size));
    } else {
        bool present[LP_FUZZ_LF_NFILES];
        lp_fuzz_sections(data, size, "lf", lp_fuzz_lf_files, LP_FUZZ_LF_NFILES, present);
        snprintf(path, sizeof path, "%s/lf", lp_fuzz_dir());
        snprintf(adapter, sizeof adapter, "%s/lf/adapter", lp_fuzz_dir());
        if (present[4]) opts.lora_dir = adapter;
    }
    lopad_model *m = NULL;
    lp_clear_error();
    enum lopad_status st = lopad_model_load(path, &opts, &m);
    lp_fuzz_check_status(st, "lopad_model_load (load+forward)");
    if (st != LOPAD_OK) {
        if (m) lp_fuzz_fail("load+forward: error status but a model was returned");
        return (int)st;
    }
    if (!m) lp_fuzz_fail("load+forward: LOPAD_OK without a model");
    lp_fuzz_check_model(m, "load+forward");
    struct lp_tokenizer *tok = NULL;
    lp_clear_error();
    enum lopad_status ts = lp_tokenizer_load_opt(path, &tok);
    lp_fuzz_check_status(ts, "lp_tokenizer_load_opt");
    if (ts && tok) lp_fuzz_fail("load+forward: tokenizer error but a tokenizer was returned");
    lp_fuzz_forward(m, ts ? NULL : tok);
    lp_tokenizer_free(tok);
    lopad_model_free(m);
    return (int)st;
}

#endif
