/*
 * dist.h - the door between lopad and a multi-process launcher (MPI), so that the
 * decoders never call MPI themselves (docs/DISTRIBUTED.md).
 *
 * A process started by `mpirun -np R` with R > 1 joins the job with lp_dist_init()
 * and gets a communicator from lp_dist_world(); a single process (or a build without
 * MPI, src/dist/dist.c's stub) gets NULL there, and every caller then runs alone.
 *
 * Every exchange is collective: all ranks call the same exchanges in the same order.
 * Each message carries a header (magic, the exchange's sequence number, its payload
 * size) that the receiver checks against what it expects, so a rank that went
 * another way, or sent another size, is reported instead of read. Each wait has a
 * deadline: a rank that died or hangs makes the others print which exchange timed
 * out and end the whole job (MPI_Abort), never hang.
 */
#ifndef LP_DIST_H
#define LP_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lopad.h"

struct lp_dist;
struct lopad_model;

/* Ranks the launcher announces in the environment (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
 * PMIX / Slurm equivalents); 1 when none. */
int lp_dist_env_size(void);
/* Whether this build has MPI (-DLOPAD_MPI=ON). */
bool lp_dist_built(void);

/* Join the job when the launcher started more than one rank: MPI_Init, a private
 * communicator, the deadline of every wait (timeout_s > 0). Nothing to do (LOPAD_OK,
 * lp_dist_world() stays NULL) for one rank. LOPAD_ERR_UNSUPPORTED with the reason when
 * this build has no MPI but the environment says R > 1. */
enum lopad_status lp_dist_init(double timeout_s);
/* Leave the job (MPI_Finalize); safe to call when not joined, and twice. */
void lp_dist_finalize(void);
/* End every rank of the job now with exit status code (after a failure on this rank,
 * so that no other rank waits for it until its deadline); nothing when not joined. */
void lp_dist_abort(int code);
/* The job's communicator, NULL in a single process. */
struct lp_dist *lp_dist_world(void);
int lp_dist_rank(const struct lp_dist *g);
int lp_dist_size(const struct lp_dist *g);
/* A file descriptor that still reaches the terminal of the rank (front ends may send
 * stdout / stderr of ranks > 0 to /dev/null; the fault messages go here). */
int lp_dist_err_fd(void);

/* Every rank gives n_each[rank] bytes (mine); all[] receives the blocks of every rank
 * in rank order (sum of n_each bytes). what names the exchange in errors. */
enum lopad_status lp_dist_allgather(struct lp_dist *g, const void *mine, const size_t *n_each,
                                    void *all, const char *what);
/* buf[n] from root to every rank (every rank passes the same n). */
enum lopad_status lp_dist_bcast(struct lp_dist *g, void *buf, size_t n, int root, const char *what);
/* buf[n] from root, waiting without a deadline: for a rank that idles until the next
 * piece of work arrives (a server's requests). A dead root still ends the job through
 * the launcher. */
enum lopad_status lp_dist_bcast_idle(struct lp_dist *g, void *buf, size_t n, int root,
                                     const char *what);
/* buf[n] = the sum over the ranks of their buf[n], added in rank order on every rank,
 * so every rank gets the same bits whatever MPI's reduction algorithm is
 * (tensor parallelism's partial sums). */
enum lopad_status lp_dist_allreduce_sum(struct lp_dist *g, float *buf, size_t n, const char *what);

/* Sub-groups: the ranks with the same color form one communicator, ordered by key
 * (collective over g; *out NULL in a build without MPI). lp_dist_free adds its
 * statistics to the job's and releases it. */
enum lopad_status lp_dist_split(struct lp_dist *g, int color, int key, struct lp_dist **out);
void lp_dist_free(struct lp_dist *g);

/* Every rank's vals[n] must equal rank 0's: LOPAD_ERR_ARG naming names[i] and the
 * first rank that differs otherwise (on every rank). */
enum lopad_status lp_dist_agree(struct lp_dist *g, const uint64_t *vals, int n,
                                const char *const *names);

/* What this rank has sent: bytes (payload + headers, counted once per receiving rank,
 * as if each message went point to point), exchanges, seconds waited. */
struct lp_dist_stats {
    uint64_t bytes_sent, n_exchanges;
    double t_wait;
};
void lp_dist_get_stats(const struct lp_dist *g, struct lp_dist_stats *out);

/* A fingerprint of a model: hyper-parameters, the tensor directory (names, types,
 * shapes) and samples of every tensor's bytes (its first, middle and last 256). Two
 * ranks with different files of the same shape differ here. */
uint64_t lp_dist_model_hash(const struct lopad_model *m);
/* FNV-1a over bytes, chained from h (start with LP_DIST_HASH0). */
#define LP_DIST_HASH0 0xcbf29ce484222325ull
uint64_t lp_dist_hash(uint64_t h, const void *p, size_t n);

/* Branch parallelism: branches [0, nbr) spread over the ranks in contiguous shares,
 * rank r computing [r nbr / R, (r+1) nbr / R) (none when R > nbr). */
static inline int lp_dist_share_begin(int nbr, int R, int r) {
    return (int)((int64_t)r * nbr / R);
}
static inline int lp_dist_owner(int nbr, int R, int j) {
    int r = 0;
    while (r + 1 < R && lp_dist_share_begin(nbr, R, r + 1) <= j)
        r++;
    return r;
}

#endif
