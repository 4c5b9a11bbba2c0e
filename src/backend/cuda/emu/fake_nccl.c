/*
 * fake_nccl.c - a stand-in for NCCL on host memory, so that the device door
 * (src/dist/nccl.c) runs without a GPU: the ranks are MPI processes, "device"
 * buffers are host memory (as in fake_cuda.c), streams are ignored and every call
 * completes before it returns. Compiled against the real nccl.h, so its signatures
 * are NCCL's.
 *
 * - ncclGetUniqueId writes a magic, the creating process's MPI_COMM_WORLD rank and a
 *   serial number. ncclCommInitRank meets at that process (it must be one of the
 *   members, as it is in lp_dist_dev_new): every member sends it {rank, world rank},
 *   it answers with the table, and the members make an MPI communicator of their own
 *   in NCCL rank order (MPI_Comm_create_group, collective over the members only, so
 *   sub-groups can set up at the same time). One rank needs no MPI at all.
 * - ncclAllReduce adds floats only, in rank order, exactly as lp_dist_allreduce_sum
 *   does (all-gather, then r0 + r1 + ...), so every rank gets the host door's bits.
 * - ncclAllGather / ncclBroadcast are MPI_Allgather / MPI_Bcast of bytes, in place as
 *   NCCL allows.
 * - Arguments are checked as NCCL documents (NULL buffers, ranks, types): such calls
 *   return ncclInvalidArgument with a message for ncclGetLastError.
 *
 * Built by tests/cli/test_nccl_emu.sh with -DLP_NCCL_FAKE; compiles to nothing in the
 * library's source glob.
 */
#ifdef LP_NCCL_FAKE
#include <mpi.h>
#include <nccl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_ID_MAGIC 0x4c50464e43434c31ull /* "LPFNCCL1" */
#define FAKE_TAG0 0x2000

struct fake_id {
    uint64_t magic;
    int32_t creator; /* MPI_COMM_WORLD rank, -1 without MPI */
    uint32_t serial;
};

struct ncclComm {
    MPI_Comm mpi; /* MPI_COMM_NULL for one rank */
    int rank, nranks;
};

static char last_err[256];

static ncclResult_t fail(ncclResult_t r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return r;
}

static bool mpi_up(void) {
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    return up && !down;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (fake NCCL)";
    case ncclSystemError: return "unhandled system error (fake NCCL)";
    case ncclInternalError: return "internal error (fake NCCL)";
    case ncclInvalidArgument: return "invalid argument (fake NCCL)";
    case ncclInvalidUsage: return "invalid usage (fake NCCL)";
    case ncclRemoteError: return "remote process exited or there was a network error (fake NCCL)";
    case ncclInProgress: return "NCCL operation in progress (fake NCCL)";
    default: return "unknown result code (fake NCCL)";
    }
}

const char *ncclGetLastError(ncclComm_t comm) {
    (void)comm;
    return last_err;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static uint32_t serial;
    if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: id is NULL");
    struct fake_id f = {FAKE_ID_MAGIC, -1, ++serial};
    if (mpi_up()) MPI_Comm_rank(MPI_COMM_WORLD, &f.creator);
    memset(id, 0, sizeof *id);
    memcpy(id->internal, &f, sizeof f);
    return ncclSuccess;
}

/* The creator's side of the meeting: table[r] = world rank of NCCL rank r, and a last
 * entry 1 when every rank came once (0 otherwise: every member then fails). */
static void meet_as_creator(int *table, int nranks, int rank, int me, int tag) {
    for (int r = 0; r < nranks; r++)
        table[r] = -1;
    table[rank] = me;
    table[nranks] = 1;
    for (int i = 1; i < nranks; i++) {
        int pair[2];
        MPI_Recv(pair, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (pair[0] < 0 || pair[0] >= nranks || table[pair[0]] != -1)
            table[nranks] = 0;
        else
            table[pair[0]] = pair[1];
    }
    for (int r = 0; r < nranks; r++)
        if (r != rank && table[r] >= 0)
            MPI_Send(table, nranks + 1, MPI_INT, table[r], tag, MPI_COMM_WORLD);
}

static ncclResult_t make_mpi_comm(struct ncclComm *c, const struct fake_id *f) {
    if (!mpi_up())
        return fail(ncclInvalidUsage, "ncclCommInitRank: the fake NCCL needs MPI for %d ranks",
                    c->nranks);
    int me = 0, tag = FAKE_TAG0 + (int)(f->serial % 0x4000);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    int *table = malloc(sizeof(int) * (size_t)(c->nranks + 1));
    if (!table) return fail(ncclSystemError, "ncclCommInitRank: out of memory");
    if (me == f->creator) {
        meet_as_creator(table, c->nranks, c->rank, me, tag);
    } else {
        int pair[2] = {c->rank, me};
        MPI_Send(pair, 2, MPI_INT, f->creator, tag, MPI_COMM_WORLD);
        MPI_Recv(table, c->nranks + 1, MPI_INT, f->creator, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    ncclResult_t r = ncclSuccess;
    if (!table[c->nranks]) {
        r = fail(ncclInvalidUsage, "ncclCommInitRank: two processes gave the same rank");
    } else {
        MPI_Group world, grp;
        MPI_Comm_group(MPI_COMM_WORLD, &world);
        MPI_Group_incl(world, c->nranks, table, &grp);
        if (MPI_Comm_create_group(MPI_COMM_WORLD, grp, tag, &c->mpi) != MPI_SUCCESS)
            r = fail(ncclSystemError, "ncclCommInitRank: MPI_Comm_create_group failed");
        MPI_Group_free(&grp);
        MPI_Group_free(&world);
    }
    free(table);
    return r;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    struct fake_id f;
    memcpy(&f, id.internal, sizeof f);
    if (!comm) return fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    if (f.magic != FAKE_ID_MAGIC)
        return fail(ncclInvalidArgument, "ncclCommInitRank: the id is not from ncclGetUniqueId");
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return fail(ncclSystemError, "ncclCommInitRank: out of memory");
    c->mpi = MPI_COMM_NULL;
    c->rank = rank;
    c->nranks = nranks;
    ncclResult_t r = nranks > 1 ? make_mpi_comm(c, &f) : ncclSuccess;
    if (r != ncclSuccess) {
        free(c);
        return r;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return fail(ncclInvalidArgument, "ncclCommDestroy: comm is NULL");
    if (comm->mpi != MPI_COMM_NULL && mpi_up()) MPI_Comm_free(&comm->mpi);
    free(comm);
    return ncclSuccess;
}

static size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
    }
}

/* The checks NCCL makes before enqueuing: communicator, type, buffers, size. */
static ncclResult_t check(const char *call, ncclComm_t comm, ncclDataType_t t, size_t count,
                          const void *send, const void *recv, size_t *bytes) {
    if (!comm) return fail(ncclInvalidArgument, "%s: comm is NULL", call);
    size_t ts = type_size(t);
    if (!ts) return fail(ncclInvalidArgument, "%s: data type %d", call, (int)t);
    if (count && (!send || !recv))
        return fail(ncclInvalidArgument, "%s: %s argument is NULL", call,
                    send ? "recvbuff" : "sendbuff");
    *bytes = count * ts;
    if (count > (size_t)INT32_MAX / ts / (size_t)comm->nranks)
        return fail(ncclInvalidArgument, "%s: %zu elements is more than the fake NCCL sends", call,
                    count);
    return ncclSuccess;
}

static ncclResult_t mpi_result(int rc, const char *call) {
    return rc == MPI_SUCCESS ? ncclSuccess : fail(ncclSystemError, "%s: MPI failed", call);
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    (void)stream;
    size_t bytes = 0;
    ncclResult_t r = check("ncclAllReduce", comm, datatype, count, sendbuff, recvbuff, &bytes);
    if (r != ncclSuccess) return r;
    if (datatype != ncclFloat32 || op != ncclSum)
        return fail(ncclInvalidArgument, "ncclAllReduce: the fake NCCL adds floats only");
    if (comm->nranks == 1 || !count) {
        if (count && sendbuff != recvbuff) memmove(recvbuff, sendbuff, bytes);
        return ncclSuccess;
    }
    float *all = malloc(bytes * (size_t)comm->nranks);
    if (!all) return fail(ncclSystemError, "ncclAllReduce: out of memory");
    r = mpi_result(
        MPI_Allgather(sendbuff, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, comm->mpi),
        "ncclAllReduce");
    if (r == ncclSuccess) {
        float *out = recvbuff;
        memcpy(out, all, bytes);
        for (int k = 1; k < comm->nranks; k++) {
            const float *p = all + (size_t)k * count;
            for (size_t i = 0; i < count; i++)
                out[i] += p[i];
        }
    }
    free(all);
    return r;
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    size_t bytes = 0;
    ncclResult_t r = check("ncclAllGather", comm, datatype, sendcount, sendbuff, recvbuff, &bytes);
    if (r != ncclSuccess || !sendcount) return r;
    char *mine = (char *)recvbuff + bytes * (size_t)comm->rank;
    if (comm->nranks == 1) {
        if (sendbuff != mine) memmove(mine, sendbuff, bytes);
        return ncclSuccess;
    }
    const void *src = sendbuff == mine ? MPI_IN_PLACE : sendbuff;
    return mpi_result(
        MPI_Allgather(src, (int)bytes, MPI_BYTE, recvbuff, (int)bytes, MPI_BYTE, comm->mpi),
        "ncclAllGather");
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    (void)stream;
    size_t bytes = 0;
    /* only the root reads sendbuff */
    const void *send = comm && comm->rank == root ? sendbuff : recvbuff;
    ncclResult_t r = check("ncclBroadcast", comm, datatype, count, send, recvbuff, &bytes);
    if (r != ncclSuccess) return r;
    if (root < 0 || root >= comm->nranks)
        return fail(ncclInvalidArgument, "ncclBroadcast: root %d of %d ranks", root, comm->nranks);
    if (!count) return ncclSuccess;
    if (comm->rank == root && sendbuff != recvbuff) memmove(recvbuff, sendbuff, bytes);
    if (comm->nranks == 1) return ncclSuccess;
    return mpi_result(MPI_Bcast(recvbuff, (int)bytes, MPI_BYTE, root, comm->mpi), "ncclBroadcast");
}

#else
/* built without -DLP_NCCL_FAKE: nothing here (keeps ISO C happy) */
typedef int lp_fake_nccl_disabled;
#endif
