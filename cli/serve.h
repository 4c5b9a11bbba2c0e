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
/* n sessions on m (sp: their parameters); model_name for responses. */
struct srv_pool *srv_pool_new(lopad_model *m, int n, const struct lopad_session_params *sp,
                              int queue_cap);
/* Queue j (takes a reference): 0, or 429 when the queue is full, 503 when shutting down. */
int srv_pool_submit(struct srv_pool *p, struct srv_job *j);
void srv_pool_gauges(struct srv_pool *p, int *queue_len, int *busy, int *n_slots);
/* Stop taking jobs: queued ones end as cancelled; running ones get grace_s seconds,
 * then are cancelled. Joins the workers. */
void srv_pool_stop(struct srv_pool *p, double grace_s);
void srv_pool_free(struct srv_pool *p);

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
