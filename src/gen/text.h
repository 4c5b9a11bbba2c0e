/*
 * text.h - a model's tokenizer and chat template, kept with the model (its
 * "text" cache entry, freed with it) so that one loaded model carries all a
 * generation needs.
 */
#ifndef LP_GEN_TEXT_H
#define LP_GEN_TEXT_H

#include "lopad.h"
#include "model/chat.h"
#include "model/tokenizer.h"

struct lp_model_text {
    struct lp_tokenizer *tok; /* NULL: the model runs on ids */
    struct lp_chat_style style;
    bool has_style;
};

/* Load the tokenizer of the model at m->path (a directory's tokenizer.json, or
 * a GGUF's tokenizer keys) and detect its chat style. A model without one is
 * fine; one that is present but broken is an error naming the file. */
enum lopad_status lp_model_text_load(lopad_model *m);
/* The model's text (an empty one when none was loaded). Never NULL. */
const struct lp_model_text *lp_model_text(const lopad_model *m);

/* The conversation through the chat style, encoded so that only the template's
 * own markers become control tokens (appends to *out). */
enum lopad_status lp_chat_encode(const struct lp_model_text *t, const struct lp_chat_msg *msgs,
                                 int n, const char *system, struct lp_ids *out);

#endif
