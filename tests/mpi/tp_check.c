/*
 * tp_check.c - tensor parallelism against one process, run under mpirun by
 * tests/cli/test_mpi.sh: every rank builds the whole model's context and a
 * tensor-parallel one (T ranks per forward) and feeds both the same batches (a
 * prefill into the cache, then two sequences with a block-causal mask reading it).
 *   - logits: within float rounding of the whole model's (the partial sums of the
 *     attention and FFN projections are added in another order), and the same
 *     argmax wherever the top two are apart by more than that rounding;
 *   - fused scores: argmax, pmax, margin, entropy and log-sum-exp within the scores'
 *     tolerance of the whole model's, and the argmax exactly that of the same
 *     context's gathered logits;
 *   - every rank of the job holds the same bits (the decoders' decisions need it).
 * usage: tp_check T MODEL...   (exit 0 = pass)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dist/dist.h"
#include "forward/forward.h"
#include "lopad.h"

enum { N_PRE = 8, N_SEQ = 2, N_FED = 12 };

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "tp_check rank %d: ", lp_dist_rank(lp_dist_world()));                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static lopad_ctx *new_ctx(const lopad_model *m, int T) {
    struct lopad_ctx_params p = {
        .n_ctx = 64, .n_batch_max = 16, .n_threads = 1, .tensor_parallel = T};
    lopad_ctx *c = NULL;
    if (lopad_ctx_new(m, &p, &c)) fprintf(stderr, "tp_check: %s\n", lopad_errmsg());
    return c;
}

/* The prefill, then the two sequences: logits or scores of every fed row. */
static int run(lopad_ctx *c, const struct lopad_hparams *hp, float *logits,
               struct lp_row_scores *scores) {
    int32_t tok[N_FED], pos[N_FED], seq[N_FED], blk[N_FED], out[N_FED];
    for (int i = 0; i < N_PRE; i++)
        tok[i] = (7 * i + 3) % hp->n_vocab, pos[i] = i;
    struct lopad_batch pre = {.n_tokens = N_PRE, .tokens = tok, .pos = pos, .n_seq = 1};
    lopad_kv_truncate(c, 0);
    if (lopad_forward(c, &pre) || lopad_kv_commit(c, 0, N_PRE, 0)) return -1;
    for (int i = 0; i < N_FED; i++) {
        const int s = i / (N_FED / N_SEQ), j = i % (N_FED / N_SEQ);
        tok[i] = j % 3 == 0 ? hp->mask_id : (11 * i + 5 * s + 1) % hp->n_vocab;
        pos[i] = N_PRE + j;
        seq[i] = s;
        blk[i] = j / 3;
        out[i] = i;
    }
    struct lopad_batch b = {.n_tokens = N_FED,
                            .tokens = tok,
                            .pos = pos,
                            .n_seq = N_SEQ,
                            .seq = seq,
                            .block = blk,
                            .n_cache = N_PRE,
                            .n_out = N_FED,
                            .out_rows = out,
                            .logits = logits};
    return scores ? lp_forward_scores(c, &b, scores) : lopad_forward(c, &b);
}

static int argmax(const float *z, int V) {
    int a = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[a]) a = v;
    return a;
}
static float second(const float *z, int V, int a) {
    float s = -INFINITY;
    for (int v = 0; v < V; v++)
        if (v != a && z[v] > s) s = z[v];
    return s;
}

static void compare_logits(const float *want, const float *got, int V, const char *name) {
    double scale = 1, worst = 0;
    for (int i = 0; i < N_FED * V; i++)
        scale = fmax(scale, fabs(want[i]));
    for (int i = 0; i < N_FED * V; i++)
        worst = fmax(worst, fabs(want[i] - got[i]));
    const double tol = 1e-5 * scale;
    CHECK(worst <= tol, "%s: logits differ by %.3g (tolerance %.3g)", name, worst, tol);
    for (int r = 0; r < N_FED; r++) {
        const float *w = want + (size_t)r * V;
        const int a = argmax(w, V);
        if (w[a] - second(w, V, a) > 2 * tol)
            CHECK(argmax(got + (size_t)r * V, V) == a, "%s: row %d argmax %d, one process %d", name,
                  r, argmax(got + (size_t)r * V, V), a);
    }
    if (!lp_dist_rank(lp_dist_world()))
        printf("tp_check %s: logits within %.3g of one process (scale %.3g)\n", name, worst, scale);
}

static void compare_scores(const struct lp_row_scores *want, const struct lp_row_scores *got,
                           const float *tp_logits, int V, const char *name) {
    for (int r = 0; r < N_FED; r++) {
        const struct lp_row_scores *w = want + r, *g = got + r;
        const float *z = tp_logits + (size_t)r * V;
        CHECK(g->argmax == argmax(z, V) && g->top1 == z[g->argmax],
              "%s: row %d fused argmax %d, the same context's logits say %d", name, r, g->argmax,
              argmax(z, V));
        if (w->margin > 1e-4f) CHECK(g->argmax == w->argmax, "%s: row %d argmax", name, r);
        const float d[4] = {g->pmax - w->pmax, g->margin - w->margin, g->negent - w->negent,
                            g->logsumexp - w->logsumexp};
        const float s[4] = {1, 1, 1 + fabsf(w->negent), 1 + fabsf(w->logsumexp)};
        for (int k = 0; k < 4; k++)
            CHECK(fabsf(d[k]) <= 2e-4f * s[k], "%s: row %d score %d differs by %g", name, r, k,
                  d[k]);
    }
}

/* The same bits on every rank of the job (rank 0's checksum). */
static void check_same_everywhere(const void *p, size_t n, const char *name) {
    uint64_t h = lp_dist_hash(LP_DIST_HASH0, p, n);
    static const char *const names[1] = {"tensor-parallel output"};
    CHECK(lp_dist_agree(lp_dist_world(), &h, 1, names) == LOPAD_OK, "%s: ranks disagree: %s", name,
          lopad_errmsg());
}

static void check_model(const char *path, int T) {
    lopad_model *m = NULL;
    if (lopad_model_load(path, NULL, &m)) {
        CHECK(0, "%s: %s", path, lopad_errmsg());
        return;
    }
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    const int V = hp->n_vocab;
    lopad_ctx *one = new_ctx(m, 0), *tp = new_ctx(m, T);
    float *a = malloc(sizeof(float) * N_FED * V), *b = malloc(sizeof(float) * N_FED * V);
    struct lp_row_scores sa[N_FED], sb[N_FED];
    CHECK(one && tp && a && b, "%s: setup", path);
    if (one && tp && a && b) {
        CHECK(!run(one, hp, a, NULL) && !run(tp, hp, b, NULL), "%s: forward: %s", path,
              lopad_errmsg());
        compare_logits(a, b, V, path);
        check_same_everywhere(b, sizeof(float) * N_FED * V, path);
        CHECK(!run(one, hp, NULL, sa) && !run(tp, hp, NULL, sb), "%s: scores: %s", path,
              lopad_errmsg());
        compare_scores(sa, sb, b, V, path);
        check_same_everywhere(sb, sizeof sb, path);
    }
    free(a);
    free(b);
    lopad_ctx_free(one);
    lopad_ctx_free(tp);
    lopad_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tp_check T MODEL...\n");
        return 2;
    }
    if (lp_dist_init(60) || !lp_dist_world()) {
        fprintf(stderr, "tp_check: run it under mpirun with T or more ranks\n");
        return 2;
    }
    const int T = atoi(argv[1]);
    for (int i = 2; i < argc; i++)
        check_model(argv[i], T);
    if (!lp_dist_rank(lp_dist_world())) printf("tp_check T=%d: %d failures\n", T, failures);
    const int rc = failures ? 1 : 0;
    if (rc) lp_dist_abort(rc);
    lp_dist_finalize();
    return rc;
}
