/*
 * cmd_serve.c - `lopad serve`: an OpenAI-compatible HTTP server on one model.
 *
 * The model is chosen here, at start (a request can never name a file); the
 * decoding flags of `lopad run` become the server's defaults, which a request may
 * override by option name. --parallel N slots share the model, a bounded queue
 * holds the rest. SIGINT / SIGTERM: stop accepting, give in-flight requests
 * --grace seconds, cancel what is left, exit 0. The parts: serve.h.
 *
 * Under mpirun (R ranks): rank 0 serves as above with one slot, run on the main
 * thread (MPI is called from there alone; a thread takes the signals), and sends
 * each request to ranks > 0, which run it with rank 0 without HTTP
 * (serve_dist.c); at shutdown it tells them to quit and every rank exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dist/dist.h"
#include "run.h"
#include "serve.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lopad serve [-m MODEL] [--host H] [--port P] [--parallel N] [options]\n"
            "An OpenAI-compatible server: GET /v1/models, POST /v1/completions and\n"
            "/v1/chat/completions (stream or not), GET /health, /metrics, and a page at /.\n"
            "  --host H             address to listen on (default 127.0.0.1; 0.0.0.0 = all)\n"
            "  --port P             port (default 8080; 0 = any free port, printed)\n"
            "  --parallel N         slots generating at once, one session each (default 1)\n"
            "  --threads N          worker threads per slot (default: the cores / N)\n"
            "  --queue N            requests waiting for a slot before 429 (default 64)\n"
            "  --api-key KEY        every path but /health needs 'Authorization: Bearer KEY'\n"
            "                       (or set LOPAD_API_KEY, which stays out of `ps`)\n"
            "  --timeout S          time limit of a request, seconds (default 300; 0 = none)\n"
            "  --max-body BYTES     request body limit (default 1048576)\n"
            "  --max-conns N        open connections (default 128)\n"
            "  --conn-timeout S     idle or slow connections are closed after S s (default 15)\n"
            "  --grace S            on SIGINT/SIGTERM, in-flight requests get S s (default 5)\n"
            "Under mpirun -np R: rank 0 serves, every rank runs each request (LoPA's\n"
            "branches and --tensor-parallel T spread over the ranks), one at a time.\n"
            "Decoding flags (those of lopad run) set the server's defaults; a request can\n"
            "override them by option name (\"decoder\": \"d2f\", \"lopa\": 4). docs/SERVER.md.\n");
    lp_run_print_help(f);
}

#ifdef LOPAD_HAVE_MHD
struct serve_args {
    struct lp_run_opts o;
    struct srv_config cfg;
};

static int parse_num(const char *cmd, int argc, char **argv, int *i, long lo, long hi, long *out) {
    if (*i + 1 >= argc) return lp_cli_usage_error(cmd, "%s needs a value", argv[*i]);
    const char *flag = argv[*i];
    return lp_cli_parse_int(cmd, flag, argv[++*i], lo, hi, out) ? 0 : 2;
}

/* one server flag at argv[*i]: 1 consumed, 0 not ours, 2 bad */
static int parse_server_flag(const char *cmd, int argc, char **argv, int *i, struct srv_config *c) {
    const char *a = argv[*i];
    long v = 0;
    int rc = -1;
    if (!strcmp(a, "--host") || !strcmp(a, "--api-key")) {
        if (*i + 1 >= argc) return lp_cli_usage_error(cmd, "%s needs a value", a);
        *(a[2] == 'h' ? &c->host : &c->api_key) = argv[++*i];
        return 1;
    }
    if (!strcmp(a, "--port") && !(rc = parse_num(cmd, argc, argv, i, 0, 65535, &v)))
        c->port = (int)v;
    if (!strcmp(a, "--parallel") && !(rc = parse_num(cmd, argc, argv, i, 1, 256, &v)))
        c->parallel = (int)v;
    if (!strcmp(a, "--queue") && !(rc = parse_num(cmd, argc, argv, i, 1, 100000, &v)))
        c->queue = (int)v;
    if (!strcmp(a, "--timeout") && !(rc = parse_num(cmd, argc, argv, i, 0, 86400 * 7, &v)))
        c->timeout_s = (double)v;
    if (!strcmp(a, "--max-body") && !(rc = parse_num(cmd, argc, argv, i, 64, 1L << 30, &v)))
        c->max_body = (size_t)v;
    if (!strcmp(a, "--max-conns") && !(rc = parse_num(cmd, argc, argv, i, 1, 10000, &v)))
        c->max_conns = (int)v;
    if (!strcmp(a, "--conn-timeout") && !(rc = parse_num(cmd, argc, argv, i, 1, 3600, &v)))
        c->conn_timeout_s = (int)v;
    if (!strcmp(a, "--grace") && !(rc = parse_num(cmd, argc, argv, i, 0, 3600, &v)))
        c->grace_s = (double)v;
    return rc < 0 ? 0 : rc ? 2 : 1;
}

static int parse_args(const char *cmd, int argc, char **argv, struct serve_args *a) {
    a->cfg = (struct srv_config){.host = "127.0.0.1",
                                 .port = 8080,
                                 .parallel = 1,
                                 .queue = 64,
                                 .timeout_s = 300,
                                 .max_body = 1 << 20,
                                 .max_conns = 128,
                                 .conn_timeout_s = 15,
                                 .grace_s = 5};
    for (int i = 1; i < argc; i++) {
        int r = parse_server_flag(cmd, argc, argv, &i, &a->cfg);
        if (r == 2) return 2;
        if (r == 1) continue;
        r = lp_run_parse_opt(cmd, argc, argv, &i, &a->o);
        if (r < 0) return 2;
        if (r == 0)
            return lp_cli_usage_error(cmd, "unknown option '%s' (see lopad serve --help)", argv[i]);
    }
    if (a->o.json || a->o.visual || a->o.chat || a->o.raw || a->o.system)
        return lp_cli_usage_error(cmd, "--json, --visual, --chat, --raw and --system are "
                                       "per request in the server (see docs/SERVER.md)");
    if (!a->cfg.api_key) a->cfg.api_key = getenv("LOPAD_API_KEY");
    if (a->cfg.api_key && !*a->cfg.api_key) a->cfg.api_key = NULL;
    return 0;
}

/* "models/demo/" -> "demo", "x/m.gguf" -> "m" */
static void model_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    size_t len = n - b;
    if (len > 5 && !strncmp(path + n - 5, ".gguf", 5)) len -= 5;
    snprintf(out, cap, "%.*s", (int)len, path + b);
}

/* the session parameters of lp_run_session_open (env knobs), for every slot */
/* the threads of a slot: by default the cores shared out, at least one */
static int slot_threads(const char *cmd, const struct serve_args *a) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (!a->o.threads) return cores / a->cfg.parallel > 0 ? (int)(cores / a->cfg.parallel) : 1;
    if ((long)a->o.threads * a->cfg.parallel > cores)
        fprintf(stderr, "lopad %s: note: %d slots x %d threads exceed the %ld cores\n", cmd,
                a->cfg.parallel, a->o.threads, cores);
    return a->o.threads;
}

/* SIGINT / SIGTERM are blocked in every thread and taken here */
static int wait_for_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    return sig;
}

/* How the server stops: the signal, then no new connections, the in-flight requests'
 * grace, the rest cancelled (the slots' threads joined; under mpirun the main
 * thread's slot returns). */
struct stopper {
    const char *cmd;
    struct srv *s;
    pthread_t thread;
};

static void *stop_on_signal(void *arg) {
    struct stopper *st = arg;
    int sig = wait_for_signal();
    fprintf(stderr, "lopad %s: %s: stopping (in-flight requests get %g s)\n", st->cmd,
            sig == SIGINT ? "SIGINT" : "SIGTERM", st->s->cfg.grace_s);
    srv_http_quiesce(st->s);
    srv_pool_stop(st->s->pool, st->s->cfg.grace_s);
    return NULL;
}

/* Until SIGINT / SIGTERM: alone, the slots' threads work and this one waits for the
 * signal; under mpirun this thread runs the slot (MPI is called from it alone), a
 * thread waits for the signal, and the other ranks are told to quit at the end. */
static void run_until_signal(struct stopper *st, struct lp_dist *g) {
    if (!g || pthread_create(&st->thread, NULL, stop_on_signal, st)) {
        if (g)
            srv_pool_stop(st->s->pool, 0); /* no thread: refuse, and quit below */
        else
            stop_on_signal(st);
    } else {
        srv_pool_work(st->s->pool);
        pthread_join(st->thread, NULL);
    }
    if (g) srv_dist_quit(g);
}

/* --parallel under mpirun: the ranks run one request at a time */
static void one_slot(const char *cmd, struct serve_args *a, struct lp_dist *g) {
    if (!g || a->cfg.parallel == 1) return;
    if (lp_dist_rank(g) == 0)
        fprintf(stderr,
                "lopad %s: note: under mpirun the ranks run one request at a time "
                "(--parallel %d taken as 1; --queue %d still holds the waiting ones)\n",
                cmd, a->cfg.parallel, a->cfg.queue);
    a->cfg.parallel = 1;
}

static int serve(const char *cmd, struct serve_args *a, struct lp_run_session *rs) {
    struct lp_dist *g = lp_dist_world();
    one_slot(cmd, a, g);
    struct srv s = {.cfg = a->cfg, .model = rs->model, .defaults = a->o.rq};
    s.created = (long)time(NULL);
    atomic_init(&s.next_id, 1);
    model_name(a->o.model, s.model_name, sizeof s.model_name);
    char *settings = NULL;
    if (lopad_request_settings(a->o.rq, rs->model, &settings)) {
        const char *msg = lopad_request_errmsg(a->o.rq);
        return lp_cli_usage_error(cmd, "%s", msg && *msg ? msg : lopad_errmsg());
    }
    lopad_free(settings);
    struct lopad_session_params sp;
    int threads = slot_threads(cmd, a);
    struct lp_run_opts so = a->o; /* the flags and environment knobs, with the slot's threads */
    so.threads = threads;
    if (lp_run_session_params(cmd, &so, &sp)) return 2;
    int R = lp_dist_size(g); /* the library's rule, said before listening, not per request */
    if (sp.tensor_parallel > 1 && R % sp.tensor_parallel)
        return lp_cli_usage_error(cmd,
                                  "--tensor-parallel %d needs a job of a multiple of %d ranks "
                                  "(mpirun -np %d ...); this one has %d",
                                  sp.tensor_parallel, sp.tensor_parallel, sp.tensor_parallel, R);
    if (g && srv_dist_agree(g, rs->model, &sp)) return 1;
    if (g && lp_dist_rank(g) > 0) return srv_dist_follow(g, rs->model, &sp);
    if (!(s.pool = srv_pool_new(rs->model, a->cfg.parallel, &sp, a->cfg.queue, g)))
        return lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    if (srv_http_start(&s)) {
        srv_pool_stop(s.pool, 0);
        srv_pool_free(s.pool);
        return 1; /* under mpirun: lp_cli_dist_exit ends the other ranks */
    }
    char ranks[48] = "";
    if (g) snprintf(ranks, sizeof ranks, " on each of %d ranks", lp_dist_size(g));
    fprintf(stderr,
            "lopad %s: model %s, %d slot%s x %d thread%s%s, listening on http://%s%s%s:%d/\n", cmd,
            s.model_name, a->cfg.parallel, a->cfg.parallel > 1 ? "s" : "", threads,
            threads > 1 ? "s" : "", ranks, strchr(s.cfg.host, ':') ? "[" : "", s.cfg.host,
            strchr(s.cfg.host, ':') ? "]" : "", s.port);
    fflush(stderr);
    struct stopper st = {.cmd = cmd, .s = &s};
    run_until_signal(&st, g);
    srv_http_stop(&s);
    srv_pool_free(s.pool);
    fprintf(stderr, "lopad %s: stopped\n", cmd);
    return 0;
}
#endif

static int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
#ifndef LOPAD_HAVE_MHD
    fprintf(stderr,
            "lopad %s: this lopad was built without libmicrohttpd; install it "
            "(libmicrohttpd-dev) and rebuild to get the server\n",
            cmd);
    return 1;
#else
    struct serve_args a;
    memset(&a, 0, sizeof a);
    if (lp_run_opts_init(&a.o)) return 1;
    int rc = parse_args(cmd, argc, argv, &a);
    /* before any thread exists: every thread inherits the blocked signals */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct lp_run_session rs = {0};
    if (!rc) rc = lp_run_session_open(cmd, &a.o, &rs);
    if (!rc) {
        lopad_session_free(rs.sess); /* the slots open their own */
        rs.sess = NULL;
        rc = serve(cmd, &a, &rs);
    }
    if (rs.model) lp_run_session_close(&rs);
    lp_run_opts_free(&a.o);
    return rc;
#endif
}

LP_CLI_COMMAND("serve", cmd_serve, "OpenAI-compatible HTTP server (streaming, slots, web page)")
