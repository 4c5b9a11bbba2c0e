/*
 * model_ref.h - a model's lifetime with its contexts (internal). A loaded model
 * starts with one reference, its caller's; each context takes one more
 * (lopad_ctx_new) and gives it back (lopad_ctx_free). lopad_model_free gives
 * back the caller's, and the model is destroyed with the last reference, so a
 * context stays usable after lopad_model_free. Thread-safe: contexts of one
 * model may be created and freed on many threads at once.
 */
#ifndef LP_MODEL_REF_H
#define LP_MODEL_REF_H

#include "model.h"

/* Take one more reference to m for a context (LOPAD_ERR_NOMEM when the
 * bookkeeping cannot grow). */
enum lopad_status lp_model_retain(const struct lopad_model *m);
/* Give back a context's reference; destroys m when it was the last. */
void lp_model_release(const struct lopad_model *m);

#endif
