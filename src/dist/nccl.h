/*
 * nccl.h - the device side of the multi-process door (dist.h): collectives on GPU
 * buffers through NCCL, over the same ranks as an lp_dist (docs/CUDA.md, "NCCL").
 *
 * The host door (lp_dist_*) moves host memory over MPI with headers and deadlines;
 * this one moves device memory, enqueued on a CUDA stream so that it is ordered with
 * the backend's kernels (lp_backend_cuda_stream). Like every exchange of the host
 * door, each call is collective: every rank of the communicator makes the same calls
 * in the same order with the same sizes (NCCL has no message headers to check).
 *
 * Only a build with -DLOPAD_NCCL=ON (which needs -DLOPAD_CUDA=ON, MPI and NCCL's
 * nccl.h + libnccl) has it; elsewhere every call returns LOPAD_ERR_UNSUPPORTED
 * saying so, and lp_dist_dev_built() says false.
 */
#ifndef LP_DIST_NCCL_H
#define LP_DIST_NCCL_H

#include <stdbool.h>
#include <stddef.h>
#include "dist.h"

/* an NCCL communicator over the same ranks as an lp_dist (src/dist/dist.h) */
struct lp_dist_dev;

/* this build has NCCL (-DLOPAD_NCCL=ON) */
bool lp_dist_dev_built(void);

/* Collective over g: rank 0 makes the ncclUniqueId, lp_dist_bcast sends it, every rank
 * ncclCommInitRank on the current CUDA device. g NULL (a single process) gives a
 * communicator of one rank. Every rank returns the same status: a rank whose
 * ncclCommInitRank failed is named on all of them. LOPAD_ERR_UNSUPPORTED naming why
 * when not built. */
enum lopad_status lp_dist_dev_new(struct lp_dist *g, struct lp_dist_dev **out);
/* Collective too (ncclCommDestroy); NULL is fine. */
void lp_dist_dev_free(struct lp_dist_dev *d);

int lp_dist_dev_rank(const struct lp_dist_dev *d);
int lp_dist_dev_size(const struct lp_dist_dev *d);

/* On device buffers, enqueued on `stream` (a cudaStream_t, NULL = default); errors via
 * lp_error naming `what` and NCCL's message. The results are ready when the stream
 * reaches them (lp_backend_cuda_sync). */

/* dev_buf[n] = the sum over the ranks of their dev_buf[n] (in place). The fake NCCL of
 * the emulation adds in rank order, as lp_dist_allreduce_sum does; real NCCL picks its
 * own order (ring or tree), the same on every rank but not bitwise the host door's. */
enum lopad_status lp_dist_dev_allreduce_sum(struct lp_dist_dev *d, float *dev_buf, size_t n,
                                            void *stream, const char *what);
/* dev_recv[size * bytes_each] = every rank's dev_send[bytes_each] in rank order. In
 * place when dev_send == dev_recv + rank * bytes_each. */
enum lopad_status lp_dist_dev_allgather(struct lp_dist_dev *d, const void *dev_send, void *dev_recv,
                                        size_t bytes_each, void *stream, const char *what);
/* dev_buf[bytes] from root to every rank. */
enum lopad_status lp_dist_dev_bcast(struct lp_dist_dev *d, void *dev_buf, size_t bytes, int root,
                                    void *stream, const char *what);

#endif
