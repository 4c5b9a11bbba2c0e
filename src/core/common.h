/*
 * common.h - what every room of lopad shares: errors, allocation, assertions.
 *
 * Two tiers of errors (see docs/ARCHITECTURE.md):
 *   - bad input, resources, OOM: return enum lopad_status after lp_error(), whose
 *     message names the file / tensor / key / argument; read with lopad_errmsg();
 *   - broken invariants: LP_ASSERT, which aborts with file:line.
 * Only cli/ may call exit().
 */
#ifndef LP_COMMON_H
#define LP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "lopad.h"

#define LP_UNUSED(x) (void)(x)
#define LP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LP_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Record a printf-style error message for this thread and return st. */
enum lopad_status lp_error(enum lopad_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lp_clear_error(void);

_Noreturn void lp_abort(const char *file, int line, const char *msg);
#define LP_ASSERT(x)                                                                               \
    do {                                                                                           \
        if (!(x)) lp_abort(__FILE__, __LINE__, #x);                                                \
    } while (0)

/* Allocation. All engine memory goes through these so that tests can make the
 * N-th allocation fail (lp_alloc_fail_after) and check every error path. On
 * failure they record a LOPAD_ERR_NOMEM message naming `what`. */
void *lp_malloc(size_t n, const char *what);
void *lp_calloc(size_t count, size_t size, const char *what);
void *lp_realloc(void *p, size_t n, const char *what);
void lp_free(void *p);
char *lp_strdup(const char *s, const char *what);
/* Test hook: allocations succeed `n` more times, then fail (n < 0: never fail). */
void lp_alloc_fail_after(long n);
/* Number of allocations made since start (for "no malloc in the hot path" tests). */
long lp_alloc_count(void);

/* Overflow-checked size arithmetic: false when a*b (or a+b) would overflow. */
static inline bool lp_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool lp_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Open a user-supplied file for reading without ever blocking: O_NONBLOCK (so a
 * FIFO or device does not hang open()), O_CLOEXEC, then fstat; anything but a
 * regular file is refused with LOPAD_ERR_IO naming `path`. On success *fd is
 * a blocking descriptor again and *size its length. Every file lopad reads
 * from a model directory, GGUF or adapter goes through here. */
enum lopad_status lp_open_regular(const char *path, int *fd, uint64_t *size);

/* A per-process random seed for the hash tables that index names from input
 * files (GGUF keys and tensors, vocabularies, merges): a crafted file cannot
 * pick names that all collide and turn lookups quadratic. Never 0. */
uint64_t lp_hash_seed(void);

/* Wall clock in seconds (monotonic). */
double lp_time(void);

#endif
