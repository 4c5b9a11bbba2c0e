/*
 * threadpool.c - persistent pthread pool; tasks are handed out one at a time
 * from a shared counter (dynamic scheduling, see below).
 *
 * A job is published by bumping an atomic generation counter. Workers spin on
 * it briefly (kernels come in quick succession during a forward) and then sleep
 * on a condition variable; the caller waits for the pending-count to reach zero
 * the same way. The mutex only guards sleeping, never the fast path.
 *
 * Tasks are handed out dynamically (an atomic counter), so a thread that the OS
 * delays on a busy machine does not hold up the others: the rest take its share.
 */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define SPIN_ITERS 20000

struct lp_worker {
    struct lp_pool *pool;
    int id;
    pthread_t thread;
};

struct lp_pool {
    int n_threads;
    struct lp_worker *workers; /* [n_threads - 1] */
    int n_started;

    pthread_mutex_t mu;
    pthread_cond_t cv_job;  /* workers sleep here waiting for a new generation */
    pthread_cond_t cv_done; /* the caller sleeps here waiting for pending == 0 */

    atomic_uint gen;    /* bumped once per job */
    atomic_int pending; /* workers still running the current job */
    atomic_bool quit;
    atomic_bool running; /* guards against reentrant use */

    /* the current job, written before gen is bumped */
    lp_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next; /* next task to hand out */
};

int lp_n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_slice(struct lp_pool *p, int tid) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->n_tasks) return;
        p->fn(p->ctx, t, tid);
    }
}

static void *worker_main(void *arg) {
    struct lp_worker *w = arg;
    struct lp_pool *p = w->pool;
    /* gen starts at 0 and no job can finish before every worker has run it, so
     * a worker that starts late still sees the first job as new */
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->quit, memory_order_acquire)) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv_job, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        run_slice(p, w->id);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

lp_pool *lp_pool_new(int n_threads) {
    if (n_threads <= 0) n_threads = lp_n_cores();
    struct lp_pool *p = lp_calloc(1, sizeof *p, "thread pool");
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_job, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, false);
    atomic_init(&p->running, false);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->workers = lp_calloc((size_t)n_threads - 1, sizeof *p->workers, "thread pool workers");
        if (!p->workers) {
            lp_pool_free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i].pool = p;
            p->workers[i].id = i + 1;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                lp_pool_free(p);
                lp_error(LOPAD_ERR_NOMEM, "cannot start worker thread %d of %d", i + 1, n_threads);
                return NULL;
            }
            p->n_started++;
        }
    }
    return p;
}

void lp_pool_free(lp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv_job);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_job);
    pthread_cond_destroy(&p->cv_done);
    lp_free(p->workers);
    lp_free(p);
}

int lp_pool_n_threads(const lp_pool *p) {
    return p->n_threads;
}

void lp_pool_run(lp_pool *p, int n_tasks, lp_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    LP_ASSERT(!atomic_exchange(&p->running, true));
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        atomic_store(&p->running, false);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv_job);
    pthread_mutex_unlock(&p->mu);

    run_slice(p, 0);

    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
        if (++spins < SPIN_ITERS) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) != 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    atomic_store(&p->running, false);
}
