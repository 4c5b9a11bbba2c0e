/*
 * emu_check.c - runs the CUDA kernels' source through the CPU emulation (emu.h)
 * and compares every op with the CPU backend: RMSNorm (also in place), RoPE
 * (NEOX / NORM, large positions), SwiGLU, add, bf16 conversion, embedding
 * gather, bias, and attention (GQA groups 1..8, head_dim 16..128, several
 * sequences, cache skip ranges, block-causal masks, multi-tile key ranges).
 * What it cannot check: cuBLAS calls, the device math library's last-ulp
 * differences, memory ops. Built and run by tests/cli/test_cuda_build.sh with
 * -DLP_CUDA_EMU_CHECK; compiles to nothing in the library's source glob.
 */
#ifdef LP_CUDA_EMU_CHECK
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include "backend/cpu/cpu.h"
#include "core/types.h"
#include "backend/cuda/cuda_kernels.h"
void emu_rmsnorm(const float *x, const float *w, float eps, int n_rows, int n, float *y);
void emu_rope(float *x, int n_rows, int n_head, int d, const int32_t *pos, float theta, int neox);
void emu_silu_mul(float *g, const float *u, int64_t n);
void emu_add(float *y, const float *x, int64_t n);
void emu_get_rows(const uint16_t *w, int64_t n, const int32_t *ids, int n_ids, float *out);
void emu_f32_to_bf16(const float *x, uint16_t *y, int64_t n);
void emu_add_bias(float *y, const float *b, int n_rows, int n);
void emu_attention(const struct lp_cuda_attn_args *a);
void emu_attention_tc(const struct lp_cuda_attn_args *a);
static int g_tc; /* run the tensor-core variant */

static float rnd(void) {
    return (float)rand() / RAND_MAX * 2 - 1;
}
static float *rv(size_t n) {
    float *p = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        p[i] = rnd();
    return p;
}
static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}
static int fails;
#define REPORT(name, d, tol)                                                                       \
    do {                                                                                           \
        printf("%-40s maxdiff %.3g %s\n", name, d, (d) <= (tol) ? "ok" : "FAIL");                  \
        if (!((d) <= (tol))) fails++;                                                              \
    } while (0)

static void attn_case(struct lp_backend *be, const char *name, int n_head, int n_kv, int D,
                      int n_seq, const int *lens, int n_cache, int sb, int se, int blk_size) {
    int n = 0;
    int32_t start[16];
    start[0] = 0;
    for (int s = 0; s < n_seq; s++) {
        n += lens[s];
        start[s + 1] = n;
    }
    int64_t qd = (int64_t)n_head * D, kd = (int64_t)n_kv * D;
    float *q = rv(n * qd), *k = rv(n * kd), *v = rv(n * kd), *kc = rv((n_cache + 1) * kd),
          *vc = rv((n_cache + 1) * kd);
    float *o1 = calloc(n * qd, 4), *o2 = calloc(n * qd, 4);
    int32_t *blk = NULL;
    if (blk_size) {
        blk = malloc(n * 4);
        for (int s = 0; s < n_seq; s++)
            for (int i = start[s]; i < start[s + 1]; i++)
                blk[i] = (i - start[s]) / blk_size;
    }
    struct lp_attn_desc ad = {.n_tokens = n,
                              .n_head = n_head,
                              .n_head_kv = n_kv,
                              .head_dim = D,
                              .q = q,
                              .k = k,
                              .v = v,
                              .k_cache = kc,
                              .v_cache = vc,
                              .n_cache = n_cache,
                              .skip_begin = sb,
                              .skip_end = se,
                              .n_seq = n_seq,
                              .seq_start = start,
                              .block = blk,
                              .scale = 1.0f / sqrtf(D),
                              .out = o1};
    be->ops->attention(be->ctx, &ad);
    int32_t *t = malloc(3 * n * 4);
    for (int s = 0; s < n_seq; s++)
        for (int i = start[s]; i < start[s + 1]; i++) {
            t[3 * i] = start[s];
            t[3 * i + 1] = start[s + 1];
            t[3 * i + 2] = blk ? blk[i] : 0;
        }
    struct lp_cuda_attn_args a = {.q = q,
                                  .k = k,
                                  .v = v,
                                  .kc = kc,
                                  .vc = vc,
                                  .tok = t,
                                  .out = o2,
                                  .n_tokens = n,
                                  .n_head = n_head,
                                  .n_head_kv = n_kv,
                                  .head_dim = D,
                                  .n_cache = n_cache,
                                  .skip_begin = sb,
                                  .skip_end = se,
                                  .scale = 1.0f / sqrtf(D)};
    char nm[128];
    snprintf(nm, sizeof nm, "%s%s", g_tc ? "tc " : "", name);
    if (g_tc && D % 16 == 0) {
        a.tensor_cores = 1;
        emu_attention_tc(&a);
        REPORT(nm, maxdiff(o1, o2, n * qd), 2e-2); /* Q, K, V, P rounded to bf16 */
    } else if (!g_tc) {
        emu_attention(&a);
        REPORT(nm, maxdiff(o1, o2, n * qd), 1e-5);
    }
    free(q);
    free(k);
    free(v);
    free(kc);
    free(vc);
    free(o1);
    free(o2);
    free(blk);
    free(t);
}

int main(void) {
    struct lp_backend be;
    struct lp_backend_limits lim = {
        .max_n_in = 4096, .head_dim = 128, .n_head = 32, .n_head_kv = 4};
    if (lp_backend_cpu_new(2, &lim, &be)) {
        printf("cpu backend failed\n");
        return 1;
    }
    /* rmsnorm, in place and not */
    {
        int R = 5, N = 3584;
        float *x = rv(R * N), *w = rv(N), *y1 = calloc(R * N, 4), *y2 = calloc(R * N, 4);
        be.ops->rmsnorm(be.ctx, x, w, 1e-6f, R, N, y1);
        emu_rmsnorm(x, w, 1e-6f, R, N, y2);
        REPORT("rmsnorm 5x3584", maxdiff(y1, y2, R * N), 1e-5);
        memcpy(y2, x, R * N * 4);
        emu_rmsnorm(y2, w, 1e-6f, R, N, y2);
        REPORT("rmsnorm in place", maxdiff(y1, y2, R * N), 1e-5);
        R = 3;
        N = 64;
        be.ops->rmsnorm(be.ctx, x, w, 1e-5f, R, N, y1);
        emu_rmsnorm(x, w, 1e-5f, R, N, y2);
        REPORT("rmsnorm 3x64", maxdiff(y1, y2, R * N), 1e-5);
        free(x);
        free(w);
        free(y1);
        free(y2);
    }
    /* rope */
    for (int mode = 0; mode < 2; mode++)
        for (int cfg = 0; cfg < 2; cfg++) {
            int R = 7, H = cfg ? 28 : 4, D = cfg ? 128 : 16;
            float th = cfg ? 1e6f : 1e4f;
            int32_t pos[7] = {0, 1, 5, 100, 511, 4000, 32000};
            float *x = rv(R * H * D), *y = malloc(R * H * D * 4);
            memcpy(y, x, R * H * D * 4);
            be.ops->rope(be.ctx, x, R, H, D, pos, th, mode ? LOPAD_ROPE_NORM : LOPAD_ROPE_NEOX);
            emu_rope(y, R, H, D, pos, th, mode == 0);
            char nm[64];
            snprintf(nm, 64, "rope %s H%d D%d", mode ? "NORM" : "NEOX", H, D);
            REPORT(nm, maxdiff(x, y, R * H * D), 2e-5);
            free(x);
            free(y);
        }
    /* silu, add */
    {
        int64_t N = 5000;
        float *g = rv(N), *u = rv(N), *g2 = malloc(N * 4);
        memcpy(g2, g, N * 4);
        be.ops->silu_mul(be.ctx, g, u, N);
        emu_silu_mul(g2, u, N);
        REPORT("silu_mul 5000 (3 blocks, grid-stride)", maxdiff(g, g2, N), 1e-6);
        memcpy(g2, g, N * 4);
        be.ops->add(be.ctx, g, u, N);
        emu_add(g2, u, N);
        REPORT("add", maxdiff(g, g2, N), 0);
        free(g);
        free(u);
        free(g2);
    }
    /* bf16 conversion, get_rows, bias */
    {
        int64_t N = 3000;
        float *x = rv(N);
        x[0] = 1.00390625f;
        x[1] = 1.01171875f;
        x[2] = NAN;
        x[3] = 65504.5f;
        uint16_t *b = malloc(N * 2);
        emu_f32_to_bf16(x, b, N);
        int bad = 0;
        for (int64_t i = 0; i < N; i++)
            if (b[i] != lp_f32_to_bf16(x[i])) bad++;
        REPORT("f32->bf16 vs lp_f32_to_bf16", (double)bad, 0);
        int32_t ids[3] = {2, 0, 1};
        float *o = malloc(3 * 1000 * 4);
        emu_get_rows(b, 1000, ids, 3, o);
        double d = 0;
        for (int r = 0; r < 3; r++)
            for (int i = 0; i < 1000; i++) {
                float e = lp_bf16_to_f32(b[ids[r] * 1000 + i]);
                if (!(e == o[r * 1000 + i]) && !(isnan(e) && isnan(o[r * 1000 + i]))) d = 1;
            }
        REPORT("get_rows", d, 0);
        float *y = rv(6 * 500), *y2 = malloc(6 * 500 * 4), *bias = rv(500);
        memcpy(y2, y, 6 * 500 * 4);
        emu_add_bias(y2, bias, 6, 500);
        for (int r = 0; r < 6; r++)
            for (int i = 0; i < 500; i++)
                y[r * 500 + i] += bias[i];
        REPORT("add_bias", maxdiff(y, y2, 3000), 0);
        free(x);
        free(b);
        free(o);
        free(y);
        free(y2);
        free(bias);
    }
    /* attention: the f32 kernel, then the tensor-core one */
    for (g_tc = 0; g_tc < 2; g_tc++) {
        {
            int l1[] = {20};
            attn_case(&be, "attn tiny 4/2 D16, 1 seq, no cache", 4, 2, 16, 1, l1, 0, 0, 0, 0);
        }
        {
            int l1[] = {20};
            attn_case(&be, "attn tiny block-causal + cache 24", 4, 2, 16, 1, l1, 24, 0, 0, 4);
        }
        {
            int l[] = {5, 4, 6};
            attn_case(&be, "attn dream 28/4 D128, 3 seqs, skip, blocks", 28, 4, 128, 3, l, 50, 10,
                      20, 2);
        }
        {
            int l[] = {9, 8};
            attn_case(&be, "attn llada 32/32 D128, 2 seqs, cache 70", 32, 32, 128, 2, l, 70, 0, 0,
                      4);
        }
        {
            int l[] = {5, 1, 9, 2};
            attn_case(&be, "attn 16/2 D64, 4 seqs, skip to end", 16, 2, 64, 4, l, 40, 31, 40, 3);
        }
        {
            int l[] = {6, 6, 6};
            attn_case(&be, "attn 28/4 D128 LoPA-like 3x6 over 100", 28, 4, 128, 3, l, 100, 64, 96,
                      0);
        }
        {
            int l[] = {3};
            attn_case(&be, "attn 8/8 D32, skip everything cached", 8, 8, 32, 1, l, 10, 0, 10, 0);
        }
    }
    printf("%s (%d failures)\n", fails ? "FAILED" : "ALL OK", fails);
    lp_backend_free(&be);
    return fails != 0;
}
#else
typedef int lp_cuda_emu_check_disabled;
#endif
