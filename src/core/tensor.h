/*
 * tensor.h - a read-only view of one stored tensor (in a mapped file or an
 * owned buffer). Dimensions are in ggml order: ne[0] is the fastest-varying, so
 * a PyTorch weight of shape [out, in] has ne[0] = in, ne[1] = out.
 */
#ifndef LP_TENSOR_H
#define LP_TENSOR_H

#include <stdint.h>
#include <stddef.h>

#define LP_MAX_DIMS 4

struct lp_tensor {
    const char *name;  /* owned by the directory that produced the view */
    int type;          /* enum lopad_type */
    int n_dims;
    int64_t ne[LP_MAX_DIMS]; /* unused dims are 1 */
    const void *data;
    size_t nbytes;
};

static inline int64_t lp_tensor_nelements(const struct lp_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

#endif
