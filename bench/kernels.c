/*
 * kernels.c - micro-benchmark of the CPU backend's matmul and attention on
 * 7B-shaped problems (built and run by bench/kernels.sh against liblopad).
 *
 *   kernels [threads] [rows,...] [types,...]
 * prints GFLOP/s per (type, shape, rows) for the kernel level picked by
 * LOPAD_KERNELS (ref|avx2|avx512f32|avx512, default: the best the CPU has), and
 * the fraction of the zmm FMA peak measured right before each case. With one
 * thread, times are the thread's CPU time (robust on a shared machine); with
 * more, wall-clock time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>
#include <immintrin.h>
#ifdef KB_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif
#include "backend/cpu/cpu.h"
#include "core/common.h"
#include "core/types.h"

static uint64_t rs = 88172645463325252ull;
static float frand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Seconds of CPU this thread used: on a shared machine a single-threaded run is
 * timed by it (time the OS gave to other processes does not count). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int g_threads = 1;
static double now(void) {
    return g_threads == 1 ? cpu_now() : lp_time();
}

static int parse_type(const char *s) {
    static const struct {
        const char *n;
        int t;
    } ty[] = {{"f32", LOPAD_TYPE_F32},   {"f16", LOPAD_TYPE_F16},   {"bf16", LOPAD_TYPE_BF16},
              {"q8_0", LOPAD_TYPE_Q8_0}, {"q4_0", LOPAD_TYPE_Q4_0}, {"q4_k", LOPAD_TYPE_Q4_K},
              {"q6_k", LOPAD_TYPE_Q6_K}};
    for (unsigned i = 0; i < sizeof ty / sizeof ty[0]; i++)
        if (!strcmp(s, ty[i].n)) return ty[i].t;
    return -1;
}

/* single-thread zmm FMA peak (16 independent chains, fully unrolled) */
__attribute__((target("avx512f"))) static double peak_fma512(void) {
    __m512 a[16];
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    const __m512 m = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
    const long it = 20000000;
    double t0 = now();
    for (long k = 0; k < it; k++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, b);
    }
    double dt = now() - t0;
    float s = 0;
    for (int i = 0; i < 16; i++)
        s += _mm512_reduce_add_ps(a[i]);
    if (s == 12345.0f) printf("!");
    return it * 16.0 * 32 / dt / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    g_threads = threads;
    const char *rows_s = argc > 2 ? argv[2] : "32,128,512";
    const char *types_s = argc > 3 ? argv[3] : "f32,bf16,f16,q8_0,q4_0,q4_k,q6_k";
    if (!strcmp(types_s, "none")) types_s = "";
    int rows[16], n_rows = 0;
    for (char *p = strdup(rows_s), *t = strtok(p, ","); t && n_rows < 16; t = strtok(NULL, ","))
        rows[n_rows++] = atoi(t);
    int max_rows = 0;
    for (int i = 0; i < n_rows; i++)
        if (rows[i] > max_rows) max_rows = rows[i];
    /* (n_out, n_in): Dream-7B q/o projection, the MLP up and down projections */
    const int shapes[][2] = {{3584, 3584}, {4736, 3584}, {3584, 18944}};
    struct lp_backend_limits lim = {
        .max_n_in = 18944, .head_dim = 128, .n_head = 28, .n_head_kv = 4};
    struct lp_backend be;
    if (lp_backend_cpu_new(threads, &lim, &be)) {
        fprintf(stderr, "%s\n", lopad_errmsg());
        return 1;
    }
    int level; /* the library reads no environment: LOPAD_KERNELS is this tool's knob */
    if (lp_cpu_kernels_level(getenv("LOPAD_KERNELS"), &level) ||
        (lp_backend_cpu_set_level(&be, level), false)) {
        fprintf(stderr, "%s\n", lopad_errmsg());
        return 1;
    }
    float *x = malloc(sizeof(float) * (size_t)max_rows * 18944);
    float *y = malloc(sizeof(float) * (size_t)max_rows * 4736);
    for (size_t i = 0; i < (size_t)max_rows * 18944; i++)
        x[i] = frand();
    double pk = __builtin_cpu_supports("avx512f") ? peak_fma512() : 0;
    printf("zmm fp32 FMA peak, 1 thread: %.1f GFLOP/s (x %d threads = %.1f)\n", pk, threads,
           pk * threads);
    printf("%-6s %6s %6s %5s %9s %9s %7s\n", "type", "n_out", "n_in", "rows", "ms", "GFLOP/s",
           "%peak");
    for (char *p = strdup(types_s), *tn = *p ? strtok(p, ",") : NULL; tn; tn = strtok(NULL, ",")) {
        int type = parse_type(tn);
        if (type < 0) {
            fprintf(stderr, "unknown type %s\n", tn);
            return 2;
        }
        const struct lp_type_traits *tt = lp_type_traits(type);
        for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int n_out = shapes[s][0], n_in = shapes[s][1];
            size_t rb = lp_row_size(type, n_in);
            unsigned char *data = malloc(rb * n_out);
            float *src = malloc(sizeof(float) * n_in);
            for (int r = 0; r < n_out; r++) {
                for (int i = 0; i < n_in; i++)
                    src[i] = frand() * 0.05f;
                if (tt->from_float)
                    tt->from_float(src, data + (size_t)r * rb, n_in);
                else
                    for (size_t i = 0; i < rb; i++)
                        data[(size_t)r * rb + i] = (unsigned char)(frand() * 127 + 128);
            }
            if (type == LOPAD_TYPE_Q4_K || type == LOPAD_TYPE_Q6_K)
                for (int r = 0; r < n_out; r++)
                    for (int b = 0; b < n_in / 256; b++) {
                        lp_half *d = (lp_half *)(data + (size_t)r * rb + (size_t)b * tt->type_size +
                                                 (type == LOPAD_TYPE_Q4_K ? 0 : tt->type_size - 2));
                        d[0] = lp_f32_to_f16(0.001f);
                    }
            struct lp_weight w = {"bench", type, n_in, n_out, rb, data};
            for (int ri = 0; ri < n_rows; ri++) {
                int nr = rows[ri];
                be.ops->matmul(be.ctx, &w, NULL, x, nr, y); /* warm up */
                /* the machine may be shared: take the peak right next to the measurement */
                if (pk > 0) pk = peak_fma512();
                double best = 1e30;
                for (int rep = 0; rep < 2; rep++) {
                    double t0 = now();
                    be.ops->matmul(be.ctx, &w, NULL, x, nr, y);
                    double dt = now() - t0;
                    if (dt < best) best = dt;
                }
                double gf = 2.0 * n_out * n_in * nr / best / 1e9;
                printf("%-6s %6d %6d %5d %9.2f %9.1f %6.1f%%\n", tn, n_out, n_in, nr, best * 1e3,
                       gf, pk > 0 ? 100 * gf / (pk * threads) : 0);
#ifdef KB_OPENBLAS
                if (type == LOPAD_TYPE_F32) { /* the same product through OpenBLAS sgemm */
                    openblas_set_num_threads(threads);
                    double bb = 1e30;
                    for (int rep = 0; rep < 3; rep++) {
                        double t0 = now();
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, n_out, n_in, 1.0f,
                                    x, n_in, (const float *)data, n_in, 0.0f, y, n_out);
                        double dt = now() - t0;
                        if (rep > 0 && dt < bb) bb = dt;
                    }
                    double g2 = 2.0 * n_out * n_in * nr / bb / 1e9;
                    printf("%-6s %6d %6d %5d %9.2f %9.1f %6.1f%%\n", "oblas", n_out, n_in, nr,
                           bb * 1e3, g2, pk > 0 ? 100 * g2 / (pk * threads) : 0);
                }
#endif
                fflush(stdout);
            }
            free(data);
            free(src);
        }
    }
    /* output head: matmul writing the logits vs the fused head + scores (BF16) */
    if (getenv("KB_HEAD")) {
        const int V = 152064, E = 3584;
        size_t rb = lp_row_size(LOPAD_TYPE_BF16, E);
        unsigned char *data = malloc(rb * V);
        for (size_t i = 0; i < rb * V / 2; i++)
            ((lp_bf16 *)data)[i] = lp_f32_to_bf16(frand() * 0.05f);
        struct lp_weight w = {"head", LOPAD_TYPE_BF16, E, V, rb, data};
        float *logits = malloc(sizeof(float) * (size_t)max_rows * V);
        size_t nsc = be.ops->head_scores_scratch(V, max_rows);
        float *scr = malloc(sizeof(float) * nsc);
        struct lp_row_scores *sc = malloc(sizeof *sc * max_rows);
        for (int ri = 0; ri < n_rows; ri++) {
            double t0 = now();
            be.ops->matmul(be.ctx, &w, NULL, x, rows[ri], logits);
            double t1 = now();
            be.ops->head_scores(be.ctx, &w, x, rows[ri], scr, nsc, sc);
            double t2 = now();
            printf("head   %6d %6d %5d matmul %.1f ms, fused scores %.1f ms\n", V, E, rows[ri],
                   (t1 - t0) * 1e3, (t2 - t1) * 1e3);
        }
        free(data), free(logits), free(scr), free(sc);
    }
    /* attention: Dream-7B heads (28 query, 4 kv, 128 dims), T queries over a
     * 512-row cache plus themselves, bidirectional */
    for (int ri = 0; ri < n_rows; ri++) {
        const int T = rows[ri], P = 512, nh = 28, nkv = 4, hd = 128;
        float *q = malloc(sizeof(float) * T * nh * hd), *o = malloc(sizeof(float) * T * nh * hd);
        float *k = malloc(sizeof(float) * T * nkv * hd), *v = malloc(sizeof(float) * T * nkv * hd);
        float *kc = malloc(sizeof(float) * P * nkv * hd),
              *vc = malloc(sizeof(float) * P * nkv * hd);
        for (int i = 0; i < T * nh * hd; i++)
            q[i] = frand();
        for (int i = 0; i < T * nkv * hd; i++) {
            k[i] = frand();
            v[i] = frand();
        }
        for (int i = 0; i < P * nkv * hd; i++) {
            kc[i] = frand();
            vc[i] = frand();
        }
        int32_t ss[2] = {0, T};
        struct lp_attn_desc a = {.n_tokens = T,
                                 .n_head = nh,
                                 .n_head_kv = nkv,
                                 .head_dim = hd,
                                 .q = q,
                                 .k = k,
                                 .v = v,
                                 .k_cache = kc,
                                 .v_cache = vc,
                                 .n_cache = P,
                                 .n_seq = 1,
                                 .seq_start = ss,
                                 .scale = 0.088f,
                                 .out = o};
        be.ops->attention(be.ctx, &a);
        if (pk > 0) pk = peak_fma512();
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            be.ops->attention(be.ctx, &a);
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        double gf = 4.0 * T * (P + T) * nh * hd / best / 1e9;
        printf("%-6s %6s %6d %5d %9.2f %9.1f %6.1f%%\n", "attn", "-", P + T, T, best * 1e3, gf,
               pk > 0 ? 100 * gf / (pk * threads) : 0);
        free(q), free(o), free(k), free(v), free(kc), free(vc);
    }
    lp_backend_free(&be);
    return 0;
}
