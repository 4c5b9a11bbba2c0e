/*
 * forward.c - lopad_forward: one transformer call over a batch of fed tokens
 * (one or several sequences) attending to the context's cached prefix.
 *
 * Per layer (Dream = Qwen2 block, LLaDA = LLaMA block; they differ only in the
 * q/k/v biases and, for llama.cpp's LLaDA GGUF, the RoPE pairing):
 *   h = x + Wo Attn(RoPE(Wq n + bq), RoPE(Wk n + bk), Wv n + bv),  n = RMSNorm_attn(x)
 *   x = h + Wdown (SiLU(Wgate m) * Wup m),                         m = RMSNorm_ffn(h)
 * then the final RMSNorm and the output head, for the requested rows only.
 * Every step goes through the backend table; nothing is allocated here.
 */
#include "forward.h"
#include "tensor_parallel.h"
#include "../backend/cpu/cpu.h"
#include "../dist/dist.h"

#include <math.h>

enum lopad_status lp_batch_check(struct lopad_ctx *c, const struct lopad_batch *b) {
    const struct lopad_hparams *hp = &c->model->hp;
    if (!b) return lp_error(LOPAD_ERR_ARG, "batch: NULL");
    if (b->n_tokens < 1 || b->n_tokens > c->n_batch_max)
        return lp_error(LOPAD_ERR_ARG, "batch: n_tokens %d outside 1..n_batch_max (%d)",
                        b->n_tokens, c->n_batch_max);
    if (!b->tokens || !b->pos) return lp_error(LOPAD_ERR_ARG, "batch: tokens and pos are required");
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab)
            return lp_error(LOPAD_ERR_ARG,
                            "batch: token %d has id %d, outside the vocabulary [0, %d)", i,
                            b->tokens[i], hp->n_vocab);
        if (b->pos[i] < 0)
            return lp_error(LOPAD_ERR_ARG, "batch: token %d has negative position %d", i,
                            b->pos[i]);
    }
    if (b->n_seq < 1 || b->n_seq > b->n_tokens)
        return lp_error(LOPAD_ERR_ARG, "batch: n_seq %d outside 1..n_tokens (%d)", b->n_seq,
                        b->n_tokens);
    int32_t *start = c->seq_start;
    if (!b->seq) {
        if (b->n_seq != 1)
            return lp_error(LOPAD_ERR_ARG, "batch: n_seq is %d but no seq ids were given",
                            b->n_seq);
        start[0] = 0;
        start[1] = b->n_tokens;
    } else {
        if (b->seq[0] != 0)
            return lp_error(LOPAD_ERR_ARG, "batch: token 0 has seq id %d, sequences start at 0",
                            b->seq[0]);
        start[0] = 0;
        for (int i = 1; i < b->n_tokens; i++) {
            int32_t d = b->seq[i] - b->seq[i - 1];
            if (d != 0 && d != 1)
                return lp_error(LOPAD_ERR_ARG,
                                "batch: token %d has seq id %d after %d; each sequence's tokens "
                                "must be contiguous, in increasing seq order",
                                i, b->seq[i], b->seq[i - 1]);
            if (d == 1) start[b->seq[i]] = i;
        }
        if (b->seq[b->n_tokens - 1] != b->n_seq - 1)
            return lp_error(LOPAD_ERR_ARG, "batch: seq ids end at %d but n_seq is %d",
                            b->seq[b->n_tokens - 1], b->n_seq);
        start[b->n_seq] = b->n_tokens;
    }
    if (b->n_cache < 0 || b->n_cache > c->kv_len)
        return lp_error(LOPAD_ERR_ARG, "batch: n_cache %d outside 0..cached rows (%d)", b->n_cache,
                        c->kv_len);
    if (b->cache_skip_begin < 0 || b->cache_skip_begin > b->cache_skip_end ||
        b->cache_skip_end > b->n_cache)
        return lp_error(LOPAD_ERR_ARG,
                        "batch: cache skip range [%d, %d) is not inside [0, n_cache = %d)",
                        b->cache_skip_begin, b->cache_skip_end, b->n_cache);
    if (b->n_out < 0) return lp_error(LOPAD_ERR_ARG, "batch: n_out %d is negative", b->n_out);
    if (b->n_out > 0 && (!b->out_rows || !b->logits))
        return lp_error(LOPAD_ERR_ARG, "batch: n_out is %d but out_rows or logits is NULL",
                        b->n_out);
    for (int i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens)
            return lp_error(LOPAD_ERR_ARG, "batch: out_rows[%d] = %d outside the fed rows [0, %d)",
                            i, b->out_rows[i], b->n_tokens);
    return LOPAD_OK;
}

/* Rows rows[no] of the residual stream c->x, final-normed, into c->xn. */
static void head_input(lopad_ctx *c, const int32_t *rows, int no) {
    const struct lopad_model *m = c->model;
    const int E = m->hp.n_embd;
    const size_t row_bytes = (size_t)E * sizeof(float);
    for (int i = 0; i < no;) { /* runs of consecutive rows in one copy */
        int r = 1;
        while (i + r < no && rows[i + r] == rows[i] + r)
            r++;
        c->be.ops->copy(c->be.ctx, c->xn + (int64_t)i * E, c->x + (int64_t)rows[i] * E,
                        row_bytes * r);
        i += r;
    }
    c->be.ops->rmsnorm(c->be.ctx, c->xn, m->output_norm, m->hp.norm_eps, no, E, c->xn);
}

/* The output head for fed rows out_rows[n_out] of the residual stream c->x: their
 * logits to `logits` [n_out][V], or their scores to `scores` when scores != NULL. */
static enum lopad_status run_head(lopad_ctx *c, const int32_t *out_rows, int n_out, float *logits,
                                  struct lp_row_scores *scores) {
    const struct lopad_model *m = c->model;
    const struct lopad_hparams *hp = &m->hp;
    const struct lp_backend_ops *ops = c->be.ops;
    void *be = c->be.ctx;
    if (c->tp) { /* this rank's vocabulary slice, combined with the group's */
        const int chunk = lp_tp_head_rows(c);
        enum lopad_status st = LOPAD_OK;
        for (int o0 = 0; o0 < n_out && !st; o0 += chunk) {
            const int no = LP_MIN(chunk, n_out - o0);
            head_input(c, out_rows + o0, no);
            st = lp_tp_head(c, no, logits ? logits + (int64_t)o0 * hp->n_vocab : NULL,
                            scores ? scores + o0 : NULL);
        }
        return st;
    }
    /* output head for the requested rows only, in chunks that fit the buffers */
    const int chunk = c->logits_dev ? c->logits_rows : c->n_batch_max;
    for (int o0 = 0; o0 < n_out; o0 += chunk) {
        const int no = LP_MIN(chunk, n_out - o0);
        head_input(c, out_rows + o0, no);
        if (scores) { /* fused head + scores into the host array; the MLP buffers are free now */
            ops->head_scores(be, &m->output, c->xn, no, c->gate,
                             (size_t)c->n_batch_max * (size_t)c->gate_cols, scores + o0);
            continue;
        }
        float *dst = logits + (int64_t)o0 * hp->n_vocab;
        if (!c->logits_dev) { /* host-memory backend: write the caller's logits directly */
            ops->matmul(be, &m->output, NULL, c->xn, no, dst);
        } else { /* device backend: through the staging buffer */
            ops->matmul(be, &m->output, NULL, c->xn, no, c->logits_dev);
            ops->download(be, dst, c->logits_dev, sizeof(float) * (size_t)no * hp->n_vocab);
        }
    }
    return LOPAD_OK;
}

/* The forward; the head writes b->logits, or the rows' scores when scores != NULL. */
static enum lopad_status forward_impl(lopad_ctx *c, const struct lopad_batch *b,
                                      struct lp_row_scores *scores) {
    enum lopad_status st;
    const struct lopad_model *m = c->model;
    const struct lopad_hparams *hp = &m->hp;
    const struct lp_backend_ops *ops = c->be.ops;
    void *be = c->be.ctx;
    const int n = b->n_tokens, E = hp->n_embd;

    /* the fed scratch is about to be overwritten: no commit from a half-done forward */
    c->last_n_fed = 0;
    c->last_x_rows = 0;

    ops->get_rows(be, &m->tok_embd, b->tokens, n, c->x); /* (n, E) */

    struct lp_attn_desc ad = {
        .n_tokens = n,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .q = c->q,
        .n_cache = b->n_cache,
        .skip_begin = b->cache_skip_begin,
        .skip_end = b->cache_skip_end,
        .n_seq = b->n_seq,
        .seq_start = c->seq_start,
        .block = b->block,
        .scale = 1.0f / sqrtf((float)hp->head_dim),
        .out = c->att,
    };
    for (int l = 0; l < hp->n_layer; l++) {
        const struct lp_layer *L = &m->layers[l];
        float *k = lp_ctx_kfed(c, l), *v = lp_ctx_vfed(c, l); /* (n, kv_dim) */

        ops->rmsnorm(be, c->x, L->attn_norm, hp->norm_eps, n, E, c->xn);
        ops->matmul(be, &L->wq, L->bq, c->xn, n, c->q); /* (n, qd) */
        ops->matmul(be, &L->wk, L->bk, c->xn, n, k);
        ops->matmul(be, &L->wv, L->bv, c->xn, n, v);
        ops->rope(be, c->q, n, hp->n_head, hp->head_dim, b->pos, hp->rope_theta, hp->rope);
        ops->rope(be, k, n, hp->n_head_kv, hp->head_dim, b->pos, hp->rope_theta, hp->rope);
        /* a prefill without logits needs nothing of the last layer past its K/V */
        if (l == hp->n_layer - 1 && b->n_out == 0) break;

        ad.k = k;
        ad.v = v;
        ad.k_cache = lp_ctx_kcache(c, l);
        ad.v_cache = lp_ctx_vcache(c, l);
        ops->attention(be, &ad);                         /* (n, qd) */
        ops->matmul(be, &L->wo, NULL, c->att, n, c->xn); /* (n, E) */
        if (c->tp && (st = lp_tp_allreduce(c, c->xn, (int64_t)n * E, "attention output")))
            return st;
        ops->add(be, c->x, c->xn, (int64_t)n * E);

        ops->rmsnorm(be, c->x, L->ffn_norm, hp->norm_eps, n, E, c->xn);
        ops->matmul(be, &L->w_gate, NULL, c->xn, n, c->gate); /* (n, F) */
        ops->matmul(be, &L->w_up, NULL, c->xn, n, c->up);
        ops->silu_mul(be, c->gate, c->up, (int64_t)n * hp->n_ff);
        ops->matmul(be, &L->w_down, NULL, c->gate, n, c->xn); /* (n, E) */
        if (c->tp && (st = lp_tp_allreduce(c, c->xn, (int64_t)n * E, "FFN output"))) return st;
        ops->add(be, c->x, c->xn, (int64_t)n * E);
    }

    if ((st = run_head(c, b->out_rows, b->n_out, b->logits, scores))) return st;
    /* a device backend queues its work: wait for it and surface its first error */
    if (c->be_sync && (st = c->be_sync(&c->be))) return st;
    c->last_n_fed = n;
    c->last_x_rows = b->n_out > 0 ? n : 0; /* the last layer ran whole */
    return LOPAD_OK;
}

enum lopad_status lopad_forward(lopad_ctx *c, const struct lopad_batch *b) {
    if (!c) return lp_error(LOPAD_ERR_ARG, "lopad_forward: context is NULL");
    enum lopad_status st = lp_batch_check(c, b);
    if (st) return st;
    return forward_impl(c, b, NULL);
}

enum lopad_status lp_forward_scores(lopad_ctx *c, const struct lopad_batch *b,
                                    struct lp_row_scores *scores) {
    if (!c) return lp_error(LOPAD_ERR_ARG, "lp_forward_scores: context is NULL");
    if (!b) return lp_error(LOPAD_ERR_ARG, "batch: NULL");
    if (b->n_out > 0 && !scores)
        return lp_error(LOPAD_ERR_ARG, "lp_forward_scores: n_out is %d but scores is NULL",
                        b->n_out);
    const struct lopad_hparams *hp = &c->model->hp;
    if (!c->be.ops->head_scores)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "lp_forward_scores: backend %s has no fused head",
                        c->be.ops->name);
    if (!lp_forward_has_scores(c))
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "lp_forward_scores: vocabulary of %d too large for the context's scratch",
                        hp->n_vocab);
    /* the batch check wants somewhere for logits; none are written here */
    struct lopad_batch bb = *b;
    if (!bb.logits) bb.logits = (float *)scores;
    enum lopad_status st = lp_batch_check(c, &bb);
    if (st) return st;
    return forward_impl(c, &bb, scores);
}

struct lp_pool *lp_forward_pool(const lopad_ctx *c) {
    return c->be.ops ? lp_backend_cpu_pool(&c->be) : NULL;
}

bool lp_forward_scores_exact(const lopad_ctx *c) {
    return c->be.ops->host_memory && lp_forward_has_scores(c);
}

bool lp_forward_has_scores(const lopad_ctx *c) {
    const struct lopad_model *m = c->model; /* the head's rows: a slice under tensor parallelism */
    return c->be.ops->head_scores && c->be.ops->head_scores_scratch &&
           c->be.ops->head_scores_scratch(m->output.n_out, c->n_batch_max) <=
               (size_t)c->n_batch_max * (size_t)c->gate_cols;
}

struct lp_dist *lp_forward_tp_group(const lopad_ctx *c) {
    return c && c->tp ? c->tp->group : NULL;
}

struct lp_dist *lp_forward_branch_dist(const lopad_ctx *c) {
    return c && c->tp ? c->tp->branches : lp_dist_world();
}

enum lopad_status lp_forward_last_logits(lopad_ctx *c, const int32_t *rows, int n, float *logits) {
    if (!c) return lp_error(LOPAD_ERR_ARG, "lp_forward_last_logits: context is NULL");
    if (n < 0 || (n > 0 && (!rows || !logits)))
        return lp_error(LOPAD_ERR_ARG, "lp_forward_last_logits: %d rows but no rows or logits", n);
    if (n > 0 && c->last_x_rows == 0)
        return lp_error(LOPAD_ERR_ARG,
                        "lp_forward_last_logits: the last forward asked for no output rows");
    for (int i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= c->last_x_rows)
            return lp_error(LOPAD_ERR_ARG,
                            "lp_forward_last_logits: rows[%d] = %d outside the last forward's "
                            "fed rows [0, %d)",
                            i, rows[i], c->last_x_rows);
    enum lopad_status st = run_head(c, rows, n, logits, NULL);
    if (!st && c->be_sync) st = c->be_sync(&c->be);
    return st;
}
