/* model_hash.c - a model's fingerprint for the ranks' start-up agreement (dist.h). */
#include <string.h>
#include "dist.h"
#include "model/model.h"

#define H(h, x) lp_dist_hash(h, &(x), sizeof(x))

static uint64_t hash_hparams(uint64_t h, const struct lopad_hparams *p) {
    /* field by field: the struct's padding bytes are not part of the model */
    int32_t v[] = {(int32_t)p->arch, (int32_t)p->rope, p->n_embd,  p->n_layer, p->n_head,
                   p->n_head_kv,     p->head_dim,      p->n_ff,    p->n_vocab, p->n_ctx_train,
                   p->shift_logits,  p->has_qkv_bias,  p->mask_id, p->bos_id,  p->eos_id,
                   p->pad_id,        p->eot_id};
    h = lp_dist_hash(h, v, sizeof v);
    h = H(h, p->rope_theta);
    return H(h, p->norm_eps);
}

/* name, type, shape and three 256-byte samples of the data */
static uint64_t hash_weight(uint64_t h, const struct lp_weight *w) {
    if (!w->data) return h;
    if (w->name) h = lp_dist_hash(h, w->name, strlen(w->name));
    int64_t shape[3] = {w->type, w->n_in, w->n_out};
    h = lp_dist_hash(h, shape, sizeof shape);
    const size_t n = w->row_bytes * (size_t)w->n_out, s = n < 256 ? n : 256;
    const char *d = w->data;
    h = lp_dist_hash(h, d, s);
    h = lp_dist_hash(h, d + (n - s) / 2, s);
    return lp_dist_hash(h, d + n - s, s);
}

static uint64_t hash_f32(uint64_t h, const float *x, int n) {
    return x ? lp_dist_hash(h, x, sizeof(float) * (size_t)n) : h;
}

uint64_t lp_dist_model_hash(const struct lopad_model *m) {
    const struct lopad_hparams *p = &m->hp;
    uint64_t h = hash_hparams(LP_DIST_HASH0, p);
    h = hash_weight(h, &m->tok_embd);
    h = hash_weight(h, &m->output);
    h = hash_f32(h, m->output_norm, p->n_embd);
    const int qd = p->n_head * p->head_dim, kd = p->n_head_kv * p->head_dim;
    for (int l = 0; l < p->n_layer; l++) {
        const struct lp_layer *L = &m->layers[l];
        const struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (int i = 0; i < LP_N_LAYER_MATRICES; i++)
            h = hash_weight(h, ws[i]);
        h = hash_f32(h, L->attn_norm, p->n_embd);
        h = hash_f32(h, L->ffn_norm, p->n_embd);
        h = hash_f32(h, L->bq, qd);
        h = hash_f32(h, L->bk, kd);
        h = hash_f32(h, L->bv, kd);
    }
    return h;
}
