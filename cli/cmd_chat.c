/*
 * cmd_chat.c - `lopad chat`: interactive multi-turn chat with the model's chat
 * template. Reads one user message per line from stdin; the reply streams to
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
#include "core/common.h"
#include "decode/decode.h"
#include "model/chat.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lopad chat [-m MODEL] [options]\n"
               "Reads one message per line from stdin; /reset starts over, /exit quits.\n");
    fputs(lp_run_opts_help, f);
}

struct history {
    struct lp_chat_msg *msgs;
    char **owned;
    int n, cap;
};

static bool history_add(struct history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        struct lp_chat_msg *m = realloc(h->msgs, sizeof *m * cap);
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

static void history_clear(struct history *h) {
    for (int i = 0; i < h->n; i++)
        free(h->owned[i]);
    h->n = 0;
}

static int cmd_chat(int argc, char **argv) {
    const char *cmd = "chat";
    struct lp_run_opts o;
    lp_run_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        int r = lp_run_parse_opt(cmd, argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r == 0)
            return lp_cli_usage_error(cmd, "unknown option '%s' (see lopad chat --help)", argv[i]);
    }
    if (o.json || o.raw) return lp_cli_usage_error(cmd, "--json / --raw are for lopad run");
    struct lp_run_session s;
    int rc = lp_run_session_open(cmd, &o, &s);
    if (rc) return rc;
    if (!s.tok || !s.has_style) {
        lp_run_session_close(&s);
        return lp_cli_usage_error(cmd, "the model has no tokenizer with a chat template");
    }
    bool tty = isatty(0);
    struct history h = {0};
    struct lp_ids enc = {0}, reply = {0};
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
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
            history_clear(&h);
            continue;
        }
        if (!history_add(&h, "user", line)) {
            rc = lp_cli_fail(cmd, lp_error(LOPAD_ERR_NOMEM, "out of memory (history)"));
            break;
        }
        rc = lp_run_encode(cmd, &s, h.msgs, h.n, o.system, true, &enc);
        struct lp_decode_request rq;
        if (!rc) rc = lp_run_make_request(cmd, &o, &s, &rq);
        if (!rc) {
            rq.prompt = enc.v;
            rq.n_prompt = (int)enc.n;
            rc = lp_run_generate(cmd, &o, &s, &rq, &reply);
        }
        if (rc == 2) { /* e.g. the conversation outgrew the context: drop this turn */
            h.n--;
            free(h.owned[h.n]);
            rc = 0;
            continue;
        }
        if (rc) break;
        char *text = NULL;
        if (lp_tokenizer_decode(s.tok, reply.v, reply.n, true, &text, NULL) != LOPAD_OK ||
            !history_add(&h, "assistant", text)) {
            lp_free(text);
            rc = lp_cli_fail(cmd, LOPAD_ERR_NOMEM);
            break;
        }
        lp_free(text);
    }
    free(line);
    history_clear(&h);
    free(h.msgs);
    free(h.owned);
    lp_ids_free(&enc);
    lp_ids_free(&reply);
    lp_run_session_close(&s);
    return rc;
}

LP_CLI_COMMAND("chat", cmd_chat, "interactive multi-turn chat with a vanilla decoder")
