/* kv_rows.c - export / import of K/V rows as one flat buffer (kv_rows.h). */
#include "kv_rows.h"
#include "forward.h"

size_t lp_kv_rows_bytes(const lopad_ctx *c, int n) {
    return (size_t)c->model->hp.n_layer * 2 * (size_t)n * (size_t)c->kv_dim * sizeof(float);
}

enum lopad_status lp_kv_export(const lopad_ctx *c, int src, int n, void *buf) {
    if (!c || !buf) return lp_error(LOPAD_ERR_ARG, "lp_kv_export: context or buffer is NULL");
    if (n < 0 || src < 0 || src > c->last_n_fed - n)
        return lp_error(LOPAD_ERR_ARG,
                        "lp_kv_export: fed rows [%d, %d+%d) are outside the last forward's %d rows",
                        src, src, n, c->last_n_fed);
    const size_t row = (size_t)c->kv_dim * sizeof(float), blk = row * (size_t)n;
    char *out = buf;
    for (int l = 0; l < c->model->hp.n_layer; l++, out += 2 * blk) {
        c->be.ops->download(c->be.ctx, out, lp_ctx_kfed(c, l) + (int64_t)src * c->kv_dim, blk);
        c->be.ops->download(c->be.ctx, out + blk, lp_ctx_vfed(c, l) + (int64_t)src * c->kv_dim,
                            blk);
    }
    return LOPAD_OK;
}

enum lopad_status lp_kv_import(lopad_ctx *c, const void *buf, int n, int dst) {
    if (!c || !buf) return lp_error(LOPAD_ERR_ARG, "lp_kv_import: context or buffer is NULL");
    if (n < 0 || dst < 0 || dst > c->kv_len)
        return lp_error(LOPAD_ERR_ARG,
                        "lp_kv_import: destination row %d would leave a gap (cache holds %d rows)",
                        dst, c->kv_len);
    if (dst > c->n_ctx - n)
        return lp_error(LOPAD_ERR_ARG, "lp_kv_import: rows [%d, %d) exceed n_ctx %d", dst, dst + n,
                        c->n_ctx);
    const size_t row = (size_t)c->kv_dim * sizeof(float), blk = row * (size_t)n;
    const char *in = buf;
    for (int l = 0; l < c->model->hp.n_layer; l++, in += 2 * blk) {
        c->be.ops->upload(c->be.ctx, lp_ctx_kcache(c, l) + (int64_t)dst * c->kv_dim, in, blk);
        c->be.ops->upload(c->be.ctx, lp_ctx_vcache(c, l) + (int64_t)dst * c->kv_dim, in + blk, blk);
    }
    if (dst + n > c->kv_len) c->kv_len = dst + n;
    return LOPAD_OK;
}
