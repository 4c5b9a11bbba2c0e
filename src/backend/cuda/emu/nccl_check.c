/*
 * nccl_check.c - the device door (src/dist/nccl.h) on the fake NCCL (fake_nccl.c),
 * run under `mpirun -np R` (or alone): all-reduce, all-gather (in and out of place)
 * and broadcast (every root) on "device" buffers (host memory full of 0xA5 garbage,
 * as the fake CUDA runtime gives them) must equal the host door (lp_dist_*, MPI) bit
 * for bit, and the all-reduce must be the sum in rank order computed here alone;
 * also on sub-groups in reversed rank order (so the NCCL rank 0 is not the world's),
 * and the errors name the exchange and NCCL's message.
 * Built and run by tests/cli/test_nccl_emu.sh (-DLP_NCCL_EMU_CHECK); compiles to
 * nothing in the library's source glob.
 */
#ifdef LP_NCCL_EMU_CHECK
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dist/dist.h"
#include "dist/nccl.h"

static int me, n_checks, n_failed;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        n_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            n_failed++;                                                                            \
            fprintf(stderr, "rank %d: FAIL %s:%d: %s: ", me, __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* device memory as the fake runtime gives it: host memory, garbage inside */
static void *dev_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    memset(p, 0xA5, n);
    return p;
}

static uint32_t mix(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u) * 0x85ebca6bu ^ c * 0xc2b2ae35u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    return h ^ (h >> 13);
}

/* rank r's i-th addend: mixed signs and magnitudes, so that the order of the sum shows */
static float addend(int r, size_t i, int round) {
    uint32_t h = mix((uint32_t)r, (uint32_t)i, (uint32_t)round);
    float m = (float)(h & 0xffffff) / (float)0x1000000 - 0.5f;
    return ldexpf(m, (int)(h >> 24) % 41 - 20);
}
static unsigned char byte_of(int r, size_t j, int round) {
    return (unsigned char)mix((uint32_t)r + 1000u, (uint32_t)j, (uint32_t)round);
}

static void check_allreduce(struct lp_dist *g, struct lp_dist_dev *d, size_t n, void *stream,
                            int round) {
    const int R = lp_dist_size(g), rank = lp_dist_rank(g);
    float *host = malloc(sizeof(float) * (n + 1)), *want = malloc(sizeof(float) * (n + 1));
    float *back = malloc(sizeof(float) * (n + 1)), *dev = dev_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        host[i] = addend(rank, i, round);
        want[i] = addend(0, i, round);
        back[i] = addend(R - 1, i, round);
        for (int r = 1; r < R; r++) /* rank order, and the reverse */
            want[i] += addend(r, i, round);
        for (int r = R - 2; r >= 0; r--)
            back[i] += addend(r, i, round);
    }
    memcpy(dev, host, sizeof(float) * n);
    enum lopad_status st = lp_dist_dev_allreduce_sum(d, dev, n, stream, "test all-reduce");
    EXPECT(st == LOPAD_OK, "n %zu: %s", n, lopad_errmsg());
    st = lp_dist_allreduce_sum(g, host, n, "host all-reduce");
    EXPECT(st == LOPAD_OK, "host door: %s", lopad_errmsg());
    EXPECT(!memcmp(dev, host, sizeof(float) * n), "n %zu, %d ranks: device != host door", n, R);
    EXPECT(!memcmp(dev, want, sizeof(float) * n), "n %zu, %d ranks: not the rank-order sum", n, R);
    if (R >= 3 && n >= 1000) /* the data can tell the orders apart (the test is meaningful) */
        EXPECT(memcmp(want, back, sizeof(float) * n), "n %zu: both orders give the same bits", n);
    free(host);
    free(want);
    free(back);
    free(dev);
}

/* the host door's all-gather (a single process has no communicator) */
static enum lopad_status host_allgather(struct lp_dist *g, const void *mine, size_t bytes,
                                        void *all) {
    const int R = lp_dist_size(g);
    if (!g) {
        memcpy(all, mine, bytes);
        return LOPAD_OK;
    }
    size_t *each = malloc(sizeof(size_t) * (size_t)R);
    for (int r = 0; r < R; r++)
        each[r] = bytes;
    enum lopad_status st = lp_dist_allgather(g, mine, each, all, "host all-gather");
    free(each);
    return st;
}

static void check_allgather(struct lp_dist *g, struct lp_dist_dev *d, size_t bytes, bool in_place,
                            void *stream, int round) {
    const int R = lp_dist_size(g), rank = lp_dist_rank(g);
    unsigned char *mine = malloc(bytes + 1), *host = malloc(bytes * R + 1);
    unsigned char *want = malloc(bytes * R + 1), *recv = dev_alloc(bytes * R);
    for (size_t j = 0; j < bytes; j++)
        mine[j] = byte_of(rank, j, round);
    for (int r = 0; r < R; r++)
        for (size_t j = 0; j < bytes; j++)
            want[r * bytes + j] = byte_of(r, j, round);
    unsigned char *send = in_place ? recv + rank * bytes : dev_alloc(bytes);
    memcpy(send, mine, bytes);
    enum lopad_status st = lp_dist_dev_allgather(d, send, recv, bytes, stream, "test all-gather");
    EXPECT(st == LOPAD_OK, "%zu bytes: %s", bytes, lopad_errmsg());
    EXPECT(host_allgather(g, mine, bytes, host) == LOPAD_OK, "host door: %s", lopad_errmsg());
    EXPECT(!memcmp(recv, host, bytes * R), "%zu bytes%s: device != host door", bytes,
           in_place ? " in place" : "");
    EXPECT(!memcmp(recv, want, bytes * R), "%zu bytes: not every rank's block in rank order",
           bytes);
    if (!in_place) free(send);
    free(mine);
    free(host);
    free(want);
    free(recv);
}

static void check_bcast(struct lp_dist *g, struct lp_dist_dev *d, size_t bytes, int root,
                        void *stream, int round) {
    const int rank = lp_dist_rank(g);
    unsigned char *host = malloc(bytes + 1), *want = malloc(bytes + 1), *dev = dev_alloc(bytes);
    for (size_t j = 0; j < bytes; j++) {
        host[j] = byte_of(rank, j, round);
        want[j] = byte_of(root, j, round);
    }
    memcpy(dev, host, bytes);
    enum lopad_status st = lp_dist_dev_bcast(d, dev, bytes, root, stream, "test broadcast");
    EXPECT(st == LOPAD_OK, "%zu bytes from %d: %s", bytes, root, lopad_errmsg());
    if (g) {
        st = lp_dist_bcast(g, host, bytes, root, "host broadcast");
        EXPECT(st == LOPAD_OK, "host door: %s", lopad_errmsg());
    }
    EXPECT(!memcmp(dev, host, bytes), "%zu bytes from %d: device != host door", bytes, root);
    EXPECT(!memcmp(dev, want, bytes), "%zu bytes from %d: not the root's bytes", bytes, root);
    free(host);
    free(want);
    free(dev);
}

/* every collective, some on a stream, some on the default one */
static void check_all(struct lp_dist *g, struct lp_dist_dev *d, int round) {
    static int a_stream; /* the fake runtime's streams are opaque pointers */
    void *stream = &a_stream;
    EXPECT(lp_dist_dev_rank(d) == lp_dist_rank(g) && lp_dist_dev_size(d) == lp_dist_size(g),
           "rank %d of %d vs %d of %d", lp_dist_dev_rank(d), lp_dist_dev_size(d), lp_dist_rank(g),
           lp_dist_size(g));
    const size_t nr[] = {0, 1, 7, 1000, 65537};
    for (int k = 0; k < 5; k++)
        check_allreduce(g, d, nr[k], k % 2 ? stream : NULL, round + k);
    const size_t ng[] = {1, 13, 4096};
    for (int k = 0; k < 3; k++)
        for (int in_place = 0; in_place < 2; in_place++)
            check_allgather(g, d, ng[k], in_place, in_place ? stream : NULL, round + k);
    for (int root = 0; root < lp_dist_size(g); root++) {
        check_bcast(g, d, 1, root, NULL, round + root);
        check_bcast(g, d, 100003, root, stream, round + root);
    }
}

/* errors found before anything moves (so any rank may meet them alone) */
static void check_errors(struct lp_dist_dev *d) {
    enum lopad_status st = lp_dist_dev_allreduce_sum(d, NULL, 4, NULL, "the null all-reduce");
    const char *m = lopad_errmsg();
    EXPECT(st == LOPAD_ERR_ARG && strstr(m, "the null all-reduce") && strstr(m, "ncclAllReduce") &&
               strstr(m, "invalid argument") && strstr(m, "sendbuff argument is NULL"),
           "status %d: %s", st, m);
    char buf[4];
    st = lp_dist_dev_bcast(d, buf, 4, lp_dist_dev_size(d), NULL, "the bad root");
    m = lopad_errmsg();
    EXPECT(st == LOPAD_ERR_ARG && strstr(m, "the bad root") && strstr(m, "root"), "status %d: %s",
           st, m);
    st = lp_dist_dev_allgather(NULL, buf, buf, 4, NULL, "the missing communicator");
    m = lopad_errmsg();
    EXPECT(st == LOPAD_ERR_ARG && strstr(m, "the missing communicator") &&
               strstr(m, "no NCCL communicator"),
           "status %d: %s", st, m);
}

/* two sub-groups at once (even and odd world ranks), each in reversed rank order */
static void check_subgroups(struct lp_dist *g) {
    const int rank = lp_dist_rank(g);
    struct lp_dist *sub = NULL;
    EXPECT(lp_dist_split(g, rank % 2, -rank, &sub) == LOPAD_OK && sub, "split: %s", lopad_errmsg());
    if (!sub) return;
    struct lp_dist_dev *sd = NULL;
    enum lopad_status st = lp_dist_dev_new(sub, &sd);
    EXPECT(st == LOPAD_OK && sd, "sub-group set-up: %s", lopad_errmsg());
    if (sd) check_all(sub, sd, 100);
    lp_dist_dev_free(sd);
    lp_dist_free(sub);
}

int main(void) {
    if (lp_dist_init(60) != LOPAD_OK) {
        fprintf(stderr, "lp_dist_init: %s\n", lopad_errmsg());
        return 1;
    }
    struct lp_dist *g = lp_dist_world();
    me = lp_dist_rank(g);
    const int R = lp_dist_size(g);
    EXPECT(lp_dist_dev_built(), "built with -DLOPAD_NCCL, but lp_dist_dev_built() is false");
    struct lp_dist_dev *d = NULL;
    enum lopad_status st = lp_dist_dev_new(g, &d);
    EXPECT(st == LOPAD_OK && d, "lp_dist_dev_new: %s", lopad_errmsg());
    if (d) {
        check_all(g, d, 0);
        check_errors(d);
        if (R > 1) check_subgroups(g);
        check_all(g, d, 200); /* the first communicator still works after the others */
    }
    lp_dist_dev_free(d);
    float failed = (float)n_failed;
    if (lp_dist_allreduce_sum(g, &failed, 1, "failures") != LOPAD_OK) failed = 1;
    if (me == 0)
        printf("nccl emulation, %d rank%s: %d checks on rank 0, %s\n", R, R > 1 ? "s" : "",
               n_checks, failed == 0 ? "all passed" : "FAILED on some rank");
    lp_dist_finalize();
    return failed == 0 ? 0 : 1;
}

#else
/* built without -DLP_NCCL_EMU_CHECK: nothing here (keeps ISO C happy) */
typedef int lp_nccl_emu_check_disabled;
#endif
