/*
 * utf8.h - the one UTF-8 routine set: sequence length and validity (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF), used by the tokenizer's
 * streaming decode, the generation text and every JSON writer.
 */
#ifndef LP_CORE_UTF8_H
#define LP_CORE_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s[0..n): 1..4, or 0 when the bytes there
 * are not one (invalid, or cut short by n). */
size_t lp_utf8_seq(const char *s, size_t n);
/* Copy s[0..n) to out, each byte that does not start a valid sequence replaced by
 * U+FFFD (out needs 3 n bytes); returns the bytes written (no NUL added). */
size_t lp_utf8_sanitize(const char *s, size_t n, char *out);

#endif
