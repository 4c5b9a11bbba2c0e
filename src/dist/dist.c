/*
 * dist.c - the multi-process door (dist.h) on MPI, or a stub without it.
 *
 * Waiting: every exchange is a non-blocking MPI collective completed by MPI_Test in a
 * loop: for its first 20 ms the loop yields the core between tests (a large message
 * moves in fragments, each needing a test), then it sleeps between tests (20 us growing
 * to 1 ms: ranks oversubscribed on few cores must not spin against the ones computing)
 * until the deadline. Past it the
 * rank prints which exchange and how long, and calls MPI_Abort: the launcher then
 * ends every rank, the dead or stopped one included.
 *
 * Test hook: LOPAD_DIST_FAULT=RANK:N:exit|hang makes rank RANK, at its N-th exchange
 * (1-based), exit at once (code 9) or stop answering (tests/cli/test_mpi.sh).
 */
#include "dist.h"
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "core/common.h"

int lp_dist_env_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "MPI_LOCALNRANKS", "SLURM_NTASKS"};
    for (unsigned i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        long n = v && *v ? strtol(v, NULL, 10) : 0;
        if (n > 1) return n > 1 << 20 ? 1 << 20 : (int)n;
        if (n == 1) return 1;
    }
    return 1;
}

uint64_t lp_dist_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#if defined(LOPAD_MPI) && LOPAD_MPI

#include <mpi.h>

struct lp_dist {
    MPI_Comm comm;
    int rank, size;
    double timeout_s;
    uint32_t seq; /* exchanges so far (the same on every rank) */
    struct lp_dist_stats st;
    int fault_rank, fault_n; /* test hook */
    bool fault_hang;
};

static struct lp_dist world;
static bool joined, finalized;
static int err_fd = 2;

#define LP_DIST_MAGIC 0x4c504453u /* "LPDS" */
#define LP_DIST_YIELD_S 0.02      /* seconds a wait tests without sleeping */
struct msg_hdr {
    uint32_t magic, seq;
    uint64_t bytes;
};

bool lp_dist_built(void) {
    return true;
}

static void parse_fault(struct lp_dist *g) {
    g->fault_rank = -1;
    const char *f = getenv("LOPAD_DIST_FAULT");
    char how[16] = "";
    if (f && sscanf(f, "%d:%d:%15s", &g->fault_rank, &g->fault_n, how) == 3)
        g->fault_hang = !strcmp(how, "hang");
    else
        g->fault_rank = -1;
}

enum lopad_status lp_dist_init(double timeout_s) {
    if (joined || lp_dist_env_size() <= 1) return LOPAD_OK;
    int provided = 0, flag = 0;
    MPI_Initialized(&flag);
    if (!flag && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return lp_error(LOPAD_ERR_IO, "MPI_Init failed");
    struct lp_dist *g = &world;
    MPI_Comm_dup(MPI_COMM_WORLD, &g->comm);
    MPI_Comm_set_errhandler(g->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g->comm, &g->rank);
    MPI_Comm_size(g->comm, &g->size);
    g->timeout_s = timeout_s > 0 ? timeout_s : 300;
    parse_fault(g);
    int fd = dup(2);
    if (fd >= 0) err_fd = fd;
    joined = true;
    return LOPAD_OK;
}

void lp_dist_finalize(void) {
    if (!joined || finalized) return;
    finalized = true;
    if (getenv("LOPAD_DIST_STATS")) /* measurements (docs/PERFORMANCE.md) */
        dprintf(err_fd,
                "lopad dist: rank %d of %d: %llu exchanges, %llu bytes sent, %.6f s waited\n",
                world.rank, world.size, (unsigned long long)world.st.n_exchanges,
                (unsigned long long)world.st.bytes_sent, world.st.t_wait);
    MPI_Comm_free(&world.comm);
    MPI_Finalize();
}

/* The launcher forwards a rank's stderr asynchronously and tears the job down at an
 * abort: give the message that explains the abort a moment to reach the terminal. */
static void let_output_drain(void) {
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

void lp_dist_abort(int code) {
    if (!joined || finalized) return;
    let_output_drain();
    MPI_Abort(MPI_COMM_WORLD, code);
}

struct lp_dist *lp_dist_world(void) {
    return joined && !finalized && world.size > 1 ? &world : NULL;
}
int lp_dist_rank(const struct lp_dist *g) {
    return g ? g->rank : 0;
}
int lp_dist_size(const struct lp_dist *g) {
    return g ? g->size : 1;
}
int lp_dist_err_fd(void) {
    return err_fd;
}

void lp_dist_get_stats(const struct lp_dist *g, struct lp_dist_stats *out) {
    if (g)
        *out = g->st;
    else
        memset(out, 0, sizeof *out);
}

/* The rank cannot go on: say why on its terminal and end the job. */
static _Noreturn void die(const struct lp_dist *g, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(err_fd, "lopad: rank %d of %d: %s; stopping every rank\n", g->rank, g->size, msg);
    let_output_drain();
    MPI_Abort(MPI_COMM_WORLD, 3);
    _exit(3);
}

static void maybe_fault(struct lp_dist *g) {
    if (g->rank != g->fault_rank || (int)g->seq != g->fault_n) return;
    if (!g->fault_hang) _exit(9);
    for (;;)
        pause();
}

/* Complete req before the deadline (none when !deadline), or end the job naming the
 * exchange. */
static void wait_req(struct lp_dist *g, MPI_Request *req, const char *what, bool deadline) {
    const double t0 = lp_time();
    long ns = 20000;
    for (;;) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char s[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, s, &len);
            die(g, "exchange %u (%s) failed: %s", g->seq, what, s);
        }
        if (done) break;
        double t = lp_time() - t0;
        if (deadline && t > g->timeout_s)
            die(g,
                "no answer from the other ranks within %.0f s in exchange %u (%s): a rank died "
                "or stopped answering",
                g->timeout_s, g->seq, what);
        /* a large message moves in fragments, each needing a test: keep testing
         * (yielding the core) while the transfer is young, then back off */
        if (t < LP_DIST_YIELD_S) {
            sched_yield();
            continue;
        }
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        if (ns < 1000000) ns *= 2;
    }
    g->st.t_wait += lp_time() - t0;
}

static bool hdr_ok(const struct lp_dist *g, const struct msg_hdr *h, size_t bytes) {
    return h->magic == LP_DIST_MAGIC && h->seq == g->seq && h->bytes == bytes;
}

enum lopad_status lp_dist_allgather(struct lp_dist *g, const void *mine, const size_t *n_each,
                                    void *all, const char *what) {
    g->seq++;
    maybe_fault(g);
    const size_t H = sizeof(struct msg_hdr);
    size_t total = 0;
    for (int r = 0; r < g->size; r++) {
        if (n_each[r] > (size_t)1 << 30)
            return lp_error(LOPAD_ERR_ARG, "%s: %zu bytes from rank %d is too large", what,
                            n_each[r], r);
        total += H + n_each[r];
    }
    int *cnt = lp_malloc(sizeof(int) * 2 * (size_t)g->size, "dist counts");
    char *send = lp_malloc(H + n_each[g->rank], "dist send buffer");
    char *recv = lp_malloc(total, "dist receive buffer");
    enum lopad_status st = LOPAD_OK;
    if (!cnt || !send || !recv) {
        st = LOPAD_ERR_NOMEM;
        goto out;
    }
    int *disp = cnt + g->size;
    for (int r = 0, d = 0; r < g->size; r++) {
        cnt[r] = (int)(H + n_each[r]);
        disp[r] = d;
        d += cnt[r];
    }
    struct msg_hdr h = {LP_DIST_MAGIC, g->seq, n_each[g->rank]};
    memcpy(send, &h, H);
    if (n_each[g->rank]) memcpy(send + H, mine, n_each[g->rank]);
    MPI_Request req;
    if (MPI_Iallgatherv(send, cnt[g->rank], MPI_BYTE, recv, cnt, disp, MPI_BYTE, g->comm, &req) !=
        MPI_SUCCESS)
        die(g, "exchange %u (%s) could not start", g->seq, what);
    wait_req(g, &req, what, true);
    g->st.bytes_sent += (uint64_t)cnt[g->rank] * (uint64_t)(g->size - 1);
    g->st.n_exchanges++;
    char *dst = all;
    for (int r = 0; r < g->size; r++) {
        struct msg_hdr rh;
        memcpy(&rh, recv + disp[r], H);
        if (!hdr_ok(g, &rh, n_each[r])) {
            st = lp_error(LOPAD_ERR_FORMAT,
                          "%s: rank %d sent %llu bytes in exchange %u (expected %zu in exchange "
                          "%u): the ranks went different ways",
                          what, r, (unsigned long long)rh.bytes, rh.seq, n_each[r], g->seq);
            goto out;
        }
        memcpy(dst, recv + disp[r] + H, n_each[r]);
        dst += n_each[r];
    }
out:
    lp_free(cnt);
    lp_free(send);
    lp_free(recv);
    return st;
}

static enum lopad_status bcast_impl(struct lp_dist *g, void *buf, size_t n, int root,
                                    const char *what, bool deadline) {
    g->seq++;
    maybe_fault(g);
    const size_t H = sizeof(struct msg_hdr);
    if (n > (size_t)1 << 30 || root < 0 || root >= g->size)
        return lp_error(LOPAD_ERR_ARG, "%s: %zu bytes from rank %d cannot be sent", what, n, root);
    char *msg = lp_malloc(H + n, "dist message");
    if (!msg) return LOPAD_ERR_NOMEM;
    struct msg_hdr h = {LP_DIST_MAGIC, g->seq, n};
    if (g->rank == root) {
        memcpy(msg, &h, H);
        memcpy(msg + H, buf, n);
    }
    MPI_Request req;
    if (MPI_Ibcast(msg, (int)(H + n), MPI_BYTE, root, g->comm, &req) != MPI_SUCCESS)
        die(g, "exchange %u (%s) could not start", g->seq, what);
    wait_req(g, &req, what, deadline);
    g->st.n_exchanges++;
    enum lopad_status st = LOPAD_OK;
    if (g->rank == root) {
        g->st.bytes_sent += (uint64_t)(H + n) * (uint64_t)(g->size - 1);
    } else {
        memcpy(&h, msg, H);
        if (!hdr_ok(g, &h, n))
            st = lp_error(LOPAD_ERR_FORMAT,
                          "%s: rank %d sent %llu bytes in exchange %u (expected %zu in exchange "
                          "%u): the ranks went different ways",
                          what, root, (unsigned long long)h.bytes, h.seq, n, g->seq);
        else
            memcpy(buf, msg + H, n);
    }
    lp_free(msg);
    return st;
}

enum lopad_status lp_dist_bcast(struct lp_dist *g, void *buf, size_t n, int root,
                                const char *what) {
    return bcast_impl(g, buf, n, root, what, true);
}

enum lopad_status lp_dist_bcast_idle(struct lp_dist *g, void *buf, size_t n, int root,
                                     const char *what) {
    return bcast_impl(g, buf, n, root, what, false);
}

enum lopad_status lp_dist_split(struct lp_dist *g, int color, int key, struct lp_dist **out) {
    *out = NULL;
    struct lp_dist *s = lp_calloc(1, sizeof *s, "dist sub-group");
    if (!s) return LOPAD_ERR_NOMEM;
    if (MPI_Comm_split(g->comm, color, key, &s->comm) != MPI_SUCCESS) {
        lp_free(s);
        return lp_error(LOPAD_ERR_IO, "MPI_Comm_split of %d ranks failed", g->size);
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(s->comm, &s->rank);
    MPI_Comm_size(s->comm, &s->size);
    s->timeout_s = g->timeout_s;
    parse_fault(s); /* the test hook counts each group's exchanges on its own */
    *out = s;
    return LOPAD_OK;
}

void lp_dist_free(struct lp_dist *g) {
    if (!g || g == &world) return;
    world.st.bytes_sent += g->st.bytes_sent;
    world.st.n_exchanges += g->st.n_exchanges;
    world.st.t_wait += g->st.t_wait;
    if (!finalized) MPI_Comm_free(&g->comm);
    lp_free(g);
}

#else /* no MPI: every process is alone */

struct lp_dist {
    int unused;
};

bool lp_dist_built(void) {
    return false;
}

enum lopad_status lp_dist_init(double timeout_s) {
    LP_UNUSED(timeout_s);
    int n = lp_dist_env_size();
    if (n > 1)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "this lopad was built without MPI (-DLOPAD_MPI=OFF, or OpenMPI's "
                        "development files were not found), but it was started as one of %d "
                        "ranks (mpirun): rebuild with MPI or run it without mpirun",
                        n);
    return LOPAD_OK;
}
void lp_dist_finalize(void) {}
void lp_dist_abort(int code) {
    LP_UNUSED(code);
}
struct lp_dist *lp_dist_world(void) {
    return NULL;
}
int lp_dist_rank(const struct lp_dist *g) {
    LP_UNUSED(g);
    return 0;
}
int lp_dist_size(const struct lp_dist *g) {
    LP_UNUSED(g);
    return 1;
}
int lp_dist_err_fd(void) {
    return 2;
}
void lp_dist_get_stats(const struct lp_dist *g, struct lp_dist_stats *out) {
    LP_UNUSED(g);
    memset(out, 0, sizeof *out);
}
enum lopad_status lp_dist_allgather(struct lp_dist *g, const void *mine, const size_t *n_each,
                                    void *all, const char *what) {
    LP_UNUSED(g);
    LP_UNUSED(what);
    memcpy(all, mine, n_each[0]);
    return LOPAD_OK;
}
enum lopad_status lp_dist_bcast(struct lp_dist *g, void *buf, size_t n, int root,
                                const char *what) {
    LP_UNUSED(g);
    LP_UNUSED(buf);
    LP_UNUSED(n);
    LP_UNUSED(root);
    LP_UNUSED(what);
    return LOPAD_OK;
}
enum lopad_status lp_dist_bcast_idle(struct lp_dist *g, void *buf, size_t n, int root,
                                     const char *what) {
    return lp_dist_bcast(g, buf, n, root, what);
}
enum lopad_status lp_dist_split(struct lp_dist *g, int color, int key, struct lp_dist **out) {
    LP_UNUSED(g);
    LP_UNUSED(color);
    LP_UNUSED(key);
    *out = NULL;
    return LOPAD_OK;
}
void lp_dist_free(struct lp_dist *g) {
    LP_UNUSED(g);
}

#endif

enum lopad_status lp_dist_agree(struct lp_dist *g, const uint64_t *vals, int n,
                                const char *const *names) {
    const int R = lp_dist_size(g);
    size_t *each = lp_malloc(sizeof(size_t) * (size_t)R, "dist counts");
    uint64_t *all = lp_malloc(sizeof(uint64_t) * (size_t)n * (size_t)R, "dist agreement");
    enum lopad_status st = each && all ? LOPAD_OK : LOPAD_ERR_NOMEM;
    for (int r = 0; r < R && each; r++)
        each[r] = sizeof(uint64_t) * (size_t)n;
    if (st == LOPAD_OK) st = lp_dist_allgather(g, vals, each, all, "the start-up agreement");
    for (int r = 1; r < R && st == LOPAD_OK; r++)
        for (int i = 0; i < n && st == LOPAD_OK; i++)
            if (all[(size_t)r * n + i] != all[i])
                st = lp_error(LOPAD_ERR_ARG,
                              "rank %d has another %s than rank 0 (hash %016llx vs %016llx): "
                              "every rank must load the same model with the same options",
                              r, names[i], (unsigned long long)all[(size_t)r * n + i],
                              (unsigned long long)all[i]);
    lp_free(each);
    lp_free(all);
    return st;
}

enum lopad_status lp_dist_allreduce_sum(struct lp_dist *g, float *buf, size_t n, const char *what) {
    const int R = lp_dist_size(g);
    if (R <= 1) return LOPAD_OK;
    size_t *each = lp_malloc(sizeof(size_t) * (size_t)R, "dist counts");
    float *all = lp_malloc(sizeof(float) * n * (size_t)R, "dist partial sums");
    enum lopad_status st = each && all ? LOPAD_OK : LOPAD_ERR_NOMEM;
    for (int r = 0; r < R && each; r++)
        each[r] = sizeof(float) * n;
    if (st == LOPAD_OK) st = lp_dist_allgather(g, buf, each, all, what);
    if (st == LOPAD_OK) {
        memcpy(buf, all, sizeof(float) * n);
        for (int r = 1; r < R; r++) {
            const float *p = all + (size_t)r * n;
            for (size_t i = 0; i < n; i++)
                buf[i] += p[i];
        }
    }
    lp_free(each);
    lp_free(all);
    return st;
}
