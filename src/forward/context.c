/*
 * context.c - lopad_ctx: creation (every buffer the forward pass will need,
 * sized from n_ctx and n_batch_max), the KV cache bookkeeping (commit,
 * truncate) and teardown.
 */
#include "forward.h"
#include "kv_rows.h"
#include "tensor_parallel.h"
#include "../dist/dist.h"

#include <string.h>
#include <unistd.h>
#include "../backend/cpu/cpu.h"
#include "../model/model_ref.h"
#ifdef LOPAD_CUDA
#include "../backend/cuda/cuda.h"
#endif

/* Rows of logits a device backend computes per output-head chunk. */
#define LP_LOGITS_CHUNK 256

static void ctx_release(struct lopad_ctx *c, void **p) {
    if (*p) c->be.ops->release(c->be.ctx, *p);
    *p = NULL;
}

void lopad_ctx_free(lopad_ctx *c) {
    if (!c) return;
    if (c->be.ops) {
        void **bufs[] = {(void **)&c->k_cache, (void **)&c->v_cache,   (void **)&c->k_fed,
                         (void **)&c->v_fed,   (void **)&c->x,         (void **)&c->xn,
                         (void **)&c->q,       (void **)&c->att,       (void **)&c->gate,
                         (void **)&c->up,      (void **)&c->logits_dev};
        for (unsigned i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            ctx_release(c, bufs[i]);
        lp_backend_free(&c->be);
    }
    lp_free(c->seq_start);
    lp_tp_free(c->tp);
    if (c->loaded) lp_model_release(c->loaded); /* may free the model: last */
    lp_free(c);
}

int lopad_ctx_n_threads(const lopad_ctx *c) {
    return c ? c->n_threads : 0;
}

/* bytes = a*b*c*4 with overflow checks */
static bool buf_bytes(uint64_t a, uint64_t b, uint64_t d, uint64_t *out) {
    uint64_t t;
    return lp_mul_ok(a, b, &t) && lp_mul_ok(t, d, &t) && lp_mul_ok(t, sizeof(float), out) &&
           *out <= (uint64_t)SIZE_MAX;
}

enum lopad_status lopad_ctx_new(const lopad_model *m, const struct lopad_ctx_params *p,
                                lopad_ctx **out) {
    if (!out) return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: out is NULL");
    *out = NULL;
    if (!m || !p) return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: model and params are required");
    if (p->n_ctx < 1 || p->n_batch_max < 1)
        return lp_error(LOPAD_ERR_ARG,
                        "lopad_ctx_new: n_ctx (%d) and n_batch_max (%d) must be at least 1",
                        p->n_ctx, p->n_batch_max);
    if (p->n_threads < 0 || p->n_threads > 1024)
        return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: n_threads %d out of range 0..1024",
                        p->n_threads);
    bool cuda = false;
    if (p->device && strcmp(p->device, "cpu") != 0) {
        if (strcmp(p->device, "cuda") != 0)
            return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: unknown device \"%s\" (cpu, cuda)",
                            p->device);
#ifndef LOPAD_CUDA
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "lopad_ctx_new: device \"cuda\": built without CUDA (-DLOPAD_CUDA=ON)");
#endif
        cuda = true;
    }
    int level;
    if (lp_cpu_kernels_level(p->kernels, &level)) return LOPAD_ERR_ARG; /* names the value */
    if (p->repack < LOPAD_REPACK_AUTO || p->repack > LOPAD_REPACK_ON)
        return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: repack %d (auto 0, off 1, on 2)", p->repack);
    if (p->tensor_parallel < 0 || p->tensor_parallel > 4096)
        return lp_error(LOPAD_ERR_ARG, "lopad_ctx_new: tensor_parallel %d out of range 0..4096",
                        p->tensor_parallel);

    struct lopad_ctx *c = lp_calloc(1, sizeof *c, "context");
    if (!c) return LOPAD_ERR_NOMEM;
    if (lp_model_retain(m)) { /* the context keeps its model alive */
        lp_free(c);
        return LOPAD_ERR_NOMEM;
    }
    c->model = c->loaded = m;
    enum lopad_status st;
    if (p->tensor_parallel > 1) { /* from here on the forward runs this rank's shard */
        if ((st = lp_tp_new(c, m, p->tensor_parallel))) {
            lopad_ctx_free(c);
            return st;
        }
        c->model = c->tp->shard;
    }
    const struct lopad_hparams *hp = &c->model->hp;
    c->n_ctx = p->n_ctx;
    c->n_batch_max = p->n_batch_max;
    c->kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim;

    struct lp_backend_limits lim = {
        .max_n_in = LP_MAX(LP_MAX((int64_t)hp->n_embd, (int64_t)hp->n_ff), qd),
        .head_dim = hp->head_dim,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
    };
    if (!cuda) {
        st = lp_backend_cpu_new(p->n_threads, &lim, &c->be);
        if (!st) lp_backend_cpu_set_level(&c->be, level); /* this context's own cap */
        if (!st && (st = lp_backend_cpu_bind_model(&c->be, c->model, p->repack)))
            lp_backend_free(&c->be);
        if (st) {
            lopad_ctx_free(c);
            return st;
        }
        c->n_threads = lp_backend_cpu_n_threads(&c->be);
    } else {
#ifdef LOPAD_CUDA
        if (lp_dist_world()) lp_cuda_use_local_device(); /* one GPU per rank of a machine */
        st = lp_backend_cuda_new(c->model, &lim, c->n_batch_max, &c->be);
#else
        st = LOPAD_ERR_UNSUPPORTED; /* unreachable: rejected above */
#endif
        if (st) {
            lopad_ctx_free(c);
            return st;
        }
#ifdef LOPAD_CUDA
        c->be_sync = lp_backend_cuda_sync;
#endif
        /* host threads stay available to the decoders (proposal draws) */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c->n_threads = p->n_threads > 0 ? p->n_threads : cores > 0 ? (int)cores : 1;
    }
    /* the gate buffer doubles as the fused head's scratch: a few more floats per row
     * where a small FFN (a tensor-parallel shard of a small model) leaves too few */
    c->gate_cols = hp->n_ff;
    if (c->be.ops->head_scores_scratch) {
        const size_t need = c->be.ops->head_scores_scratch(c->model->output.n_out, c->n_batch_max);
        const int64_t cols = (int64_t)((need + c->n_batch_max - 1) / c->n_batch_max);
        if (cols > c->gate_cols && cols <= c->gate_cols + 4096) c->gate_cols = cols;
    }
    /* a device backend computes logits into a staging buffer, downloaded per chunk */
    c->logits_rows = c->be.ops->host_memory ? 0 : LP_MIN(c->n_batch_max, LP_LOGITS_CHUNK);

    struct {
        float **dst;
        uint64_t a, b, d;
        const char *what;
    } bufs[] = {
        {&c->k_cache, hp->n_layer, c->n_ctx, c->kv_dim, "KV cache (K)"},
        {&c->v_cache, hp->n_layer, c->n_ctx, c->kv_dim, "KV cache (V)"},
        {&c->k_fed, hp->n_layer, c->n_batch_max, c->kv_dim, "fed K scratch"},
        {&c->v_fed, hp->n_layer, c->n_batch_max, c->kv_dim, "fed V scratch"},
        {&c->x, 1, c->n_batch_max, hp->n_embd, "residual activations"},
        {&c->xn, 1, c->n_batch_max, LP_MAX((int64_t)hp->n_embd, qd), "normed activations"},
        {&c->q, 1, c->n_batch_max, qd, "query activations"},
        {&c->att, 1, c->n_batch_max, qd, "attention output"},
        {&c->gate, 1, c->n_batch_max, c->gate_cols, "mlp gate activations"},
        {&c->up, 1, c->n_batch_max, hp->n_ff, "mlp up activations"},
        {&c->logits_dev, 1, c->logits_rows, hp->n_vocab, "logits staging"},
    };
    for (unsigned i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        uint64_t bytes;
        if (bufs[i].b == 0) continue; /* logits staging of a host-memory backend */
        if (!buf_bytes(bufs[i].a, bufs[i].b, bufs[i].d, &bytes)) {
            lopad_ctx_free(c);
            return lp_error(LOPAD_ERR_ARG,
                            "lopad_ctx_new: %s size overflows (n_ctx %d, n_batch_max %d)",
                            bufs[i].what, p->n_ctx, p->n_batch_max);
        }
        *bufs[i].dst = c->be.ops->alloc(c->be.ctx, (size_t)bytes, bufs[i].what);
        if (!*bufs[i].dst) {
            lopad_ctx_free(c);
            return LOPAD_ERR_NOMEM;
        }
    }
    c->seq_start = lp_malloc(sizeof(int32_t) * ((size_t)c->n_batch_max + 1), "batch seq starts");
    st = c->seq_start ? LOPAD_OK : LOPAD_ERR_NOMEM;
    if (!st && c->tp) st = lp_tp_alloc(c); /* its buffers, and NCCL on a device */
    if (st) {
        lopad_ctx_free(c);
        return st;
    }
    *out = c;
    return LOPAD_OK;
}

enum lopad_status lopad_kv_commit(lopad_ctx *c, int src, int n, int dst) {
    if (!c) return lp_error(LOPAD_ERR_ARG, "lopad_kv_commit: context is NULL");
    if (c->last_n_fed == 0)
        return lp_error(LOPAD_ERR_ARG, "lopad_kv_commit: no forward to commit rows from");
    if (n < 0 || src < 0 || src > c->last_n_fed - n)
        return lp_error(
            LOPAD_ERR_ARG,
            "lopad_kv_commit: fed rows [%d, %d+%d) are outside the last forward's %d rows", src,
            src, n, c->last_n_fed);
    if (dst < 0 || dst > c->kv_len)
        return lp_error(
            LOPAD_ERR_ARG,
            "lopad_kv_commit: destination row %d would leave a gap (cache holds %d rows)", dst,
            c->kv_len);
    if (dst > c->n_ctx - n)
        return lp_error(LOPAD_ERR_ARG, "lopad_kv_commit: rows [%d, %d) exceed n_ctx %d", dst,
                        dst + n, c->n_ctx);
    const size_t row = (size_t)c->kv_dim * sizeof(float);
    for (int l = 0; l < c->model->hp.n_layer; l++) {
        c->be.ops->copy(c->be.ctx, lp_ctx_kcache(c, l) + (int64_t)dst * c->kv_dim,
                        lp_ctx_kfed(c, l) + (int64_t)src * c->kv_dim, row * n);
        c->be.ops->copy(c->be.ctx, lp_ctx_vcache(c, l) + (int64_t)dst * c->kv_dim,
                        lp_ctx_vfed(c, l) + (int64_t)src * c->kv_dim, row * n);
    }
    if (dst + n > c->kv_len) c->kv_len = dst + n;
    return LOPAD_OK;
}

void lopad_kv_truncate(lopad_ctx *c, int n) {
    if (!c) return;
    if (n < 0) n = 0;
    if (n < c->kv_len) c->kv_len = n;
}

int lopad_kv_len(const lopad_ctx *c) {
    return c ? c->kv_len : 0;
}

/* the public names of the K/V row transfer (kv_rows.c) */
size_t lopad_kv_rows_bytes(const lopad_ctx *c, int n) {
    return c && n > 0 ? lp_kv_rows_bytes(c, n) : 0;
}

enum lopad_status lopad_kv_export(const lopad_ctx *c, int src, int n, void *buf) {
    if (!c || !buf || n < 0) return lp_error(LOPAD_ERR_ARG, "lopad_kv_export: bad arguments");
    return lp_kv_export(c, src, n, buf);
}

enum lopad_status lopad_kv_import(lopad_ctx *c, const void *buf, int n, int dst) {
    return lp_kv_import(c, buf, n, dst);
}
