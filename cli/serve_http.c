/*
 * serve_http.c - the HTTP side of `lopad serve`, on libmicrohttpd.
 *
 * One thread per connection (bounded by --max-conns): a connection thread may
 * wait for its job, so a slow generation never blocks another client's I/O.
 * Limits: request headers (the connection's memory pool), the body (413 from its
 * Content-Length, or the connection closed past the limit), an idle or slow
 * connection (closed after --conn-timeout), the time of a request (its job is
 * cancelled). A client that goes away (the socket's peer closed) cancels its job
 * at the next step. With --api-key every path but /health wants
 * "Authorization: Bearer KEY".
 */
#ifdef LOPAD_HAVE_MHD
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>

#include "serve.h"

enum route { R_WEB, R_HEALTH, R_MODELS, R_METRICS, R_COMPLETIONS, R_CHAT, R_NOT_FOUND };

struct conn {
    struct srv *s;
    double t0;
    int status;
    enum route route;
    int fd;
    bool responded; /* a response is queued */
    bool too_big;
    struct srv_buf body;
    struct srv_job *job; /* streaming: the job whose SSE bytes go out */
    size_t sse_sent;
};

/* ------------------------------------------------------------- responses */

static enum MHD_Result respond(struct conn *cn, struct MHD_Connection *c, int status,
                               const char *type, char *body, size_t len, bool free_body) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, free_body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (free_body) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (cn->route == R_WEB && status == 200)
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                "style-src 'self' 'unsafe-inline'");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    cn->status = status;
    cn->responded = true;
    return ok;
}

static enum MHD_Result respond_json(struct conn *cn, struct MHD_Connection *c, int status,
                                    char *json) {
    if (!json) return MHD_NO;
    return respond(cn, c, status, "application/json", json, strlen(json), true);
}

static enum MHD_Result respond_error(struct conn *cn, struct MHD_Connection *c,
                                     const struct srv_error *e) {
    return respond_json(cn, c, e->http, srv_json_error(e));
}

static enum MHD_Result fail(struct conn *cn, struct MHD_Connection *c, int status,
                            const char *param, const char *msg) {
    struct srv_error e;
    srv_error_set(&e, status, param, "%s", msg);
    if (status == 401) e.type = "authentication_error";
    if (status == 404) e.type = "not_found_error";
    return respond_error(cn, c, &e);
}

/* --------------------------------------------------------------- helpers */

static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* constant-time: the key's length and bytes do not show in the timing */
static bool authorized(const struct srv *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    const char *k = s->cfg.api_key, *g = h + 7;
    size_t nk = strlen(k), ng = strlen(g);
    unsigned diff = nk != ng;
    for (size_t i = 0; i < nk; i++)
        diff |= (unsigned char)k[i] ^ (unsigned char)(i < ng ? g[i] : 0);
    return !diff;
}

static enum route route_of(const char *url) {
    static const struct {
        const char *path;
        enum route r;
    } table[] = {{"/", R_WEB},
                 {"/index.html", R_WEB},
                 {"/health", R_HEALTH},
                 {"/v1/models", R_MODELS},
                 {"/metrics", R_METRICS},
                 {"/v1/completions", R_COMPLETIONS},
                 {"/v1/chat/completions", R_CHAT}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(url, table[i].path)) return table[i].r;
    return R_NOT_FOUND;
}

/* --------------------------------------------------------------- the job */

/* Wait until the job reaches state `until` (or ends); false when the client left
 * (the job is cancelled then). */
static bool wait_job(struct conn *cn, struct srv_job *j, enum srv_job_state until) {
    pthread_mutex_lock(&j->mu);
    while (j->state < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->state >= until) break;
        if (client_gone(cn->fd)) {
            atomic_store(&j->cancel, CANCEL_CLIENT);
            pthread_mutex_unlock(&j->mu);
            return false;
        }
        if (j->state == JOB_QUEUED && j->deadline > 0 && srv_now() > j->deadline) {
            /* still queued at its time limit: answer now; the worker drops it */
            atomic_store(&j->cancel, CANCEL_TIMEOUT);
            srv_error_set(&j->err, 504, NULL, "the request waited past the server's time limit");
            j->err.type = "timeout_error";
            j->failed = true;
            j->state = JOB_DONE;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return true;
}

/* An SSE comment, sent when a step takes longer than half the idle limit: it keeps the
 * connection from being closed as idle (and proxies from timing it out); clients skip it. */
static const char keep_alive[] = ": keep-alive\n\n";

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    struct conn *cn = cls;
    struct srv_job *j = cn->job;
    double quiet_until = srv_now() + 0.5 * cn->s->cfg.conn_timeout_s;
    pthread_mutex_lock(&j->mu);
    while (cn->sse_sent == j->sse.len && j->state != JOB_DONE) {
        if (srv_now() > quiet_until && max >= sizeof keep_alive - 1) {
            pthread_mutex_unlock(&j->mu);
            memcpy(buf, keep_alive, sizeof keep_alive - 1);
            return (ssize_t)(sizeof keep_alive - 1);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (cn->sse_sent == j->sse.len && client_gone(cn->fd)) {
            atomic_store(&j->cancel, CANCEL_CLIENT);
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = j->sse.len - cn->sse_sent;
    if (n > max) n = max;
    if (n) memcpy(buf, j->sse.p + cn->sse_sent, n);
    cn->sse_sent += n;
    pthread_mutex_unlock(&j->mu);
    return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static struct srv_job *make_job(struct conn *cn, const struct srv_req *rq, lopad_request *lr,
                                int32_t *ids, int n_prompt) {
    struct srv *s = cn->s;
    struct srv_job *j = srv_job_new();
    if (!j) return NULL;
    j->kind = rq->kind;
    j->rq = lr;
    j->stream = rq->stream;
    j->include_usage = rq->include_usage;
    j->stream_canvas = rq->stream_canvas;
    for (int i = 0; i < rq->n_stop; i++)
        if ((j->stop[j->n_stop] = strdup(rq->stop[i]))) j->n_stop++;
    j->deadline = s->cfg.timeout_s > 0 ? cn->t0 + s->cfg.timeout_s : 0;
    unsigned long id = atomic_fetch_add(&s->next_id, 1);
    snprintf(j->id, sizeof j->id, "%s-%lx%06lx", rq->kind == SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long)s->created, id);
    j->created = (long)time(NULL);
    j->model_name = s->model_name;
    j->n_prompt = n_prompt;
    j->ids = ids;
    return j;
}

static enum MHD_Result generate(struct conn *cn, struct MHD_Connection *c) {
    struct srv *s = cn->s;
    struct srv_req rq;
    struct srv_error err;
    lopad_request *lr = NULL;
    int32_t *ids = NULL;
    int n_prompt = 0;
    enum srv_kind kind = cn->route == R_CHAT ? SRV_CHAT : SRV_COMPLETIONS;
    if (srv_req_parse(cn->body.p ? cn->body.p : "", cn->body.len, kind, &rq, &err) ||
        srv_req_build_ids(&rq, s->defaults, s->model, &lr, &ids, &n_prompt, &err)) {
        srv_req_free(&rq);
        return respond_error(cn, c, &err);
    }
    struct srv_job *j = make_job(cn, &rq, lr, ids, n_prompt);
    srv_req_free(&rq);
    if (!j) {
        free(ids);
        lopad_request_free(lr);
        return fail(cn, c, 500, NULL, "out of memory");
    }
    int busy = srv_pool_submit(s->pool, j);
    if (busy) {
        srv_job_unref(j);
        return fail(cn, c, busy, NULL,
                    busy == 429 ? "the server is busy (the queue is full); retry later"
                                : "the server is shutting down");
    }
    if (!wait_job(cn, j, j->stream ? JOB_RUNNING : JOB_DONE)) {
        srv_job_unref(j);
        cn->status = 499;
        return MHD_NO; /* the client left: close */
    }
    if (j->state == JOB_DONE && j->failed) { /* nothing sent yet: a plain error */
        enum MHD_Result r = respond_error(cn, c, &j->err);
        srv_job_unref(j);
        return r;
    }
    if (!j->stream) {
        enum MHD_Result r = respond_json(cn, c, 200, srv_json_response(j));
        srv_job_unref(j);
        return r;
    }
    cn->job = j; /* the connection's reference, dropped when it completes */
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, cn, NULL);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    cn->status = 200;
    cn->responded = true;
    return ok;
}

/* ------------------------------------------------------------ the handler */

static enum MHD_Result simple_get(struct conn *cn, struct MHD_Connection *c) {
    struct srv *s = cn->s;
    switch (cn->route) {
    case R_WEB:
        return respond(cn, c, 200, "text/html; charset=utf-8", (char *)srv_web_index,
                       srv_web_index_len, false);
    case R_HEALTH: {
        static char ok[] = "{\"status\":\"ok\"}";
        return respond(cn, c, 200, "application/json", ok, strlen(ok), false);
    }
    case R_MODELS: return respond_json(cn, c, 200, srv_json_models(s->model_name, s->created));
    case R_METRICS: {
        int q, busy, n;
        srv_pool_gauges(s->pool, &q, &busy, &n);
        char *t = srv_metrics_text(q, busy, n);
        if (!t) return MHD_NO;
        return respond(cn, c, 200, "text/plain; version=0.0.4", t, strlen(t), true);
    }
    default: return fail(cn, c, 404, NULL, "no such path");
    }
}

/* the headers are in: route, method, auth, declared body size */
static enum MHD_Result first_call(struct conn *cn, struct MHD_Connection *c, const char *url,
                                  const char *method) {
    cn->route = route_of(url);
    bool post = cn->route == R_COMPLETIONS || cn->route == R_CHAT;
    if (cn->route == R_NOT_FOUND) return fail(cn, c, 404, NULL, "no such path");
    if (strcmp(method, post ? "POST" : "GET") && !(!post && !strcmp(method, "HEAD")))
        return fail(cn, c, 405, NULL, post ? "use POST" : "use GET");
    if (cn->route != R_HEALTH && !authorized(cn->s, c))
        return fail(cn, c, 401, NULL, "a valid 'Authorization: Bearer KEY' header is needed");
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (post && cl && strtoull(cl, NULL, 10) > cn->s->cfg.max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body is larger than %zu bytes", cn->s->cfg.max_body);
        return fail(cn, c, 413, NULL, msg);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    struct srv *s = cls;
    struct conn *cn = *con_cls;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn))) return MHD_NO;
        cn->s = s;
        cn->t0 = srv_now();
        cn->fd = -1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci) cn->fd = ci->connect_fd;
        *con_cls = cn;
        return first_call(cn, c, url, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cn->responded) return MHD_YES;
        if (cn->body.len + n > s->cfg.max_body) return MHD_NO; /* chunked past the limit */
        if (s->cfg.conn_timeout_s > 0 && srv_now() - cn->t0 > 2.0 * s->cfg.conn_timeout_s)
            return MHD_NO; /* a body trickled in too slowly */
        return srv_buf_add(&cn->body, upload, n) ? MHD_NO : MHD_YES;
    }
    if (cn->responded) return MHD_YES;
    if (cn->route == R_COMPLETIONS || cn->route == R_CHAT) return generate(cn, c);
    return simple_get(cn, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    struct conn *cn = *con_cls;
    if (!cn) return;
    if (cn->job) {
        pthread_mutex_lock(&cn->job->mu);
        if (cn->job->state != JOB_DONE) atomic_store(&cn->job->cancel, CANCEL_CLIENT);
        pthread_mutex_unlock(&cn->job->mu);
        srv_job_unref(cn->job);
    }
    int status = cn->status ? cn->status : 499;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK && status < 400) status = 499;
    srv_metrics_request(status, srv_now() - cn->t0);
    free(cn->body.p);
    free(cn);
    *con_cls = NULL;
}

/* --------------------------------------------------------------- daemon */

int srv_http_start(struct srv *s) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    int gai = getaddrinfo(s->cfg.host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "lopad serve: --host %s: %s\n", s->cfg.host, gai_strerror(gai));
        return -1;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->cfg.conn_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) {
        fprintf(stderr, "lopad serve: cannot listen on %s port %d (in use, or not allowed)\n",
                s->cfg.host, s->cfg.port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->cfg.port;
    s->daemon = d;
    return 0;
}

void srv_http_quiesce(struct srv *s) {
    if (!s->daemon) return;
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void srv_http_stop(struct srv *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
#endif
