/*
 * generate.c - lopad as a library: load a model, generate from a prompt with a
 * decoder chosen by name, and stream the text as it is decided.
 *
 *   cc generate.c $(pkg-config --cflags --libs lopad) -o generate
 *   ./generate MODEL PROMPT [DECODER]
 *
 * The prompt goes through the model's chat template when it has one. Without
 * DECODER the library's default runs (Fast-dLLM with the dual cache; D2F for a
 * model loaded with a D2F adapter).
 */
#include <stdio.h>
#include <lopad.h>

/* Print what each step added to the final text: it only grows, never mid-character. */
static int print_new_text(void *ud, const struct lopad_step *st) {
    (void)ud;
    fwrite(st->text + st->text_len - st->text_new, 1, st->text_new, stdout);
    fflush(stdout);
    return 0; /* nonzero would cancel */
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT [DECODER]\n", argv[0]);
        return 2;
    }
    lopad_model *model = NULL;
    lopad_session *session = NULL;
    lopad_request *request = NULL;
    struct lopad_result result = {0};
    int rc = 1;
    if (lopad_model_load(argv[1], NULL, &model) || lopad_session_new(model, NULL, &session) ||
        lopad_request_new(&request))
        goto fail;
    if (argc == 4 && lopad_request_set(request, "decoder", argv[3])) goto fail;
    if (lopad_request_prompt_user(request, argv[2], NULL)) goto fail;
    if (lopad_generate(session, request, print_new_text, NULL, &result)) goto fail;
    printf("\n");
    fprintf(stderr, "%d tokens in %d forwards (%s)\n", result.n_committed, result.nfe,
            result.finish_reason);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "generate: %s\n", lopad_errmsg());
    lopad_result_free(&result);
    lopad_request_free(request);
    lopad_session_free(session);
    lopad_model_free(model);
    return rc;
}
