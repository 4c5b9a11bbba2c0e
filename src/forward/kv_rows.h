/*
 * kv_rows.h - the K/V of chosen rows as one flat buffer (internal): what one rank
 * computed goes to the others in a single message (src/dist, LoPA's commit-winner).
 *
 * Layout of n rows: for each layer l, K rows [n][kv_dim] then V rows [n][kv_dim],
 * f32 as the cache holds them, so an import is bit for bit what lopad_kv_commit
 * would have copied on the exporting context.
 */
#ifndef LP_KV_ROWS_H
#define LP_KV_ROWS_H

#include <stddef.h>
#include "lopad.h"

/* Bytes of n exported rows of c. */
size_t lp_kv_rows_bytes(const lopad_ctx *c, int n);
/* Fed rows [src, src+n) of the last forward's scratch -> buf (lp_kv_rows_bytes(c, n)).
 * LOPAD_ERR_ARG naming the rows when they are not in that forward. */
enum lopad_status lp_kv_export(const lopad_ctx *c, int src, int n, void *buf);
/* buf (from lp_kv_export on a context of the same model) -> cache rows [dst, dst+n);
 * dst <= the cache's length (no gaps), as lopad_kv_commit. */
enum lopad_status lp_kv_import(lopad_ctx *c, const void *buf, int n, int dst);

#endif
