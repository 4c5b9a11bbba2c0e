/*
 * serve_dist.c - `mpirun -np R lopad serve`: rank 0 answers HTTP and runs one
 * request at a time; ranks > 0 run the same requests with it, step for step, so
 * that the decoders' exchanges (LoPA's branches across ranks, tensor parallelism)
 * happen on every rank in the same order (docs/SERVER.md, "Across ranks").
 *
 * For each request rank 0 starts, it sends one message: a head {kind, JSON bytes,
 * prompt ids}, which the other ranks wait for without a deadline (they idle until
 * work arrives), then the request's settings as JSON (lopad_request_settings) and
 * its prompt ids. Every rank, rank 0 included, builds the request it runs from that
 * message, so all run the same one. Before each step rank 0 sends one flag: take
 * it or stop. A stop (the end, a stop string, a cancel) thus ends the generation
 * at the same step everywhere. The first flag after lopad_gen_start also says
 * whether rank 0 started. At shutdown rank 0 sends a quit head. A request rank 0
 * refuses is never sent.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "serve.h"

enum {
    MSG_REQUEST = 0x31514552, /* "REQ1": a request follows */
    MSG_QUIT = 0x54495551,    /* "QUIT" */
};
#define MSG_MAX_JSON (1u << 20) /* settings: a few hundred bytes */
#define MSG_MAX_IDS (1u << 24)

struct msg_head {
    uint32_t kind, json_len, n_ids, zero;
};

struct srv_dist_msg {
    struct msg_head h;
    char *payload; /* json_len bytes of JSON, then n_ids int32 */
};

static size_t payload_bytes(const struct msg_head *h) {
    return (size_t)h->json_len + sizeof(int32_t) * (size_t)h->n_ids;
}

/* This rank cannot go on with the others: say why on its terminal (ranks > 0 print
 * nothing else) and end every rank. */
static _Noreturn __attribute__((format(printf, 2, 3))) void job_fault(struct lp_dist *g,
                                                                      const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(NULL);
    dprintf(lp_dist_err_fd(), "lopad serve: rank %d of %d: %s; stopping every rank\n",
            lp_dist_rank(g), lp_dist_size(g), msg);
    lp_dist_abort(3);
    _exit(3);
}

/* An exchange of the door that failed (a size or sequence that does not match). */
static void check(struct lp_dist *g, enum lopad_status st, const char *what) {
    if (st != LOPAD_OK) job_fault(g, "%s: %s", what, lopad_errmsg());
}

/* ---------------------------------------------------------- the message */

/* A head any rank 0 of this build would send, or why not. */
static const char *head_problem(const struct msg_head *h) {
    if (h->kind != MSG_REQUEST && h->kind != MSG_QUIT) return "an unknown kind of message";
    if (h->zero) return "a head with unknown fields";
    if (h->kind == MSG_QUIT) return h->json_len || h->n_ids ? "a quit message with a body" : NULL;
    if (h->json_len < 2 || h->json_len > MSG_MAX_JSON) return "settings of an impossible size";
    if (h->n_ids < 1 || h->n_ids > MSG_MAX_IDS) return "an impossible number of prompt ids";
    return NULL;
}

/* The request a message describes, built the same way on every rank; NULL with why[]
 * when it does not describe one. */
static lopad_request *msg_request(const struct msg_head *h, const char *payload, char *why,
                                  size_t cap) {
    const char *bad = head_problem(h);
    if (!bad && h->kind != MSG_REQUEST) bad = "not a request";
    if (!bad && memchr(payload, 0, h->json_len)) bad = "a NUL byte in the settings";
    if (bad) return snprintf(why, cap, "%s", bad), NULL;
    char *json = malloc((size_t)h->json_len + 1);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)h->n_ids);
    lopad_request *rq = NULL;
    if (!json || !ids || lopad_request_new(&rq)) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    memcpy(json, payload, h->json_len);
    json[h->json_len] = 0;
    memcpy(ids, payload + h->json_len, sizeof(int32_t) * (size_t)h->n_ids);
    if (lopad_request_set_json(rq, json) || lopad_request_prompt_ids(rq, ids, (int)h->n_ids)) {
        snprintf(why, cap, "its settings %.200s%s: %s", json, h->json_len > 200 ? "..." : "",
                 lopad_request_errmsg(rq));
        lopad_request_free(rq);
        rq = NULL;
    }
out:
    free(json);
    free(ids);
    return rq;
}

int srv_dist_prepare(const lopad_request *rq, const int32_t *ids, int n_ids, const lopad_model *m,
                     lopad_request **out, struct srv_dist_msg **msg, struct srv_error *err) {
    *out = NULL;
    *msg = NULL;
    char *settings = NULL;
    if (!ids || n_ids < 1 || (unsigned)n_ids > MSG_MAX_IDS)
        return srv_error_set(err, 400, "prompt", "the prompt has no tokens or too many"), -1;
    if (lopad_request_settings(rq, m, &settings)) {
        srv_error_set(err, 400, NULL, "%s", lopad_request_errmsg(rq));
        srv_error_param_from(err, err->message, NULL);
        return -1;
    }
    struct srv_dist_msg *g = calloc(1, sizeof *g);
    size_t len = strlen(settings);
    if (g) g->h = (struct msg_head){MSG_REQUEST, (uint32_t)len, (uint32_t)n_ids, 0};
    if (!g || len > MSG_MAX_JSON || !(g->payload = malloc(payload_bytes(&g->h)))) {
        lopad_free(settings);
        free(g);
        return srv_error_set(err, 500, NULL, "the request is too large to send to the ranks"), -1;
    }
    memcpy(g->payload, settings, len);
    memcpy(g->payload + len, ids, sizeof(int32_t) * (size_t)n_ids);
    lopad_free(settings);
    char why[512];
    *out = msg_request(&g->h, g->payload, why, sizeof why);
    if (!*out)
        srv_error_set(err, 500, NULL, "the request cannot be sent to the ranks: %s", why);
    else if (lopad_request_validate(*out, m)) {
        const char *v = lopad_request_errmsg(*out);
        srv_error_set(err, 400, NULL, "%s", v);
        srv_error_param_from(err, v, NULL);
        lopad_request_free(*out);
        *out = NULL;
    }
    if (!*out) {
        free(g->payload);
        free(g);
        return -1;
    }
    *msg = g;
    return 0;
}

void srv_dist_send(struct lp_dist *g, struct srv_dist_msg *msg) {
    check(g, lp_dist_bcast(g, &msg->h, sizeof msg->h, 0, "serve: the next request"),
          "sending a request");
    check(g, lp_dist_bcast(g, msg->payload, payload_bytes(&msg->h), 0, "serve: the request"),
          "sending a request");
    free(msg->payload);
    free(msg);
}

bool srv_dist_next_step(struct lp_dist *g, bool go) {
    uint8_t flag = go;
    check(g, lp_dist_bcast(g, &flag, 1, 0, "serve: next step or stop"), "the step flag");
    if (flag > 1) job_fault(g, "rank 0 sent step flag %u (0 or 1 expected)", flag);
    return flag;
}

void srv_dist_quit(struct lp_dist *g) {
    struct msg_head h = {MSG_QUIT, 0, 0, 0};
    check(g, lp_dist_bcast(g, &h, sizeof h, 0, "serve: the next request"), "sending quit");
}

/* ------------------------------------------------------------- agreement */

int srv_dist_agree(struct lp_dist *g, const lopad_model *m, const struct lopad_session_params *sp) {
    const uint64_t v[3] = {lp_dist_model_hash(m),
                           (uint64_t)(sp->tensor_parallel > 1 ? sp->tensor_parallel : 1),
                           MSG_REQUEST};
    static const char *const names[3] = {"model (hyper-parameters, tensor directory, weights)",
                                         "--tensor-parallel", "lopad build (serve messages)"};
    if (lp_dist_agree(g, v, 3, names) == LOPAD_OK) return 0;
    fprintf(stderr, "lopad serve: %s\n", lopad_errmsg());
    return -1;
}

/* -------------------------------------------------------------- followers */

/* Run one request as rank 0 does: start it, then step while rank 0 says so. A rank
 * that cannot do what rank 0 does ends the job. */
static void follow_one(struct lp_dist *g, lopad_session *sess, const lopad_request *rq) {
    lopad_gen *gen = NULL;
    char why[768] = "";
    if (lopad_gen_start(sess, rq, &gen))
        snprintf(why, sizeof why, "the request did not start here (%s)",
                 lopad_session_errmsg(sess));
    while (srv_dist_next_step(g, false)) {
        if (*why) job_fault(g, "%s, but rank 0 goes on", why);
        if (lopad_gen_done(gen))
            job_fault(g, "the generation ended here, but rank 0 goes on: the ranks went "
                         "different ways");
        if (lopad_gen_step(gen, NULL))
            snprintf(why, sizeof why, "a step failed here (%s)", lopad_gen_errmsg(gen));
    }
    lopad_gen_free(gen);
}

int srv_dist_follow(struct lp_dist *g, const lopad_model *m,
                    const struct lopad_session_params *sp) {
    lopad_session *sess = NULL;
    if (lopad_session_new(m, sp, &sess)) job_fault(g, "no session: %s", lopad_errmsg());
    for (;;) {
        struct msg_head h;
        check(g, lp_dist_bcast_idle(g, &h, sizeof h, 0, "serve: the next request"),
              "waiting for a request");
        const char *bad = head_problem(&h);
        if (bad) job_fault(g, "rank 0 sent %s", bad);
        if (h.kind == MSG_QUIT) break;
        size_t n = payload_bytes(&h);
        char *payload = malloc(n);
        if (!payload) job_fault(g, "out of memory for a request of %zu bytes", n);
        check(g, lp_dist_bcast(g, payload, n, 0, "serve: the request"), "receiving a request");
        char why[768];
        lopad_request *rq = msg_request(&h, payload, why, sizeof why);
        free(payload);
        if (!rq) job_fault(g, "the request from rank 0 is not valid: %s", why);
        follow_one(g, sess, rq);
        lopad_request_free(rq);
    }
    lopad_session_free(sess);
    return 0;
}
