/*
 * utf8.c - UTF-8 validity, sanitising and streaming boundaries (see utf8.h).
 */
#include "core/utf8.h"

#include <string.h>

size_t lp_utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2; /* C0, C1: overlong */
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) *lo = 0xA0; /* overlong */
        if (c == 0xED) *hi = 0x9F; /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) *lo = 0x90; /* overlong */
        if (c == 0xF4) *hi = 0x8F; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

size_t lp_utf8_seq(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) return 0;
    unsigned char lo, hi;
    size_t len = lp_utf8_lead(s[0], &lo, &hi);
    if (len == 0 || len > n) return 0;
    if (len > 1 && (s[1] < lo || s[1] > hi)) return 0;
    for (size_t j = 2; j < len; j++)
        if ((s[j] & 0xC0) != 0x80) return 0;
    return len;
}

size_t lp_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0, len;
    while (i < n && (len = lp_utf8_seq(s + i, n - i)))
        i += len;
    return i;
}

size_t lp_utf8_complete_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    /* the last lead byte within the final 3 bytes */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t p = n - back;
        if ((s[p] & 0xC0) == 0x80) continue; /* continuation: keep looking back */
        unsigned char lo, hi;
        size_t need = lp_utf8_lead(s[p], &lo, &hi);
        if (need <= 1) return n;    /* ASCII or an invalid byte: complete */
        if (back >= need) return n; /* the sequence is whole (or over-long: invalid) */
        /* incomplete: hold it only if what has arrived can still become valid */
        if (back >= 2 && (s[p + 1] < lo || s[p + 1] > hi)) return n;
        return p;
    }
    return n;
}

size_t lp_utf8_sanitize(const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = lp_utf8_seq(s + i, n - i);
        if (len) {
            memcpy(out + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    return k;
}
