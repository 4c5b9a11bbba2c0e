/*
 * cuda_backend.c - the host side of the CUDA backend: device weights (uploaded
 * once per model as bf16, shared by every context of the model), memory ops,
 * id-array uploads, cuBLAS GEMMs and the kernel launches behind the lp_backend
 * table. Compiled as C against the CUDA runtime / cuBLAS C APIs; the kernels
 * live in the .cu files next to it (cuda_kernels.h).
 *
 * Weights: every matrix (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) is converted to
 * bf16 at upload (rows widened to f32 on the host with the type's to_float, then
 * rounded to bf16 on the device); norm weights and biases stay f32. The forward
 * hands kernels host pointers to weights (lp_weight.data, norm and bias arrays);
 * a pointer-keyed hash table maps them to their device copies.
 *
 * Errors: kernels cannot return a status through the table, so the first
 * failure (launch, copy, cuBLAS, unknown weight) is recorded and reported by
 * lp_backend_cuda_sync(), which the forward calls at its end.
 */
#ifdef LOPAD_CUDA

#include "cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/types.h"
#include "cuda_kernels.h"

/* ------------------------------------------------------ device weights */

struct wmap_slot {
    const void *host;    /* key: lp_weight.data or a norm / bias array */
    void *dev;           /* bf16 (n_out, n_in) matrix or f32 vector */
    int64_t n_out, n_in; /* the matrix's shape (vectors: 0, 0) */
};

/* One model's weights on one device, shared by its CUDA contexts and kept with
 * the model (lp_model_cache_get) until lopad_model_free: a chat that makes a
 * context per turn uploads them once. */
struct cuda_weights {
    int device;
    struct wmap_slot *slots; /* open addressing, cap a power of two */
    size_t cap, n;
    size_t bytes;
};

static size_t wmap_hash(const void *p, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)h & (cap - 1);
}

static struct wmap_slot *wmap_find(const struct cuda_weights *w, const void *host) {
    for (size_t i = wmap_hash(host, w->cap);; i = (i + 1) & (w->cap - 1)) {
        struct wmap_slot *s = &w->slots[i];
        if (s->host == host || !s->host) return s; /* never full: cap >= 2 * entries */
    }
}

static void *wmap_get(const struct cuda_weights *w, const void *host) {
    if (!host) return NULL;
    return wmap_find(w, host)->dev;
}

static void weights_free(struct cuda_weights *w) {
    if (!w) return;
    /* may run at lopad_model_free, with another device current */
    int cur = -1;
    const bool other = cudaGetDevice(&cur) == cudaSuccess && cur != w->device;
    if (other) cudaSetDevice(w->device);
    for (size_t i = 0; w->slots && i < w->cap; i++)
        if (w->slots[i].dev) cudaFree(w->slots[i].dev);
    lp_free(w->slots);
    lp_free(w);
    if (other) cudaSetDevice(cur);
}

static enum lopad_status cuda_fail(cudaError_t e, const char *what) {
    return lp_error(e == cudaErrorMemoryAllocation ? LOPAD_ERR_NOMEM : LOPAD_ERR_UNSUPPORTED,
                    "cuda: %s: %s", what, cudaGetErrorString(e));
}

/* Upload one matrix as bf16 (n_out, n_in), unless its data is already mapped.
 * stage_h / stage_d: host and device f32 buffers of stage_n floats. */
static enum lopad_status upload_matrix(struct cuda_weights *w, const struct lp_weight *lw,
                                       float *stage_h, float *stage_d, int64_t stage_n) {
    struct wmap_slot *s = wmap_find(w, lw->data);
    if (s->host && s->n_out == lw->n_out && s->n_in == lw->n_in)
        return LOPAD_OK; /* shared data (tied embeddings) */
    if (s->host)         /* only a crafted file gets here: one copy cannot serve both shapes */
        return lp_error(LOPAD_ERR_FORMAT,
                        "cuda: weight %s shares its data with a tensor of another shape",
                        lw->name ? lw->name : "?");
    const struct lp_type_traits *tr = lp_type_traits(lw->type);
    if (!tr || !tr->to_float)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "cuda: weight %s has type %d with no conversion",
                        lw->name ? lw->name : "?", lw->type);
    const size_t bytes = (size_t)lw->n_out * (size_t)lw->n_in * 2;
    void *dev = NULL;
    cudaError_t e = cudaMalloc(&dev, bytes);
    if (e != cudaSuccess) return cuda_fail(e, lw->name ? lw->name : "weight upload");
    s->host = lw->data;
    s->dev = dev;
    s->n_out = lw->n_out;
    s->n_in = lw->n_in;
    w->n++;
    w->bytes += bytes;
    const int64_t n_in = lw->n_in;
    if (lw->type == LOPAD_TYPE_BF16 && lw->row_bytes == (size_t)n_in * 2) {
        e = cudaMemcpy(dev, lw->data, bytes, cudaMemcpyHostToDevice);
        return e == cudaSuccess ? LOPAD_OK : cuda_fail(e, lw->name ? lw->name : "weight upload");
    }
    /* widen rows to f32 on the host, round to bf16 on the device, chunk by chunk */
    const int64_t rows_per = LP_MAX((int64_t)1, stage_n / n_in);
    for (int64_t r0 = 0; r0 < lw->n_out; r0 += rows_per) {
        const int64_t nr = LP_MIN(rows_per, lw->n_out - r0);
        for (int64_t r = 0; r < nr; r++)
            tr->to_float((const uint8_t *)lw->data + (size_t)(r0 + r) * lw->row_bytes,
                         stage_h + r * n_in, n_in);
        e = cudaMemcpy(stage_d, stage_h, (size_t)(nr * n_in) * sizeof(float),
                       cudaMemcpyHostToDevice);
        if (e == cudaSuccess)
            e = (cudaError_t)lp_cuda_f32_to_bf16(stage_d, (uint16_t *)dev + r0 * n_in, nr * n_in,
                                                 NULL);
        if (e == cudaSuccess) e = cudaStreamSynchronize(NULL); /* stage_d is reused next */
        if (e != cudaSuccess) return cuda_fail(e, lw->name ? lw->name : "weight upload");
    }
    return LOPAD_OK;
}

static enum lopad_status upload_vec(struct cuda_weights *w, const float *v, int64_t n,
                                    const char *what) {
    if (!v) return LOPAD_OK;
    struct wmap_slot *s = wmap_find(w, v);
    if (s->host) return LOPAD_OK;
    void *dev = NULL;
    cudaError_t e = cudaMalloc(&dev, (size_t)n * sizeof(float));
    if (e == cudaSuccess) {
        s->host = v;
        s->dev = dev;
        w->n++;
        w->bytes += (size_t)n * sizeof(float);
        e = cudaMemcpy(dev, v, (size_t)n * sizeof(float), cudaMemcpyHostToDevice);
    }
    return e == cudaSuccess ? LOPAD_OK : cuda_fail(e, what);
}

static enum lopad_status weights_upload(const struct lopad_model *m, struct cuda_weights *w) {
    const struct lopad_hparams *hp = &m->hp;
    const size_t n_entries = 3 + (size_t)hp->n_layer * 12;
    w->cap = 16;
    while (w->cap < 2 * n_entries)
        w->cap *= 2;
    w->slots = lp_calloc(w->cap, sizeof *w->slots, "cuda weight map");
    if (!w->slots) return LOPAD_ERR_NOMEM;

    const int64_t stage_n = (int64_t)1 << 22; /* 16 MiB of f32 per chunk */
    const int64_t max_in =
        LP_MAX((int64_t)hp->n_embd, LP_MAX((int64_t)hp->n_ff, (int64_t)hp->n_head * hp->head_dim));
    const int64_t sn = LP_MAX(stage_n, max_in);
    float *stage_h = lp_malloc((size_t)sn * sizeof(float), "cuda upload staging");
    if (!stage_h) return LOPAD_ERR_NOMEM;
    float *stage_d = NULL;
    cudaError_t e = cudaMalloc((void **)&stage_d, (size_t)sn * sizeof(float));
    if (e != cudaSuccess) {
        lp_free(stage_h);
        return cuda_fail(e, "upload staging buffer");
    }
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    enum lopad_status st = upload_matrix(w, &m->tok_embd, stage_h, stage_d, sn);
    if (!st) st = upload_matrix(w, &m->output, stage_h, stage_d, sn);
    if (!st) st = upload_vec(w, m->output_norm, hp->n_embd, "output_norm");
    for (int l = 0; !st && l < hp->n_layer; l++) {
        const struct lp_layer *L = &m->layers[l];
        const struct lp_weight *mats[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (unsigned i = 0; !st && i < sizeof mats / sizeof mats[0]; i++)
            st = upload_matrix(w, mats[i], stage_h, stage_d, sn);
        if (!st) st = upload_vec(w, L->attn_norm, hp->n_embd, "attn_norm");
        if (!st) st = upload_vec(w, L->ffn_norm, hp->n_embd, "ffn_norm");
        if (!st) st = upload_vec(w, L->bq, qd, "q bias");
        if (!st) st = upload_vec(w, L->bk, kvd, "k bias");
        if (!st) st = upload_vec(w, L->bv, kvd, "v bias");
    }
    cudaFree(stage_d);
    lp_free(stage_h);
    return st;
}

static void weights_free_cb(void *w) {
    weights_free(w);
}

struct upload_arg {
    int device;
};

static enum lopad_status weights_make(const struct lopad_model *m, void *arg, void **out) {
    struct cuda_weights *w = lp_calloc(1, sizeof *w, "cuda weights");
    if (!w) return LOPAD_ERR_NOMEM;
    w->device = ((struct upload_arg *)arg)->device;
    enum lopad_status st = weights_upload(m, w);
    if (st) {
        weights_free(w);
        return st;
    }
    *out = w;
    return LOPAD_OK;
}

/* The model's weights on this device (uploaded on first use, then shared). */
static enum lopad_status weights_acquire(const struct lopad_model *m, int device,
                                         struct cuda_weights **out) {
    char key[32];
    snprintf(key, sizeof key, "cuda-weights:%d", device);
    struct upload_arg a = {device};
    void *w = NULL;
    enum lopad_status st = lp_model_cache_get(m, key, weights_make, &a, weights_free_cb, &w);
    *out = w;
    return st;
}

/* ------------------------------------------------------------ context */

/* A device copy of a host id array; re-uploaded only when the contents change
 * (the forward hands the same positions to every layer's RoPE). The host side is
 * pinned, so the upload is truly asynchronous; `done` marks its completion, and
 * the host copy is not rewritten before it. */
struct idbuf {
    int32_t *dev, *host; /* host: pinned, the contents last uploaded */
    cudaEvent_t done;
    int n, cap;
    bool valid;
};

struct lp_cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    struct cuda_weights *w;
    struct lp_backend_limits lim;
    int n_rows_max;
    bool attn_tc; /* tensor-core attention (bf16 WMMA); LOPAD_CUDA_ATTN=f32 turns it off */
    uint16_t *xb; /* (n_rows_max, max_n_in) bf16 GEMM input */
    lp_cuda_row_scores *scores; /* (n_rows_max) fused-head results before download */
    struct idbuf ids;           /* get_rows ids */
    struct idbuf pos;           /* RoPE positions */
    struct idbuf tok;           /* attention (n_tokens, 3): seq range, block id */
    int32_t *tok_build;         /* host (n_rows_max, 3) */
    enum lopad_status err;
    char errmsg[256];
};

#define BLAS_WS_BYTES ((size_t)32 << 20)

/* Record the first failure; reported by lp_backend_cuda_sync. */
static void cu_record(struct lp_cuda *cu, enum lopad_status st, const char *fmt, ...) {
    if (cu->err) return;
    cu->err = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cu->errmsg, sizeof cu->errmsg, fmt, ap);
    va_end(ap);
}

static bool cu_check(struct lp_cuda *cu, int e, const char *what) {
    if (e == cudaSuccess) return true;
    cu_record(cu, e == cudaErrorMemoryAllocation ? LOPAD_ERR_NOMEM : LOPAD_ERR_UNSUPPORTED,
              "cuda: %s: %s", what, cudaGetErrorString((cudaError_t)e));
    return false;
}

static bool idbuf_init(struct idbuf *b, int cap, const char *what) {
    b->cap = cap;
    cudaError_t e = cudaMallocHost((void **)&b->host, (size_t)cap * sizeof(int32_t));
    if (e != cudaSuccess) {
        b->host = NULL;
    } else if ((e = cudaMalloc((void **)&b->dev, (size_t)cap * sizeof(int32_t))) != cudaSuccess) {
        b->dev = NULL;
    } else if ((e = cudaEventCreateWithFlags(&b->done, cudaEventDisableTiming)) != cudaSuccess) {
        b->done = NULL;
    }
    if (e != cudaSuccess) cuda_fail(e, what);
    return e == cudaSuccess;
}

static void idbuf_free(struct idbuf *b) {
    if (b->done) cudaEventDestroy(b->done);
    if (b->dev) cudaFree(b->dev);
    if (b->host) cudaFreeHost(b->host);
}

static const int32_t *idbuf_put(struct lp_cuda *cu, struct idbuf *b, const int32_t *src, int n,
                                const char *what) {
    if (n > b->cap) {
        cu_record(cu, LOPAD_ERR_ARG, "cuda: %s: %d ids exceed the %d sized at creation", what, n,
                  b->cap);
        return NULL;
    }
    if (b->valid && b->n == n && !memcmp(b->host, src, (size_t)n * sizeof(int32_t))) return b->dev;
    /* the previous upload from b->host must have left it (normally long done: a
     * forward ends with a sync, and each array changes at most once per forward) */
    cudaError_t e = cudaEventSynchronize(b->done);
    if (e == cudaSuccess) {
        memcpy(b->host, src, (size_t)n * sizeof(int32_t));
        e = cudaMemcpyAsync(b->dev, b->host, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice,
                            cu->stream);
    }
    if (e == cudaSuccess) e = cudaEventRecord(b->done, cu->stream);
    b->valid = e == cudaSuccess;
    b->n = n;
    return cu_check(cu, e, what) ? b->dev : NULL;
}

/* ------------------------------------------------------------- memory */

static void *cu_alloc(void *ctx, size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        lp_error(LOPAD_ERR_NOMEM, "cuda: cannot allocate %zu bytes for %s: %s", bytes, what,
                 cudaGetErrorString(e));
        return NULL;
    }
    e = cudaMemset(p, 0, bytes);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        cudaFree(p);
        lp_error(LOPAD_ERR_UNSUPPORTED, "cuda: clearing %s: %s", what, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_release(void *ctx, void *buf) {
    struct lp_cuda *cu = ctx;
    cudaStreamSynchronize(cu->stream);
    cudaFree(buf);
}

static void cu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    struct lp_cuda *cu = ctx;
    if (!bytes) return;
    cu_check(cu, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream),
             "device copy");
}

static void cu_upload(void *ctx, void *dst, const void *host, size_t bytes) {
    struct lp_cuda *cu = ctx;
    if (!bytes) return;
    cu_check(cu, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, cu->stream), "upload");
}

static void cu_download(void *ctx, void *host, const void *src, size_t bytes) {
    struct lp_cuda *cu = ctx;
    if (!bytes) return;
    if (cu_check(cu, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, cu->stream),
                 "download"))
        cu_check(cu, cudaStreamSynchronize(cu->stream), "download (sync)");
}

/* ------------------------------------------------------------ kernels */

static const void *cu_weight(struct lp_cuda *cu, const void *host, const char *name) {
    const void *d = wmap_get(cu->w, host);
    if (!d)
        cu_record(cu, LOPAD_ERR_ARG, "cuda: %s is not one of the model's uploaded weights",
                  name ? name : "a weight");
    return d;
}

static void cu_get_rows(void *ctx, const struct lp_weight *w, const int32_t *ids, int n,
                        float *out) {
    struct lp_cuda *cu = ctx;
    const void *wd = cu_weight(cu, w->data, w->name);
    const int32_t *idd = idbuf_put(cu, &cu->ids, ids, n, "get_rows ids");
    if (!wd || !idd) return;
    cu_check(cu, lp_cuda_get_rows(wd, w->n_in, idd, n, out, cu->stream), "get_rows");
}

static void cu_matmul(void *ctx, const struct lp_weight *w, const float *bias, const float *x,
                      int n_rows, float *y) {
    struct lp_cuda *cu = ctx;
    if (n_rows <= 0) return;
    const void *wd = cu_weight(cu, w->data, w->name);
    const float *bd = bias ? cu_weight(cu, bias, "bias") : NULL;
    if (!wd || (bias && !bd)) return;
    if (n_rows > cu->n_rows_max || w->n_in > cu->lim.max_n_in || w->n_in > INT32_MAX ||
        w->n_out > INT32_MAX) {
        cu_record(cu, LOPAD_ERR_ARG, "cuda: matmul %s: %d rows x %lld exceed the scratch",
                  w->name ? w->name : "?", n_rows, (long long)w->n_in);
        return;
    }
    const int k = (int)w->n_in, m = (int)w->n_out;
    if (!cu_check(cu, lp_cuda_f32_to_bf16(x, cu->xb, (int64_t)n_rows * k, cu->stream),
                  "matmul input to bf16"))
        return;
    /* column-major view: y^T (m, n) = W^T... i.e. C = A^T B with A = W as (k, m), B = x as (k, n)
     */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t bs = cublasGemmEx(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n_rows, k, &one, wd,
                                     CUDA_R_16BF, k, cu->xb, CUDA_R_16BF, k, &zero, y, CUDA_R_32F,
                                     m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cu_record(cu, LOPAD_ERR_UNSUPPORTED, "cuda: cublasGemmEx for %s (%d x %d x %d): status %d",
                  w->name ? w->name : "?", m, n_rows, k, (int)bs);
        return;
    }
    if (bd) cu_check(cu, lp_cuda_add_bias(y, bd, n_rows, m, cu->stream), "bias add");
}

/* the kernels write struct lp_row_scores as lp_cuda_row_scores: same layout */
_Static_assert(sizeof(struct lp_row_scores) == sizeof(lp_cuda_row_scores) &&
                   offsetof(struct lp_row_scores, argmax) == offsetof(lp_cuda_row_scores, argmax) &&
                   offsetof(struct lp_row_scores, pmax) == offsetof(lp_cuda_row_scores, pmax) &&
                   offsetof(struct lp_row_scores, margin) == offsetof(lp_cuda_row_scores, margin) &&
                   offsetof(struct lp_row_scores, negent) == offsetof(lp_cuda_row_scores, negent) &&
                   offsetof(struct lp_row_scores, logsumexp) ==
                       offsetof(lp_cuda_row_scores, logsumexp),
               "lp_cuda_row_scores must match struct lp_row_scores");

/* Any scratch works (the vocabulary is walked in chunks that fit); this much
 * keeps the chunks from getting silly. */
static size_t cu_head_scores_scratch(int64_t n_vocab, int n_rows) {
    return (size_t)n_rows * (64 + 16);
}

/* The fused output head: logits of vocabulary chunks (as big as the device
 * scratch allows) into scratch, folded into per-row scores on the device; only
 * the scores go to the host. */
static void cu_head_scores(void *ctx, const struct lp_weight *w, const float *x, int n_rows,
                           float *scratch, size_t scratch_floats, struct lp_row_scores *out) {
    struct lp_cuda *cu = ctx;
    if (n_rows <= 0) return;
    const uint16_t *wd = cu_weight(cu, w->data, w->name);
    if (!wd) return;
    const size_t state = (size_t)n_rows * 64; /* LP_CUDA_SCORES_STATE per row, 256 B aligned */
    if (n_rows > cu->n_rows_max || w->n_in > cu->lim.max_n_in || w->n_out > INT32_MAX ||
        scratch_floats < state + (size_t)n_rows) {
        cu_record(cu, LOPAD_ERR_ARG, "cuda: head scores %s: %d rows do not fit the scratch",
                  w->name ? w->name : "?", n_rows);
        return;
    }
    const int k = (int)w->n_in, n_vocab = (int)w->n_out;
    int64_t vc = (int64_t)((scratch_floats - state) / (size_t)n_rows);
    if (vc > n_vocab) vc = n_vocab;
    if (vc > 64) vc &= ~(int64_t)63; /* aligned chunk starts */
    float *z = scratch + state;
    if (!cu_check(cu, lp_cuda_f32_to_bf16(x, cu->xb, (int64_t)n_rows * k, cu->stream),
                  "head input to bf16"))
        return;
    const float one = 1.0f, zero = 0.0f;
    for (int v0 = 0; v0 < n_vocab; v0 += (int)vc) {
        const int nv = (int)LP_MIN(vc, (int64_t)(n_vocab - v0));
        /* z (n_rows, nv) = x W[v0 : v0 + nv]^T */
        cublasStatus_t bs =
            cublasGemmEx(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, nv, n_rows, k, &one,
                         wd + (size_t)v0 * k, CUDA_R_16BF, k, cu->xb, CUDA_R_16BF, k, &zero, z,
                         CUDA_R_32F, nv, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            cu_record(cu, LOPAD_ERR_UNSUPPORTED, "cuda: cublasGemmEx for head chunk: status %d",
                      (int)bs);
            return;
        }
        if (!cu_check(cu, lp_cuda_scores_chunk(z, n_rows, nv, v0, v0 == 0, scratch, cu->stream),
                      "head scores chunk"))
            return;
    }
    if (cu_check(cu, lp_cuda_scores_final(scratch, n_rows, cu->scores, cu->stream), "head scores"))
        cu_download(cu, out, cu->scores, sizeof(lp_cuda_row_scores) * (size_t)n_rows);
}

static void cu_rmsnorm(void *ctx, const float *x, const float *weight, float eps, int n_rows, int n,
                       float *y) {
    struct lp_cuda *cu = ctx;
    const float *wd = cu_weight(cu, weight, "norm weight");
    if (!wd) return;
    cu_check(cu, lp_cuda_rmsnorm(x, wd, eps, n_rows, n, y, cu->stream), "rmsnorm");
}

static void cu_rope(void *ctx, float *x, int n_rows, int n_head, int head_dim, const int32_t *pos,
                    float theta, enum lopad_rope mode) {
    struct lp_cuda *cu = ctx;
    const int32_t *pd = idbuf_put(cu, &cu->pos, pos, n_rows, "rope positions");
    if (!pd) return;
    cu_check(
        cu,
        lp_cuda_rope(x, n_rows, n_head, head_dim, pd, theta, mode == LOPAD_ROPE_NEOX, cu->stream),
        "rope");
}

static void cu_attention(void *ctx, const struct lp_attn_desc *a) {
    struct lp_cuda *cu = ctx;
    if (a->n_tokens > cu->n_rows_max) {
        cu_record(cu, LOPAD_ERR_ARG, "cuda: attention over %d queries exceeds %d", a->n_tokens,
                  cu->n_rows_max);
        return;
    }
    int32_t *t = cu->tok_build;
    for (int s = 0; s < a->n_seq; s++)
        for (int i = a->seq_start[s]; i < a->seq_start[s + 1]; i++) {
            t[3 * i] = a->seq_start[s];
            t[3 * i + 1] = a->seq_start[s + 1];
            t[3 * i + 2] = a->block ? a->block[i] : 0;
        }
    const int32_t *td = idbuf_put(cu, &cu->tok, t, 3 * a->n_tokens, "attention token info");
    if (!td) return;
    struct lp_cuda_attn_args args = {
        .q = a->q,
        .k = a->k,
        .v = a->v,
        .kc = a->k_cache,
        .vc = a->v_cache,
        .tok = td,
        .out = a->out,
        .n_tokens = a->n_tokens,
        .n_head = a->n_head,
        .n_head_kv = a->n_head_kv,
        .head_dim = a->head_dim,
        .n_cache = a->n_cache,
        .skip_begin = a->skip_begin,
        .skip_end = a->skip_end,
        .scale = a->scale,
        .tensor_cores = cu->attn_tc,
    };
    cu_check(cu, lp_cuda_attention(&args, cu->stream), "attention");
}

static void cu_silu_mul(void *ctx, float *gate, const float *up, int64_t n) {
    struct lp_cuda *cu = ctx;
    cu_check(cu, lp_cuda_silu_mul(gate, up, n, cu->stream), "silu_mul");
}

static void cu_add(void *ctx, float *y, const float *x, int64_t n) {
    struct lp_cuda *cu = ctx;
    cu_check(cu, lp_cuda_add(y, x, n, cu->stream), "add");
}

/* ---------------------------------------------------------- lifecycle */

static void cu_free(void *ctx) {
    struct lp_cuda *cu = ctx;
    if (!cu) return;
    if (cu->stream) cudaStreamSynchronize(cu->stream);
    if (cu->blas) cublasDestroy(cu->blas);
    if (cu->blas_ws) cudaFree(cu->blas_ws);
    if (cu->xb) cudaFree(cu->xb);
    if (cu->scores) cudaFree(cu->scores);
    idbuf_free(&cu->ids);
    idbuf_free(&cu->pos);
    idbuf_free(&cu->tok);
    lp_free(cu->tok_build);
    if (cu->stream) cudaStreamDestroy(cu->stream);
    lp_free(cu);
}

static const struct lp_backend_ops cuda_ops = {
    .name = "cuda",
    .host_memory = false,
    .free = cu_free,
    .alloc = cu_alloc,
    .release = cu_release,
    .copy = cu_copy,
    .upload = cu_upload,
    .download = cu_download,
    .get_rows = cu_get_rows,
    .matmul = cu_matmul,
    .rmsnorm = cu_rmsnorm,
    .rope = cu_rope,
    .attention = cu_attention,
    .head_scores = cu_head_scores,
    .head_scores_scratch = cu_head_scores_scratch,
    .silu_mul = cu_silu_mul,
    .add = cu_add,
};

int lp_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear: no driver / no device is not sticky */
        return 0;
    }
    return n;
}

void lp_cuda_use_local_device(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "PMIX_LOCAL_RANK", "SLURM_LOCALID"};
    const int n = lp_cuda_device_count();
    for (unsigned i = 0; i < sizeof vars / sizeof vars[0] && n > 0; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            cudaSetDevice(atoi(v) % n);
            return;
        }
    }
}

enum lopad_status lp_backend_cuda_new(const struct lopad_model *m,
                                      const struct lp_backend_limits *lim, int n_rows_max,
                                      struct lp_backend *out) {
    if (lim->max_n_in <= 0 || lim->head_dim <= 0 || lim->n_head <= 0 || lim->n_head_kv <= 0 ||
        lim->n_head % lim->n_head_kv != 0 || n_rows_max <= 0)
        return lp_error(LOPAD_ERR_ARG,
                        "cuda backend: bad limits (n_in %lld, head_dim %d, heads %d/%d, rows %d)",
                        (long long)lim->max_n_in, lim->head_dim, lim->n_head, lim->n_head_kv,
                        n_rows_max);
    if (lim->head_dim > LP_CUDA_ATTN_MAX_D || lim->head_dim % 2)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "cuda backend: head_dim %d (the attention kernel handles even sizes up "
                        "to %d)",
                        lim->head_dim, LP_CUDA_ATTN_MAX_D);
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        return lp_error(LOPAD_ERR_UNSUPPORTED, "cuda backend: no CUDA device (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    }
    struct lp_cuda *cu = lp_calloc(1, sizeof *cu, "cuda backend");
    if (!cu) return LOPAD_ERR_NOMEM;
    cu->lim = *lim;
    cu->n_rows_max = n_rows_max;
    const char *attn = getenv("LOPAD_CUDA_ATTN");
    cu->attn_tc = !(attn && !strcmp(attn, "f32"));
    enum lopad_status st = LOPAD_OK;
    if ((e = cudaGetDevice(&cu->device)) != cudaSuccess) {
        st = cuda_fail(e, "cudaGetDevice");
        goto fail;
    }
    if ((e = cudaStreamCreate(&cu->stream)) != cudaSuccess) {
        cu->stream = NULL;
        st = cuda_fail(e, "stream");
        goto fail;
    }
    cublasStatus_t bs = cublasCreate(&cu->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cu->blas = NULL;
        st = lp_error(LOPAD_ERR_UNSUPPORTED, "cuda backend: cublasCreate: status %d", (int)bs);
        goto fail;
    }
    /* a fixed workspace: cuBLAS allocates nothing per call */
    if ((e = cudaMalloc(&cu->blas_ws, BLAS_WS_BYTES)) != cudaSuccess) {
        cu->blas_ws = NULL;
        st = cuda_fail(e, "cuBLAS workspace");
        goto fail;
    }
    if (cublasSetStream(cu->blas, cu->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(cu->blas, cu->blas_ws, BLAS_WS_BYTES) != CUBLAS_STATUS_SUCCESS) {
        st = lp_error(LOPAD_ERR_UNSUPPORTED, "cuda backend: cuBLAS stream / workspace setup");
        goto fail;
    }
    uint64_t xb_bytes;
    if (!lp_mul_ok((uint64_t)n_rows_max, (uint64_t)lim->max_n_in, &xb_bytes) ||
        !lp_mul_ok(xb_bytes, 2, &xb_bytes) || xb_bytes > SIZE_MAX) {
        st = lp_error(LOPAD_ERR_ARG, "cuda backend: GEMM input scratch size overflows");
        goto fail;
    }
    if ((e = cudaMalloc((void **)&cu->xb, (size_t)xb_bytes)) != cudaSuccess) {
        cu->xb = NULL;
        st = cuda_fail(e, "GEMM input scratch");
        goto fail;
    }
    if ((e = cudaMalloc((void **)&cu->scores, sizeof(lp_cuda_row_scores) * (size_t)n_rows_max)) !=
        cudaSuccess) {
        cu->scores = NULL;
        st = cuda_fail(e, "head scores");
        goto fail;
    }
    cu->tok_build = lp_malloc((size_t)n_rows_max * 3 * sizeof(int32_t), "cuda token info");
    if (!cu->tok_build || !idbuf_init(&cu->ids, n_rows_max, "cuda ids") ||
        !idbuf_init(&cu->pos, n_rows_max, "cuda positions") ||
        !idbuf_init(&cu->tok, 3 * n_rows_max, "cuda token info")) {
        st = LOPAD_ERR_NOMEM;
        goto fail;
    }
    if ((st = weights_acquire(m, cu->device, &cu->w))) goto fail;
    out->ops = &cuda_ops;
    out->ctx = cu;
    return LOPAD_OK;
fail:
    cu_free(cu);
    return st;
}

enum lopad_status lp_backend_cuda_sync(struct lp_backend *b) {
    struct lp_cuda *cu = b->ctx;
    cu_check(cu, cudaStreamSynchronize(cu->stream), "stream sync");
    if (!cu->err) return LOPAD_OK;
    enum lopad_status st = lp_error(cu->err, "%s", cu->errmsg);
    cu->err = LOPAD_OK;
    cu->errmsg[0] = 0;
    return st;
}

void *lp_backend_cuda_stream(const struct lp_backend *b) {
    if (!b || b->ops != &cuda_ops || !b->ctx) return NULL;
    const struct lp_cuda *cu = b->ctx;
    return cu->stream;
}

size_t lp_backend_cuda_weight_bytes(const struct lp_backend *b) {
    const struct lp_cuda *cu = b->ctx;
    return cu && cu->w ? cu->w->bytes : 0;
}

/* ------------------------------------------------------ ceilings */

/* Time `reps` runs of the enqueued work fn(arg) with events; seconds per run (best of 3). */
static double time_best(cudaStream_t s, void (*fn)(void *), void *arg, int reps) {
    cudaEvent_t a, b;
    if (cudaEventCreate(&a) != cudaSuccess) return -1;
    if (cudaEventCreate(&b) != cudaSuccess) {
        cudaEventDestroy(a);
        return -1;
    }
    fn(arg); /* warm-up */
    double best = 1e30;
    for (int t = 0; t < 3; t++) {
        cudaEventRecord(a, s);
        for (int r = 0; r < reps; r++)
            fn(arg);
        cudaEventRecord(b, s);
        float ms = 0;
        if (cudaEventSynchronize(b) != cudaSuccess ||
            cudaEventElapsedTime(&ms, a, b) != cudaSuccess)
            ms = -1;
        if (ms >= 0 && ms / 1e3 / reps < best) best = ms / 1e3 / reps;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return best < 1e30 ? best : -1;
}

struct peak_job {
    cudaStream_t s;
    cublasHandle_t blas;
    void *a, *b, *c;
    size_t bytes;
    int n;
    bool failed;
};

static void peak_copy(void *arg) {
    struct peak_job *j = arg;
    if (cudaMemcpyAsync(j->b, j->a, j->bytes, cudaMemcpyDeviceToDevice, j->s) != cudaSuccess)
        j->failed = true;
}

static void peak_gemm(void *arg) { /* the forward's GEMM configuration: bf16 x bf16 -> f32 */
    struct peak_job *j = arg;
    const float one = 1.0f, zero = 0.0f;
    if (cublasGemmEx(j->blas, CUBLAS_OP_T, CUBLAS_OP_N, j->n, j->n, j->n, &one, j->a, CUDA_R_16BF,
                     j->n, j->b, CUDA_R_16BF, j->n, &zero, j->c, CUDA_R_32F, j->n,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
        j->failed = true;
}

enum lopad_status lp_cuda_peak(double *copy_gbs, double *gemm_tflops) {
    *copy_gbs = *gemm_tflops = 0;
    if (lp_cuda_device_count() == 0)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "cuda peak: no CUDA device");
    struct peak_job j = {.bytes = (size_t)1 << 30, .n = 8192};
    enum lopad_status st = LOPAD_OK;
    cudaError_t e = cudaStreamCreate(&j.s);
    if (e != cudaSuccess) return cuda_fail(e, "peak stream");
    if (cublasCreate(&j.blas) != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(j.s);
        return lp_error(LOPAD_ERR_UNSUPPORTED, "cuda peak: cublasCreate failed");
    }
    cublasSetStream(j.blas, j.s);
    const size_t gemm_out = (size_t)j.n * j.n * sizeof(float);
    if ((e = cudaMalloc(&j.a, j.bytes)) != cudaSuccess ||
        (e = cudaMalloc(&j.b, j.bytes)) != cudaSuccess ||
        (e = cudaMalloc(&j.c, gemm_out)) != cudaSuccess) {
        st = cuda_fail(e, "peak buffers");
        goto done;
    }
    cudaMemset(j.a, 0, j.bytes);
    cudaMemset(j.b, 0, j.bytes);
    /* a copy reads and writes every byte */
    double t = time_best(j.s, peak_copy, &j, 10);
    if (t > 0) *copy_gbs = 2.0 * (double)j.bytes / t / 1e9;
    t = time_best(j.s, peak_gemm, &j, 10);
    if (t > 0) *gemm_tflops = 2.0 * (double)j.n * j.n * j.n / t / 1e12;
    if (j.failed || *copy_gbs <= 0 || *gemm_tflops <= 0)
        st = lp_error(LOPAD_ERR_UNSUPPORTED, "cuda peak: a timed copy or GEMM failed");
done:
    if (j.a) cudaFree(j.a);
    if (j.b) cudaFree(j.b);
    if (j.c) cudaFree(j.c);
    cublasDestroy(j.blas);
    cudaStreamDestroy(j.s);
    return st;
}

#else
/* built without -DLOPAD_CUDA=ON: only what callers may use without testing LOPAD_CUDA */
#include "cuda.h"
void *lp_backend_cuda_stream(const struct lp_backend *b) {
    (void)b;
    return NULL;
}
#endif
