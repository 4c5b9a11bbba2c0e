/*
 * tokenizer.h - generic byte-level BPE tokenizer (GPT-2 byte alphabet), as used
 * by Qwen2 / Dream / DiffuCoder and LLaDA (LLaMA-3 style).
 *
 * Everything model-specific is read from the file: the vocabulary, the merges
 * (rank = position in the list), the added / special tokens, the pre-tokenizer
 * split regex(es) and whether text is NFC-normalised first. Two sources:
 *   - a Hugging Face tokenizer.json (+ optional tokenizer_config.json for the
 *     chat template, bos / eos and added_tokens_decoder),
 *   - the tokenizer.ggml.* keys of a GGUF file (model "gpt2"); the split
 *     pattern is chosen from tokenizer.ggml.pre.
 *
 * Encoding: split on added tokens (leftmost-longest; special ones only when
 * parse_special, non-special added tokens always, as Hugging Face and llama.cpp
 * do), NFC (when the normalizer asks for it), regex pre-tokenisation (PCRE2,
 * UTF + UCP, JIT), then BPE by merge rank (lowest first, leftmost on ties) with
 * a cache of piece -> ids. Text need not be valid UTF-8: invalid bytes are never
 * matched by the regex, so each becomes its own piece and is byte-encoded.
 *
 * Vocabulary entries are stored as raw bytes (the GPT-2 byte alphabet is
 * decoded at load time); added tokens are stored as their content.
 *
 * Thread safety: a tokenizer may be shared; encode serialises on an internal
 * mutex (it owns a cache and scratch), every other call is read-only.
 */
#ifndef LP_TOKENIZER_H
#define LP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/common.h"
#include "../core/utf8.h"

struct lp_tokenizer;
struct lp_gguf;

/* A growable list of token ids (zero-initialise; free with lp_ids_free). */
struct lp_ids {
    int32_t *v;
    size_t n, cap;
};
enum lopad_status lp_ids_push(struct lp_ids *ids, int32_t id);
void lp_ids_free(struct lp_ids *ids);

/* Known pre-tokenizer split patterns (also used for GGUF tokenizer.ggml.pre). */
extern const char *const LP_PAT_GPT2;   /* GPT-2 / ByteLevel(use_regex=true) */
extern const char *const LP_PAT_QWEN2;  /* Qwen2 / Dream / DiffuCoder */
extern const char *const LP_PAT_LLAMA3; /* LLaMA-3 / LLaDA */

/* ---------------------------------------------------------------- loading */

/* Load from a Hugging Face tokenizer.json; config_path (tokenizer_config.json)
 * may be NULL. Errors name the file and the key at fault. */
enum lopad_status lp_tokenizer_from_hf_json(const char *json_path, const char *config_path,
                                            struct lp_tokenizer **out);
/* Load from the tokenizer.ggml.* keys of an open GGUF (source names it in
 * messages), or from a GGUF file path. None of tokenizer.ggml.model / tokens /
 * merges / token_type / pre / scores (special-id keys do not count) ->
 * LOPAD_ERR_UNSUPPORTED ("no tokenizer in this GGUF"); keys present but
 * broken (missing model, wrong types, bad merges) -> LOPAD_ERR_FORMAT with
 * the reason; a tokenizer kind lopad lacks -> LOPAD_ERR_UNSUPPORTED too, so
 * use lp_tokenizer_gguf_absent / lp_tokenizer_load_opt to tell them apart. */
enum lopad_status lp_tokenizer_from_gguf_ctx(const struct lp_gguf *g, const char *source,
                                             struct lp_tokenizer **out);
enum lopad_status lp_tokenizer_from_gguf(const char *path, struct lp_tokenizer **out);
/* Any of: a .gguf file, a tokenizer.json file (its sibling tokenizer_config.json
 * is read when present), or a Hugging Face model directory. */
enum lopad_status lp_tokenizer_load(const char *path, struct lp_tokenizer **out);
/* True when the GGUF has none of the vocabulary keys above (no tokenizer). */
bool lp_tokenizer_gguf_absent(const struct lp_gguf *g);
/* Like lp_tokenizer_load, but a model without a tokenizer (a GGUF with no
 * vocabulary key, a directory without tokenizer.json) is LOPAD_OK with
 * *out = NULL; every other failure (broken or unsupported tokenizer) is an
 * error with its real reason. For callers that can run on token ids. */
enum lopad_status lp_tokenizer_load_opt(const char *path, struct lp_tokenizer **out);
void lp_tokenizer_free(struct lp_tokenizer *t); /* NULL ok */

/* ---------------------------------------------------------------- queries */

/* 1 + the largest token id (ids below it may be holes). */
int32_t lp_tokenizer_n_vocab(const struct lp_tokenizer *t);
/* Bytes of token id (added tokens: their content); NULL for an id out of range
 * or a hole. */
const char *lp_tokenizer_token(const struct lp_tokenizer *t, int32_t id, size_t *len);
/* True for added tokens marked special (control tokens in GGUF). */
bool lp_tokenizer_is_special(const struct lp_tokenizer *t, int32_t id);
/* Id of an added token with exactly this content (e.g. "<|im_start|>"), else of
 * the vocabulary entry with these raw bytes; -1 when none. */
int32_t lp_tokenizer_find(const struct lp_tokenizer *t, const char *content);
/* Special ids from the file (-1 when not given). */
int32_t lp_tokenizer_bos_id(const struct lp_tokenizer *t);
int32_t lp_tokenizer_eos_id(const struct lp_tokenizer *t);
int32_t lp_tokenizer_pad_id(const struct lp_tokenizer *t);
/* Chat template string from the file, or NULL. */
const char *lp_tokenizer_chat_template(const struct lp_tokenizer *t);
/* Number of pre-tokenizer regexes and whether NFC is applied (for tests/info). */
int lp_tokenizer_n_patterns(const struct lp_tokenizer *t);
bool lp_tokenizer_nfc(const struct lp_tokenizer *t);

/* --------------------------------------------------------------- encoding */

/* Append the ids of text[0..len) to *out. parse_special: recognise special
 * added tokens in the text (otherwise they are tokenised as plain text). */
enum lopad_status lp_tokenizer_encode(struct lp_tokenizer *t, const char *text, size_t len,
                                      bool parse_special, struct lp_ids *out);

/* --------------------------------------------------------------- decoding */

/* Concatenate the bytes of ids into a NUL-terminated lp_malloc'd string (*len
 * excludes the NUL; len may be NULL). Special tokens render as their content
 * unless skip_special. The result is the exact byte sequence: a token sequence
 * that splits a UTF-8 character, or holds invalid bytes, yields those raw bytes
 * (no U+FFFD substitution). Ids out of range or holes -> LOPAD_ERR_ARG. */
enum lopad_status lp_tokenizer_decode(const struct lp_tokenizer *t, const int32_t *ids, size_t n,
                                      bool skip_special, char **out, size_t *len);

/* lp_utf8_complete_prefix (core/utf8.h) cuts the streaming decode at whole characters. */

/* Streaming decode for generation: push ids one by one and get back only text
 * that ends on a complete UTF-8 character; a split character is held until its
 * last byte arrives. Zero-initialise; free with lp_tok_stream_free. */
struct lp_tok_stream {
    char *buf;
    size_t len, cap;
    size_t held; /* bytes at the end of buf not yet returned */
};
/* *text / *text_len: the newly completed bytes (valid until the next call). */
enum lopad_status lp_tok_stream_push(const struct lp_tokenizer *t, struct lp_tok_stream *s,
                                     int32_t id, bool skip_special, const char **text,
                                     size_t *text_len);
/* The bytes still held (an incomplete character at the end), then reset. */
void lp_tok_stream_flush(struct lp_tok_stream *s, const char **text, size_t *text_len);
void lp_tok_stream_free(struct lp_tok_stream *s);

#endif
