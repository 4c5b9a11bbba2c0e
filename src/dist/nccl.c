/*
 * nccl.c - the device door (nccl.h) on NCCL, or a stub that says why it is missing.
 *
 * Set-up rides on the host door: rank 0 makes the ncclUniqueId and lp_dist_bcast
 * sends it (with a flag, so that a failed ncclGetUniqueId stops every rank instead
 * of leaving them in ncclCommInitRank); after ncclCommInitRank the ranks all-gather
 * their results, so every rank returns the same status and names the rank that
 * failed. The collectives themselves are plain NCCL calls on the caller's stream.
 *
 * Tested without a GPU against src/backend/cuda/emu/fake_nccl.c (NCCL on MPI over
 * host memory) by tests/cli/test_nccl_emu.sh.
 */
#include "nccl.h"
#include <stdint.h>
#include <string.h>
#include "core/common.h"

#if defined(LOPAD_NCCL) && LOPAD_NCCL

#include <nccl.h>

struct lp_dist_dev {
    ncclComm_t comm;
    int rank, size;
};

bool lp_dist_dev_built(void) {
    return true;
}

static enum lopad_status nccl_status(ncclResult_t r) {
    return r == ncclInvalidArgument || r == ncclInvalidUsage ? LOPAD_ERR_ARG : LOPAD_ERR_IO;
}

/* NCCL's message for r, and the communicator's last error when it has one. */
static enum lopad_status nccl_fail(ncclComm_t comm, ncclResult_t r, const char *call,
                                   const char *what) {
    const char *last = NULL;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    last = ncclGetLastError(comm);
#else
    LP_UNUSED(comm);
#endif
    bool more = last && *last;
    return lp_error(nccl_status(r), "%s: %s failed: %s%s%s%s", what, call, ncclGetErrorString(r),
                    more ? " (" : "", more ? last : "", more ? ")" : "");
}

/* Every rank's ncclCommInitRank result; the first rank that failed, or -1. */
static enum lopad_status init_results(struct lp_dist *g, int size, ncclResult_t mine, int *failed,
                                      int32_t *its_result) {
    *failed = mine == ncclSuccess ? -1 : 0;
    *its_result = mine;
    if (size == 1) return LOPAD_OK;
    size_t *each = lp_malloc(sizeof(size_t) * (size_t)size, "NCCL set-up counts");
    int32_t *all = lp_malloc(sizeof(int32_t) * (size_t)size, "NCCL set-up results");
    enum lopad_status st = each && all ? LOPAD_OK : LOPAD_ERR_NOMEM;
    for (int r = 0; r < size && each; r++)
        each[r] = sizeof(int32_t);
    int32_t m = mine;
    if (st == LOPAD_OK) st = lp_dist_allgather(g, &m, each, all, "the NCCL communicator set-up");
    for (int r = 0; r < size && st == LOPAD_OK; r++)
        if (all[r] != ncclSuccess) {
            *failed = r;
            *its_result = all[r];
            break;
        }
    lp_free(each);
    lp_free(all);
    return st;
}

enum lopad_status lp_dist_dev_new(struct lp_dist *g, struct lp_dist_dev **out) {
    *out = NULL;
    const int rank = lp_dist_rank(g), size = lp_dist_size(g);
    struct {
        int32_t ok;
        ncclUniqueId id;
    } msg;
    memset(&msg, 0, sizeof msg);
    ncclResult_t r = ncclSuccess;
    if (rank == 0) {
        r = ncclGetUniqueId(&msg.id);
        msg.ok = r == ncclSuccess;
    }
    enum lopad_status st = LOPAD_OK;
    if (size > 1 && (st = lp_dist_bcast(g, &msg, sizeof msg, 0, "the NCCL unique id"))) return st;
    if (!msg.ok)
        return rank == 0 ? nccl_fail(NULL, r, "ncclGetUniqueId", "NCCL set-up")
                         : lp_error(LOPAD_ERR_IO, "NCCL set-up: rank 0 could not make the "
                                                  "communicator's id (ncclGetUniqueId failed)");
    ncclComm_t comm = NULL;
    r = ncclCommInitRank(&comm, size, msg.id, rank);
    int failed = -1;
    int32_t its = r;
    st = init_results(g, size, r, &failed, &its);
    if (st == LOPAD_OK && failed == rank)
        st = nccl_fail(comm, r, "ncclCommInitRank", "NCCL set-up");
    else if (st == LOPAD_OK && failed >= 0)
        st = lp_error(nccl_status((ncclResult_t)its),
                      "NCCL set-up: ncclCommInitRank failed on rank %d of %d: %s", failed, size,
                      ncclGetErrorString((ncclResult_t)its));
    struct lp_dist_dev *d = NULL;
    if (st == LOPAD_OK && !(d = lp_calloc(1, sizeof *d, "NCCL communicator"))) st = LOPAD_ERR_NOMEM;
    if (st != LOPAD_OK) {
        if (r == ncclSuccess && comm) ncclCommDestroy(comm);
        return st;
    }
    d->comm = comm;
    d->rank = rank;
    d->size = size;
    *out = d;
    return LOPAD_OK;
}

void lp_dist_dev_free(struct lp_dist_dev *d) {
    if (!d) return;
    if (d->comm) ncclCommDestroy(d->comm);
    lp_free(d);
}

int lp_dist_dev_rank(const struct lp_dist_dev *d) {
    return d ? d->rank : 0;
}
int lp_dist_dev_size(const struct lp_dist_dev *d) {
    return d ? d->size : 1;
}

static enum lopad_status no_comm(const char *what) {
    return lp_error(LOPAD_ERR_ARG, "%s: no NCCL communicator (lp_dist_dev_new)", what);
}

enum lopad_status lp_dist_dev_allreduce_sum(struct lp_dist_dev *d, float *dev_buf, size_t n,
                                            void *stream, const char *what) {
    if (!d) return no_comm(what);
    if (n == 0) return LOPAD_OK;
    ncclResult_t r =
        ncclAllReduce(dev_buf, dev_buf, n, ncclFloat32, ncclSum, d->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? LOPAD_OK : nccl_fail(d->comm, r, "ncclAllReduce", what);
}

enum lopad_status lp_dist_dev_allgather(struct lp_dist_dev *d, const void *dev_send, void *dev_recv,
                                        size_t bytes_each, void *stream, const char *what) {
    if (!d) return no_comm(what);
    if (bytes_each == 0) return LOPAD_OK;
    ncclResult_t r =
        ncclAllGather(dev_send, dev_recv, bytes_each, ncclUint8, d->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? LOPAD_OK : nccl_fail(d->comm, r, "ncclAllGather", what);
}

enum lopad_status lp_dist_dev_bcast(struct lp_dist_dev *d, void *dev_buf, size_t bytes, int root,
                                    void *stream, const char *what) {
    if (!d) return no_comm(what);
    if (root < 0 || root >= d->size)
        return lp_error(LOPAD_ERR_ARG, "%s: root %d is not one of the %d ranks", what, root,
                        d->size);
    if (bytes == 0) return LOPAD_OK;
    ncclResult_t r =
        ncclBroadcast(dev_buf, dev_buf, bytes, ncclUint8, root, d->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? LOPAD_OK : nccl_fail(d->comm, r, "ncclBroadcast", what);
}

#else /* built without NCCL */

struct lp_dist_dev {
    int unused;
};

bool lp_dist_dev_built(void) {
    return false;
}

/* Which of the pieces -DLOPAD_NCCL=ON needs this build lacks. */
static const char *why_not(void) {
#if !defined(LOPAD_CUDA)
    return "it was built without CUDA (-DLOPAD_CUDA=ON)";
#elif !(defined(LOPAD_MPI) && LOPAD_MPI)
    return "it was built without MPI (-DLOPAD_MPI=ON, libopenmpi-dev)";
#else
    return "NCCL's nccl.h + libnccl were not found, or -DLOPAD_NCCL=OFF";
#endif
}

static enum lopad_status not_built(const char *what) {
    return lp_error(LOPAD_ERR_UNSUPPORTED,
                    "%s: this lopad has no NCCL: %s; -DLOPAD_NCCL=ON needs the CUDA backend, MPI "
                    "and NCCL",
                    what, why_not());
}

enum lopad_status lp_dist_dev_new(struct lp_dist *g, struct lp_dist_dev **out) {
    LP_UNUSED(g);
    *out = NULL;
    return not_built("NCCL set-up");
}
void lp_dist_dev_free(struct lp_dist_dev *d) {
    LP_UNUSED(d);
}
int lp_dist_dev_rank(const struct lp_dist_dev *d) {
    LP_UNUSED(d);
    return 0;
}
int lp_dist_dev_size(const struct lp_dist_dev *d) {
    LP_UNUSED(d);
    return 1;
}
enum lopad_status lp_dist_dev_allreduce_sum(struct lp_dist_dev *d, float *dev_buf, size_t n,
                                            void *stream, const char *what) {
    LP_UNUSED(d);
    LP_UNUSED(dev_buf);
    LP_UNUSED(n);
    LP_UNUSED(stream);
    return not_built(what);
}
enum lopad_status lp_dist_dev_allgather(struct lp_dist_dev *d, const void *dev_send, void *dev_recv,
                                        size_t bytes_each, void *stream, const char *what) {
    LP_UNUSED(d);
    LP_UNUSED(dev_send);
    LP_UNUSED(dev_recv);
    LP_UNUSED(bytes_each);
    LP_UNUSED(stream);
    return not_built(what);
}
enum lopad_status lp_dist_dev_bcast(struct lp_dist_dev *d, void *dev_buf, size_t bytes, int root,
                                    void *stream, const char *what) {
    LP_UNUSED(d);
    LP_UNUSED(dev_buf);
    LP_UNUSED(bytes);
    LP_UNUSED(root);
    LP_UNUSED(stream);
    return not_built(what);
}

#endif
