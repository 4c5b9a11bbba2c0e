/*
 * cmd_chat.c - `lopad chat`: interactive multi-turn chat with the model's chat
 * template (through the public API). Reads one user message per line from stdin;
 * the reply streams to
 * stdout as it becomes final. /reset forgets the conversation, /exit (or EOF)
 * quits. Decoding options as for `lopad run`; the model and the generation
 * helpers come from cmd_run.c (run.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "run.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lopad chat [-m MODEL] [options]\n"
               "Reads one message per line from stdin; /reset starts over, /exit quits.\n");
    lp_run_print_help(f);
}

struct history {
    struct lopad_chat_msg *msgs;
    char **owned;
    int n, cap;
};

static bool history_add(struct history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        struct lopad_chat_msg *m = realloc(h->msgs, sizeof *m * cap);
        if (!m) return false;
        h->msgs = m;
        char **o = realloc(h->owned, sizeof *o * cap);
        if (!o) return false;
        h->owned = o;
        h->cap = cap;
    }
    char *c = strdup(content);
    if (!c) return false;
    h->owned[h->n] = c;
    h->msgs[h->n].role = role;
    h->msgs[h->n].content = c;
    h->n++;
    return true;
}

static void history_drop_last(struct history *h) {
    h->n--;
    free(h->owned[h->n]);
}

static void history_clear(struct history *h, const char *system) {
    for (int i = 0; i < h->n; i++)
        free(h->owned[i]);
    h->n = 0;
    if (system) history_add(h, "system", system);
}

/* One turn: the conversation so far through the template, the reply streamed.
 * 0, 2 for a turn the model cannot take (the turn is dropped), or 1. */
static int chat_turn(const char *cmd, struct lp_run_opts *o, struct lp_run_session *s,
                     struct history *h) {
    enum lopad_status st = lopad_request_prompt_chat(o->rq, h->msgs, h->n);
    if (st) return lp_cli_fail(cmd, st);
    struct lopad_result res;
    int rc = lp_run_generate(cmd, o, s, o->rq, &res);
    if (rc) return rc;
    if (!history_add(h, "assistant", res.text)) rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
    lopad_result_free(&res);
    return rc;
}

static int cmd_chat(int argc, char **argv) {
    const char *cmd = "chat";
    struct lp_run_opts o;
    if (lp_run_opts_init(&o)) return 1;
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            lp_run_opts_free(&o);
            return 0;
        }
        int r = lp_run_parse_opt(cmd, argc, argv, &i, &o);
        if (r < 0) rc = 2;
        if (r == 0)
            rc = lp_cli_usage_error(cmd, "unknown option '%s' (see lopad chat --help)", argv[i]);
    }
    if (!rc && (o.json || o.raw)) rc = lp_cli_usage_error(cmd, "--json / --raw are for lopad run");
    struct lp_run_session s = {0};
    if (!rc) rc = lp_run_session_open(cmd, &o, &s);
    if (!rc && !lopad_model_has_chat_template(s.model))
        rc = lp_cli_usage_error(cmd, "the model has no tokenizer with a chat template");
    bool tty = isatty(0), failed = false;
    struct history h = {0};
    if (!rc) history_clear(&h, o.system);
    char *line = NULL;
    size_t cap = 0;
    while (!rc) {
        if (tty) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            history_clear(&h, o.system);
            failed = false;
            continue;
        }
        if (!history_add(&h, "user", line)) {
            rc = lp_cli_usage_error(cmd, "out of memory (history)") - 1;
            break;
        }
        int t = chat_turn(cmd, &o, &s, &h);
        if (t == 2) { /* e.g. the conversation outgrew the context: drop this turn */
            history_drop_last(&h);
            fprintf(stderr,
                    "lopad %s: this turn was not answered; /reset starts a new "
                    "conversation\n",
                    cmd);
            failed = true;
            continue;
        }
        failed = false;
        rc = t;
    }
    if (!rc && failed) rc = 1; /* the last turn went unanswered */
    free(line);
    history_clear(&h, NULL);
    free(h.msgs);
    free(h.owned);
    if (s.model) lp_run_session_close(&s);
    lp_run_opts_free(&o);
    return rc;
}

LP_CLI_COMMAND("chat", cmd_chat, "interactive multi-turn chat with the model's template")
