/*
 * atomic_file.c - staged output files: a private directory next to the target,
 * rename over the target on success, cleanup on error and on fatal signals.
 * See atomic_file.h.
 */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------ signal-time cleanup */

/* What the handler removes, in this order. Pointers are published with atomic
 * stores after the strings are complete, and cleared before they are freed. */
struct slot {
    _Atomic(char *) extra, staged, dir;
};
static struct slot slots[LP_ATOMIC_SLOTS];
static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_CLEANUP_SIGNALS (sizeof cleanup_signals / sizeof cleanup_signals[0])
static bool installed[N_CLEANUP_SIGNALS];
static int n_registered;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_fatal_signal(int sig) {
    for (int i = 0; i < LP_ATOMIC_SLOTS; i++) {
        char *p;
        if ((p = atomic_load(&slots[i].extra))) unlink(p);
        if ((p = atomic_load(&slots[i].staged))) unlink(p);
        if ((p = atomic_load(&slots[i].dir))) rmdir(p);
    }
    /* die as the signal would have: default action, then re-raise (delivered
     * when this handler returns, since the signal is blocked inside it) */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

/* Handlers go in only over the default action: a program that ignores or
 * handles these signals itself keeps doing so. */
static void install_handlers(void) {
    for (unsigned k = 0; k < N_CLEANUP_SIGNALS; k++) {
        struct sigaction old, sa = {.sa_handler = on_fatal_signal};
        sigemptyset(&sa.sa_mask);
        for (unsigned j = 0; j < N_CLEANUP_SIGNALS; j++)
            sigaddset(&sa.sa_mask, cleanup_signals[j]);
        if (sigaction(cleanup_signals[k], NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
            !(old.sa_flags & SA_SIGINFO))
            installed[k] = sigaction(cleanup_signals[k], &sa, NULL) == 0;
    }
}

static void restore_handlers(void) {
    for (unsigned k = 0; k < N_CLEANUP_SIGNALS; k++) {
        struct sigaction cur, dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        if (installed[k] && sigaction(cleanup_signals[k], NULL, &cur) == 0 &&
            cur.sa_handler == on_fatal_signal)
            sigaction(cleanup_signals[k], &dfl, NULL);
        installed[k] = false;
    }
}

static int register_slot(struct lp_atomic_file *af) {
    pthread_mutex_lock(&reg_lock);
    int slot = -1;
    for (int i = 0; i < LP_ATOMIC_SLOTS && slot < 0; i++)
        if (!atomic_load(&slots[i].dir)) slot = i;
    if (slot >= 0) {
        atomic_store(&slots[slot].staged, af->staged);
        atomic_store(&slots[slot].dir, af->dir);
        if (n_registered++ == 0) install_handlers();
    }
    pthread_mutex_unlock(&reg_lock);
    return slot;
}

static void unregister_slot(struct lp_atomic_file *af) {
    if (af->slot < 0) return;
    pthread_mutex_lock(&reg_lock);
    struct slot *s = &slots[af->slot];
    atomic_store(&s->dir, NULL);
    atomic_store(&s->staged, NULL);
    atomic_store(&s->extra, NULL);
    if (--n_registered == 0) restore_handlers();
    pthread_mutex_unlock(&reg_lock);
    af->slot = -1;
}

/* ------------------------------------------------------------- files */

static char *join(const char *a, const char *b, const char *what) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = lp_malloc(n, what);
    if (s) snprintf(s, n, "%s%s", a, b);
    return s;
}

static void release(struct lp_atomic_file *af) {
    unregister_slot(af);
    lp_free(af->target);
    lp_free(af->dir);
    lp_free(af->staged);
    lp_free(af->extra);
    *af = (struct lp_atomic_file){.fd = -1, .slot = -1};
}

/* "<parent>/.<name>.lopad-XXXXXX" for target "<parent>/<name>"; the name part
 * is shortened so the directory name stays well under NAME_MAX */
static char *dir_template(const char *target) {
    const char *slash = strrchr(target, '/');
    const char *name = slash ? slash + 1 : target;
    int parent_len = slash ? (int)(slash - target) + 1 : 0;
    size_t n = strlen(target) + 32;
    char *t = lp_malloc(n, "staging directory name");
    if (t) snprintf(t, n, "%.*s.%.160s.lopad-XXXXXX", parent_len, target, name);
    return t;
}

enum lopad_status lp_atomic_begin(const char *target, struct lp_atomic_file *af) {
    *af = (struct lp_atomic_file){.fd = -1, .slot = -1};
    const char *slash = strrchr(target, '/');
    const char *name = slash ? slash + 1 : target;
    if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return lp_error(LOPAD_ERR_ARG, "'%s' is not a file name", target);
    if (!(af->target = lp_strdup(target, "output path")) || !(af->dir = dir_template(target))) {
        release(af);
        return LOPAD_ERR_NOMEM;
    }
    if (!mkdtemp(af->dir)) {
        enum lopad_status st = lp_error(LOPAD_ERR_IO, "%s: cannot create a file next to it: %s",
                                        target, strerror(errno));
        release(af);
        return st;
    }
    if (!(af->staged = join(af->dir, "/data", "staged file name"))) {
        rmdir(af->dir);
        release(af);
        return LOPAD_ERR_NOMEM;
    }
    af->slot = register_slot(af);
    return LOPAD_OK;
}

enum lopad_status lp_atomic_open(struct lp_atomic_file *af) {
    af->fd = open(af->staged, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (af->fd < 0)
        return lp_error(LOPAD_ERR_IO, "%s: cannot create: %s", af->staged, strerror(errno));
    return LOPAD_OK;
}

enum lopad_status lp_atomic_write(struct lp_atomic_file *af, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(af->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0)
            return lp_error(LOPAD_ERR_IO, "%s: cannot write: %s", af->target,
                            k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
    }
    return LOPAD_OK;
}

enum lopad_status lp_atomic_also(struct lp_atomic_file *af, const char *suffix) {
    char *e = join(af->staged, suffix, "temporary file name");
    if (!e) return LOPAD_ERR_NOMEM;
    lp_free(af->extra);
    af->extra = e;
    if (af->slot >= 0) atomic_store(&slots[af->slot].extra, e);
    return LOPAD_OK;
}

void lp_atomic_abort(struct lp_atomic_file *af) {
    if (af->fd >= 0) close(af->fd);
    af->fd = -1;
    if (af->extra) unlink(af->extra);
    if (af->staged) unlink(af->staged);
    if (af->dir) rmdir(af->dir);
    release(af);
}

/* Make the rename durable; a file system that cannot sync a directory is fine. */
static void sync_parent(const char *target) {
    const char *slash = strrchr(target, '/');
    char parent[4096];
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - target) + 1, target);
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

enum lopad_status lp_atomic_commit(struct lp_atomic_file *af) {
    enum lopad_status st = LOPAD_OK;
    if (af->fd >= 0) {
        if (fsync(af->fd) != 0 && errno != EINVAL && errno != EROFS)
            st = lp_error(LOPAD_ERR_IO, "%s: cannot sync: %s", af->target, strerror(errno));
        if (close(af->fd) != 0 && !st)
            st = lp_error(LOPAD_ERR_IO, "%s: cannot write: %s", af->target, strerror(errno));
        af->fd = -1;
    }
    if (!st && rename(af->staged, af->target) != 0)
        st = lp_error(LOPAD_ERR_IO, "%s: cannot replace it: %s", af->target, strerror(errno));
    if (st) {
        lp_atomic_abort(af);
        return st;
    }
    rmdir(af->dir);
    sync_parent(af->target);
    release(af);
    return LOPAD_OK;
}
