/*
 * tokenizer.c - byte-level BPE: token tables, encode (added-token split, NFC,
 * regex pre-tokenisation, BPE by merge rank with a piece cache), decode and
 * streaming decode. The loaders live in tok_load.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "../core/utf8.h"

const char *const LP_PAT_GPT2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const LP_PAT_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                                 "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char *const LP_PAT_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define CACHE_SLOTS (1u << 17)     /* piece cache; cleared when 70% full */
#define CACHE_MAX_PIECE 128        /* longer pieces are not cached */
#define ADDED_MAX_SCAN_TOKENS 4096 /* sanity bound, see lp_tok_finish */

/* ------------------------------------------------------------ small helpers */

enum lopad_status lp_ids_push(struct lp_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = lp_realloc(ids->v, cap * sizeof *v, "token ids");
        if (!v) return LOPAD_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return LOPAD_OK;
}

static enum lopad_status ids_append(struct lp_ids *ids, const int32_t *src, size_t n) {
    if (ids->n + n > ids->cap) {
        size_t cap = ids->cap ? ids->cap : 64;
        while (cap < ids->n + n)
            cap *= 2;
        int32_t *v = lp_realloc(ids->v, cap * sizeof *v, "token ids");
        if (!v) return LOPAD_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    if (n) memcpy(ids->v + ids->n, src, n * sizeof *src);
    ids->n += n;
    return LOPAD_OK;
}

void lp_ids_free(struct lp_ids *ids) {
    if (!ids) return;
    lp_free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

/* Seeded per process (lp_hash_seed): a vocabulary cannot be crafted so that
 * all its strings collide in the index. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ lp_hash_seed() ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h ? h : 1;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= lp_hash_seed();
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t p = 16;
    while (p < n && p < (1u << 31))
        p <<= 1;
    return p;
}

/* ---------------------------------------------- GPT-2 byte-level alphabet */

static int16_t bl_byte_to_cp[256];
static int16_t bl_cp_to_byte[512];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

/* The printable bytes stand for themselves; the other 68 bytes take the code
 * points 256, 257, ... in byte order, so every byte is a visible character. */
static void bl_init(void) {
    for (int i = 0; i < 512; i++)
        bl_cp_to_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        int cp = printable ? b : 256 + extra++;
        bl_byte_to_cp[b] = (int16_t)cp;
        bl_cp_to_byte[cp] = (int16_t)b;
    }
}

size_t lp_bytelevel_decode(const char *s, size_t len, char *out) {
    pthread_once(&bl_once, bl_init);
    size_t o = 0, i = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { /* not UTF-8: keep the byte */
            out[o++] = s[i++];
            continue;
        }
        if (cp < 512 && bl_cp_to_byte[cp] >= 0) {
            out[o++] = (char)bl_cp_to_byte[cp];
        } else {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
        }
        i += (size_t)k;
    }
    return o;
}

size_t lp_bytelevel_encode(const char *s, size_t len, char *out) {
    pthread_once(&bl_once, bl_init);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int cp = bl_byte_to_cp[(uint8_t)s[i]];
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

/* ------------------------------------------------------------ construction */

struct lp_tokenizer *lp_tok_new(const char *source) {
    struct lp_tokenizer *t = lp_calloc(1, sizeof *t, "tokenizer");
    if (!t) return NULL;
    t->source = lp_strdup(source ? source : "tokenizer", "tokenizer source name");
    if (!t->source) {
        lp_free(t);
        return NULL;
    }
    t->bos_id = t->eos_id = t->pad_id = t->unk_id = -1;
    t->id_limit = LP_TOK_MAX_ID;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void lp_tokenizer_free(struct lp_tokenizer *t) {
    if (!t) return;
    lp_free(t->kind);
    lp_free(t->tok_off);
    lp_free(t->tok_len);
    lp_free(t->tok_data);
    lp_free(t->vmap);
    lp_free(t->mmap);
    lp_free(t->added);
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    if (t->md) pcre2_match_data_free(t->md);
    lp_free(t->chat_template);
    lp_free(t->source);
    lp_free(t->cache);
    lp_free(t->ckeys);
    lp_free(t->cids);
    lp_free(t->nfc_buf);
    pthread_mutex_destroy(&t->mu);
    lp_free(t);
}

/* Grow the per-id tables to hold ids < need (geometric; n_vocab unchanged). */
static enum lopad_status grow_tables(struct lp_tokenizer *t, int32_t need) {
    if (need <= t->tab_cap) return LOPAD_OK;
    int32_t cap = t->tab_cap < 1024 ? 1024 : t->tab_cap;
    while (cap < need)
        cap = cap > LP_TOK_MAX_ID / 2 ? LP_TOK_MAX_ID : cap * 2;
    size_t ncap = (size_t)cap;
    uint8_t *kind = lp_realloc(t->kind, ncap, "token kinds");
    if (!kind) return LOPAD_ERR_NOMEM;
    t->kind = kind;
    uint32_t *off = lp_realloc(t->tok_off, ncap * sizeof *off, "token offsets");
    if (!off) return LOPAD_ERR_NOMEM;
    t->tok_off = off;
    uint32_t *len = lp_realloc(t->tok_len, ncap * sizeof *len, "token lengths");
    if (!len) return LOPAD_ERR_NOMEM;
    t->tok_len = len;
    for (size_t i = (size_t)t->tab_cap; i < ncap; i++) {
        kind[i] = LP_TOK_HOLE;
        off[i] = len[i] = 0;
    }
    t->tab_cap = cap;
    return LOPAD_OK;
}

enum lopad_status lp_tok_set(struct lp_tokenizer *t, int32_t id, const char *bytes, size_t len,
                             enum lp_tok_kind kind) {
    if (id < 0 || id >= t->id_limit)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: token id %d out of range [0, %d) (ids are bounded by the number of "
                        "vocabulary and added-token entries plus %d)",
                        t->source, (int)id, (int)t->id_limit, LP_TOK_ID_SLACK);
    enum lopad_status st = grow_tables(t, id + 1);
    if (st) return st;
    if (t->data_len + len + 1 > UINT32_MAX)
        return lp_error(LOPAD_ERR_FORMAT, "%s: token strings exceed 4 GiB", t->source);
    if (t->data_len + len + 1 > t->data_cap) {
        size_t cap = t->data_cap ? t->data_cap : 1 << 20;
        while (cap < t->data_len + len + 1)
            cap *= 2;
        char *d = lp_realloc(t->tok_data, cap, "token strings");
        if (!d) return LOPAD_ERR_NOMEM;
        t->tok_data = d;
        t->data_cap = cap;
    }
    memcpy(t->tok_data + t->data_len, bytes, len);
    t->tok_data[t->data_len + len] = 0; /* so added-token content is a C string */
    t->tok_off[id] = (uint32_t)t->data_len;
    t->tok_len[id] = (uint32_t)len;
    t->kind[id] = (uint8_t)kind;
    t->data_len += len + 1;
    if (id >= t->n_vocab) t->n_vocab = id + 1;
    return LOPAD_OK;
}

int32_t lp_tok_lookup(const struct lp_tokenizer *t, const char *bytes, size_t len) {
    if (!t->vmap) return -1;
    uint32_t i = (uint32_t)hash_bytes(bytes, len) & t->vmap_mask;
    for (;;) {
        int32_t id = t->vmap[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == len && !memcmp(t->tok_data + t->tok_off[id], bytes, len)) return id;
        i = (i + 1) & t->vmap_mask;
    }
}

enum lopad_status lp_tok_index_vocab(struct lp_tokenizer *t) {
    size_t n_normal = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n_normal += t->kind[i] == LP_TOK_NORMAL;
    uint32_t size = pow2_at_least(2 * n_normal + 16);
    lp_free(t->vmap);
    t->vmap = lp_malloc((size_t)size * sizeof *t->vmap, "vocabulary index");
    if (!t->vmap) return LOPAD_ERR_NOMEM;
    memset(t->vmap, 0xff, (size_t)size * sizeof *t->vmap);
    t->vmap_mask = size - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->kind[id] != LP_TOK_NORMAL) continue;
        const char *s = t->tok_data + t->tok_off[id];
        size_t len = t->tok_len[id];
        uint32_t i = (uint32_t)hash_bytes(s, len) & t->vmap_mask;
        bool dup = false;
        while (t->vmap[i] >= 0) {
            int32_t o = t->vmap[i];
            if (t->tok_len[o] == len && !memcmp(t->tok_data + t->tok_off[o], s, len)) {
                dup = true; /* same bytes twice: the lower id wins */
                break;
            }
            i = (i + 1) & t->vmap_mask;
        }
        if (!dup) t->vmap[i] = id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = lp_tok_lookup(t, &c, 1);
    }
    return LOPAD_OK;
}

enum lopad_status lp_tok_merges_reserve(struct lp_tokenizer *t, size_t n) {
    if (n > (size_t)1 << 28)
        return lp_error(LOPAD_ERR_FORMAT, "%s: %zu merges is too many", t->source, n);
    uint32_t size = pow2_at_least(2 * n + 16);
    lp_free(t->mmap);
    t->mmap = lp_calloc(size, sizeof *t->mmap, "merge table");
    if (!t->mmap) return LOPAD_ERR_NOMEM;
    t->mmap_mask = size - 1;
    t->n_merges = 0;
    return LOPAD_OK;
}

void lp_tok_merge_add(struct lp_tokenizer *t, int32_t left, int32_t right, int32_t merged) {
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & t->mmap_mask;
    int32_t rank = t->n_merges++;
    while (t->mmap[i].key) {
        if (t->mmap[i].key == key) return; /* repeated pair keeps its first rank */
        i = (i + 1) & t->mmap_mask;
    }
    t->mmap[i].key = key;
    t->mmap[i].rank = rank;
    t->mmap[i].id = merged;
}

static inline const struct lp_merge_slot *merge_find(const struct lp_tokenizer *t, int32_t left,
                                                     int32_t right) {
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & t->mmap_mask;
    for (;;) {
        const struct lp_merge_slot *s = &t->mmap[i];
        if (s->key == key) return s;
        if (!s->key) return NULL;
        i = (i + 1) & t->mmap_mask;
    }
}

enum lopad_status lp_tok_add_pattern(struct lp_tokenizer *t, const char *pattern) {
    if (t->n_re >= LP_TOK_MAX_PATTERNS)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer split patterns",
                        t->source, LP_TOK_MAX_PATTERNS);
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lp_error(
            LOPAD_ERR_UNSUPPORTED,
            "%s: pre-tokenizer pattern does not compile at offset %zu: %s (pattern: %s)", t->source,
            (size_t)erroff, (const char *)msg, pattern);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is used when JIT is missing */
    t->re[t->n_re++] = re;
    return LOPAD_OK;
}

static int cmp_added(const void *a, const void *b, void *arg) {
    const struct lp_tokenizer *t = arg;
    const struct lp_tok_added *x = a, *y = b;
    uint32_t lx = t->tok_len[x->id], ly = t->tok_len[y->id];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

enum lopad_status lp_tok_finish(struct lp_tokenizer *t) {
    int n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n += t->kind[i] >= LP_TOK_ADDED && t->tok_len[i] > 0;
    lp_free(t->added);
    t->added = NULL;
    t->n_added = 0;
    memset(t->added_first, 0, sizeof t->added_first);
    if (n) {
        t->added = lp_malloc((size_t)n * sizeof *t->added, "added tokens");
        if (!t->added) return LOPAD_ERR_NOMEM;
        for (int32_t i = 0; i < t->n_vocab; i++) {
            if (t->kind[i] < LP_TOK_ADDED || !t->tok_len[i]) continue;
            t->added[t->n_added].id = i;
            t->added[t->n_added].special = t->kind[i] == LP_TOK_SPECIAL;
            t->added_first[(uint8_t)t->tok_data[t->tok_off[i]]] = 1;
            t->n_added++;
        }
        qsort_r(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added, t);
    }
    if (!t->vmap) {
        enum lopad_status st = lp_tok_index_vocab(t);
        if (st) return st;
    }
    if (!t->mmap) {
        enum lopad_status st = lp_tok_merges_reserve(t, 0);
        if (st) return st;
    }
    t->md = pcre2_match_data_create(32, NULL);
    if (!t->md) return lp_error(LOPAD_ERR_NOMEM, "%s: out of memory (regex match data)", t->source);
    return LOPAD_OK;
}

/* ----------------------------------------------------------------- queries */

int32_t lp_tokenizer_n_vocab(const struct lp_tokenizer *t) {
    return t->n_vocab;
}

const char *lp_tokenizer_token(const struct lp_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || t->kind[id] == LP_TOK_HOLE) return NULL;
    if (len) *len = t->tok_len[id];
    return t->tok_data + t->tok_off[id];
}

bool lp_tokenizer_is_special(const struct lp_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->kind[id] == LP_TOK_SPECIAL;
}

int32_t lp_tokenizer_find(const struct lp_tokenizer *t, const char *content) {
    size_t len = strlen(content);
    for (int i = 0; i < t->n_added; i++) {
        int32_t id = t->added[i].id;
        if (t->tok_len[id] == len && !memcmp(t->tok_data + t->tok_off[id], content, len)) return id;
    }
    return lp_tok_lookup(t, content, len);
}

int32_t lp_tokenizer_bos_id(const struct lp_tokenizer *t) {
    return t->bos_id;
}
int32_t lp_tokenizer_eos_id(const struct lp_tokenizer *t) {
    return t->eos_id;
}
int32_t lp_tokenizer_pad_id(const struct lp_tokenizer *t) {
    return t->pad_id;
}
const char *lp_tokenizer_chat_template(const struct lp_tokenizer *t) {
    return t->chat_template;
}
int lp_tokenizer_n_patterns(const struct lp_tokenizer *t) {
    return t->n_re;
}
bool lp_tokenizer_nfc(const struct lp_tokenizer *t) {
    return t->nfc;
}

/* ---------------------------------------------------------------- the BPE */

struct bpe_sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
};

struct bpe_cand {
    int32_t rank, pos; /* order: lowest rank, then leftmost */
    int32_t right, lid, rid, merged;
};

static inline bool cand_less(const struct bpe_cand *a, const struct bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct bpe_cand *h, int *n, struct bpe_cand c) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static struct bpe_cand heap_pop(struct bpe_cand *h, int *n) {
    struct bpe_cand top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void try_pair(const struct lp_tokenizer *t, const struct bpe_sym *sym, int left,
                     struct bpe_cand *heap, int *nh) {
    int right = sym[left].next;
    if (left < 0 || right < 0) return;
    const struct lp_merge_slot *m = merge_find(t, sym[left].id, sym[right].id);
    if (!m) return;
    struct bpe_cand c = {m->rank, left, right, sym[left].id, sym[right].id, m->id};
    heap_push(heap, nh, c);
}

/* BPE over the bytes of one piece; appends the ids to out. */
static enum lopad_status bpe_word(struct lp_tokenizer *t, const char *s, size_t n,
                                  struct lp_ids *out) {
    struct bpe_sym sym_stack[64];
    struct bpe_cand heap_stack[192];
    struct bpe_sym *sym = sym_stack;
    struct bpe_cand *heap = heap_stack;
    if (n > 64) {
        sym = lp_malloc(n * sizeof *sym, "BPE symbols");
        heap = lp_malloc(3 * n * sizeof *heap, "BPE heap");
        if (!sym || !heap) {
            lp_free(sym);
            lp_free(heap);
            return LOPAD_ERR_NOMEM;
        }
    }
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(uint8_t)s[i]];
        if (id < 0) id = t->unk_id;
        if (id < 0) continue; /* a byte with no token and no unk: dropped */
        sym[ns].id = id;
        sym[ns].prev = ns - 1;
        sym[ns].next = -1;
        if (ns > 0) sym[ns - 1].next = ns;
        ns++;
    }
    int nh = 0;
    for (int i = 0; i + 1 < ns; i++)
        try_pair(t, sym, i, heap, &nh);
    while (nh > 0) {
        struct bpe_cand c = heap_pop(heap, &nh);
        int l = c.pos, r = c.right;
        /* stale candidates: a side was merged away or changed since the push */
        if (sym[l].id != c.lid || sym[l].next != r || sym[r].id != c.rid) continue;
        sym[l].id = c.merged;
        sym[l].next = sym[r].next;
        if (sym[r].next >= 0) sym[sym[r].next].prev = l;
        sym[r].id = -1; /* dead */
        sym[r].next = -1;
        if (sym[l].prev >= 0) try_pair(t, sym, sym[l].prev, heap, &nh);
        try_pair(t, sym, l, heap, &nh);
    }
    enum lopad_status st = LOPAD_OK;
    for (int i = ns > 0 ? 0 : -1; i >= 0 && !st; i = sym[i].next)
        st = lp_ids_push(out, sym[i].id);
    if (sym != sym_stack) {
        lp_free(sym);
        lp_free(heap);
    }
    return st;
}

/* --------------------------------------------------------------- the cache */

static void cache_clear(struct lp_tokenizer *t) {
    if (t->cache) memset(t->cache, 0, (size_t)CACHE_SLOTS * sizeof *t->cache);
    t->cache_n = 0;
    t->ckeys_len = 0;
    t->cids_len = 0;
}

static enum lopad_status piece_encode(struct lp_tokenizer *t, const char *s, size_t n,
                                      struct lp_ids *out) {
    if (n == 0) return LOPAD_OK;
    if (n == 1 && t->byte_id[(uint8_t)s[0]] >= 0)
        return lp_ids_push(out, t->byte_id[(uint8_t)s[0]]);
    if (t->ignore_merges) {
        int32_t id = lp_tok_lookup(t, s, n);
        if (id >= 0) return lp_ids_push(out, id);
    }
    bool cacheable = n <= CACHE_MAX_PIECE;
    uint64_t h = 0;
    uint32_t slot = 0;
    if (cacheable) {
        if (!t->cache) {
            t->cache = lp_calloc(CACHE_SLOTS, sizeof *t->cache, "tokenizer cache");
            if (!t->cache) return LOPAD_ERR_NOMEM;
            t->cache_mask = CACHE_SLOTS - 1;
        }
        h = hash_bytes(s, n);
        slot = (uint32_t)h & t->cache_mask;
        for (;;) {
            struct lp_cache_slot *c = &t->cache[slot];
            if (!c->hash) break;
            if (c->hash == h && c->key_len == n && !memcmp(t->ckeys + c->key_off, s, n))
                /* a piece of dropped bytes caches zero ids: t->cids may be NULL */
                return c->n_ids ? ids_append(out, t->cids + c->ids_off, c->n_ids) : LOPAD_OK;
            slot = (slot + 1) & t->cache_mask;
        }
    }
    size_t first = out->n;
    enum lopad_status st = bpe_word(t, s, n, out);
    if (st || !cacheable) return st;
    size_t n_ids = out->n - first;
    if (t->cache_n >= CACHE_SLOTS / 10 * 7 || t->ckeys_len + n > UINT32_MAX / 2 ||
        t->cids_len + n_ids > UINT32_MAX / 8) {
        cache_clear(t);
        slot = (uint32_t)h & t->cache_mask;
    }
    if (t->ckeys_len + n > t->ckeys_cap) {
        size_t cap = t->ckeys_cap ? t->ckeys_cap * 2 : 1 << 16;
        while (cap < t->ckeys_len + n)
            cap *= 2;
        char *k = lp_realloc(t->ckeys, cap, "tokenizer cache keys");
        if (!k) return LOPAD_ERR_NOMEM;
        t->ckeys = k;
        t->ckeys_cap = cap;
    }
    if (t->cids_len + n_ids > t->cids_cap) {
        size_t cap = t->cids_cap ? t->cids_cap * 2 : 1 << 14;
        while (cap < t->cids_len + n_ids)
            cap *= 2;
        int32_t *v = lp_realloc(t->cids, cap * sizeof *v, "tokenizer cache ids");
        if (!v) return LOPAD_ERR_NOMEM;
        t->cids = v;
        t->cids_cap = cap;
    }
    struct lp_cache_slot *c = &t->cache[slot];
    c->hash = h;
    c->key_off = (uint32_t)t->ckeys_len;
    c->key_len = (uint32_t)n;
    c->ids_off = (uint32_t)t->cids_len;
    c->n_ids = (uint32_t)n_ids;
    if (n) memcpy(t->ckeys + t->ckeys_len, s, n);
    t->ckeys_len += n;
    if (n_ids) memcpy(t->cids + t->cids_len, out->v + first, n_ids * sizeof(int32_t));
    t->cids_len += n_ids;
    t->cache_n++;
    return LOPAD_OK;
}

/* ------------------------------------------------------ pre-tokenisation */

static enum lopad_status split_level(struct lp_tokenizer *t, int level, const char *s, size_t n,
                                     struct lp_ids *out) {
    if (n == 0) return LOPAD_OK;
    if (level >= t->n_re) return piece_encode(t, s, n, out);
    pcre2_code *re = t->re[level];
    size_t off = 0, last = 0;
    enum lopad_status st;
    while (off < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, 0, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lp_error(LOPAD_ERR_ARG, "%s: pre-tokenizer regex failed: %s", t->source,
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match: step over one byte (or one character) */
            off = ms + 1;
            while (off < n && ((uint8_t)s[off] & 0xC0) == 0x80)
                off++;
            continue;
        }
        /* Isolated: the gap before the match and the match are both pieces */
        if (ms > last && (st = split_level(t, level + 1, s + last, ms - last, out))) return st;
        if ((st = split_level(t, level + 1, s + ms, me - ms, out))) return st;
        last = off = me;
    }
    if (last < n) return split_level(t, level + 1, s + last, n - last, out);
    return LOPAD_OK;
}

static enum lopad_status nfc_reserve(struct lp_tokenizer *t, size_t need) {
    if (need <= t->nfc_cap) return LOPAD_OK;
    size_t cap = t->nfc_cap ? t->nfc_cap : 4096;
    while (cap < need)
        cap *= 2;
    char *b = lp_realloc(t->nfc_buf, cap, "NFC buffer");
    if (!b) return LOPAD_ERR_NOMEM;
    t->nfc_buf = b;
    t->nfc_cap = cap;
    return LOPAD_OK;
}

/* NFC of s[0..n) into t->nfc_buf (valid runs normalised, invalid bytes copied). */
static enum lopad_status nfc_text(struct lp_tokenizer *t, const char *s, size_t n, size_t *out_n) {
    size_t o = 0, i = 0;
    enum lopad_status st;
    while (i < n) {
        size_t v = lp_utf8_valid_prefix((const char *)s + i, n - i);
        if (v == 0) { /* one invalid byte */
            if ((st = nfc_reserve(t, o + 1))) return st;
            t->nfc_buf[o++] = s[i++];
            continue;
        }
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)v,
                                          &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) {
            free(dst);
            return lp_error(r == UTF8PROC_ERROR_NOMEM ? LOPAD_ERR_NOMEM : LOPAD_ERR_ARG,
                            "%s: NFC normalisation failed: %s", t->source, utf8proc_errmsg(r));
        }
        if ((st = nfc_reserve(t, o + (size_t)r))) {
            free(dst);
            return st;
        }
        memcpy(t->nfc_buf + o, dst, (size_t)r);
        free(dst);
        o += (size_t)r;
        i += v;
    }
    *out_n = o;
    return LOPAD_OK;
}

/* Text between added tokens: normalise, split, BPE. */
static enum lopad_status encode_segment(struct lp_tokenizer *t, const char *s, size_t n,
                                        struct lp_ids *out) {
    if (n == 0) return LOPAD_OK;
    if (t->nfc) {
        /* every code point below U+0300 is NFC-stable and never composes with
         * what precedes it, so text whose bytes are all < 0xCC is unchanged */
        bool may_change = false;
        for (size_t i = 0; i < n && !may_change; i++)
            may_change = (uint8_t)s[i] >= 0xCC;
        if (may_change) {
            size_t nn = 0;
            enum lopad_status st = nfc_text(t, s, n, &nn);
            if (st) return st;
            return split_level(t, 0, t->nfc_buf, nn, out);
        }
    }
    return split_level(t, 0, s, n, out);
}

/* Leftmost, then longest, added token in s[from..n) that may be matched. */
static bool find_added(const struct lp_tokenizer *t, const char *s, size_t from, size_t n,
                       bool parse_special, size_t *at, int32_t *id, size_t *len) {
    for (size_t i = from; i < n; i++) {
        if (!t->added_first[(uint8_t)s[i]]) continue;
        for (int k = 0; k < t->n_added; k++) {
            const struct lp_tok_added *a = &t->added[k];
            if (a->special && !parse_special) continue;
            size_t l = t->tok_len[a->id];
            if (l <= n - i && !memcmp(s + i, t->tok_data + t->tok_off[a->id], l)) {
                *at = i;
                *id = a->id;
                *len = l;
                return true;
            }
        }
    }
    return false;
}

enum lopad_status lp_tokenizer_encode(struct lp_tokenizer *t, const char *text, size_t len,
                                      bool parse_special, struct lp_ids *out) {
    if (!text && len) return lp_error(LOPAD_ERR_ARG, "tokenize: NULL text");
    pthread_mutex_lock(&t->mu);
    enum lopad_status st = LOPAD_OK;
    size_t pos = 0;
    bool any_added = false;
    for (int k = 0; k < t->n_added && !any_added; k++)
        any_added = parse_special || !t->added[k].special;
    while (pos < len) {
        size_t at = len, alen = 0;
        int32_t id = -1;
        if (any_added) find_added(t, text, pos, len, parse_special, &at, &id, &alen);
        if ((st = encode_segment(t, text + pos, at - pos, out))) break;
        if (id < 0) break;
        if ((st = lp_ids_push(out, id))) break;
        pos = at + alen;
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

/* ---------------------------------------------------------------- decoding */

enum lopad_status lp_tokenizer_decode(const struct lp_tokenizer *t, const int32_t *ids, size_t n,
                                      bool skip_special, char **out, size_t *len) {
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || t->kind[id] == LP_TOK_HOLE)
            return lp_error(LOPAD_ERR_ARG, "%s: cannot decode token id %d (vocabulary has %d ids)",
                            t->source, (int)id, (int)t->n_vocab);
        if (skip_special && t->kind[id] == LP_TOK_SPECIAL) continue;
        total += t->tok_len[id];
    }
    char *s = lp_malloc(total + 1, "decoded text");
    if (!s) return LOPAD_ERR_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && t->kind[id] == LP_TOK_SPECIAL) continue;
        memcpy(s + o, t->tok_data + t->tok_off[id], t->tok_len[id]);
        o += t->tok_len[id];
    }
    s[o] = 0;
    *out = s;
    if (len) *len = o;
    return LOPAD_OK;
}

enum lopad_status lp_tok_stream_push(const struct lp_tokenizer *t, struct lp_tok_stream *s,
                                     int32_t id, bool skip_special, const char **text,
                                     size_t *text_len) {
    *text = "";
    *text_len = 0;
    size_t tl;
    const char *tok = lp_tokenizer_token(t, id, &tl);
    if (!tok)
        return lp_error(LOPAD_ERR_ARG, "%s: cannot decode token id %d (vocabulary has %d ids)",
                        t->source, (int)id, (int)t->n_vocab);
    if (skip_special && lp_tokenizer_is_special(t, id)) tl = 0;
    /* keep only the held tail from the previous call */
    if (s->held && s->len > s->held) memmove(s->buf, s->buf + s->len - s->held, s->held);
    s->len = s->held;
    if (s->len + tl > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < s->len + tl)
            cap *= 2;
        char *b = lp_realloc(s->buf, cap, "stream decode buffer");
        if (!b) return LOPAD_ERR_NOMEM;
        s->buf = b;
        s->cap = cap;
    }
    if (tl) memcpy(s->buf + s->len, tok, tl);
    s->len += tl;
    size_t k = lp_utf8_complete_prefix(s->buf, s->len);
    s->held = s->len - k;
    *text = s->buf;
    *text_len = k;
    return LOPAD_OK;
}

void lp_tok_stream_flush(struct lp_tok_stream *s, const char **text, size_t *text_len) {
    *text = s->buf ? s->buf + s->len - s->held : "";
    *text_len = s->held;
    s->len = s->held = 0; /* the returned bytes stay in buf until the next push */
}

void lp_tok_stream_free(struct lp_tok_stream *s) {
    if (!s) return;
    lp_free(s->buf);
    memset(s, 0, sizeof *s);
}
