/*
 * tok_internal.h - the tokenizer's internals, shared by tokenizer.c (encode,
 * decode, tables) and tok_load.c (Hugging Face / GGUF loaders). Not for other
 * rooms: use tokenizer.h.
 */
#ifndef LP_TOK_INTERNAL_H
#define LP_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include "tokenizer.h"

#define LP_TOK_MAX_PATTERNS 4
#define LP_TOK_MAX_ID (1 << 24) /* refuse absurd ids (tables are sized by max id) */
/* Ids a tokenizer.json may use beyond the count of entries it lists (real
 * files have a few holes); keeps the per-id tables, sized by the largest id,
 * proportional to the file instead of 150 MB for one id of 2^24 - 1. */
#define LP_TOK_ID_SLACK 65536

enum lp_tok_kind {
    LP_TOK_HOLE = 0,   /* no token with this id */
    LP_TOK_NORMAL = 1, /* vocabulary entry (BPE) */
    LP_TOK_ADDED = 2,  /* added, not special: always matched in text */
    LP_TOK_SPECIAL = 3 /* added, special / control: matched only with parse_special */
};

struct lp_tok_added {
    int32_t id;
    bool special;
};

struct lp_merge_slot {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank;
    int32_t id; /* merged token */
};

struct lp_cache_slot {
    uint64_t hash; /* 0 = empty */
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
};

struct lp_tokenizer {
    int32_t n_vocab;
    int32_t id_limit;  /* ids must be below this (LP_TOK_MAX_ID unless the loader sets less) */
    int32_t tab_cap;   /* allocated length of the per-id tables */
    uint8_t *kind;     /* [n_vocab] enum lp_tok_kind */
    uint32_t *tok_off; /* [n_vocab] offsets into tok_data */
    uint32_t *tok_len; /* [n_vocab] */
    char *tok_data;
    size_t data_len, data_cap;

    int32_t *vmap; /* bytes -> id for LP_TOK_NORMAL entries; -1 = empty */
    uint32_t vmap_mask;

    struct lp_merge_slot *mmap;
    uint32_t mmap_mask;
    int32_t n_merges;

    int32_t byte_id[256]; /* token of each single byte, -1 when missing */

    struct lp_tok_added *added; /* sorted by content length, longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 when some added token starts with this byte */

    pcre2_code *re[LP_TOK_MAX_PATTERNS];
    int n_re;
    bool nfc;
    bool ignore_merges; /* whole piece in the vocabulary -> that token, no BPE */
    int32_t bos_id, eos_id, pad_id, unk_id;
    char *chat_template;
    char *source;

    /* encode state (under mu) */
    pthread_mutex_t mu;
    pcre2_match_data *md;
    struct lp_cache_slot *cache;
    uint32_t cache_mask, cache_n;
    char *ckeys;
    size_t ckeys_len, ckeys_cap;
    int32_t *cids;
    size_t cids_len, cids_cap;
    char *nfc_buf; /* scratch for normalised text */
    size_t nfc_cap;
};

/* Construction helpers for the loaders. */
struct lp_tokenizer *lp_tok_new(const char *source);
/* Set token id to bytes (copied), growing tables; kind as above. */
enum lopad_status lp_tok_set(struct lp_tokenizer *t, int32_t id, const char *bytes, size_t len,
                             enum lp_tok_kind kind);
/* Build the bytes->id map and the byte table after all tokens are set. */
enum lopad_status lp_tok_index_vocab(struct lp_tokenizer *t);
/* Id of the normal entry with these bytes, -1 when none (after indexing). */
int32_t lp_tok_lookup(const struct lp_tokenizer *t, const char *bytes, size_t len);
/* Reserve the merge table for n merges, then add them in rank order. */
enum lopad_status lp_tok_merges_reserve(struct lp_tokenizer *t, size_t n);
/* Add merge (left, right) -> merged with the next rank; a repeated pair keeps
 * its first rank. */
void lp_tok_merge_add(struct lp_tokenizer *t, int32_t left, int32_t right, int32_t merged);
/* Compile a split pattern (PCRE2, UTF + UCP, JIT when available). */
enum lopad_status lp_tok_add_pattern(struct lp_tokenizer *t, const char *pattern);
/* Final step: added-token tables and encode state. */
enum lopad_status lp_tok_finish(struct lp_tokenizer *t);

/* GPT-2 byte-level alphabet: decode a vocabulary string (UTF-8 over the
 * alphabet) into raw bytes written to out (capacity >= len). Characters outside
 * the alphabet are kept as their UTF-8 bytes. Returns the byte count. */
size_t lp_bytelevel_decode(const char *s, size_t len, char *out);
/* Encode raw bytes into the alphabet (out capacity >= 2 * len). */
size_t lp_bytelevel_encode(const char *s, size_t len, char *out);

#endif
