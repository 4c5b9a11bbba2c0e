/*
 * tensor_parallel.c - the shard of a model one rank holds, and the exchanges that
 * make T ranks compute one forward (tensor_parallel.h).
 *
 * Row slices (q, k, v, gate, up, the output head) are views of the loaded weights:
 * a rank touches only its pages of a mapped file. Column slices (the attention
 * output and FFN down projections) are copied, in the stored type when the slice
 * is whole quantisation blocks, else widened to f32.
 *
 * Every exchange ends with the same bits on every rank: partial sums are added in
 * rank order (lp_dist_allreduce_sum), and the head's slices are combined in
 * vocabulary order.
 */
#include "tensor_parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/types.h"
#include "../dist/dist.h"
#include "../dist/nccl.h"
#ifdef LOPAD_CUDA
#include "../backend/cuda/cuda.h"
#endif

/* rows of the output head per exchange (bounds the gathered logits' buffer) */
#define LP_TP_HEAD_ROWS 64

static int64_t vocab_begin(int64_t V, int T, int t) {
    return V * t / T;
}

static struct lp_weight row_slice(const struct lp_weight *w, int64_t r0, int64_t n) {
    struct lp_weight s = *w;
    s.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    s.n_out = n;
    return s;
}

/* Columns [c0, c0 + n) of every row of w as a new matrix owned by shard. */
static enum lopad_status col_slice(const struct lopad_model *m, struct lopad_model *shard,
                                   const struct lp_weight *w, int64_t c0, int64_t n,
                                   struct lp_weight *out) {
    const struct lp_type_traits *tt = lp_type_traits(w->type);
    if (!tt || !tt->to_float)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "tensor parallel: %s has type %s, not sliceable",
                        w->name, lp_type_name(w->type));
    *out = *w;
    out->n_in = n;
    const bool whole = c0 % tt->blck_size == 0 && n % tt->blck_size == 0;
    const size_t off = whole ? (size_t)(c0 / tt->blck_size) * tt->type_size : 0;
    out->row_bytes = whole ? (size_t)(n / tt->blck_size) * tt->type_size : sizeof(float) * n;
    if (!whole) out->type = LOPAD_TYPE_F32;
    const size_t bytes = out->row_bytes * (size_t)w->n_out;
    char *buf = lp_malloc(bytes, "tensor-parallel weight slice");
    float *row = whole ? NULL : lp_malloc(sizeof(float) * w->n_in, "tensor-parallel row");
    if (!buf || (!whole && !row)) {
        lp_free(buf);
        return LOPAD_ERR_NOMEM;
    }
    for (int64_t r = 0; r < w->n_out; r++) {
        const char *src = (const char *)w->data + (size_t)r * w->row_bytes;
        char *dst = buf + (size_t)r * out->row_bytes;
        if (whole) {
            memcpy(dst, src + off, out->row_bytes);
        } else {
            tt->to_float(src, row, w->n_in);
            memcpy(dst, row + c0, out->row_bytes);
        }
    }
    lp_free(row);
    lp_model_drop_pages(m, w->data, w->row_bytes * (size_t)w->n_out); /* read whole, kept 1/T */
    out->data = buf;
    return lp_model_own(shard, buf, bytes, false) ? LOPAD_OK : LOPAD_ERR_NOMEM;
}

/* Rows [r0, r0 + n) of w as a copy owned by shard. */
static enum lopad_status row_copy(struct lopad_model *shard, const struct lp_weight *w, int64_t r0,
                                  int64_t n, struct lp_weight *out) {
    *out = row_slice(w, r0, n);
    const size_t bytes = out->row_bytes * (size_t)n;
    void *buf = lp_malloc(bytes, "tensor-parallel head slice");
    if (!buf) return LOPAD_ERR_NOMEM;
    memcpy(buf, out->data, bytes);
    out->data = buf;
    return lp_model_own(shard, buf, bytes, false) ? LOPAD_OK : LOPAD_ERR_NOMEM;
}

/* Rank t's share of layer L: heads, their K/V heads, FFN columns. */
static enum lopad_status shard_layer(const struct lopad_model *m, struct lopad_model *s, int T,
                                     int t, const struct lp_layer *L, struct lp_layer *S) {
    const struct lopad_hparams *hp = &m->hp;
    const int64_t hd = hp->head_dim;
    const int64_t q0 = hd * (hp->n_head / T) * t, nq = hd * (hp->n_head / T);
    const int64_t k0 = hd * (hp->n_head_kv / T) * t, nk = hd * (hp->n_head_kv / T);
    const int64_t f0 = (int64_t)(hp->n_ff / T) * t, nf = hp->n_ff / T;
    *S = *L; /* norms are shared */
    S->wq = row_slice(&L->wq, q0, nq);
    S->wk = row_slice(&L->wk, k0, nk);
    S->wv = row_slice(&L->wv, k0, nk);
    S->bq = L->bq ? L->bq + q0 : NULL;
    S->bk = L->bk ? L->bk + k0 : NULL;
    S->bv = L->bv ? L->bv + k0 : NULL;
    S->w_gate = row_slice(&L->w_gate, f0, nf);
    S->w_up = row_slice(&L->w_up, f0, nf);
    enum lopad_status st = col_slice(m, s, &L->wo, q0, nq, &S->wo);
    if (!st) st = col_slice(m, s, &L->w_down, f0, nf, &S->w_down);
    return st;
}

static void shard_free(struct lopad_model *s) {
    if (!s) return;
    lp_model_free_derived(s);
    lp_free(s->layers);
    lp_free(s);
}

static enum lopad_status make_shard(const struct lopad_model *m, int T, int t,
                                    struct lopad_model **out) {
    const struct lopad_hparams *hp = &m->hp;
    struct lopad_model *s = lp_calloc(1, sizeof *s, "tensor-parallel shard");
    if (!s) return LOPAD_ERR_NOMEM;
    s->hp = *hp;
    s->hp.n_head /= T;
    s->hp.n_head_kv /= T;
    s->hp.n_ff /= T;
    s->path = m->path; /* borrowed from m, which the context keeps alive */
    s->format = m->format;
    s->tok_embd = m->tok_embd;
    s->output_norm = m->output_norm;
    const int64_t v0 = vocab_begin(hp->n_vocab, T, t), v1 = vocab_begin(hp->n_vocab, T, t + 1);
    s->output = row_slice(&m->output, v0, v1 - v0);
    s->layers = lp_calloc((size_t)hp->n_layer, sizeof *s->layers, "tensor-parallel layers");
    enum lopad_status st = s->layers ? LOPAD_OK : LOPAD_ERR_NOMEM;
    /* Tied embeddings: rank 0's head slice would start at the embedding's own data, and a
     * device backend keys its uploaded weights by that pointer (one shape each). */
    if (!st && v0 == 0 && m->output.data == m->tok_embd.data)
        st = row_copy(s, &m->output, v0, v1 - v0, &s->output);
    for (int l = 0; l < hp->n_layer && !st; l++)
        st = shard_layer(m, s, T, t, &m->layers[l], &s->layers[l]);
    if (st) {
        shard_free(s);
        return st;
    }
    *out = s;
    return LOPAD_OK;
}

/* The sizes T must divide; checked after the ranks agreed on the model and T. */
static enum lopad_status check_fit(const struct lopad_hparams *hp, int T) {
    const struct {
        const char *what;
        int n;
    } parts[] = {{"attention heads", hp->n_head},
                 {"key/value heads", hp->n_head_kv},
                 {"FFN columns", hp->n_ff}};
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (parts[i].n % T)
            return lp_error(LOPAD_ERR_ARG,
                            "tensor parallel %d: the model's %d %s do not split into %d equal "
                            "parts (choose a divisor of %d)",
                            T, parts[i].n, parts[i].what, T, parts[i].n);
    if (hp->n_vocab < T)
        return lp_error(LOPAD_ERR_ARG, "tensor parallel %d: vocabulary of %d is too small", T,
                        hp->n_vocab);
    return LOPAD_OK;
}

/* The job's ranks: consecutive groups of T (one forward each; neighbours in the
 * launcher's order usually share a machine); the same place in every group forms
 * LoPA's branch group. */
static enum lopad_status join_groups(struct lp_dist *w, struct lp_tp *tp) {
    const int r = lp_dist_rank(w);
    tp->t = r % tp->T;
    enum lopad_status st = lp_dist_split(w, r / tp->T, r, &tp->group);
    if (!st) st = lp_dist_split(w, tp->t, r, &tp->branches);
    if (!st && lp_dist_size(tp->branches) <= 1) {
        lp_dist_free(tp->branches);
        tp->branches = NULL;
    }
    return st;
}

enum lopad_status lp_tp_new(struct lopad_ctx *c, const struct lopad_model *m, int T) {
    struct lp_dist *w = lp_dist_world();
    const int R = lp_dist_size(w);
    if (!w || R % T)
        return lp_error(LOPAD_ERR_ARG,
                        "tensor parallel %d needs a job of a multiple of %d ranks (mpirun -np "
                        "%d ...); this one has %d",
                        T, T, T, R);
    const uint64_t vals[2] = {(uint64_t)T, lp_dist_model_hash(m)};
    static const char *const names[2] = {"tensor-parallel size", "model"};
    enum lopad_status st = lp_dist_agree(w, vals, 2, names);
    if (!st) st = check_fit(&m->hp, T);
    if (st) return st;
    struct lp_tp *tp = lp_calloc(1, sizeof *tp, "tensor parallelism");
    if (!tp) return LOPAD_ERR_NOMEM;
    tp->T = T;
    if (!(st = join_groups(w, tp))) st = make_shard(m, T, tp->t, &tp->shard);
    if (st) {
        lp_tp_free(tp);
        return st;
    }
    c->tp = tp;
    return LOPAD_OK;
}

void lp_tp_free(struct lp_tp *tp) {
    if (!tp) return;
    lp_dist_dev_free(tp->dev);
    lp_dist_free(tp->group);
    lp_dist_free(tp->branches);
    shard_free(tp->shard);
    lp_free(tp->host);
    lp_free(tp->gathered);
    lp_free(tp);
}

enum lopad_status lp_tp_alloc(struct lopad_ctx *c) {
    struct lp_tp *tp = c->tp;
    const struct lopad_hparams *hp = &c->model->hp;
    const size_t rows = (size_t)LP_MIN(c->n_batch_max, LP_TP_HEAD_ROWS);
    const size_t nv = (size_t)tp->shard->output.n_out + 1;
    const size_t sc = sizeof(struct lp_row_scores) / sizeof(float) + 1;
    tp->host_floats = LP_MAX(LP_MAX(rows * nv, rows * sc),
                             c->be.ops->host_memory ? 0 : (size_t)c->n_batch_max * hp->n_embd);
    tp->gathered_floats = rows * LP_MAX((size_t)hp->n_vocab, sc * (size_t)tp->T);
    tp->host = lp_malloc(sizeof(float) * tp->host_floats, "tensor-parallel staging");
    tp->gathered = lp_malloc(sizeof(float) * tp->gathered_floats, "tensor-parallel head");
    if (!tp->host || !tp->gathered) return LOPAD_ERR_NOMEM;
    /* a device context adds its partial sums on the device when the build has NCCL */
    const char *env = getenv("LOPAD_NCCL"); /* 0: host staging (ranks sharing one GPU) */
    if (!c->be.ops->host_memory && lp_dist_dev_built() && !(env && !strcmp(env, "0")))
        return lp_dist_dev_new(tp->group, &tp->dev);
    return LOPAD_OK;
}

int lp_tp_head_rows(const struct lopad_ctx *c) {
    return LP_MIN(c->n_batch_max, LP_TP_HEAD_ROWS);
}

enum lopad_status lp_tp_allreduce(struct lopad_ctx *c, float *buf, int64_t n, const char *what) {
    struct lp_tp *tp = c->tp;
    if (c->be.ops->host_memory) return lp_dist_allreduce_sum(tp->group, buf, (size_t)n, what);
#ifdef LOPAD_CUDA
    if (tp->dev)
        return lp_dist_dev_allreduce_sum(tp->dev, buf, (size_t)n, lp_backend_cuda_stream(&c->be),
                                         what);
#endif
    const size_t bytes = sizeof(float) * (size_t)n;
    LP_ASSERT((size_t)n <= tp->host_floats);
    c->be.ops->download(c->be.ctx, tp->host, buf, bytes);
    enum lopad_status st = lp_dist_allreduce_sum(tp->group, tp->host, (size_t)n, what);
    if (!st) c->be.ops->upload(c->be.ctx, buf, tp->host, bytes);
    return st;
}

/* Every rank's block of n_row rows x per_row(r) bytes, gathered in rank order. */
static enum lopad_status gather_rows(struct lp_tp *tp, const void *mine, size_t *each,
                                     size_t (*per_row)(const struct lp_tp *, int), int n_row,
                                     const char *what) {
    for (int r = 0; r < tp->T; r++)
        each[r] = per_row(tp, r) * (size_t)n_row;
    return lp_dist_allgather(tp->group, mine, each, tp->gathered, what);
}

static size_t slice_bytes(const struct lp_tp *tp, int r) {
    const int64_t V = tp->shard->hp.n_vocab;
    return sizeof(float) * (size_t)(vocab_begin(V, tp->T, r + 1) - vocab_begin(V, tp->T, r));
}

static size_t scores_bytes(const struct lp_tp *tp, int r) {
    LP_UNUSED(tp);
    LP_UNUSED(r);
    return sizeof(struct lp_row_scores);
}

/* One row's scores from the slices' scores (all[r], rank order = vocabulary order):
 * the log-sum-exp of the slices' log-sum-exps, the best top logit (ties keep the
 * lower id), sum p log p = sum_r w_r (negent_r + log w_r) with w_r = e^(lse_r - lse). */
static struct lp_row_scores combine(const struct lp_row_scores *all, int T, int64_t V) {
    double m = -INFINITY;
    int best = 0;
    for (int r = 0; r < T; r++) {
        if (all[r].logsumexp > m) m = all[r].logsumexp;
        if (all[r].top1 > all[best].top1) best = r;
    }
    double S = 0, Z = 0, second = all[best].top2;
    for (int r = 0; r < T; r++)
        if (all[r].logsumexp > -INFINITY) S += exp(all[r].logsumexp - m);
    const double lse = m + log(S);
    for (int r = 0; r < T; r++) {
        if (!(all[r].logsumexp > -INFINITY)) continue;
        const double lw = all[r].logsumexp - lse;
        Z += exp(lw) * (all[r].negent + lw);
        if (r != best && all[r].top1 > second) second = all[r].top1;
    }
    const double p1 = exp(all[best].top1 - lse);
    struct lp_row_scores o = {
        .argmax = (int32_t)(vocab_begin(V, T, best) + all[best].argmax),
        .pmax = (float)p1,
        .margin = (float)(p1 - exp(second - lse)),
        .negent = (float)Z,
        .logsumexp = (float)lse,
        .top1 = all[best].top1,
        .top2 = (float)second,
    };
    return o;
}

static enum lopad_status head_scores(struct lopad_ctx *c, int no, struct lp_row_scores *scores) {
    struct lp_tp *tp = c->tp;
    const struct lopad_model *s = tp->shard;
    struct lp_row_scores *mine = (struct lp_row_scores *)tp->host;
    c->be.ops->head_scores(c->be.ctx, &s->output, c->xn, no, c->gate,
                           (size_t)c->n_batch_max * (size_t)c->gate_cols, mine);
    size_t each[tp->T];
    enum lopad_status st = gather_rows(tp, mine, each, scores_bytes, no, "the head's scores");
    if (st) return st;
    const struct lp_row_scores *all = (const struct lp_row_scores *)tp->gathered;
    struct lp_row_scores row[tp->T];
    for (int i = 0; i < no; i++) {
        for (int r = 0; r < tp->T; r++)
            row[r] = all[(size_t)r * no + i];
        scores[i] = combine(row, tp->T, s->hp.n_vocab);
    }
    return LOPAD_OK;
}

static enum lopad_status head_logits(struct lopad_ctx *c, int no, float *logits) {
    struct lp_tp *tp = c->tp;
    const struct lopad_model *s = tp->shard;
    const int64_t V = s->hp.n_vocab, nv = s->output.n_out;
    if (c->be.ops->host_memory) {
        c->be.ops->matmul(c->be.ctx, &s->output, NULL, c->xn, no, tp->host);
    } else {
        c->be.ops->matmul(c->be.ctx, &s->output, NULL, c->xn, no, c->logits_dev);
        c->be.ops->download(c->be.ctx, tp->host, c->logits_dev, sizeof(float) * nv * no);
    }
    size_t each[tp->T];
    enum lopad_status st = gather_rows(tp, tp->host, each, slice_bytes, no, "the head's logits");
    if (st) return st;
    const char *blk = (const char *)tp->gathered;
    for (int r = 0; r < tp->T; r++) { /* rank r's block: its slice of every row */
        const size_t row = each[r] / (size_t)no;
        for (int i = 0; i < no; i++)
            memcpy(logits + (size_t)i * V + vocab_begin(V, tp->T, r), blk + (size_t)i * row, row);
        blk += each[r];
    }
    return LOPAD_OK;
}

enum lopad_status lp_tp_head(struct lopad_ctx *c, int no, float *logits,
                             struct lp_row_scores *scores) {
    LP_ASSERT(no <= lp_tp_head_rows(c));
    return scores ? head_scores(c, no, scores) : head_logits(c, no, logits);
}
