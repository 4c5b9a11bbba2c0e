/*
 * synthetic.c - random-weight models without a file: a tensor directory of
 * owned buffers filled in parallel (rows in chunks, each chunk seeded from
 * (seed, tensor, chunk) so the bytes never depend on the thread count), then
 * bound with lp_model_bind like any loaded model.
 */
#include "synthetic.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../core/threadpool.h"
#include "../core/types.h"

struct shape {
    const char *name;
    enum lopad_arch arch;
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    float theta, eps;
    bool shift, bias;
    int32_t mask_id, bos_id, eos_id, pad_id, eot_id;
};

static const struct shape shapes[] = {
    {"tiny", LOPAD_ARCH_DREAM, 64, 2, 4, 2, 16, 128, 300, 512, 1e6f, 1e-6f, true, true, 299, 298,
     297, 297, -1},
    {"tiny-llada", LOPAD_ARCH_LLADA, 64, 2, 4, 4, 16, 128, 300, 512, 5e5f, 1e-5f, false, false, 299,
     298, 297, 297, 296},
    {"dream-7b", LOPAD_ARCH_DREAM, 3584, 28, 28, 4, 128, 18944, 152064, 32768, 1e6f, 1e-6f, true,
     true, 151666, 151665, 151643, 151643, 151645},
    {"llada-8b", LOPAD_ARCH_LLADA, 4096, 32, 32, 32, 128, 12288, 126464, 4096, 5e5f, 1e-5f, false,
     false, 126336, 126080, 126081, 126081, 126348},
};

enum fill { FILL_MATRIX, FILL_EMBED, FILL_NORM, FILL_BIAS };

struct gen_tensor {
    struct lp_tensor t;
    enum fill fill;
};

#define GEN_CHUNK 64 /* rows per generation task */

struct gen_job {
    struct gen_tensor *g;
    int n;
    int64_t *first_task; /* [n + 1]: tasks of tensor i are [first[i], first[i+1]) */
    float *scratch;      /* [n_threads][max_row] */
    int64_t max_row;
    uint64_t seed;
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void gen_task(void *arg, int task, int tid) {
    struct gen_job *j = arg;
    int lo = 0, hi = j->n - 1; /* the tensor whose task range holds `task` */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (j->first_task[mid] <= task)
            lo = mid;
        else
            hi = mid - 1;
    }
    struct gen_tensor *g = &j->g[lo];
    const int64_t chunk = task - j->first_task[lo];
    const int64_t n_in = g->t.ne[0], n_rows = g->t.ne[1];
    const int64_t r0 = chunk * GEN_CHUNK, r1 = LP_MIN(n_rows, r0 + GEN_CHUNK);
    const struct lp_type_traits *tt = lp_type_traits(g->t.type);
    const size_t row_bytes = lp_row_size(g->t.type, n_in);
    float *row = j->scratch + (size_t)tid * j->max_row;

    uint64_t s = j->seed ^ ((uint64_t)lo << 40) ^ (uint64_t)chunk * 0x2545f4914f6cdd1dull;
    uint32_t st[8]; /* 8 independent xorshift32 lanes: no serial dependency, vectorisable */
    for (int l = 0; l < 8; l++)
        st[l] = (uint32_t)splitmix64(&s) | 1u;
    float a, off;
    switch (g->fill) {
    case FILL_MATRIX: a = sqrtf(3.0f / (float)n_in), off = 0; break; /* variance 1/n_in */
    case FILL_EMBED: a = 1.0f, off = 0; break;
    case FILL_NORM: a = 0.1f, off = 1.0f; break;
    default: a = 0.2f, off = 0; break;
    }
    for (int64_t r = r0; r < r1; r++) {
        char *dst = (char *)g->t.data + r * row_bytes;
        if (g->t.type == LOPAD_TYPE_Q8_0 || g->t.type == LOPAD_TYPE_Q4_0) {
            /* random quants written directly (quantising floats would cost ~10x more):
             * uniform over the block's levels, scaled to the same +-a range */
            const bool q8 = g->t.type == LOPAD_TYPE_Q8_0;
            const lp_half d = lp_f32_to_f16(q8 ? a / 127.0f : a / 8.0f);
            const size_t bsz = q8 ? sizeof(lp_block_q8_0) : sizeof(lp_block_q4_0);
            for (int64_t b = 0; b < n_in / 32; b++) {
                unsigned char *blk = (unsigned char *)dst + b * bsz;
                memcpy(blk, &d, sizeof d);
                unsigned char *qs = blk + sizeof d;
                const int nq = q8 ? 32 : 16;
                for (int i = 0; i < nq; i += 8)
                    for (int l = 0; l < 8; l++) {
                        uint32_t x = st[l];
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        st[l] = x;
                        uint8_t q = (uint8_t)(x >> 24);
                        qs[i + l] = q8 && q == 0x80 ? 0x81 : q; /* int8 in [-127, 127] */
                    }
            }
            continue;
        }
        for (int64_t i = 0; i < n_in; i += 8) {
            float v[8];
            for (int l = 0; l < 8; l++) {
                uint32_t x = st[l];
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                st[l] = x;
                v[l] = off + a * ((float)(x >> 8) * (2.0f / 16777216.0f) - 1.0f);
            }
            memcpy(row + i, v, sizeof(float) * (size_t)LP_MIN(8, n_in - i));
        }
        tt->from_float(row, dst, n_in);
    }
}

enum lopad_status lp_model_synthetic(const char *shape_name, int type, uint64_t seed,
                                     lopad_model **out) {
    return lp_model_synthetic_layers(shape_name, 0, type, seed, out);
}

/* "name" or "name:N" -> the shape and the layer count (0 when not given) */
static enum lopad_status parse_shape(const char *spec, const struct shape **sh, int *n_layers) {
    *sh = NULL;
    *n_layers = 0;
    if (!spec)
        return lp_error(LOPAD_ERR_ARG, "synthetic model: no shape (tiny, tiny-llada, dream-7b, "
                                       "llada-8b, optionally :LAYERS)");
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    for (unsigned i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (strlen(shapes[i].name) == len && !strncmp(shapes[i].name, spec, len)) *sh = &shapes[i];
    if (!*sh)
        return lp_error(LOPAD_ERR_ARG,
                        "synthetic model: unknown shape '%.*s' (tiny, tiny-llada, dream-7b, "
                        "llada-8b, optionally :LAYERS)",
                        (int)LP_MIN(len, 64), spec);
    if (colon) {
        const char *v = colon + 1;
        long n = 0;
        bool ok = *v != 0;
        for (const char *p = v; ok && *p; p++) {
            ok = *p >= '0' && *p <= '9' && n <= 100000;
            n = n * 10 + (*p - '0');
        }
        if (!ok || n < 1 || n > (*sh)->n_layer)
            return lp_error(LOPAD_ERR_ARG,
                            "synthetic model: bad layer count '%.16s' in '%.64s' (1..%d for %s)", v,
                            spec, (*sh)->n_layer, (*sh)->name);
        *n_layers = (int)n;
    }
    return LOPAD_OK;
}

enum lopad_status lp_model_synthetic_layers(const char *shape_name, int n_layers, int type,
                                            uint64_t seed, lopad_model **out) {
    *out = NULL;
    const struct shape *sh = NULL;
    int named_layers = 0;
    enum lopad_status pst = parse_shape(shape_name, &sh, &named_layers);
    if (pst) return pst;
    if (n_layers < 0 || n_layers > sh->n_layer)
        return lp_error(LOPAD_ERR_ARG, "synthetic model: layer count %d out of 1..%d for %s",
                        n_layers, sh->n_layer, sh->name);
    if (named_layers && n_layers && named_layers != n_layers)
        return lp_error(LOPAD_ERR_ARG,
                        "synthetic model: '%s' names %d layers but %d were asked for", shape_name,
                        named_layers, n_layers);
    if (!n_layers) n_layers = named_layers ? named_layers : sh->n_layer;
    const struct lp_type_traits *tt = lp_type_traits(type);
    if (!tt || !tt->from_float)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "synthetic model: cannot write weights of type %s",
                        lp_type_name(type));
    if (sh->n_embd % tt->blck_size || sh->n_ff % tt->blck_size ||
        (sh->n_head * sh->head_dim) % tt->blck_size)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "synthetic model: shape '%s' rows (%d, %d) are not whole %s blocks of %d",
                        sh->name, sh->n_embd, sh->n_ff, tt->name, tt->blck_size);

    struct lopad_model *m = lp_calloc(1, sizeof *m, "model");
    if (!m) return LOPAD_ERR_NOMEM;
    struct lopad_hparams *hp = &m->hp;
    *hp = (struct lopad_hparams){.arch = sh->arch,
                                 .rope = LOPAD_ROPE_NEOX,
                                 .n_embd = sh->n_embd,
                                 .n_layer = n_layers,
                                 .n_head = sh->n_head,
                                 .n_head_kv = sh->n_head_kv,
                                 .head_dim = sh->head_dim,
                                 .n_ff = sh->n_ff,
                                 .n_vocab = sh->n_vocab,
                                 .n_ctx_train = sh->n_ctx_train,
                                 .rope_theta = sh->theta,
                                 .norm_eps = sh->eps,
                                 .shift_logits = sh->shift,
                                 .has_qkv_bias = sh->bias,
                                 .mask_id = sh->mask_id,
                                 .bos_id = sh->bos_id,
                                 .eos_id = sh->eos_id,
                                 .pad_id = sh->pad_id,
                                 .eot_id = sh->eot_id};
    m->format = "synthetic";

    enum lopad_status st = LOPAD_ERR_NOMEM;
    struct gen_job job = {.seed = seed};
    lp_pool *pool = NULL;
    char path[64];
    if (n_layers == sh->n_layer)
        snprintf(path, sizeof path, "synthetic:%s", sh->name);
    else
        snprintf(path, sizeof path, "synthetic:%s:%d", sh->name, n_layers);
    if (!(m->path = lp_strdup(path, "model path"))) goto fail;

    const int per_layer = 9 + (sh->bias ? 3 : 0);
    const int n_t = 3 + n_layers * per_layer;
    enum { name_len = 48 };
    char *names = lp_calloc((size_t)n_t, name_len, "synthetic tensor names");
    if (!names || !lp_model_own(m, names, (size_t)n_t * name_len, false)) goto fail;
    job.g = lp_calloc((size_t)n_t, sizeof *job.g, "synthetic tensor list");
    job.first_task = job.g ? lp_calloc((size_t)n_t + 1, sizeof(int64_t), "synthetic tasks") : NULL;
    if (!job.first_task) goto fail;

    const int64_t E = sh->n_embd, F = sh->n_ff, V = sh->n_vocab;
    const int64_t QD = (int64_t)sh->n_head * sh->head_dim,
                  KD = (int64_t)sh->n_head_kv * sh->head_dim;
    int n = 0;
    char nm[name_len];
#define ADD(ttype, fill_kind, n_in, n_out)                                                         \
    do {                                                                                           \
        char *nm_ = names + (size_t)n * name_len;                                                  \
        snprintf(nm_, name_len, "%s", nm);                                                         \
        job.g[n].t = (struct lp_tensor){.name = nm_,                                               \
                                        .type = (ttype),                                           \
                                        .n_dims = (n_out) > 1 ? 2 : 1,                             \
                                        .ne = {(n_in), (n_out), 1, 1}};                            \
        job.g[n].fill = (fill_kind);                                                               \
        n++;                                                                                       \
    } while (0)
#define NAME(...) snprintf(nm, sizeof nm, __VA_ARGS__)
    NAME("token_embd.weight");
    ADD(type, FILL_EMBED, E, V);
    NAME("output.weight");
    ADD(type, FILL_MATRIX, E, V);
    NAME("output_norm.weight");
    ADD(LOPAD_TYPE_F32, FILL_NORM, E, 1);
    for (int l = 0; l < n_layers; l++) {
        NAME("blk.%d.attn_norm.weight", l);
        ADD(LOPAD_TYPE_F32, FILL_NORM, E, 1);
        NAME("blk.%d.attn_q.weight", l);
        ADD(type, FILL_MATRIX, E, QD);
        NAME("blk.%d.attn_k.weight", l);
        ADD(type, FILL_MATRIX, E, KD);
        NAME("blk.%d.attn_v.weight", l);
        ADD(type, FILL_MATRIX, E, KD);
        NAME("blk.%d.attn_output.weight", l);
        ADD(type, FILL_MATRIX, QD, E);
        if (sh->bias) {
            NAME("blk.%d.attn_q.bias", l);
            ADD(LOPAD_TYPE_F32, FILL_BIAS, QD, 1);
            NAME("blk.%d.attn_k.bias", l);
            ADD(LOPAD_TYPE_F32, FILL_BIAS, KD, 1);
            NAME("blk.%d.attn_v.bias", l);
            ADD(LOPAD_TYPE_F32, FILL_BIAS, KD, 1);
        }
        NAME("blk.%d.ffn_norm.weight", l);
        ADD(LOPAD_TYPE_F32, FILL_NORM, E, 1);
        NAME("blk.%d.ffn_gate.weight", l);
        ADD(type, FILL_MATRIX, E, F);
        NAME("blk.%d.ffn_up.weight", l);
        ADD(type, FILL_MATRIX, E, F);
        NAME("blk.%d.ffn_down.weight", l);
        ADD(type, FILL_MATRIX, F, E);
    }
#undef NAME
#undef ADD
    LP_ASSERT(n == n_t);
    job.n = n;

    for (int i = 0; i < n; i++) {
        struct lp_tensor *t = &job.g[i].t;
        size_t bytes = lp_row_size(t->type, t->ne[0]) * (size_t)t->ne[1];
        void *data = lp_malloc(bytes, t->name);
        if (!data || !lp_model_own(m, data, bytes, false)) goto fail;
        t->data = data;
        t->nbytes = bytes;
        job.max_row = LP_MAX(job.max_row, t->ne[0]);
        job.first_task[i + 1] = job.first_task[i] + (t->ne[1] + GEN_CHUNK - 1) / GEN_CHUNK;
    }
    if (!(pool = lp_pool_new(0))) goto fail;
    job.scratch = lp_malloc(sizeof(float) * (size_t)job.max_row * lp_pool_n_threads(pool),
                            "synthetic row scratch");
    if (!job.scratch) goto fail;
    LP_ASSERT(job.first_task[n] <= INT32_MAX);
    lp_pool_run(pool, (int)job.first_task[n], gen_task, &job);

    struct lp_tensor *dir_t = lp_malloc(sizeof *dir_t * (size_t)n, "synthetic tensor directory");
    if (!dir_t) goto fail;
    for (int i = 0; i < n; i++)
        dir_t[i] = job.g[i].t;
    struct lp_tensor_dir dir = {dir_t, n};
    st = lp_model_bind(m, &dir, m->path);
    lp_free(dir_t);
    if (st) goto fail;

    lp_pool_free(pool);
    lp_free(job.scratch);
    lp_free(job.g);
    lp_free(job.first_task);
    *out = m;
    return LOPAD_OK;
fail:
    lp_pool_free(pool);
    lp_free(job.scratch);
    lp_free(job.g);
    lp_free(job.first_task);
    lopad_model_free(m);
    return st;
}
