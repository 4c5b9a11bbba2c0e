/*
 * serve.h - what the parts of `lopad serve` share.
 *
 *   serve_request.c  an OpenAI request body -> a checked request (no HTTP, no model
 *                    needed to parse: the fuzz harness calls it directly)
 *   serve_slots.c    N slots (a worker thread and a lopad_session each) on one
 *                    model, a bounded queue of jobs, stop strings, time limits
 *   serve_stream.c   the OpenAI JSON shapes: responses, SSE chunks, errors
 *   serve_metrics.c  counters and a latency histogram in Prometheus text
 *   serve_http.c     libmicrohttpd: routing, limits, auth, streaming responses
 *   serve_dist.c     under mpirun: rank 0 sends each request to the other ranks,
 *                    which run it step for step without HTTP
 *   serve_web.c      the page at / (web/, compiled in)
 *   cmd_serve.c      the command: flags, model, signals
 */
#ifndef LP_CLI_SERVE_H
#define LP_CLI_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lopad.h"

struct cJSON;
struct lp_dist;

/* ------------------------------------------------------------------ errors */

/* An OpenAI-style error: {"error": {"message", "type", "param", "code": null}} */
struct srv_error {
    int http;         /* status code */
    const char *type; /* "invalid_request_error", "server_error", ... */
    char param[64];   /* the field at fault, "" = null */
    char message[480];
};
void srv_error_set(struct srv_error *e, int http, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The field a library message names ("option 'lopa' ..." -> "lopa", "--gen ..." ->
 * "max_tokens"), or fallback. */
void srv_error_param_from(struct srv_error *e, const char *msg, const char *fallback);

/* ----------------------------------------------------------------- request */

/* Length of the UTF-8 character at s (at most n bytes), 0 if invalid. */
size_t srv_utf8_len(const unsigned char *s, size_t n);

enum srv_kind { SRV_COMPLETIONS, SRV_CHAT };

#define SRV_MAX_STOP                                                                               \
    16 /* OpenAI allows 4; lm-evaluation-harness sends its "until" list plus EOS                   \
        */
#define SRV_MAX_OPTS 64
#define SRV_MAX_DEPTH 16 /* JSON nesting: OpenAI bodies need 4 */

struct srv_req {
    enum srv_kind kind;
    bool stream, include_usage, stream_canvas;
    const char *prompt; /* completions: text (points into root) */
    int32_t *ids;       /* completions: token ids instead (malloc) */
    int n_ids;
    struct lopad_chat_msg *msgs; /* chat (malloc; strings point into root) */
    int n_msgs;
    const char *stop[SRV_MAX_STOP];
    int n_stop;
    long max_tokens;                        /* -1 = the server's default "gen" */
    const struct cJSON *opts[SRV_MAX_OPTS]; /* decoding options by table name */
    int n_opts;
    struct cJSON *root;
};

/* Parse and check a body (len bytes, not NUL-terminated). 0, or -1 with *err (400). */
int srv_req_parse(const char *body, size_t len, enum srv_kind kind, struct srv_req *out,
                  struct srv_error *err);
void srv_req_free(struct srv_req *r);
/* The request for the library: a copy of defaults with the body's options, and the
 * prompt tokenised on m (m may be NULL: options only, for the fuzz harness).
 * *n_prompt receives the prompt's length in tokens. 0, or -1 with *err. */
int srv_req_build(const struct srv_req *r, const lopad_request *defaults, const lopad_model *m,
                  lopad_request **out, int *n_prompt, struct srv_error *err);
/* The same, with the prompt's ids in *ids (malloc; NULL when m is NULL), which the
 * ranks of an mpirun job receive (serve_dist.c). */
int srv_req_build_ids(const struct srv_req *r, const lopad_request *defaults, const lopad_model *m,
                      lopad_request **out, int32_t **ids, int *n_prompt, struct srv_error *err);

/* ---------------------------------------------------------------- metrics */

void srv_metrics_request(int http_status, double seconds);
void srv_metrics_generation(int prompt_tokens, int completion_tokens, int forwards);
/* Prometheus text (malloc); queue and slot gauges passed in. */
char *srv_metrics_text(int queue_len, int busy, int n_slots);

/* ------------------------------------------------------------- jobs, slots */

enum srv_job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
enum srv_cancel { CANCEL_NONE, CANCEL_CLIENT, CANCEL_TIMEOUT, CANCEL_SHUTDOWN };

struct srv_buf {
    char *p;
    size_t len, cap;
};
int srv_buf_add(struct srv_buf *b, const char *s, size_t n);
int srv_buf_addf(struct srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct srv_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    enum srv_job_state state;
    atomic_int cancel; /* enum srv_cancel */
    /* the request */
    enum srv_kind kind;
    lopad_request *rq;
    bool stream, include_usage, stream_canvas;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    double deadline; /* monotonic seconds, 0 = none */
    char id[40];
    long created;
    const char *model_name;
    int n_prompt;
    int32_t *ids; /* the prompt's ids (n_prompt; malloc) */
    /* what the worker made */
    struct srv_buf text; /* the final prefix's text, cut at a stop string */
    size_t sent;         /* stream: text already put in chunks */
    struct srv_buf sse;  /* stream: SSE bytes ready for the connection */
    int n_completion, nfe;
    double tpf;
    const char *finish_reason; /* "stop", "length", NULL while running */
    bool failed;
    struct srv_error err;
};

struct srv_job *srv_job_new(void);
void srv_job_unref(struct srv_job *j);

struct srv_pool;
/* n sessions on m (sp: their parameters), each with a worker thread. With dist (an
 * mpirun job's communicator, on rank 0) n must be 1 and the slot has no thread:
 * srv_pool_work runs it on the caller's thread (MPI is called from one thread), and
 * every job goes to the other ranks too (serve_dist.c). */
struct srv_pool *srv_pool_new(lopad_model *m, int n, const struct lopad_session_params *sp,
                              int queue_cap, struct lp_dist *dist);
/* dist: run the slot here until srv_pool_stop has stopped the pool and the queue is
 * empty. */
void srv_pool_work(struct srv_pool *p);
/* Queue j (takes a reference): 0, or 429 when the queue is full, 503 when shutting down. */
int srv_pool_submit(struct srv_pool *p, struct srv_job *j);
void srv_pool_gauges(struct srv_pool *p, int *queue_len, int *busy, int *n_slots);
/* Stop taking jobs: queued ones end as cancelled; running ones get grace_s seconds,
 * then are cancelled. Joins the workers. */
void srv_pool_stop(struct srv_pool *p, double grace_s);
void srv_pool_free(struct srv_pool *p);

/* ------------------------------------------------- across ranks (mpirun) */

/* What every rank must share before serving: the model (lp_dist_model_hash) and the
 * session parameters that make the forwards collective (--tensor-parallel). 0, or -1
 * with the message printed (on every rank). */
int srv_dist_agree(struct lp_dist *g, const lopad_model *m, const struct lopad_session_params *sp);
/* Rank 0, for one job: the request every rank will run, built from the message
 * (settings of rq on m, and the prompt's ids) exactly as the other ranks build it.
 * 0 with *out and *msg (free both), or -1 with *err (the job is refused, nothing
 * is sent). */
struct srv_dist_msg;
int srv_dist_prepare(const lopad_request *rq, const int32_t *ids, int n_ids, const lopad_model *m,
                     lopad_request **out, struct srv_dist_msg **msg, struct srv_error *err);
/* Rank 0: send msg to the other ranks (they start the same request), then free it. */
void srv_dist_send(struct lp_dist *g, struct srv_dist_msg *msg);
/* Before each step, on every rank: rank 0 says whether the ranks take it (go), the
 * others receive that; returns it. The first one, after lopad_gen_start, also
 * says whether rank 0 started. */
bool srv_dist_next_step(struct lp_dist *g, bool go);
/* Rank 0 at shutdown: the other ranks leave srv_dist_follow. */
void srv_dist_quit(struct lp_dist *g);
/* Ranks > 0: run rank 0's requests on one session (sp) until it says quit. 0, or an
 * exit status. A message that is not valid, or a rank that goes another way than
 * rank 0, ends the job (MPI_Abort) with a message. */
int srv_dist_follow(struct lp_dist *g, const lopad_model *m, const struct lopad_session_params *sp);

/* ---------------------------------------------------------- JSON shapes */

/* the whole non-streamed response (malloc) */
char *srv_json_response(const struct srv_job *j);
char *srv_json_error(const struct srv_error *e);
char *srv_json_models(const char *model_name, long created);
/* stream pieces, appended to j->sse (caller holds j->mu) */
int srv_sse_delta(struct srv_job *j, const char *text, size_t n, bool first);
int srv_sse_finish(struct srv_job *j);
int srv_sse_error(struct srv_job *j);
int srv_sse_canvas(struct srv_job *j, const lopad_model *m, const struct lopad_step *st);

double srv_now(void);

/* ------------------------------------------------------------------ http */

struct srv_config {
    const char *host;
    int port;            /* 0 = any free port (printed) */
    const char *api_key; /* NULL = no auth */
    double timeout_s;    /* per request, from its headers to its end */
    size_t max_body;     /* request body bytes */
    int max_conns;       /* open connections */
    int conn_timeout_s;  /* idle connection / slow body */
    int parallel, queue, threads;
    double grace_s; /* shutdown: in-flight requests get this long */
};

struct srv {
    struct srv_config cfg;
    lopad_model *model;
    const lopad_request *defaults; /* the server's decoding options */
    struct srv_pool *pool;
    char model_name[128];
    long created;
    void *daemon; /* struct MHD_Daemon */
    int port;     /* bound */
    atomic_ulong next_id;
};

/* Start listening (s->port is the bound port). 0, or -1 with a message printed. */
int srv_http_start(struct srv *s);
/* Stop accepting new connections. */
void srv_http_quiesce(struct srv *s);
/* Close every connection and stop. */
void srv_http_stop(struct srv *s);

/* ------------------------------------------------------------------- web */

/* the page at / (web/index.html, compiled in) */
extern const unsigned char srv_web_index[];
extern const size_t srv_web_index_len;

#endif
