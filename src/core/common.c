/* common.c - error messages, allocation with failure injection, timing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <stdatomic.h>

static _Thread_local char err_msg[1024];

enum lopad_status lp_error(enum lopad_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return st;
}

void lp_clear_error(void) {
    err_msg[0] = 0;
}

const char *lopad_errmsg(void) {
    return err_msg;
}

static uint64_t hash_seed;
static pthread_once_t hash_seed_once = PTHREAD_ONCE_INIT;

static void hash_seed_init(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^
            (uint64_t)(uintptr_t)&s ^ ((uint64_t)getpid() << 32);
    }
    hash_seed = s ? s : 0x2545F4914F6CDD1Dull;
}

uint64_t lp_hash_seed(void) {
    pthread_once(&hash_seed_once, hash_seed_init);
    return hash_seed;
}

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "a special file";
}

enum lopad_status lp_open_regular(const char *path, int *fd, uint64_t *size) {
    *fd = -1;
    *size = 0;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return lp_error(LOPAD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return lp_error(LOPAD_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return lp_error(LOPAD_ERR_IO, "%s: is %s, not a regular file", path, file_kind(sb.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(f);
        return lp_error(LOPAD_ERR_IO, "%s: cannot clear O_NONBLOCK: %s", path, strerror(e));
    }
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return LOPAD_OK;
}

const char *lopad_status_name(enum lopad_status st) {
    switch (st) {
    case LOPAD_OK: return "ok";
    case LOPAD_ERR_IO: return "i/o error";
    case LOPAD_ERR_FORMAT: return "format error";
    case LOPAD_ERR_UNSUPPORTED: return "unsupported";
    case LOPAD_ERR_ARG: return "bad argument";
    case LOPAD_ERR_NOMEM: return "out of memory";
    }
    return "unknown status";
}

_Noreturn void lp_abort(const char *file, int line, const char *msg) {
    fprintf(stderr, "lopad: internal error at %s:%d: assertion `%s' failed\n", file, line, msg);
    abort();
}

static atomic_long fail_after = -1;
static atomic_long n_allocs = 0;

void lp_alloc_fail_after(long n) {
    atomic_store(&fail_after, n);
}
long lp_alloc_count(void) {
    return atomic_load(&n_allocs);
}

/* true when this allocation must fail (test injection) */
static bool inject_failure(void) {
    atomic_fetch_add(&n_allocs, 1);
    long left = atomic_load(&fail_after);
    if (left < 0) return false;
    if (left == 0) return true;
    atomic_fetch_sub(&fail_after, 1);
    return false;
}

static void *nomem(size_t n, const char *what) {
    lp_error(LOPAD_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what ? what : "?");
    return NULL;
}

void *lp_malloc(size_t n, const char *what) {
    if (inject_failure()) return nomem(n, what);
    void *p = malloc(n ? n : 1);
    return p ? p : nomem(n, what);
}

void *lp_calloc(size_t count, size_t size, const char *what) {
    if (inject_failure()) return nomem(count * size, what);
    void *p = calloc(count ? count : 1, size ? size : 1);
    return p ? p : nomem(count * size, what);
}

void *lp_realloc(void *p, size_t n, const char *what) {
    if (inject_failure()) return nomem(n, what);
    void *q = realloc(p, n ? n : 1);
    return q ? q : nomem(n, what);
}

void lp_free(void *p) {
    free(p);
}

char *lp_strdup(const char *s, const char *what) {
    size_t n = strlen(s) + 1;
    char *d = lp_malloc(n, what);
    if (d) memcpy(d, s, n);
    return d;
}

double lp_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
