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
 * With --device cuda both contexts run on the CUDA backend (real, or the emulation of
 * tests/cli/test_nccl_emu.sh), whose weights are bf16: the checks above hold between
 * the tensor-parallel and the whole-model CUDA contexts, and the tensor-parallel
 * one's logits and scores must also be within bf16 tolerance of the CPU (as in
 * test_cuda). In a build with NCCL, the per-layer all-reduces must go through NCCL:
 * the group's host exchanges in a forward are the output head's only.
 * usage: tp_check [--device cuda] T MODEL...   (exit 0 = pass)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dist/dist.h"
#include "dist/nccl.h"
#include "forward/forward.h"
#include "forward/tensor_parallel.h"
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

static lopad_ctx *new_ctx(const lopad_model *m, int T, const char *device) {
    struct lopad_ctx_params p = {
        .n_ctx = 64, .n_batch_max = 16, .n_threads = 1, .device = device, .tensor_parallel = T};
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

/* max |a - b| / max |b| over n values: test_cuda's measure of bf16 agreement */
static double rel_diff(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1e-6;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d; /* NaN propagates as a failure */
        mb = fmax(mb, fabs(b[i]));
    }
    return md / mb;
}

/* A device's tensor-parallel scores against the CPU's whole model: within bf16
 * rounding (the device rounds weights and GEMM inputs to bf16), as test_cuda. */
static double compare_cpu_scores(const struct lp_row_scores *cs, const struct lp_row_scores *gs,
                                 const char *name) {
    double ds = 0;
    for (int r = 0; r < N_FED; r++) {
        const float g[4] = {gs[r].pmax, gs[r].margin, gs[r].negent, gs[r].logsumexp};
        const float c[4] = {cs[r].pmax, cs[r].margin, cs[r].negent, cs[r].logsumexp};
        for (int k = 0; k < 4; k++) {
            const double d = fabs(g[k] - c[k]) / (1 + fabs(c[k]));
            if (!(d <= ds)) ds = d;
        }
        if (cs[r].margin > 5e-2f)
            CHECK(gs[r].argmax == cs[r].argmax, "%s: row %d argmax %d, the CPU's %d", name, r,
                  gs[r].argmax, cs[r].argmax);
    }
    CHECK(ds <= 2e-2, "%s: scores differ from the CPU's by %.3g (bf16 tolerance 2e-2)", name, ds);
    return ds;
}

/* ... and its logits (and scores when sb != NULL) against the CPU context's. */
static void compare_cpu(lopad_ctx *cpu, const struct lopad_hparams *hp, const float *b,
                        const struct lp_row_scores *sb, const char *name) {
    const int V = hp->n_vocab;
    float *c = malloc(sizeof(float) * N_FED * V);
    struct lp_row_scores sc[N_FED];
    if (!c || run(cpu, hp, c, NULL) || (sb && run(cpu, hp, NULL, sc))) {
        CHECK(0, "%s: CPU forward: %s", name, c ? lopad_errmsg() : "out of memory");
        free(c);
        return;
    }
    const double dl = rel_diff(b, c, (size_t)N_FED * V);
    CHECK(dl <= 2e-2, "%s: logits differ from the CPU's by %.3g (bf16 tolerance 2e-2)", name, dl);
    const double ds = sb ? compare_cpu_scores(sc, sb, name) : 0;
    if (!lp_dist_rank(lp_dist_world())) {
        printf("tp_check %s: logits within %.3g of the CPU", name, dl);
        printf(sb ? ", scores within %.3g\n" : "\n", ds);
    }
    free(c);
}

static uint64_t host_exchanges(const lopad_ctx *c) {
    struct lp_dist_stats st;
    lp_dist_get_stats(c->tp->group, &st);
    return st.n_exchanges;
}

/* The host exchanges of one run() on a device context: the output head's (one per chunk
 * of rows) and, unless the build has NCCL, two all-reduces per layer of both forwards but
 * the prefill's last (with no output row, that layer only writes its K/V). NCCL is used
 * when the build has it, unless LOPAD_NCCL=0 (ranks sharing one GPU). */
static void check_exchanges(const lopad_ctx *c, uint64_t got, int n_layer, const char *name) {
    const int rows = lp_tp_head_rows(c);
    const bool nccl = c->tp->dev != NULL; /* the emulation test requires it there */
    const uint64_t want =
        (uint64_t)((N_FED + rows - 1) / rows) + (nccl ? 0 : 2 * (2 * n_layer - 1));
    CHECK(got == want, "%s: %llu host exchanges in a run, %llu expected (%s)", name,
          (unsigned long long)got, (unsigned long long)want,
          nccl ? "the head's only: the all-reduces go through NCCL" : "no NCCL in this build");
    if (!lp_dist_rank(lp_dist_world()))
        printf("tp_check %s: %llu host exchanges per run (%s)\n", name, (unsigned long long)got,
               nccl ? "NCCL build: the all-reduces on NCCL" : "no NCCL: the all-reduces staged");
}

/* The fused scores of tp against one's; false when tp has none. A device shard
 * can lack them: the device head's scratch (the MLP's, n_ff / T floats a row) may be too
 * small on a tiny model; then lp_forward_scores must refuse, and the decoders use logits. */
static bool check_scores(lopad_ctx *one, lopad_ctx *tp, const struct lopad_hparams *hp,
                         const float *b, struct lp_row_scores *sb, const char *name) {
    struct lp_row_scores sa[N_FED];
    if (!lp_forward_has_scores(tp)) { /* the context sizes the head's scratch for its shard */
        CHECK(0, "%s: the tensor-parallel context has no fused scores", name);
        return false;
    }
    if (run(one, hp, NULL, sa) || run(tp, hp, NULL, sb)) {
        CHECK(0, "%s: scores: %s", name, lopad_errmsg());
        return false;
    }
    compare_scores(sa, sb, b, hp->n_vocab, name);
    check_same_everywhere(sb, sizeof(struct lp_row_scores) * N_FED, name);
    return true;
}

/* tp against one (the same device), and against cpu when the device is not the CPU. */
static void check_ctxs(lopad_ctx *one, lopad_ctx *tp, lopad_ctx *cpu,
                       const struct lopad_hparams *hp, const char *path, const char *name) {
    const int V = hp->n_vocab;
    float *a = malloc(sizeof(float) * N_FED * V), *b = malloc(sizeof(float) * N_FED * V);
    struct lp_row_scores sb[N_FED];
    CHECK(a && b, "%s: out of memory", name);
    const uint64_t x0 = cpu && tp->tp ? host_exchanges(tp) : 0;
    if (a && b && (run(one, hp, a, NULL) || run(tp, hp, b, NULL))) {
        CHECK(0, "%s: forward: %s", name, lopad_errmsg());
    } else if (a && b) {
        if (cpu && tp->tp) check_exchanges(tp, host_exchanges(tp) - x0, hp->n_layer, name);
        compare_logits(a, b, V, cpu ? name : path);
        check_same_everywhere(b, sizeof(float) * N_FED * V, name);
        const bool fused = check_scores(one, tp, hp, b, sb, name);
        if (cpu) compare_cpu(cpu, hp, b, fused ? sb : NULL, name);
    }
    free(a);
    free(b);
}

/* device NULL: the CPU; else the tensor-parallel context on that device against the
 * whole model on the same device, and against the CPU's whole model. */
static void check_model(const char *path, int T, const char *device) {
    lopad_model *m = NULL;
    if (lopad_model_load(path, NULL, &m)) {
        CHECK(0, "%s: %s", path, lopad_errmsg());
        return;
    }
    char name[1024];
    snprintf(name, sizeof name, "%s%s%s", device ? device : "", device ? " " : "", path);
    lopad_ctx *one = new_ctx(m, 0, device), *tp = new_ctx(m, T, device);
    lopad_ctx *cpu = device ? new_ctx(m, 0, NULL) : NULL;
    if (one && tp && (!device || cpu))
        check_ctxs(one, tp, cpu, lopad_model_hparams(m), path, name);
    else
        CHECK(0, "%s: setup", name);
    lopad_ctx_free(one);
    lopad_ctx_free(tp);
    lopad_ctx_free(cpu);
    lopad_model_free(m);
}

int main(int argc, char **argv) {
    const char *device = NULL;
    if (argc > 2 && !strcmp(argv[1], "--device")) {
        device = strcmp(argv[2], "cpu") ? argv[2] : NULL;
        argc -= 2;
        argv += 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: tp_check [--device cuda] T MODEL...\n");
        return 2;
    }
    if (lp_dist_init(60) || !lp_dist_world()) {
        fprintf(stderr, "tp_check: run it under mpirun with T or more ranks\n");
        return 2;
    }
    const int T = atoi(argv[1]);
    for (int i = 2; i < argc; i++)
        check_model(argv[i], T, device);
    if (!lp_dist_rank(lp_dist_world()))
        printf("tp_check%s%s T=%d: %d failures\n", device ? " " : "", device ? device : "", T,
               failures);
    const int rc = failures ? 1 : 0;
    if (rc) lp_dist_abort(rc);
    lp_dist_finalize();
    return rc;
}
