/*
 * utf8.h - the one UTF-8 routine set: sequence length and validity (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF), used by the tokenizer (NFC
 * input, streaming decode), the generation text and the server's JSON.
 */
#ifndef LP_CORE_UTF8_H
#define LP_CORE_UTF8_H

#include <stddef.h>

/* The sequence length a lead byte announces (1..4; 0: not a lead byte) and the range
 * its second byte must fall in [*lo, *hi] (overlongs, surrogates, > U+10FFFF out). */
size_t lp_utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi);
/* Length of the valid UTF-8 sequence at s[0..n): 1..4, or 0 when the bytes there
 * are not one (invalid, or cut short by n). */
size_t lp_utf8_seq(const char *s, size_t n);
/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t lp_utf8_valid_prefix(const char *s, size_t n);
/* Length of the longest prefix of s[0..n) that does not end inside a sequence that
 * is incomplete but could still become valid with more bytes (streaming decode:
 * the rest is held back). Invalid bytes count as complete (passed through). */
size_t lp_utf8_complete_prefix(const char *s, size_t n);
/* Copy s[0..n) to out, each byte that does not start a valid sequence replaced by
 * U+FFFD (out needs 3 n bytes); returns the bytes written (no NUL added). */
size_t lp_utf8_sanitize(const char *s, size_t n, char *out);

#endif
