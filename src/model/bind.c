/*
 * bind.c - turn a tensor directory (canonical GGUF names) into a lopad_model:
 * every shape is checked against the hyper-parameters before anything points
 * into the file. Matrices stay views in their stored type; norm weights and
 * biases (a few KB each) are copied to f32 so the forward never converts them.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "model.h"
#include "../core/types.h"

const struct lp_tensor *lp_dir_find(const struct lp_tensor_dir *d, const char *name) {
    for (int i = 0; i < d->n; i++)
        if (d->t[i].name && !strcmp(d->t[i].name, name)) return &d->t[i];
    return NULL;
}

/* The directory sorted by name: a file may list far more tensors than the
 * model binds (up to what its header holds), so each of the ~12 per layer
 * lookups must not scan them all. Ties keep directory order, as lp_dir_find. */
struct name_index {
    const struct lp_tensor **t;
    int n;
};

static int cmp_by_name(const void *a, const void *b) {
    const struct lp_tensor *x = *(const struct lp_tensor *const *)a;
    const struct lp_tensor *y = *(const struct lp_tensor *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x > y) - (x < y);
}

static enum lopad_status index_build(const struct lp_tensor_dir *d, struct name_index *ix) {
    ix->n = 0;
    ix->t = lp_malloc(sizeof *ix->t * (size_t)(d->n > 0 ? d->n : 1), "tensor name index");
    if (!ix->t) return LOPAD_ERR_NOMEM;
    for (int i = 0; i < d->n; i++)
        if (d->t[i].name) ix->t[ix->n++] = &d->t[i];
    qsort(ix->t, (size_t)ix->n, sizeof *ix->t, cmp_by_name);
    return LOPAD_OK;
}

static const struct lp_tensor *index_find(const struct name_index *ix, const char *name) {
    int lo = 0, hi = ix->n; /* first entry >= name */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(ix->t[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && !strcmp(ix->t[lo]->name, name) ? ix->t[lo] : NULL;
}

bool lp_model_own(struct lopad_model *m, void *ptr, size_t size, bool mapped) {
    struct lp_owned *o =
        lp_realloc(m->owned, sizeof(*o) * (m->n_owned + 1), "model ownership list");
    if (!o) {
        if (mapped)
            munmap(ptr, size);
        else
            lp_free(ptr);
        return false;
    }
    m->owned = o;
    o[m->n_owned++] = (struct lp_owned){ptr, size, mapped};
    return true;
}

enum lopad_status lp_hparams_check(const struct lopad_hparams *hp, const char *src) {
#define REQ(cond, what)                                                                            \
    if (!(cond)) return lp_error(LOPAD_ERR_FORMAT, "%s: invalid hyper-parameter: %s", src, what)
    REQ(hp->n_embd > 0 && hp->n_embd <= 1 << 16, "hidden size (n_embd) must be in 1..65536");
    REQ(hp->n_layer > 0 && hp->n_layer <= 1024, "layer count must be in 1..1024");
    REQ(hp->n_head > 0 && hp->n_head <= 1024, "head count must be in 1..1024");
    REQ(hp->n_head_kv > 0 && hp->n_head_kv <= hp->n_head, "kv head count must be in 1..n_head");
    REQ(hp->n_head % hp->n_head_kv == 0, "head count must be a multiple of the kv head count");
    REQ(hp->head_dim > 0 && hp->head_dim % 2 == 0 && hp->head_dim <= 1024,
        "head dim must be even and in 2..1024");
    REQ(hp->n_ff > 0 && hp->n_ff <= 1 << 20, "feed-forward size must be in 1..2^20");
    REQ(hp->n_vocab > 0 && hp->n_vocab <= 1 << 24, "vocabulary size must be in 1..2^24");
    REQ(hp->norm_eps > 0 && hp->norm_eps < 1, "rms norm epsilon must be in (0, 1)");
    REQ(hp->rope_theta > 0, "rope theta must be positive");
    REQ(hp->n_ctx_train >= 0, "context length must be >= 0");
    int32_t ids[] = {hp->mask_id, hp->bos_id, hp->eos_id, hp->pad_id, hp->eot_id};
    for (unsigned i = 0; i < sizeof ids / sizeof ids[0]; i++)
        REQ(ids[i] >= -1 && ids[i] < hp->n_vocab, "special token id outside the vocabulary");
#undef REQ
    return LOPAD_OK;
}

/* Non-finite checks. An IEEE value is NaN or inf exactly when all its exponent
 * bits are set. Floats are tested 64 bits at a time (SWAR): in each lane,
 * v = (x & mask) ^ mask is zero for a non-finite x, and since a lane of v has
 * its top bit clear, v - 1 borrows into that top bit only when the lane (or
 * one below it) is zero. A chunk ORs these flags without branches; only a
 * chunk that fails is walked again to find the index. Quantised blocks are
 * finite when their f16 scales are (the quants are small integers). */
#define NF_CHUNK_BYTES 16384

static uint64_t repeat_lane(uint64_t lane, unsigned esize) {
    uint64_t w = 0;
    for (unsigned k = 0; k < 8; k += esize)
        w |= lane << (8 * k);
    return w;
}

static bool elem_nonfinite(const uint8_t *p, unsigned esize, uint32_t mask) {
    uint32_t x = 0;
    memcpy(&x, p, esize); /* little-endian lanes, as the files store them */
    return (x & mask) == mask;
}

/* n elements of esize (2 or 4) bytes, exponent mask `mask` */
static int64_t nonfinite_floats(const uint8_t *p, int64_t n, unsigned esize, uint32_t mask) {
    const uint64_t m = repeat_lane(mask, esize), ones = repeat_lane(1, esize);
    const uint64_t tops = repeat_lane((uint64_t)1 << (8 * esize - 1), esize);
    const size_t nbytes = (size_t)n * esize;
    for (size_t base = 0; base < nbytes; base += NF_CHUNK_BYTES) {
        const size_t end = LP_MIN(nbytes, base + NF_CHUNK_BYTES);
        uint64_t bad = 0;
        size_t i = base;
        for (; i + 32 <= end; i += 32) { /* four independent words per step */
            uint64_t w[4];
            memcpy(w, p + i, 32);
            for (int k = 0; k < 4; k++) {
                const uint64_t v = (w[k] & m) ^ m;
                bad |= (v - ones) & ~v & tops;
            }
        }
        for (; i + 8 <= end; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            const uint64_t v = (w & m) ^ m;
            bad |= (v - ones) & ~v & tops;
        }
        for (; i < end; i += esize)
            bad |= elem_nonfinite(p + i, esize, mask);
        for (i = base; bad && i < end; i += esize)
            if (elem_nonfinite(p + i, esize, mask)) return (int64_t)(i / esize);
    }
    return -1;
}

/* n_blocks blocks of `stride` bytes, each with `n_scales` f16 scales from byte `off` */
static int64_t nonfinite_scales(const uint8_t *p, int64_t n_blocks, size_t stride, size_t off,
                                int n_scales, int blck) {
    int bad = 0;
    for (int64_t b = 0; b < n_blocks; b++)
        for (int k = 0; k < n_scales; k++) {
            uint16_t x;
            memcpy(&x, p + (size_t)b * stride + off + 2 * (size_t)k, 2);
            bad |= (x & 0x7c00u) == 0x7c00u;
        }
    if (!bad) return -1;
    for (int64_t b = 0; b < n_blocks; b++)
        for (int k = 0; k < n_scales; k++) {
            uint16_t x;
            memcpy(&x, p + (size_t)b * stride + off + 2 * (size_t)k, 2);
            if ((x & 0x7c00u) == 0x7c00u) return b * blck;
        }
    return -1;
}

int64_t lp_find_nonfinite(int type, const void *data, int64_t n) {
    const uint8_t *p = data;
    switch (type) {
    case LOPAD_TYPE_F32: return nonfinite_floats(p, n, 4, 0x7f800000u);
    case LOPAD_TYPE_F16: return nonfinite_floats(p, n, 2, 0x7c00u);
    case LOPAD_TYPE_BF16: return nonfinite_floats(p, n, 2, 0x7f80u);
    case LOPAD_TYPE_Q8_0:
        return nonfinite_scales(p, n / LP_QK8_0, sizeof(lp_block_q8_0), offsetof(lp_block_q8_0, d),
                                1, LP_QK8_0);
    case LOPAD_TYPE_Q4_0:
        return nonfinite_scales(p, n / LP_QK4_0, sizeof(lp_block_q4_0), offsetof(lp_block_q4_0, d),
                                1, LP_QK4_0);
    case LOPAD_TYPE_Q4_K: /* d and dmin are adjacent */
        return nonfinite_scales(p, n / LP_QK_K, sizeof(lp_block_q4_K), offsetof(lp_block_q4_K, d),
                                2, LP_QK_K);
    case LOPAD_TYPE_Q6_K:
        return nonfinite_scales(p, n / LP_QK_K, sizeof(lp_block_q6_K), offsetof(lp_block_q6_K, d),
                                1, LP_QK_K);
    }
    return -1;
}

/* The scan just read the tensor's pages: when they are a read-only file mapping's,
 * hand them back (the next touch refills them from the file, usually the page cache),
 * so a load's peak stays about one tensor and a rank that uses a slice of the model
 * (tensor parallelism) keeps only that slice resident. Heap copies are left alone. */
void lp_model_drop_pages(const struct lopad_model *m, const void *data, size_t bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + page - 1) & ~(page - 1),
              b = ((uintptr_t)data + bytes) & ~(page - 1);
    for (int i = 0; i < m->n_owned && a < b; i++) {
        const uintptr_t p = (uintptr_t)m->owned[i].ptr;
        if (m->owned[i].mapped && a >= p && b <= p + m->owned[i].size)
            madvise((void *)a, b - a, MADV_DONTNEED);
    }
}

/* Refuse a tensor holding NaN or inf: it would poison every logit downstream. The
 * pages read go back after every 16 MiB when m's file mapping holds them
 * (lp_model_drop_pages): a load's resident peak stays small. */
static enum lopad_status check_finite(const struct lopad_model *m, int type, const void *data,
                                      int64_t n_rows, size_t row_bytes, int64_t n_in,
                                      const char *name, const char *src) {
    const uint8_t *p = data;
    const int64_t chunk = row_bytes ? LP_MAX(1, (int64_t)((16u << 20) / row_bytes)) : n_rows;
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t j = lp_find_nonfinite(type, p + (size_t)r * row_bytes, n_in);
        if (j >= 0)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: tensor '%s' holds a non-finite %s (NaN or inf) at row %lld, "
                            "column %lld",
                            src, name,
                            lp_type_traits(type)->blck_size > 1 ? "block scale" : "value",
                            (long long)r, (long long)j);
        if (m && ((r + 1) % chunk == 0 || r + 1 == n_rows)) {
            const int64_t r0 = (r / chunk) * chunk;
            lp_model_drop_pages(m, p + (size_t)r0 * row_bytes, (size_t)(r + 1 - r0) * row_bytes);
        }
    }
    return LOPAD_OK;
}

/* Find `name` and check it is a matrix of PyTorch shape [n_out, n_in]. */
static enum lopad_status bind_matrix(struct lopad_model *m, const struct name_index *d,
                                     const char *name, int64_t n_out, int64_t n_in, const char *src,
                                     struct lp_weight *w) {
    const struct lp_tensor *t = index_find(d, name);
    if (!t) return lp_error(LOPAD_ERR_FORMAT, "%s: missing tensor '%s'", src, name);
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' has shape [%lld, %lld] (ggml order, %d dims), expected "
                        "[%lld, %lld] from the model's hyper-parameters",
                        src, name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                        (long long)n_in, (long long)n_out);
    const struct lp_type_traits *tr = lp_type_traits(t->type);
    if (!tr)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s: tensor '%s' has unsupported type id %d", src,
                        name, t->type);
    size_t rb = lp_row_size(t->type, n_in);
    if (rb == 0)
        return lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' rows of %lld are not whole %s blocks",
                        src, name, (long long)n_in, tr->name);
    uint64_t need;
    if (!lp_mul_ok(rb, (uint64_t)n_out, &need) || need > t->nbytes)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: tensor '%s' holds %zu bytes, %s [%lld x %lld] needs more", src, name,
                        t->nbytes, tr->name, (long long)n_out, (long long)n_in);
    enum lopad_status st = check_finite(m, t->type, t->data, n_out, rb, n_in, name, src);
    if (st) return st;
    *w = (struct lp_weight){t->name, t->type, n_in, n_out, rb, t->data};
    if (t->type >= 0 && t->type < 64) m->type_count[t->type]++;
    return LOPAD_OK;
}

/* Find `name`, check it is a vector of n elements, copy it to owned f32. */
static enum lopad_status bind_vector(struct lopad_model *m, const struct name_index *d,
                                     const char *name, int64_t n, bool required, const char *src,
                                     float **out) {
    *out = NULL;
    const struct lp_tensor *t = index_find(d, name);
    if (!t) {
        if (!required) return LOPAD_OK;
        return lp_error(LOPAD_ERR_FORMAT, "%s: missing tensor '%s'", src, name);
    }
    if (lp_tensor_nelements(t) != n || t->ne[0] != n)
        return lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' has %lld elements, expected %lld", src,
                        name, (long long)lp_tensor_nelements(t), (long long)n);
    const struct lp_type_traits *tr = lp_type_traits(t->type);
    if (!tr || tr->blck_size != 1)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has type %s; norms and biases must be F32, F16 or BF16",
                        src, name, lp_type_name(t->type));
    if ((uint64_t)n * tr->type_size > t->nbytes)
        return lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' data is too short", src, name);
    float *v = lp_malloc(sizeof(float) * n, name);
    if (!v || !lp_model_own(m, v, sizeof(float) * n, false)) return LOPAD_ERR_NOMEM;
    tr->to_float(t->data, v, n);
    enum lopad_status st = check_finite(NULL, LOPAD_TYPE_F32, v, 1, 0, n, name, src);
    if (st) return st;
    *out = v;
    return LOPAD_OK;
}

static enum lopad_status bind_all(struct lopad_model *m, const struct name_index *d,
                                  const char *src) {
    enum lopad_status st;
    struct lopad_hparams *hp = &m->hp;
    /* the vocabulary size comes from the embedding when the loader did not know it */
    const struct lp_tensor *emb = index_find(d, "token_embd.weight");
    if (!emb) return lp_error(LOPAD_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", src);
    if (hp->n_vocab <= 0 && emb->n_dims == 2) hp->n_vocab = (int)LP_MIN(emb->ne[1], 1 << 25);
    if ((st = lp_hparams_check(hp, src))) return st;

    const int64_t E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    memset(m->type_count, 0, sizeof m->type_count);

    if ((st = bind_matrix(m, d, "token_embd.weight", V, E, src, &m->tok_embd))) return st;
    /* an absent output head means tied embeddings */
    if (index_find(d, "output.weight")) {
        if ((st = bind_matrix(m, d, "output.weight", V, E, src, &m->output))) return st;
    } else {
        m->output = m->tok_embd;
    }
    if ((st = bind_vector(m, d, "output_norm.weight", E, true, src, &m->output_norm))) return st;

    m->layers = lp_calloc(hp->n_layer, sizeof(struct lp_layer), "layer table");
    if (!m->layers || !lp_model_own(m, m->layers, 0, false)) return LOPAD_ERR_NOMEM;
    char name[96];
#define MAT(field, suffix, rows, cols)                                                             \
    snprintf(name, sizeof name, "blk.%d." suffix ".weight", i);                                    \
    if ((st = bind_matrix(m, d, name, rows, cols, src, &L->field))) return st;
#define VEC(field, suffix, kind, n, req)                                                           \
    snprintf(name, sizeof name, "blk.%d." suffix "." kind, i);                                     \
    if ((st = bind_vector(m, d, name, n, req, src, &L->field))) return st;
    for (int i = 0; i < hp->n_layer; i++) {
        struct lp_layer *L = &m->layers[i];
        VEC(attn_norm, "attn_norm", "weight", E, true);
        MAT(wq, "attn_q", QD, E);
        MAT(wk, "attn_k", KD, E);
        MAT(wv, "attn_v", KD, E);
        MAT(wo, "attn_output", E, QD);
        VEC(bq, "attn_q", "bias", QD, hp->has_qkv_bias);
        VEC(bk, "attn_k", "bias", KD, hp->has_qkv_bias);
        VEC(bv, "attn_v", "bias", KD, hp->has_qkv_bias);
        VEC(ffn_norm, "ffn_norm", "weight", E, true);
        MAT(w_gate, "ffn_gate", F, E);
        MAT(w_up, "ffn_up", F, E);
        MAT(w_down, "ffn_down", E, F);
    }
#undef MAT
#undef VEC
    return LOPAD_OK;
}

enum lopad_status lp_model_bind(struct lopad_model *m, const struct lp_tensor_dir *d,
                                const char *src) {
    struct name_index ix;
    enum lopad_status st = index_build(d, &ix);
    if (!st) st = bind_all(m, &ix, src);
    lp_free(ix.t);
    return st;
}
