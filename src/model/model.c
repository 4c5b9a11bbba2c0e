/*
 * model.c - lopad_model_load / lopad_model_free / info: pick the format loader
 * from the path (a directory is a Hugging Face checkpoint, a file must be GGUF),
 * then merge an adapter if asked.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "model.h"
#include "model_ref.h"
#include "../gen/text.h"
#include "../core/types.h"

void lp_model_free_derived(struct lopad_model *m) {
    while (m->caches) {
        struct lp_model_cache *e = m->caches;
        m->caches = e->next;
        if (e->free) e->free(e->data);
        lp_free(e);
    }
    for (int i = m->n_owned - 1; i >= 0; i--) {
        if (m->owned[i].mapped)
            munmap(m->owned[i].ptr, m->owned[i].size);
        else
            lp_free(m->owned[i].ptr);
    }
    lp_free(m->owned);
    m->owned = NULL;
    m->n_owned = 0;
}

static void model_destroy(struct lopad_model *m) {
    lp_model_free_derived(m);
    lp_free(m->chat_template);
    lp_free(m->lora_path);
    lp_free(m->path);
    lp_free(m);
}

/* Models that have contexts: how many, and whether the caller's reference is
 * gone (lopad_model_free ran). Kept beside the models (a count inside struct
 * lopad_model would need no lock; this keeps model.h as it is): a process
 * holds few models, and contexts are made far less often than forwards. */
struct model_ref {
    const struct lopad_model *m;
    int n_ctx;
    bool orphaned;
    struct model_ref *next;
};
static pthread_mutex_t g_ref_lock = PTHREAD_MUTEX_INITIALIZER;
static struct model_ref *g_refs;

static struct model_ref **ref_find(const struct lopad_model *m) {
    struct model_ref **r = &g_refs;
    while (*r && (*r)->m != m)
        r = &(*r)->next;
    return r;
}

enum lopad_status lp_model_retain(const struct lopad_model *m) {
    enum lopad_status st = LOPAD_OK;
    pthread_mutex_lock(&g_ref_lock);
    struct model_ref **r = ref_find(m);
    if (!*r && (*r = lp_calloc(1, sizeof **r, "model reference"))) (*r)->m = m;
    if (*r)
        (*r)->n_ctx++;
    else
        st = LOPAD_ERR_NOMEM;
    pthread_mutex_unlock(&g_ref_lock);
    return st;
}

void lp_model_release(const struct lopad_model *m) {
    pthread_mutex_lock(&g_ref_lock);
    struct model_ref **r = ref_find(m), *gone = NULL;
    LP_ASSERT(*r && (*r)->n_ctx > 0);
    if (--(*r)->n_ctx == 0) {
        gone = *r;
        *r = gone->next;
    }
    pthread_mutex_unlock(&g_ref_lock);
    if (gone && gone->orphaned) model_destroy((struct lopad_model *)m);
    lp_free(gone);
}

void lopad_model_free(lopad_model *m) {
    if (!m) return;
    pthread_mutex_lock(&g_ref_lock);
    struct model_ref *r = *ref_find(m);
    if (r) r->orphaned = true; /* the last context's lopad_ctx_free destroys it */
    pthread_mutex_unlock(&g_ref_lock);
    if (!r) model_destroy(m);
}

/* Loading read every page of the mapped files (the non-finite scan). Hand them back:
 * a read-only file mapping refills from the file (usually the page cache) on the next
 * touch, so what stays resident is what the forwards use, which for a rank holding a
 * slice of the model (tensor parallelism) is its slice. */
static void drop_scanned_pages(struct lopad_model *m) {
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i].mapped) madvise(m->owned[i].ptr, m->owned[i].size, MADV_DONTNEED);
}

enum lopad_status lopad_model_load(const char *path, const struct lopad_load_opts *opts,
                                   lopad_model **out) {
    *out = NULL;
    lp_clear_error();
    if (!path || !*path) return lp_error(LOPAD_ERR_ARG, "no model path given");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lp_error(LOPAD_ERR_IO, "%s: cannot open model: %s", path, strerror(errno));
    struct lopad_model *m = lp_calloc(1, sizeof *m, "model");
    if (!m) return LOPAD_ERR_NOMEM;
    m->hp.mask_id = m->hp.bos_id = m->hp.eos_id = m->hp.pad_id = m->hp.eot_id = -1;
    enum lopad_status st = LOPAD_ERR_NOMEM;
    if (!(m->path = lp_strdup(path, "model path"))) goto fail;
    if (S_ISDIR(sb.st_mode)) {
        m->format = "hf";
        st = lp_load_hf(m, path);
    } else {
        m->format = "gguf";
        st = lp_load_gguf(m, path);
    }
    if (st) goto fail;
    if (opts && opts->lora_dir && (st = lp_lora_merge(m, opts->lora_dir))) goto fail;
    /* the tokenizer and chat template travel with the model (src/gen/text.c) */
    if (!(opts && opts->no_tokenizer) && (st = lp_model_text_load(m))) goto fail;
    drop_scanned_pages(m);
    *out = m;
    return LOPAD_OK;
fail:
    lopad_model_free(m);
    return st;
}

const struct lopad_hparams *lopad_model_hparams(const lopad_model *m) {
    return &m->hp;
}

static double weight_bytes(const struct lp_weight *w) {
    return (double)w->row_bytes * w->n_out;
}

void lopad_model_print_info(const lopad_model *m, void *file) {
    FILE *f = file;
    const struct lopad_hparams *hp = &m->hp;
    double bytes = weight_bytes(&m->tok_embd);
    if (m->output.data != m->tok_embd.data) bytes += weight_bytes(&m->output);
    double params = (double)hp->n_vocab * hp->n_embd * (m->output.data != m->tok_embd.data ? 2 : 1);
    for (int i = 0; i < hp->n_layer; i++) {
        const struct lp_layer *L = &m->layers[i];
        const struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (unsigned j = 0; j < LP_N_LAYER_MATRICES; j++) {
            bytes += weight_bytes(ws[j]);
            params += (double)ws[j]->n_in * ws[j]->n_out;
        }
    }
    fprintf(f, "path            %s (%s)\n", m->path, m->format);
    fprintf(f, "architecture    %s\n", hp->arch == LOPAD_ARCH_DREAM ? "dream" : "llada");
    fprintf(f, "parameters      %.3f M (matrices %.1f MiB)\n", params / 1e6, bytes / (1 << 20));
    fprintf(f, "n_embd          %d\n", hp->n_embd);
    fprintf(f, "n_layer         %d\n", hp->n_layer);
    fprintf(f, "n_head          %d\n", hp->n_head);
    fprintf(f, "n_head_kv       %d\n", hp->n_head_kv);
    fprintf(f, "head_dim        %d\n", hp->head_dim);
    fprintf(f, "n_ff            %d\n", hp->n_ff);
    fprintf(f, "n_vocab         %d\n", hp->n_vocab);
    fprintf(f, "n_ctx_train     %d\n", hp->n_ctx_train);
    fprintf(f, "rope            %s, theta %g\n",
            hp->rope == LOPAD_ROPE_NEOX ? "neox" : "norm (interleaved)", hp->rope_theta);
    fprintf(f, "norm_eps        %g\n", hp->norm_eps);
    fprintf(f, "qkv_bias        %s\n", hp->has_qkv_bias ? "yes" : "no");
    fprintf(f, "shift_logits    %s\n", hp->shift_logits ? "yes" : "no");
    fprintf(f, "special ids     mask %d, bos %d, eos %d, pad %d, eot %d\n", hp->mask_id, hp->bos_id,
            hp->eos_id, hp->pad_id, hp->eot_id);
    fprintf(f, "tensor types   ");
    for (int t = 0; t < 64; t++)
        if (m->type_count[t]) fprintf(f, " %s x%d", lp_type_name(t), m->type_count[t]);
    fprintf(f, "\n");
    fprintf(f, "chat template   %s\n", m->chat_template ? "yes" : "no");
    if (m->lora_path) fprintf(f, "lora            %s (merged)\n", m->lora_path);
}
