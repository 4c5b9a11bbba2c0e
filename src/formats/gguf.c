/*
 * gguf.c - GGUF reader (memory-mapped, fully validated) and writer (temporary
 * file + rename, tensor data streamed row by row). See gguf.h for the API.
 *
 * The reader never trusts a number from the file: every length, count and
 * offset is checked against the bytes that remain, with overflow-checked
 * arithmetic, before anything is allocated or dereferenced. Counts of strings
 * and nested arrays are bounded by the bytes left (each element needs at least
 * 8 bytes), so a hostile file cannot make us allocate more than a small
 * multiple of its own size.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/types.h"

#define MAX_KEY_LEN 65535u
#define MAX_NAME_LEN 65535u

/* ------------------------------------------------------------ value types */

static const char *const type_names[LP_GGUF_NTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};
static const size_t type_sizes[LP_GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *lp_gguf_type_name(enum lp_gguf_type t) {
    return (unsigned)t < LP_GGUF_NTYPES ? type_names[t] : "?";
}

size_t lp_gguf_type_size(enum lp_gguf_type t) {
    return (unsigned)t < LP_GGUF_NTYPES ? type_sizes[t] : 0;
}

static bool type_is_uint(enum lp_gguf_type t) {
    return t == LP_GGUF_U8 || t == LP_GGUF_U16 || t == LP_GGUF_U32 || t == LP_GGUF_U64;
}
static bool type_is_sint(enum lp_gguf_type t) {
    return t == LP_GGUF_I8 || t == LP_GGUF_I16 || t == LP_GGUF_I32 || t == LP_GGUF_I64;
}
static bool type_is_float(enum lp_gguf_type t) {
    return t == LP_GGUF_F32 || t == LP_GGUF_F64;
}

/* little-endian loads from possibly unaligned bytes */
static uint64_t load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Decode one fixed-size element at p into a scalar value of type t. */
static void decode_scalar(enum lp_gguf_type t, const uint8_t *p, struct lp_gguf_value *v) {
    v->type = t;
    uint64_t raw = load_le(p, type_sizes[t]);
    switch (t) {
    case LP_GGUF_U8:
    case LP_GGUF_U16:
    case LP_GGUF_U32:
    case LP_GGUF_U64: v->u64 = raw; break;
    case LP_GGUF_BOOL: v->u64 = raw != 0; break;
    case LP_GGUF_I8: v->i64 = (int8_t)raw; break;
    case LP_GGUF_I16: v->i64 = (int16_t)raw; break;
    case LP_GGUF_I32: v->i64 = (int32_t)raw; break;
    case LP_GGUF_I64: v->i64 = (int64_t)raw; break;
    case LP_GGUF_F32: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        v->f64 = f;
        break;
    }
    case LP_GGUF_F64: memcpy(&v->f64, &raw, 8); break;
    default: break;
    }
}

/* ------------------------------------------------------------------ arena */

/* Bump allocator for strings and value arrays: pointers stay stable, and one
 * walk frees everything. */
struct arena_blk {
    struct arena_blk *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
};

#define ARENA_CHUNK ((size_t)64 << 10)

static void *arena_alloc(struct arena_blk **head, size_t n, const char *what) {
    n = (n + 7) & ~(size_t)7;
    if (n == 0) n = 8;
    struct arena_blk *h = *head;
    if (h && h->cap - h->used >= n) {
        void *p = h->data + h->used;
        h->used += n;
        return p;
    }
    size_t cap = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
    if (cap > SIZE_MAX - sizeof(struct arena_blk)) {
        lp_error(LOPAD_ERR_NOMEM, "out of memory: %s", what);
        return NULL;
    }
    struct arena_blk *b = lp_malloc(sizeof *b + cap, what);
    if (!b) return NULL;
    b->cap = cap;
    b->used = n;
    if (h && cap != ARENA_CHUNK) {
        /* a big dedicated block: keep filling the current one */
        b->next = h->next;
        h->next = b;
    } else {
        b->next = h;
        *head = b;
    }
    return b->data;
}

static void arena_free(struct arena_blk *h) {
    while (h) {
        struct arena_blk *n = h->next;
        lp_free(h);
        h = n;
    }
}

static char *arena_strndup(struct arena_blk **a, const void *s, size_t n, const char *what) {
    if (n == SIZE_MAX) return NULL;
    char *d = arena_alloc(a, n + 1, what);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* ------------------------------------------------------- string hash set */

/* Open addressing over indices into a name table; detects duplicates and
 * serves lookups. */
struct name_set {
    int64_t *slot; /* -1 = empty */
    uint64_t mask;
};

/* FNV-1a from a per-process seed, then a full mix so the table index (the
 * low bits) depends on every bit: names cannot be crafted to collide. */
static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull ^ lp_hash_seed();
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static bool set_init(struct name_set *s, uint64_t n, const char *what) {
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    s->slot = lp_malloc(cap * sizeof(int64_t), what);
    if (!s->slot) return false;
    memset(s->slot, 0xff, cap * sizeof(int64_t));
    s->mask = cap - 1;
    return true;
}

/* Index of the entry called `name` (names[i] via get), or -1; when absent and
 * insert >= 0, inserts that index. */
static int64_t set_find(const struct name_set *s, const char *name,
                        const char *(*get)(const void *, int64_t), const void *ctx,
                        int64_t insert) {
    if (!s->slot) return -1;
    for (uint64_t h = hash_str(name) & s->mask;; h = (h + 1) & s->mask) {
        int64_t i = s->slot[h];
        if (i < 0) {
            if (insert >= 0) s->slot[h] = insert;
            return -1;
        }
        if (!strcmp(get(ctx, i), name)) return i;
    }
}

/* ----------------------------------------------------------------- reader */

struct gguf_kv {
    const char *key;
    struct lp_gguf_value v;
};

struct lp_gguf {
    char *path;
    const uint8_t *base;
    size_t size;
    bool owns_mapping;
    uint32_t version, alignment;
    uint64_t data_off;
    int64_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct lp_tensor *tensors;
    uint64_t *offsets;
    struct name_set kv_set, tensor_set;
    struct arena_blk *arena;
};

struct cursor {
    struct lp_gguf *g;
    size_t off;
};

static const char *kv_name(const void *ctx, int64_t i) {
    return ((const struct lp_gguf *)ctx)->kv[i].key;
}
static const char *tensor_name(const void *ctx, int64_t i) {
    return ((const struct lp_gguf *)ctx)->tensors[i].name;
}

static size_t remaining(const struct cursor *c) {
    return c->g->size - c->off;
}

static enum lopad_status truncated(const struct cursor *c, const char *what, const char *ctx) {
    return lp_error(LOPAD_ERR_FORMAT, "%s: file truncated at offset %zu while reading %s%s%s%s",
                    c->g->path, c->off, what, ctx ? " of '" : "", ctx ? ctx : "", ctx ? "'" : "");
}

static enum lopad_status rd_bytes(struct cursor *c, size_t n, const uint8_t **out, const char *what,
                                  const char *ctx) {
    if (n > remaining(c)) return truncated(c, what, ctx);
    *out = c->g->base + c->off;
    c->off += n;
    return LOPAD_OK;
}

static enum lopad_status rd_u32(struct cursor *c, uint32_t *v, const char *what, const char *ctx) {
    const uint8_t *p = NULL;
    enum lopad_status st = rd_bytes(c, 4, &p, what, ctx);
    if (st) return st;
    *v = (uint32_t)load_le(p, 4);
    return LOPAD_OK;
}

static enum lopad_status rd_u64(struct cursor *c, uint64_t *v, const char *what, const char *ctx) {
    const uint8_t *p = NULL;
    enum lopad_status st = rd_bytes(c, 8, &p, what, ctx);
    if (st) return st;
    *v = load_le(p, 8);
    return LOPAD_OK;
}

/* A GGUF string: u64 length + bytes, copied NUL-terminated into the arena. */
static enum lopad_status rd_string(struct cursor *c, uint64_t max_len, const char **out,
                                   uint64_t *len_out, const char *what, const char *ctx) {
    uint64_t len;
    enum lopad_status st = rd_u64(c, &len, what, ctx);
    if (st) return st;
    if (len > remaining(c))
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: %s%s%s%s has length %llu but only %zu bytes remain at offset %zu",
                        c->g->path, what, ctx ? " of '" : "", ctx ? ctx : "", ctx ? "'" : "",
                        (unsigned long long)len, remaining(c), c->off);
    if (len > max_len)
        return lp_error(LOPAD_ERR_FORMAT, "%s: %s%s%s%s is too long (%llu bytes, limit %llu)",
                        c->g->path, what, ctx ? " of '" : "", ctx ? ctx : "", ctx ? "'" : "",
                        (unsigned long long)len, (unsigned long long)max_len);
    char *s = arena_strndup(&c->g->arena, c->g->base + c->off, (size_t)len, "gguf string");
    if (!s) return LOPAD_ERR_NOMEM;
    c->off += (size_t)len;
    *out = s;
    if (len_out) *len_out = len;
    return LOPAD_OK;
}

static enum lopad_status rd_value(struct cursor *c, enum lp_gguf_type t, int depth, const char *key,
                                  struct lp_gguf_value *v);

static enum lopad_status rd_array(struct cursor *c, int depth, const char *key,
                                  struct lp_gguf_value *v) {
    struct lp_gguf *g = c->g;
    enum lopad_status st;
    uint32_t et;
    uint64_t n;
    if ((st = rd_u32(c, &et, "array element type", key))) return st;
    if ((st = rd_u64(c, &n, "array length", key))) return st;
    if (et >= LP_GGUF_NTYPES)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s': array has unknown element type %u",
                        g->path, key, et);
    if (depth >= LP_GGUF_MAX_DEPTH)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s': arrays nested deeper than %d", g->path,
                        key, LP_GGUF_MAX_DEPTH);
    v->type = LP_GGUF_ARRAY;
    v->arr.type = (enum lp_gguf_type)et;
    v->arr.n = n;
    v->arr.data = NULL;
    v->arr.sub = NULL;
    size_t es = type_sizes[et];
    if (es) {
        uint64_t bytes;
        if (!lp_mul_ok(n, es, &bytes) || bytes > remaining(c))
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: key '%s': array of %llu %s elements does not fit in the %zu bytes "
                            "left at offset %zu",
                            g->path, key, (unsigned long long)n, type_names[et], remaining(c),
                            c->off);
        v->arr.data = g->base + c->off;
        c->off += (size_t)bytes;
        if (et == LP_GGUF_BOOL)
            for (uint64_t j = 0; j < n; j++)
                if (((const uint8_t *)v->arr.data)[j] > 1)
                    return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s': bool element %llu is %u",
                                    g->path, key, (unsigned long long)j,
                                    ((const uint8_t *)v->arr.data)[j]);
        return LOPAD_OK;
    }
    /* strings and arrays need at least 8 / 12 bytes each */
    uint64_t min_el = et == LP_GGUF_STRING ? 8 : 12;
    if (n > remaining(c) / min_el)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: key '%s': array of %llu %s elements cannot fit in the %zu bytes "
                        "left at offset %zu",
                        g->path, key, (unsigned long long)n, type_names[et], remaining(c), c->off);
    if (n == 0) return LOPAD_OK;
    struct lp_gguf_value *sub =
        arena_alloc(&g->arena, (size_t)n * sizeof(struct lp_gguf_value), "gguf array");
    if (!sub) return LOPAD_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++)
        if ((st = rd_value(c, (enum lp_gguf_type)et, depth + 1, key, &sub[j]))) return st;
    v->arr.sub = sub;
    return LOPAD_OK;
}

static enum lopad_status rd_value(struct cursor *c, enum lp_gguf_type t, int depth, const char *key,
                                  struct lp_gguf_value *v) {
    memset(v, 0, sizeof *v);
    if (t == LP_GGUF_STRING) {
        v->type = t;
        return rd_string(c, UINT64_MAX, &v->str.s, &v->str.len, "string value", key);
    }
    if (t == LP_GGUF_ARRAY) return rd_array(c, depth, key, v);
    const uint8_t *p;
    enum lopad_status st = rd_bytes(c, type_sizes[t], &p, "value", key);
    if (st) return st;
    if (t == LP_GGUF_BOOL && p[0] > 1)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s': bool value is %u (must be 0 or 1)",
                        c->g->path, key, p[0]);
    decode_scalar(t, p, v);
    return LOPAD_OK;
}

static enum lopad_status parse_kvs(struct cursor *c, uint64_t n_kv) {
    struct lp_gguf *g = c->g;
    enum lopad_status st;
    /* a KV needs >= 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes */
    if (n_kv > remaining(c) / 14)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: header claims %llu metadata keys, the file is too "
                        "small for that",
                        g->path, (unsigned long long)n_kv);
    g->kv = lp_calloc(n_kv ? n_kv : 1, sizeof *g->kv, "gguf key table");
    if (!g->kv || !set_init(&g->kv_set, n_kv, "gguf key index")) return LOPAD_ERR_NOMEM;
    for (uint64_t i = 0; i < n_kv; i++) {
        char what[48];
        snprintf(what, sizeof what, "key #%llu", (unsigned long long)i);
        const char *key;
        uint64_t klen;
        if ((st = rd_string(c, MAX_KEY_LEN, &key, &klen, what, NULL))) return st;
        if (klen == 0 || strlen(key) != klen)
            return lp_error(LOPAD_ERR_FORMAT, "%s: %s is empty or contains a NUL byte", g->path,
                            what);
        uint32_t t;
        if ((st = rd_u32(c, &t, "value type", key))) return st;
        if (t >= LP_GGUF_NTYPES)
            return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' has unknown value type %u", g->path,
                            key, t);
        g->kv[i].key = key;
        if ((st = rd_value(c, (enum lp_gguf_type)t, 0, key, &g->kv[i].v))) return st;
        if (set_find(&g->kv_set, key, kv_name, g, (int64_t)i) >= 0)
            return lp_error(LOPAD_ERR_FORMAT, "%s: duplicate metadata key '%s'", g->path, key);
        g->n_kv = (int64_t)i + 1;
    }
    return LOPAD_OK;
}

static enum lopad_status parse_alignment(struct lp_gguf *g) {
    g->alignment = LP_GGUF_DEFAULT_ALIGNMENT;
    const struct lp_gguf_value *v = lp_gguf_get(g, "general.alignment");
    if (!v) return LOPAD_OK;
    uint64_t a;
    if (!type_is_uint(v->type) && !type_is_sint(v->type))
        return lp_error(LOPAD_ERR_FORMAT, "%s: key 'general.alignment' has type %s, expected u32",
                        g->path, lp_gguf_type_name(v->type));
    if (!lp_gguf_value_u64(v, &a) || a == 0 || a % 8 || a > (1u << 30))
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: key 'general.alignment' = %lld must be a nonzero multiple of 8 "
                        "(at most 2^30)",
                        g->path, type_is_sint(v->type) ? (long long)v->i64 : (long long)v->u64);
    g->alignment = (uint32_t)a;
    return LOPAD_OK;
}

static enum lopad_status parse_tensor_infos(struct cursor *c, uint64_t n_t) {
    struct lp_gguf *g = c->g;
    enum lopad_status st;
    /* >= 8 + 1 (name) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes each */
    if (n_t > remaining(c) / 33 || n_t > INT_MAX)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: header claims %llu tensors, the file is too small "
                        "for that",
                        g->path, (unsigned long long)n_t);
    g->tensors = lp_calloc(n_t ? n_t : 1, sizeof *g->tensors, "gguf tensor table");
    g->offsets = lp_calloc(n_t ? n_t : 1, sizeof *g->offsets, "gguf tensor offsets");
    if (!g->tensors || !g->offsets || !set_init(&g->tensor_set, n_t, "gguf tensor index"))
        return LOPAD_ERR_NOMEM;
    for (uint64_t i = 0; i < n_t; i++) {
        struct lp_tensor *t = &g->tensors[i];
        char what[48];
        snprintf(what, sizeof what, "name of tensor #%llu", (unsigned long long)i);
        uint64_t nlen;
        if ((st = rd_string(c, MAX_NAME_LEN, &t->name, &nlen, what, NULL))) return st;
        if (nlen == 0 || strlen(t->name) != nlen)
            return lp_error(LOPAD_ERR_FORMAT, "%s: %s is empty or contains a NUL byte", g->path,
                            what);
        const char *name = t->name;
        uint32_t nd;
        if ((st = rd_u32(c, &nd, "dimension count", name))) return st;
        if (nd < 1 || nd > LP_MAX_DIMS)
            return lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (must be 1..%d)",
                            g->path, name, nd, LP_MAX_DIMS);
        t->n_dims = (int)nd;
        uint64_t nel = 1;
        for (int d = 0; d < LP_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if (d < (int)nd && (st = rd_u64(c, &ne, "dimensions", name))) return st;
            if (ne == 0 || ne > (uint64_t)INT64_MAX || !lp_mul_ok(nel, ne, &nel) ||
                nel > (uint64_t)INT64_MAX)
                return lp_error(LOPAD_ERR_FORMAT,
                                "%s: tensor '%s' has an invalid dimension %d (%llu)", g->path, name,
                                d, (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        uint32_t type;
        if ((st = rd_u32(c, &type, "type", name))) return st;
        if ((st = rd_u64(c, &g->offsets[i], "data offset", name))) return st;
        const struct lp_type_traits *tr = lp_type_traits((int)type);
        if (!tr || type > INT_MAX)
            return lp_error(LOPAD_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has element type id %u, which lopad does not support "
                            "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)",
                            g->path, name, type);
        t->type = (int)type;
        size_t rb = lp_row_size(t->type, t->ne[0]);
        uint64_t nbytes;
        if (rb == 0 || !lp_mul_ok(rb, nel / (uint64_t)t->ne[0], &nbytes) || nbytes > SIZE_MAX)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: tensor '%s': a row of %lld elements is not a whole number of %s "
                            "blocks (of %d), or the tensor is too large",
                            g->path, name, (long long)t->ne[0], tr->name, tr->blck_size);
        t->nbytes = (size_t)nbytes;
        if (set_find(&g->tensor_set, name, tensor_name, g, (int64_t)i) >= 0)
            return lp_error(LOPAD_ERR_FORMAT, "%s: duplicate tensor name '%s'", g->path, name);
        g->n_tensors = (int64_t)i + 1;
    }
    return LOPAD_OK;
}

static enum lopad_status parse(struct lp_gguf *g) {
    struct cursor c = {g, 0};
    enum lopad_status st;
    uint32_t magic;
    if ((st = rd_u32(&c, &magic, "magic", NULL))) return st;
    if (magic != LP_GGUF_MAGIC)
        return lp_error(LOPAD_ERR_FORMAT, "%s: not a GGUF file (bad magic 0x%08x)", g->path, magic);
    if ((st = rd_u32(&c, &g->version, "version", NULL))) return st;
    if (g->version != 2 && g->version != 3) {
        if (g->version == 1)
            return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported", g->path);
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: unsupported GGUF version %u (expected 2 or 3; a byte-swapped value "
                        "means a big-endian file)",
                        g->path, g->version);
    }
    uint64_t n_t, n_kv;
    if ((st = rd_u64(&c, &n_t, "tensor count", NULL))) return st;
    if ((st = rd_u64(&c, &n_kv, "metadata key count", NULL))) return st;
    if ((st = parse_kvs(&c, n_kv))) return st;
    if ((st = parse_alignment(g))) return st;
    if ((st = parse_tensor_infos(&c, n_t))) return st;

    uint64_t a = g->alignment, pad = (a - c.off % a) % a;
    g->data_off = (uint64_t)c.off + pad;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct lp_tensor *t = &g->tensors[i];
        uint64_t start, end;
        if (g->offsets[i] % a)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: tensor '%s' data offset %llu is not a multiple of the alignment "
                            "%u",
                            g->path, t->name, (unsigned long long)g->offsets[i], g->alignment);
        if (!lp_add_ok(g->data_off, g->offsets[i], &start) || !lp_add_ok(start, t->nbytes, &end) ||
            end > g->size)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: tensor '%s' data (%zu bytes at offset %llu of the data section "
                            "at %llu) lies outside the file (%zu bytes)",
                            g->path, t->name, t->nbytes, (unsigned long long)g->offsets[i],
                            (unsigned long long)g->data_off, g->size);
        t->data = g->base + start;
    }
    return LOPAD_OK;
}

static enum lopad_status open_common(struct lp_gguf *g, struct lp_gguf **out) {
    enum lopad_status st = parse(g);
    if (st) {
        lp_gguf_close(g);
        return st;
    }
    *out = g;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_open_memory(const void *data, size_t size, const char *name,
                                      struct lp_gguf **out) {
    *out = NULL;
    struct lp_gguf *g = lp_calloc(1, sizeof *g, "gguf reader");
    if (!g) return LOPAD_ERR_NOMEM;
    if (!(g->path = lp_strdup(name ? name : "<memory>", "gguf name"))) {
        lp_free(g);
        return LOPAD_ERR_NOMEM;
    }
    g->base = data;
    g->size = data ? size : 0;
    return open_common(g, out);
}

enum lopad_status lp_gguf_open(const char *path, struct lp_gguf **out) {
    *out = NULL;
    int fd;
    uint64_t fsize;
    enum lopad_status ost = lp_open_regular(path, &fd, &fsize);
    if (ost) return ost;
    if (fsize < 24) {
        close(fd);
        return lp_error(LOPAD_ERR_FORMAT, "%s: file too small for a GGUF header (%llu bytes)", path,
                        (unsigned long long)fsize);
    }
    if (fsize > SIZE_MAX) {
        close(fd);
        return lp_error(LOPAD_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)fsize;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return lp_error(LOPAD_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    struct lp_gguf *g = lp_calloc(1, sizeof *g, "gguf reader");
    if (!g || !(g->path = lp_strdup(path, "gguf path"))) {
        lp_free(g);
        munmap(map, size);
        return LOPAD_ERR_NOMEM;
    }
    g->base = map;
    g->size = size;
    g->owns_mapping = true;
    return open_common(g, out);
}

void lp_gguf_close(struct lp_gguf *g) {
    if (!g) return;
    if (g->owns_mapping) munmap((void *)g->base, g->size);
    arena_free(g->arena);
    lp_free(g->kv);
    lp_free(g->tensors);
    lp_free(g->offsets);
    lp_free(g->kv_set.slot);
    lp_free(g->tensor_set.slot);
    lp_free(g->path);
    lp_free(g);
}

const char *lp_gguf_path(const struct lp_gguf *g) {
    return g->path;
}
uint32_t lp_gguf_version(const struct lp_gguf *g) {
    return g->version;
}
uint32_t lp_gguf_alignment(const struct lp_gguf *g) {
    return g->alignment;
}
size_t lp_gguf_file_size(const struct lp_gguf *g) {
    return g->size;
}
uint64_t lp_gguf_data_offset(const struct lp_gguf *g) {
    return g->data_off;
}

void lp_gguf_release_mapping(struct lp_gguf *g, void **ptr, size_t *size) {
    if (g->owns_mapping) {
        *ptr = (void *)g->base;
        *size = g->size;
        g->owns_mapping = false;
    } else {
        *ptr = NULL;
        *size = 0;
    }
}

/* ---- keys ---- */

int64_t lp_gguf_n_kv(const struct lp_gguf *g) {
    return g->n_kv;
}

const char *lp_gguf_key(const struct lp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

const struct lp_gguf_value *lp_gguf_value(const struct lp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i].v : NULL;
}

int64_t lp_gguf_find(const struct lp_gguf *g, const char *key) {
    return set_find(&g->kv_set, key, kv_name, g, -1);
}

const struct lp_gguf_value *lp_gguf_get(const struct lp_gguf *g, const char *key) {
    return lp_gguf_value(g, lp_gguf_find(g, key));
}

bool lp_gguf_value_i64(const struct lp_gguf_value *v, int64_t *out) {
    if (type_is_sint(v->type)) {
        *out = v->i64;
        return true;
    }
    if ((type_is_uint(v->type) || v->type == LP_GGUF_BOOL) && v->u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->u64;
        return true;
    }
    return false;
}

bool lp_gguf_value_u64(const struct lp_gguf_value *v, uint64_t *out) {
    if (type_is_uint(v->type) || v->type == LP_GGUF_BOOL) {
        *out = v->u64;
        return true;
    }
    if (type_is_sint(v->type) && v->i64 >= 0) {
        *out = (uint64_t)v->i64;
        return true;
    }
    return false;
}

bool lp_gguf_value_f64(const struct lp_gguf_value *v, double *out) {
    if (type_is_float(v->type))
        *out = v->f64;
    else if (type_is_sint(v->type))
        *out = (double)v->i64;
    else if (type_is_uint(v->type))
        *out = (double)v->u64;
    else
        return false;
    return true;
}

/* Look up key for a typed getter: absent -> error naming key and file. */
static enum lopad_status getter_find(const struct lp_gguf *g, const char *key,
                                     const struct lp_gguf_value **v) {
    *v = lp_gguf_get(g, key);
    if (!*v) return lp_error(LOPAD_ERR_FORMAT, "%s: missing metadata key '%s'", g->path, key);
    return LOPAD_OK;
}

static enum lopad_status bad_type(const struct lp_gguf *g, const char *key,
                                  const struct lp_gguf_value *v, const char *want) {
    if (v->type == LP_GGUF_ARRAY)
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' is an array of %s, expected %s", g->path,
                        key, lp_gguf_type_name(v->arr.type), want);
    return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", g->path, key,
                    lp_gguf_type_name(v->type), want);
}

static enum lopad_status get_int(const struct lp_gguf *g, const char *key, int64_t lo, uint64_t hi,
                                 const char *want, int64_t *si, uint64_t *ui) {
    const struct lp_gguf_value *v;
    enum lopad_status st = getter_find(g, key, &v);
    if (st) return st;
    if (!type_is_uint(v->type) && !type_is_sint(v->type)) return bad_type(g, key, v, want);
    bool ok;
    if (type_is_sint(v->type))
        ok = v->i64 >= lo && (v->i64 < 0 || (uint64_t)v->i64 <= hi);
    else
        ok = v->u64 <= hi;
    if (!ok) {
        if (type_is_sint(v->type))
            return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' = %lld does not fit in %s", g->path,
                            key, (long long)v->i64, want);
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' = %llu does not fit in %s", g->path, key,
                        (unsigned long long)v->u64, want);
    }
    if (si) *si = type_is_sint(v->type) ? v->i64 : (int64_t)v->u64;
    if (ui) *ui = type_is_sint(v->type) ? (uint64_t)v->i64 : v->u64;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_get_u32(const struct lp_gguf *g, const char *key, uint32_t *out) {
    uint64_t u;
    enum lopad_status st = get_int(g, key, 0, UINT32_MAX, "u32", NULL, &u);
    if (!st) *out = (uint32_t)u;
    return st;
}

enum lopad_status lp_gguf_get_i32(const struct lp_gguf *g, const char *key, int32_t *out) {
    int64_t s;
    enum lopad_status st = get_int(g, key, INT32_MIN, INT32_MAX, "i32", &s, NULL);
    if (!st) *out = (int32_t)s;
    return st;
}

enum lopad_status lp_gguf_get_u64(const struct lp_gguf *g, const char *key, uint64_t *out) {
    return get_int(g, key, 0, UINT64_MAX, "u64", NULL, out);
}

enum lopad_status lp_gguf_get_i64(const struct lp_gguf *g, const char *key, int64_t *out) {
    return get_int(g, key, INT64_MIN, INT64_MAX, "i64", out, NULL);
}

enum lopad_status lp_gguf_get_f32(const struct lp_gguf *g, const char *key, float *out) {
    const struct lp_gguf_value *v;
    enum lopad_status st = getter_find(g, key, &v);
    if (st) return st;
    if (!type_is_float(v->type)) return bad_type(g, key, v, "f32");
    *out = (float)v->f64;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_get_bool(const struct lp_gguf *g, const char *key, bool *out) {
    const struct lp_gguf_value *v;
    enum lopad_status st = getter_find(g, key, &v);
    if (st) return st;
    if (v->type != LP_GGUF_BOOL) return bad_type(g, key, v, "bool");
    *out = v->u64 != 0;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_get_str(const struct lp_gguf *g, const char *key, const char **out) {
    const struct lp_gguf_value *v;
    enum lopad_status st = getter_find(g, key, &v);
    if (st) return st;
    if (v->type != LP_GGUF_STRING) return bad_type(g, key, v, "string");
    /* a C string would silently be its prefix: refuse instead */
    size_t k = strlen(v->str.s);
    if (k != v->str.len)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: key '%s': the string holds a NUL byte at byte %zu of %llu", g->path,
                        key, k, (unsigned long long)v->str.len);
    *out = v->str.s;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_get_arr(const struct lp_gguf *g, const char *key, int elem,
                                  const struct lp_gguf_value **out) {
    const struct lp_gguf_value *v;
    enum lopad_status st = getter_find(g, key, &v);
    if (st) return st;
    if (v->type != LP_GGUF_ARRAY || (elem >= 0 && v->arr.type != (enum lp_gguf_type)elem)) {
        char want[32];
        snprintf(want, sizeof want, "array of %s",
                 elem >= 0 ? lp_gguf_type_name((enum lp_gguf_type)elem) : "anything");
        return bad_type(g, key, v, want);
    }
    *out = v;
    return LOPAD_OK;
}

/* ---- array elements ---- */

static bool arr_scalar(const struct lp_gguf_value *a, uint64_t j, struct lp_gguf_value *e) {
    if (a->type != LP_GGUF_ARRAY || j >= a->arr.n) return false;
    size_t es = lp_gguf_type_size(a->arr.type);
    if (!es || !a->arr.data) return false;
    decode_scalar(a->arr.type, (const uint8_t *)a->arr.data + j * es, e);
    return true;
}

const char *lp_gguf_arr_str(const struct lp_gguf_value *a, uint64_t j, size_t *len) {
    if (a->type != LP_GGUF_ARRAY || a->arr.type != LP_GGUF_STRING || j >= a->arr.n || !a->arr.sub)
        return NULL;
    if (len) *len = (size_t)a->arr.sub[j].str.len;
    return a->arr.sub[j].str.s;
}

bool lp_gguf_arr_i64(const struct lp_gguf_value *a, uint64_t j, int64_t *out) {
    struct lp_gguf_value e;
    return arr_scalar(a, j, &e) && lp_gguf_value_i64(&e, out);
}

bool lp_gguf_arr_u64(const struct lp_gguf_value *a, uint64_t j, uint64_t *out) {
    struct lp_gguf_value e;
    return arr_scalar(a, j, &e) && lp_gguf_value_u64(&e, out);
}

bool lp_gguf_arr_i32(const struct lp_gguf_value *a, uint64_t j, int32_t *out) {
    int64_t v;
    if (!lp_gguf_arr_i64(a, j, &v) || v < INT32_MIN || v > INT32_MAX) return false;
    *out = (int32_t)v;
    return true;
}

bool lp_gguf_arr_u32(const struct lp_gguf_value *a, uint64_t j, uint32_t *out) {
    uint64_t v;
    if (!lp_gguf_arr_u64(a, j, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

bool lp_gguf_arr_f32(const struct lp_gguf_value *a, uint64_t j, float *out) {
    struct lp_gguf_value e;
    if (!arr_scalar(a, j, &e) || !type_is_float(e.type)) return false;
    *out = (float)e.f64;
    return true;
}

const struct lp_gguf_value *lp_gguf_arr_sub(const struct lp_gguf_value *a, uint64_t j) {
    if (a->type != LP_GGUF_ARRAY || j >= a->arr.n || !a->arr.sub) return NULL;
    return &a->arr.sub[j];
}

/* ---- tensors ---- */

int64_t lp_gguf_n_tensors(const struct lp_gguf *g) {
    return g->n_tensors;
}
const struct lp_tensor *lp_gguf_tensors(const struct lp_gguf *g) {
    return g->tensors;
}

const struct lp_tensor *lp_gguf_find_tensor(const struct lp_gguf *g, const char *name) {
    int64_t i = set_find(&g->tensor_set, name, tensor_name, g, -1);
    return i >= 0 ? &g->tensors[i] : NULL;
}

uint64_t lp_gguf_tensor_offset(const struct lp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? g->offsets[i] : 0;
}

/* ----------------------------------------------------------------- writer */

struct wtensor {
    const char *name;
    int type, n_dims;
    int64_t ne[LP_MAX_DIMS];
    size_t nbytes, row_bytes;
    int64_t n_rows;
    uint64_t offset; /* in the data section */
    const void *data;
    lp_gguf_row_fn fn;
    void *user;
};

struct lp_gguf_writer {
    char *path, *tmp;
    FILE *f;
    uint32_t alignment;
    struct gguf_kv *kv;
    int64_t n_kv, cap_kv;
    struct wtensor *t;
    int64_t n_t, cap_t;
    struct arena_blk *arena;
};

static void writer_free(struct lp_gguf_writer *w) {
    arena_free(w->arena);
    lp_free(w->kv);
    lp_free(w->t);
    lp_free(w->tmp);
    lp_free(w->path);
    lp_free(w);
}

void lp_gguf_writer_abort(struct lp_gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

enum lopad_status lp_gguf_writer_create(const char *path, struct lp_gguf_writer **out) {
    *out = NULL;
    struct lp_gguf_writer *w = lp_calloc(1, sizeof *w, "gguf writer");
    if (!w) return LOPAD_ERR_NOMEM;
    w->alignment = LP_GGUF_DEFAULT_ALIGNMENT;
    size_t n = strlen(path) + 32;
    if (!(w->path = lp_strdup(path, "gguf output path")) || !(w->tmp = lp_malloc(n, "gguf tmp"))) {
        writer_free(w);
        return LOPAD_ERR_NOMEM;
    }
    snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        enum lopad_status st =
            lp_error(LOPAD_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        lp_free(w->tmp);
        w->tmp = NULL; /* nothing to unlink */
        writer_free(w);
        return st;
    }
    if (!(w->f = fdopen(fd, "wb"))) {
        enum lopad_status st =
            lp_error(LOPAD_ERR_IO, "%s: cannot open: %s", w->tmp, strerror(errno));
        close(fd);
        lp_gguf_writer_abort(w);
        return st;
    }
    setvbuf(w->f, NULL, _IOFBF, (size_t)1 << 20); /* rows are small writes */
    *out = w;
    return LOPAD_OK;
}

static struct gguf_kv *writer_find_kv(struct lp_gguf_writer *w, const char *key) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) return &w->kv[i];
    return NULL;
}

bool lp_gguf_writer_has_key(const struct lp_gguf_writer *w, const char *key) {
    return writer_find_kv((struct lp_gguf_writer *)w, key) != NULL;
}

enum lopad_status lp_gguf_writer_set_alignment(struct lp_gguf_writer *w, uint32_t alignment) {
    if (alignment == 0 || alignment % 8 || alignment > (1u << 30))
        return lp_error(LOPAD_ERR_ARG, "%s: alignment %u must be a nonzero multiple of 8", w->path,
                        alignment);
    if (w->n_t)
        return lp_error(LOPAD_ERR_ARG, "%s: set the alignment before adding tensors", w->path);
    w->alignment = alignment;
    struct gguf_kv *kv = writer_find_kv(w, "general.alignment");
    if (kv) {
        kv->v.type = LP_GGUF_U32;
        kv->v.u64 = alignment;
    }
    return LOPAD_OK;
}

/* Deep copy of src into the writer's arena, checking its consistency. */
static enum lopad_status copy_value(struct lp_gguf_writer *w, const char *key,
                                    struct lp_gguf_value *dst, const struct lp_gguf_value *src,
                                    int depth) {
    *dst = *src;
    if ((unsigned)src->type >= LP_GGUF_NTYPES)
        return lp_error(LOPAD_ERR_ARG, "%s: key '%s': unknown value type %d", w->path, key,
                        (int)src->type);
    if (src->type == LP_GGUF_STRING) {
        if (src->str.len && !src->str.s)
            return lp_error(LOPAD_ERR_ARG, "%s: key '%s': string without data", w->path, key);
        if (src->str.len >= SIZE_MAX)
            return lp_error(LOPAD_ERR_ARG, "%s: key '%s': string too long", w->path, key);
        char *s = arena_strndup(&w->arena, src->str.s, (size_t)src->str.len, "gguf string");
        if (!s) return LOPAD_ERR_NOMEM;
        dst->str.s = s;
        return LOPAD_OK;
    }
    if (src->type != LP_GGUF_ARRAY) return LOPAD_OK;
    enum lp_gguf_type et = src->arr.type;
    if ((unsigned)et >= LP_GGUF_NTYPES)
        return lp_error(LOPAD_ERR_ARG, "%s: key '%s': unknown array element type %d", w->path, key,
                        (int)et);
    if (depth >= LP_GGUF_MAX_DEPTH)
        return lp_error(LOPAD_ERR_ARG, "%s: key '%s': arrays nested deeper than %d", w->path, key,
                        LP_GGUF_MAX_DEPTH);
    uint64_t n = src->arr.n, bytes;
    size_t es = type_sizes[et];
    dst->arr.data = NULL;
    dst->arr.sub = NULL;
    if (n == 0) return LOPAD_OK;
    if (es) {
        if (!src->arr.data || !lp_mul_ok(n, es, &bytes) || bytes > SIZE_MAX / 2)
            return lp_error(LOPAD_ERR_ARG, "%s: key '%s': bad array data", w->path, key);
        void *d = arena_alloc(&w->arena, (size_t)bytes, "gguf array");
        if (!d) return LOPAD_ERR_NOMEM;
        memcpy(d, src->arr.data, (size_t)bytes);
        dst->arr.data = d;
        return LOPAD_OK;
    }
    if (!src->arr.sub || !lp_mul_ok(n, sizeof(struct lp_gguf_value), &bytes) ||
        bytes > SIZE_MAX / 2)
        return lp_error(LOPAD_ERR_ARG, "%s: key '%s': bad array elements", w->path, key);
    struct lp_gguf_value *sub = arena_alloc(&w->arena, (size_t)bytes, "gguf array");
    if (!sub) return LOPAD_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++) {
        if (src->arr.sub[j].type != et)
            return lp_error(LOPAD_ERR_ARG,
                            "%s: key '%s': element %llu has type %s in an array of %s", w->path,
                            key, (unsigned long long)j, lp_gguf_type_name(src->arr.sub[j].type),
                            lp_gguf_type_name(et));
        enum lopad_status st = copy_value(w, key, &sub[j], &src->arr.sub[j], depth + 1);
        if (st) return st;
    }
    dst->arr.sub = sub;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_writer_add_value(struct lp_gguf_writer *w, const char *key,
                                           const struct lp_gguf_value *v) {
    size_t klen = key ? strlen(key) : 0;
    if (klen == 0 || klen > MAX_KEY_LEN)
        return lp_error(LOPAD_ERR_ARG, "%s: invalid metadata key (empty or too long)", w->path);
    if (writer_find_kv(w, key))
        return lp_error(LOPAD_ERR_ARG, "%s: duplicate metadata key '%s'", w->path, key);
    bool is_align = !strcmp(key, "general.alignment");
    if (is_align) {
        if (v->type != LP_GGUF_U32 || v->u64 == 0 || v->u64 % 8 || v->u64 > (1u << 30))
            return lp_error(LOPAD_ERR_ARG,
                            "%s: general.alignment must be a u32, nonzero multiple of 8", w->path);
        if (w->n_t && v->u64 != w->alignment)
            return lp_error(LOPAD_ERR_ARG, "%s: set the alignment before adding tensors", w->path);
    }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
        struct gguf_kv *kv = lp_realloc(w->kv, (size_t)cap * sizeof *kv, "gguf writer keys");
        if (!kv) return LOPAD_ERR_NOMEM;
        w->kv = kv;
        w->cap_kv = cap;
    }
    struct gguf_kv *kv = &w->kv[w->n_kv];
    char *k = arena_strndup(&w->arena, key, klen, "gguf key");
    if (!k) return LOPAD_ERR_NOMEM;
    enum lopad_status st = copy_value(w, key, &kv->v, v, 0);
    if (st) return st;
    kv->key = k;
    w->n_kv++;
    if (is_align) w->alignment = (uint32_t)v->u64;
    return LOPAD_OK;
}

#define ADD_SCALAR(fn, ctype, T, field)                                                            \
    enum lopad_status lp_gguf_writer_add_##fn(struct lp_gguf_writer *w, const char *key,           \
                                              ctype val) {                                         \
        struct lp_gguf_value v = {.type = T};                                                      \
        v.field = val;                                                                             \
        return lp_gguf_writer_add_value(w, key, &v);                                               \
    }
ADD_SCALAR(u8, uint8_t, LP_GGUF_U8, u64)
ADD_SCALAR(i8, int8_t, LP_GGUF_I8, i64)
ADD_SCALAR(u16, uint16_t, LP_GGUF_U16, u64)
ADD_SCALAR(i16, int16_t, LP_GGUF_I16, i64)
ADD_SCALAR(u32, uint32_t, LP_GGUF_U32, u64)
ADD_SCALAR(i32, int32_t, LP_GGUF_I32, i64)
ADD_SCALAR(u64, uint64_t, LP_GGUF_U64, u64)
ADD_SCALAR(i64, int64_t, LP_GGUF_I64, i64)
ADD_SCALAR(f32, float, LP_GGUF_F32, f64)
ADD_SCALAR(f64, double, LP_GGUF_F64, f64)
#undef ADD_SCALAR

enum lopad_status lp_gguf_writer_add_bool(struct lp_gguf_writer *w, const char *key, bool val) {
    struct lp_gguf_value v = {.type = LP_GGUF_BOOL};
    v.u64 = val ? 1 : 0;
    return lp_gguf_writer_add_value(w, key, &v);
}

enum lopad_status lp_gguf_writer_add_str(struct lp_gguf_writer *w, const char *key, const char *s) {
    struct lp_gguf_value v = {.type = LP_GGUF_STRING};
    v.str.s = s ? s : "";
    v.str.len = strlen(v.str.s);
    return lp_gguf_writer_add_value(w, key, &v);
}

enum lopad_status lp_gguf_writer_add_arr(struct lp_gguf_writer *w, const char *key,
                                         enum lp_gguf_type elem, const void *data, uint64_t n) {
    struct lp_gguf_value v = {.type = LP_GGUF_ARRAY};
    v.arr.type = elem;
    v.arr.n = n;
    if (elem == LP_GGUF_ARRAY || (unsigned)elem >= LP_GGUF_NTYPES)
        return lp_error(LOPAD_ERR_ARG,
                        "%s: key '%s': use lp_gguf_writer_add_value for nested "
                        "arrays",
                        w->path, key);
    if (elem != LP_GGUF_STRING) {
        v.arr.data = data;
        return lp_gguf_writer_add_value(w, key, &v);
    }
    /* strings: wrap them as values (temporary table, deep-copied by add_value) */
    uint64_t bytes;
    if (!lp_mul_ok(n, sizeof(struct lp_gguf_value), &bytes) || bytes > SIZE_MAX / 2)
        return lp_error(LOPAD_ERR_ARG, "%s: key '%s': array too long", w->path, key);
    struct lp_gguf_value *sub = lp_malloc(bytes ? (size_t)bytes : 1, "gguf string array");
    if (!sub) return LOPAD_ERR_NOMEM;
    const char *const *s = data;
    for (uint64_t j = 0; j < n; j++) {
        sub[j] = (struct lp_gguf_value){.type = LP_GGUF_STRING};
        sub[j].str.s = s[j] ? s[j] : "";
        sub[j].str.len = strlen(sub[j].str.s);
    }
    v.arr.sub = sub;
    enum lopad_status st = lp_gguf_writer_add_value(w, key, &v);
    lp_free(sub);
    return st;
}

static enum lopad_status add_tensor(struct lp_gguf_writer *w, const char *name, int type,
                                    int n_dims, const int64_t *ne, const void *data, size_t nbytes,
                                    lp_gguf_row_fn fn, void *user) {
    size_t nlen = name ? strlen(name) : 0;
    if (nlen == 0 || nlen > 63)
        return lp_error(LOPAD_ERR_ARG, "%s: tensor name '%s' must have 1..63 bytes", w->path,
                        name ? name : "");
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return lp_error(LOPAD_ERR_ARG, "%s: duplicate tensor name '%s'", w->path, name);
    if (n_dims < 1 || n_dims > LP_MAX_DIMS)
        return lp_error(LOPAD_ERR_ARG, "%s: tensor '%s' has %d dimensions (1..4)", w->path, name,
                        n_dims);
    const struct lp_type_traits *tr = lp_type_traits(type);
    if (!tr)
        return lp_error(LOPAD_ERR_ARG, "%s: tensor '%s' has unsupported type id %d", w->path, name,
                        type);
    struct wtensor t = {.type = type, .n_dims = n_dims, .data = data, .fn = fn, .user = user};
    uint64_t rows = 1;
    for (int d = 0; d < LP_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] <= 0 || (d > 0 && !lp_mul_ok(rows, (uint64_t)t.ne[d], &rows)))
            return lp_error(LOPAD_ERR_ARG, "%s: tensor '%s' has invalid dimension %d", w->path,
                            name, d);
    }
    t.row_bytes = lp_row_size(type, t.ne[0]);
    uint64_t total;
    if (!t.row_bytes || !lp_mul_ok(t.row_bytes, rows, &total) || total > SIZE_MAX ||
        rows > INT64_MAX)
        return lp_error(LOPAD_ERR_ARG,
                        "%s: tensor '%s': rows of %lld are not whole %s blocks, or too large",
                        w->path, name, (long long)t.ne[0], tr->name);
    t.nbytes = (size_t)total;
    t.n_rows = (int64_t)rows;
    if (!fn && (nbytes != t.nbytes || (!data && nbytes)))
        return lp_error(LOPAD_ERR_ARG, "%s: tensor '%s': %zu bytes given, %s shape needs %zu",
                        w->path, name, nbytes, tr->name, t.nbytes);
    uint64_t end = 0, a = w->alignment;
    if (w->n_t) {
        const struct wtensor *p = &w->t[w->n_t - 1];
        end = p->offset + p->nbytes;
    }
    uint64_t off;
    if (!lp_add_ok(end, (a - end % a) % a, &off) || !lp_add_ok(off, t.nbytes, &end))
        return lp_error(LOPAD_ERR_ARG, "%s: tensor data too large", w->path);
    t.offset = off;
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        struct wtensor *nt = lp_realloc(w->t, (size_t)cap * sizeof *nt, "gguf writer tensors");
        if (!nt) return LOPAD_ERR_NOMEM;
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = arena_strndup(&w->arena, name, nlen, "gguf tensor name")))
        return LOPAD_ERR_NOMEM;
    w->t[w->n_t++] = t;
    return LOPAD_OK;
}

enum lopad_status lp_gguf_writer_add_tensor(struct lp_gguf_writer *w, const char *name, int type,
                                            int n_dims, const int64_t *ne, const void *data,
                                            size_t nbytes) {
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, NULL, NULL);
}

enum lopad_status lp_gguf_writer_add_tensor_rows(struct lp_gguf_writer *w, const char *name,
                                                 int type, int n_dims, const int64_t *ne,
                                                 lp_gguf_row_fn fn, void *user) {
    if (!fn) return lp_error(LOPAD_ERR_ARG, "%s: tensor '%s': no row producer", w->path, name);
    return add_tensor(w, name, type, n_dims, ne, NULL, 0, fn, user);
}

/* ---- serialisation ---- */

struct wbuf {
    FILE *f;
    uint64_t pos;
    bool err;
};

static void put(struct wbuf *b, const void *p, size_t n) {
    if (b->err || n == 0) return;
    if (fwrite(p, 1, n, b->f) != n) b->err = true;
    b->pos += n;
}

static void put_le(struct wbuf *b, uint64_t v, size_t n) {
    uint8_t tmp[8];
    for (size_t i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    put(b, tmp, n);
}

static void put_str(struct wbuf *b, const char *s, uint64_t len) {
    put_le(b, len, 8);
    put(b, s, (size_t)len);
}

static void put_zeros(struct wbuf *b, uint64_t n) {
    static const uint8_t z[256];
    while (n) {
        size_t k = n > sizeof z ? sizeof z : (size_t)n;
        put(b, z, k);
        n -= k;
    }
}

static void put_scalar(struct wbuf *b, const struct lp_gguf_value *v) {
    switch (v->type) {
    case LP_GGUF_F32: {
        float f = (float)v->f64;
        uint32_t u;
        memcpy(&u, &f, 4);
        put_le(b, u, 4);
        break;
    }
    case LP_GGUF_F64: {
        uint64_t u;
        memcpy(&u, &v->f64, 8);
        put_le(b, u, 8);
        break;
    }
    default: put_le(b, type_is_sint(v->type) ? (uint64_t)v->i64 : v->u64, type_sizes[v->type]);
    }
}

/* the payload of a value (without its type tag) */
static void put_value(struct wbuf *b, const struct lp_gguf_value *v) {
    if (v->type == LP_GGUF_STRING) {
        put_str(b, v->str.s, v->str.len);
    } else if (v->type == LP_GGUF_ARRAY) {
        put_le(b, (uint32_t)v->arr.type, 4);
        put_le(b, v->arr.n, 8);
        size_t es = type_sizes[v->arr.type];
        if (es) {
            /* C arrays of the host; GGUF is little-endian */
            const uint8_t *p = v->arr.data;
            for (uint64_t j = 0; j < v->arr.n; j++)
                put_le(b, load_le(p + j * es, es), es);
        } else {
            for (uint64_t j = 0; j < v->arr.n; j++)
                put_value(b, &v->arr.sub[j]);
        }
    } else {
        put_scalar(b, v);
    }
}

static enum lopad_status write_all(struct lp_gguf_writer *w) {
    enum lopad_status st;
    if (!writer_find_kv(w, "general.alignment") &&
        (st = lp_gguf_writer_add_u32(w, "general.alignment", w->alignment)))
        return st;
    struct wbuf b = {w->f, 0, false};
    put_le(&b, LP_GGUF_MAGIC, 4);
    put_le(&b, LP_GGUF_VERSION, 4);
    put_le(&b, (uint64_t)w->n_t, 8);
    put_le(&b, (uint64_t)w->n_kv, 8);
    for (int64_t i = 0; i < w->n_kv; i++) {
        put_str(&b, w->kv[i].key, strlen(w->kv[i].key));
        put_le(&b, (uint32_t)w->kv[i].v.type, 4);
        put_value(&b, &w->kv[i].v);
    }
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        put_str(&b, t->name, strlen(t->name));
        put_le(&b, (uint32_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++)
            put_le(&b, (uint64_t)t->ne[d], 8);
        put_le(&b, (uint32_t)t->type, 4);
        put_le(&b, t->offset, 8);
    }
    uint64_t a = w->alignment;
    put_zeros(&b, (a - b.pos % a) % a);
    const uint64_t data_start = b.pos;
    void *row = NULL;
    size_t row_cap = 0;
    for (int64_t i = 0; i < w->n_t && !b.err; i++) {
        const struct wtensor *t = &w->t[i];
        put_zeros(&b, data_start + t->offset - b.pos);
        if (!t->fn) {
            put(&b, t->data, t->nbytes);
            continue;
        }
        if (t->row_bytes > row_cap) {
            void *r = lp_realloc(row, t->row_bytes, "gguf row buffer");
            if (!r) {
                lp_free(row);
                return LOPAD_ERR_NOMEM;
            }
            row = r;
            row_cap = t->row_bytes;
        }
        for (int64_t r = 0; r < t->n_rows && !b.err; r++) {
            if ((st = t->fn(t->user, r, row, t->row_bytes))) {
                lp_free(row);
                return st;
            }
            put(&b, row, t->row_bytes);
        }
    }
    lp_free(row);
    if (!b.err && fflush(w->f) != 0) b.err = true;
    if (b.err) return lp_error(LOPAD_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    if (fsync(fileno(w->f)) != 0 && errno != EINVAL && errno != EROFS)
        return lp_error(LOPAD_ERR_IO, "%s: fsync failed: %s", w->tmp, strerror(errno));
    return LOPAD_OK;
}

enum lopad_status lp_gguf_writer_finish(struct lp_gguf_writer *w) {
    enum lopad_status st = write_all(w);
    if (st) {
        lp_gguf_writer_abort(w);
        return st;
    }
    FILE *f = w->f;
    w->f = NULL;
    if (fclose(f) != 0) {
        st = lp_error(LOPAD_ERR_IO, "%s: close failed: %s", w->tmp, strerror(errno));
        lp_gguf_writer_abort(w);
        return st;
    }
    if (rename(w->tmp, w->path) != 0) {
        st =
            lp_error(LOPAD_ERR_IO, "%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
        lp_gguf_writer_abort(w);
        return st;
    }
    writer_free(w);
    return LOPAD_OK;
}
