/*
 * threadpool.h - a persistent pool of worker threads for the compute kernels.
 *
 * lp_pool_run(pool, n_tasks, fn, ctx) calls fn(ctx, task, thread_id) once for
 * every task in [0, n_tasks) and returns when all are done. Tasks are handed out
 * dynamically, in increasing order, to whichever thread (0 = the caller) is free,
 * so which thread runs a task is not fixed. Nothing is allocated per call, so the
 * hot path stays malloc-free. Kernels get determinism by making each task's
 * result independent of which thread runs it; thread_id only picks per-thread
 * scratch.
 */
#ifndef LP_THREADPOOL_H
#define LP_THREADPOOL_H

#include "common.h"

typedef struct lp_pool lp_pool;
typedef void (*lp_task_fn)(void *ctx, int task, int thread_id);

/* A pool of n_threads threads in all (the caller counts as one; n_threads - 1
 * workers are started). n_threads <= 0 = all online cores. NULL on error
 * (message recorded). */
lp_pool *lp_pool_new(int n_threads);
void lp_pool_free(lp_pool *p);
int lp_pool_n_threads(const lp_pool *p);
/* Run fn over [0, n_tasks). Not reentrant: fn must not call lp_pool_run on the
 * same pool, and only one thread may drive a pool at a time. */
void lp_pool_run(lp_pool *p, int n_tasks, lp_task_fn fn, void *ctx);

/* Number of online cores (>= 1). */
int lp_n_cores(void);

#endif
