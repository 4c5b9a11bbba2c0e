/*
 * serve_slots.c - many clients on one model: N slots, each a worker thread with
 * its own lopad_session (its context, KV cache and thread budget) over the one
 * loaded model, fed from a bounded FIFO of jobs.
 *
 * A job is shared by its connection and its worker (reference counted, one mutex
 * and condition each). The worker steps the generation and, after every step,
 * takes the final prefix's new text: it cuts it at the first stop string, keeps
 * back a tail that could still become one, and for a stream formats the SSE
 * chunks itself, so the connection only copies bytes. Cancellation (client gone,
 * time limit, shutdown) is a flag the worker reads before each step.
 *
 * Under mpirun (rank 0) the pool has one slot, run on the main thread, and each
 * job is sent to the other ranks, which step it with this slot (serve_dist.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve.h"

struct slot {
    struct srv_pool *pool;
    lopad_session *sess;
    pthread_t thread;
    bool started;
    struct srv_job *job;
};

struct srv_pool {
    lopad_model *model;
    struct lp_dist *dist; /* mpirun: the job's communicator (rank 0), else NULL */
    struct slot *slots;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct srv_job **q;
    int cap, head, len, busy;
    bool stopping;
};

/* ------------------------------------------------------------------- jobs */

struct srv_job *srv_job_new(void) {
    struct srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    atomic_init(&j->cancel, CANCEL_NONE);
    return j;
}

void srv_job_unref(struct srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    lopad_request_free(j->rq);
    free(j->ids);
    for (int i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j->text.p);
    free(j->sse.p);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* caller holds j->mu */
static void job_end(struct srv_job *j) {
    j->state = JOB_DONE;
    pthread_cond_broadcast(&j->cv);
}

/* caller holds j->mu: the job ends with an error (as an SSE event once streaming) */
static void job_fail(struct srv_job *j) {
    j->failed = true;
    if (j->stream && j->state == JOB_RUNNING) srv_sse_error(j);
    job_end(j);
}

static void cancel_error(struct srv_job *j, int why) {
    if (why == CANCEL_TIMEOUT)
        srv_error_set(&j->err, 504, NULL, "the request ran past the server's time limit");
    else if (why == CANCEL_SHUTDOWN)
        srv_error_set(&j->err, 503, NULL, "the server is shutting down");
    else
        srv_error_set(&j->err, 499, NULL, "the client went away");
    j->err.type = why == CANCEL_TIMEOUT ? "timeout_error" : "server_error";
}

/* ----------------------------------------------------------- stop strings */

/* the first stop string in text[from, len): its offset, or -1 */
static long find_stop(const struct srv_job *j, size_t from) {
    long best = -1;
    if (!j->text.p) return -1; /* no text yet */
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit =
            memmem(j->text.p + from, j->text.len - from, j->stop[i], strlen(j->stop[i]));
        if (hit && (best < 0 || hit - j->text.p < best)) best = hit - j->text.p;
    }
    return best;
}

/* bytes at the end of the text that begin some stop string: kept back from a stream */
static size_t held_back(const struct srv_job *j) {
    size_t keep = 0;
    for (int i = 0; i < j->n_stop; i++) {
        size_t n = strlen(j->stop[i]);
        for (size_t k = n - 1; k > keep; k--)
            if (k <= j->text.len && !memcmp(j->text.p + j->text.len - k, j->stop[i], k)) {
                keep = k;
                break;
            }
    }
    return keep;
}

/* Take the final prefix's text (it only grows); true when a stop string ends it.
 * Caller holds j->mu. */
static bool absorb_text(struct srv_job *j, const char *text, size_t len, bool final) {
    size_t old = j->text.len;
    if (len > old && srv_buf_add(&j->text, text + old, len - old)) return false;
    size_t longest = 0;
    for (int i = 0; i < j->n_stop; i++)
        if (strlen(j->stop[i]) > longest) longest = strlen(j->stop[i]);
    size_t from = old >= longest ? old - longest + 1 : 0;
    long at = j->n_stop ? find_stop(j, from) : -1;
    if (at >= 0) j->text.len = (size_t)at, j->text.p[at] = 0;
    size_t safe = at >= 0 || final ? j->text.len : j->text.len - held_back(j);
    if (j->stream && safe > j->sent) {
        srv_sse_delta(j, j->text.p + j->sent, safe - j->sent, false);
        j->sent = safe;
    }
    return at >= 0;
}

/* ---------------------------------------------------------------- a job */

struct run {
    struct slot *slot;
    struct srv_job *j;
    lopad_gen *g;
    bool stopped;
    bool failed;
};

static bool past_deadline(const struct srv_job *j) {
    return j->deadline > 0 && srv_now() > j->deadline;
}

static int step_once(struct run *r) {
    struct srv_job *j = r->j;
    const struct lopad_step *ev = NULL;
    enum lopad_status st = lopad_gen_step(r->g, &ev);
    pthread_mutex_lock(&j->mu);
    if (st) {
        srv_error_set(&j->err, 500, NULL, "generation failed: %s", lopad_gen_errmsg(r->g));
        job_fail(j);
    } else if (ev) {
        if (j->stream_canvas) srv_sse_canvas(j, r->slot->pool->model, ev);
        r->stopped = absorb_text(j, ev->text, ev->text_len, false);
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return st ? -1 : 0;
}

static int count_tokens(const lopad_model *m, const char *text, size_t len) {
    int32_t *ids = NULL;
    int n = 0;
    if (lopad_tokenize(m, text, len, &ids, &n)) return 0;
    lopad_free(ids);
    return n;
}

/* the result into the job, then its end (caller holds j->mu) */
static void finish_job(struct run *r, struct lopad_result *res) {
    struct srv_job *j = r->j;
    int why = atomic_load(&j->cancel);
    j->nfe = res->nfe;
    j->tpf = res->tpf;
    if (r->stopped) {
        j->finish_reason = "stop";
        j->n_completion = count_tokens(r->slot->pool->model, j->text.p, j->text.len);
    } else if (!strcmp(res->finish_reason, "cancelled")) {
        cancel_error(j, why ? why : CANCEL_SHUTDOWN);
        job_fail(j);
        return;
    } else {
        r->stopped = absorb_text(j, res->text, res->text_len, true);
        j->finish_reason = r->stopped ? "stop" : res->finish_reason;
        j->n_completion =
            r->stopped ? count_tokens(r->slot->pool->model, j->text.p, j->text.len) : res->n_ids;
    }
    srv_metrics_generation(j->n_prompt, j->n_completion, j->nfe);
    if (j->stream) srv_sse_finish(j);
    job_end(j);
}

static void start_failed(struct srv_job *j) {
    const char *msg = lopad_errmsg();
    pthread_mutex_lock(&j->mu);
    srv_error_set(&j->err, 400, NULL, "%s", msg);
    srv_error_param_from(&j->err, msg, NULL);
    job_fail(j);
    pthread_mutex_unlock(&j->mu);
}

/* Before each step: whether to take it. Under mpirun every rank learns it from
 * rank 0 here, so a stop (the end, a stop string, a cancel) ends every rank's
 * generation at the same step. */
static bool next_step(struct run *r) {
    struct srv_job *j = r->j;
    if (past_deadline(j)) {
        int none = CANCEL_NONE;
        atomic_compare_exchange_strong(&j->cancel, &none, CANCEL_TIMEOUT);
    }
    bool go = r->g && !r->failed && !r->stopped && !lopad_gen_done(r->g) &&
              atomic_load(&j->cancel) == CANCEL_NONE;
    struct lp_dist *dist = r->slot->pool->dist;
    return dist ? srv_dist_next_step(dist, go) : go;
}

/* The request this slot runs: the job's own, or under mpirun the one every rank
 * builds from the message sent to them (sent here). NULL when the job failed. */
static lopad_request *job_request(struct slot *sl, struct srv_job *j, lopad_request **own) {
    struct srv_pool *p = sl->pool;
    *own = NULL;
    if (!p->dist) return j->rq;
    struct srv_dist_msg *msg = NULL;
    struct srv_error err;
    if (srv_dist_prepare(j->rq, j->ids, j->n_prompt, p->model, own, &msg, &err)) {
        pthread_mutex_lock(&j->mu);
        j->err = err;
        job_fail(j);
        pthread_mutex_unlock(&j->mu);
        return NULL;
    }
    srv_dist_send(p->dist, msg);
    return *own;
}

static void run_job(struct slot *sl, struct srv_job *j) {
    struct run r = {.slot = sl, .j = j};
    pthread_mutex_lock(&j->mu);
    int why = atomic_load(&j->cancel);
    if (why || past_deadline(j)) {
        cancel_error(j, why ? why : CANCEL_TIMEOUT);
        job_fail(j);
        pthread_mutex_unlock(&j->mu);
        return;
    }
    pthread_mutex_unlock(&j->mu);
    lopad_request *own, *rq = job_request(sl, j, &own);
    if (!rq) return;
    if (lopad_gen_start(sl->sess, rq, &r.g)) {
        start_failed(j);
        if (sl->pool->dist) srv_dist_next_step(sl->pool->dist, false); /* the ranks stop */
        lopad_request_free(own);
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->state = JOB_RUNNING;
    if (j->stream && j->kind == SRV_CHAT) srv_sse_delta(j, "", 0, true); /* the role */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    while (next_step(&r))
        r.failed = step_once(&r);
    bool failed = r.failed;
    if (!failed && !r.stopped && atomic_load(&j->cancel) && !lopad_gen_done(r.g)) {
        lopad_gen_cancel(r.g); /* this step only describes the canvas: no forward */
        failed = step_once(&r);
    }
    if (!failed) {
        struct lopad_result res;
        enum lopad_status st = lopad_gen_finish(r.g, &res);
        pthread_mutex_lock(&j->mu);
        if (st) {
            srv_error_set(&j->err, 500, NULL, "%s", lopad_gen_errmsg(r.g));
            job_fail(j);
        } else {
            finish_job(&r, &res);
            lopad_result_free(&res);
        }
        pthread_mutex_unlock(&j->mu);
    }
    lopad_gen_free(r.g);
    lopad_request_free(own);
}

/* ----------------------------------------------------------------- pool */

static void *worker(void *arg) {
    struct slot *sl = arg;
    struct srv_pool *p = sl->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->len && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->len) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        struct srv_job *j = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        p->busy++;
        sl->job = j;
        pthread_mutex_unlock(&p->mu);
        run_job(sl, j);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        sl->job = NULL;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        srv_job_unref(j);
    }
}

struct srv_pool *srv_pool_new(lopad_model *m, int n, const struct lopad_session_params *sp,
                              int queue_cap, struct lp_dist *dist) {
    if (dist && n != 1) return NULL;
    struct srv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->model = m;
    p->dist = dist;
    p->n = n;
    p->cap = queue_cap > 0 ? queue_cap : 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->slots = calloc((size_t)n, sizeof *p->slots);
    p->q = calloc((size_t)p->cap, sizeof *p->q);
    if (!p->slots || !p->q) goto fail;
    for (int i = 0; i < n; i++) {
        p->slots[i].pool = p;
        if (lopad_session_new(m, sp, &p->slots[i].sess)) goto fail;
    }
    for (int i = 0; i < n && !dist; i++) {
        if (pthread_create(&p->slots[i].thread, NULL, worker, &p->slots[i])) goto fail;
        p->slots[i].started = true;
    }
    return p;
fail:
    srv_pool_stop(p, 0);
    srv_pool_free(p);
    return NULL;
}

void srv_pool_work(struct srv_pool *p) {
    worker(&p->slots[0]);
}

int srv_pool_submit(struct srv_pool *p, struct srv_job *j) {
    pthread_mutex_lock(&p->mu);
    int rc = p->stopping ? 503 : p->len >= p->cap ? 429 : 0;
    if (!rc) {
        pthread_mutex_lock(&j->mu);
        j->refs++;
        pthread_mutex_unlock(&j->mu);
        p->q[(p->head + p->len) % p->cap] = j;
        p->len++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void srv_pool_gauges(struct srv_pool *p, int *queue_len, int *busy, int *n_slots) {
    pthread_mutex_lock(&p->mu);
    *queue_len = p->len;
    *busy = p->busy;
    *n_slots = p->n;
    pthread_mutex_unlock(&p->mu);
}

void srv_pool_stop(struct srv_pool *p, double grace_s) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    for (int k = 0; k < p->len; k++) /* the queued end at once, as cancelled */
        atomic_store(&p->q[(p->head + k) % p->cap]->cancel, CANCEL_SHUTDOWN);
    pthread_mutex_unlock(&p->mu);
    double until = srv_now() + grace_s;
    pthread_mutex_lock(&p->mu);
    while (p->busy && srv_now() < until) {
        pthread_mutex_unlock(&p->mu);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->mu);
    }
    for (int i = 0; i < p->n; i++) /* the running, after the grace */
        if (p->slots[i].job) atomic_store(&p->slots[i].job->cancel, CANCEL_SHUTDOWN);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].started)
            pthread_join(p->slots[i].thread, NULL), p->slots[i].started = false;
}

void srv_pool_free(struct srv_pool *p) {
    if (!p) return;
    for (int i = 0; p->slots && i < p->n; i++)
        lopad_session_free(p->slots[i].sess);
    free(p->slots);
    free(p->q);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
