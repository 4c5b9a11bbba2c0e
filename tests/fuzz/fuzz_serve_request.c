/*
 * fuzz_serve_request.c - libFuzzer harness for `lopad serve`'s request parser
 * (cli/serve_request.c): an untrusted HTTP body -> a checked request, then its
 * options applied to a library request (no model: the tokenizer has its own
 * harness). The first byte picks the endpoint (even: completions, odd: chat).
 *
 * Contract checked besides the sanitizers: a refused body has a 4xx/5xx status
 * and a message; an accepted one has its prompt (text, ids or messages with a
 * role and a content each), at most SRV_MAX_STOP non-empty stop strings, and
 * options that are rows of the option table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "../../cli/serve_request.c"

static void contract(bool ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "fuzz_serve_request: broken contract: %s\n", what);
    abort();
}

static void check_accepted(const struct srv_req *r) {
    if (r->kind == SRV_CHAT) {
        contract(r->msgs && r->n_msgs > 0, "chat without messages");
        for (int i = 0; i < r->n_msgs; i++)
            contract(r->msgs[i].role && r->msgs[i].content, "message without role or content");
    } else {
        contract((r->prompt && *r->prompt) || (r->ids && r->n_ids > 0), "no prompt");
    }
    contract(r->n_stop <= SRV_MAX_STOP, "too many stop strings");
    for (int i = 0; i < r->n_stop; i++)
        contract(r->stop[i] && *r->stop[i], "empty stop string");
    for (int i = 0; i < r->n_opts; i++)
        contract(table_option(r->opts[i]->string), "an option outside the table");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    enum srv_kind kind = data[0] & 1 ? SRV_CHAT : SRV_COMPLETIONS;
    struct srv_req r;
    struct srv_error err;
    int rc = srv_req_parse((const char *)data + 1, size - 1, kind, &r, &err);
    if (rc) {
        contract(err.http >= 400 && err.http < 600 && err.message[0], "an error without a "
                                                                      "status or message");
    } else {
        check_accepted(&r);
        lopad_request *defaults = NULL, *rq = NULL;
        int n_prompt = 0;
        if (lopad_request_new(&defaults) == LOPAD_OK) {
            if (srv_req_build(&r, defaults, NULL, &rq, &n_prompt, &err) == 0)
                lopad_request_free(rq);
            else
                contract(err.message[0] != 0, "a refused option without a message");
            lopad_request_free(defaults);
        }
    }
    srv_req_free(&r);
    return 0;
}
