/*
 * bench_peak.c - the machine's limits, so every benchmark figure can be stated
 * as a fraction of them: fp32 FMA throughput (AVX-512 or AVX2, whichever the CPU
 * has), bf16 and int8 dot-product throughput where the CPU has those
 * instructions (AVX512-BF16 vdpbf16ps, AVX512-VNNI vpdpbusd), and memory read
 * bandwidth (a 1 GiB buffer summed with wide loads). Each measurement runs on
 * every thread at once; with one thread it is timed by that thread's CPU time.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"
#include "core/common.h"

#define ACC 12 /* independent accumulators: enough to cover FMA latency x ports */

__attribute__((target("avx512f"))) static double fma512(long iters) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++)
        acc[i] = _mm512_set1_ps(0.001f * i);
    const __m512 a = _mm512_set1_ps(0.9999f), b = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12 /* keep the accumulators in registers */
        for (int i = 0; i < ACC; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float s = 0;
    for (int i = 0; i < ACC; i++)
        s += _mm512_reduce_add_ps(acc[i]);
    return s;
}

__attribute__((target("avx2,fma"))) static double fma256(long iters) {
    __m256 acc[ACC];
    for (int i = 0; i < ACC; i++)
        acc[i] = _mm256_set1_ps(0.001f * i);
    const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12 /* keep the accumulators in registers */
        for (int i = 0; i < ACC; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float out[8], s = 0;
    for (int i = 0; i < ACC; i++) {
        _mm256_storeu_ps(out, acc[i]);
        for (int j = 0; j < 8; j++)
            s += out[j];
    }
    return s;
}

/* vdpbf16ps: 16 lanes x 2 bf16 products = 64 flops per instruction */
__attribute__((target("avx512f,avx512bf16"))) static double bf16dot(long iters) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++)
        acc[i] = _mm512_setzero_ps();
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3400);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12 /* keep the accumulators in registers */
        for (int i = 0; i < ACC; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    float s = 0;
    for (int i = 0; i < ACC; i++)
        s += _mm512_reduce_add_ps(acc[i]);
    return s;
}

/* vpdpbusd: 16 lanes x 4 u8*s8 products = 128 ops (multiply + add) per instruction */
__attribute__((target("avx512f,avx512vnni"))) static double int8dot(long iters) {
    __m512i acc[ACC];
    for (int i = 0; i < ACC; i++)
        acc[i] = _mm512_setzero_si512();
    const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12 /* keep the accumulators in registers */
        for (int i = 0; i < ACC; i++)
            acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    long s = 0;
    for (int i = 0; i < ACC; i++)
        s += _mm512_reduce_add_epi32(acc[i]);
    return (double)s;
}

/* Sum of n floats with wide loads and 8 independent accumulators: bound by the
 * memory, not by add latency (a scalar loop of 4 chains tops out near 19 GB/s on
 * a 3.5 GHz core and would understate the bandwidth). */
__attribute__((target("avx2,fma"))) static double read_avx2(const float *buf, size_t n) {
    __m256 a[8];
    for (int i = 0; i < 8; i++)
        a[i] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(buf + i + 8 * k));
    float out[8], s = 0;
    for (int k = 1; k < 8; k++)
        a[0] = _mm256_add_ps(a[0], a[k]);
    _mm256_storeu_ps(out, a[0]);
    for (int k = 0; k < 8; k++)
        s += out[k];
    for (; i < n; i++)
        s += buf[i];
    return s;
}

static double read_scalar(const float *buf, size_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        s0 += buf[i];
        s1 += buf[i + 1];
        s2 += buf[i + 2];
        s3 += buf[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

/* Seconds of CPU the calling thread has used (a 1-thread figure that time the
 * OS gave to other processes does not spoil). */
static double thread_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

enum peak_kind { PEAK_FMA512, PEAK_FMA256, PEAK_BF16, PEAK_INT8, PEAK_BW };

struct peak_job {
    enum peak_kind kind;
    long iters;
    const float *buf; /* bandwidth: this thread's slice */
    size_t n;
    double sink;
    double cpu_s; /* CPU seconds this thread spent in the measurement */
};

static void *peak_thread(void *arg) {
    struct peak_job *j = arg;
    const double c0 = thread_cpu_now();
    switch (j->kind) {
    case PEAK_FMA512: j->sink = fma512(j->iters); break;
    case PEAK_FMA256: j->sink = fma256(j->iters); break;
    case PEAK_BF16: j->sink = bf16dot(j->iters); break;
    case PEAK_INT8: j->sink = int8dot(j->iters); break;
    case PEAK_BW:
        j->sink =
            __builtin_cpu_supports("avx2") ? read_avx2(j->buf, j->n) : read_scalar(j->buf, j->n);
        break;
    }
    j->cpu_s = thread_cpu_now() - c0;
    return NULL;
}

/* Run `kind` on n_threads threads; returns seconds of the slowest (with one
 * thread: its CPU time, robust on a shared machine). */
static double run_threads(enum peak_kind kind, int n_threads, long iters, const float *buf,
                          size_t n) {
    pthread_t th[256];
    struct peak_job jobs[256];
    if (n_threads > 256) n_threads = 256;
    double t0 = lp_time();
    for (int t = 0; t < n_threads; t++) {
        size_t lo = n * t / n_threads, hi = n * (t + 1) / n_threads;
        jobs[t] = (struct peak_job){kind, iters, buf ? buf + lo : NULL, hi - lo, 0, 0};
        pthread_create(&th[t], NULL, peak_thread, &jobs[t]);
    }
    for (int t = 0; t < n_threads; t++)
        pthread_join(th[t], NULL);
    const double wall = lp_time() - t0;
    return n_threads == 1 && jobs[0].cpu_s > 0 ? jobs[0].cpu_s : wall;
}

/* Best of 3 runs of `iters` per thread; returns operations per second. */
static double best_rate(enum peak_kind kind, int n_threads, long iters, double ops_per_iter) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double s = run_threads(kind, n_threads, iters, NULL, 0);
        double rate = ops_per_iter * iters * n_threads / s;
        if (rate > best) best = rate;
    }
    return best;
}

int lp_bench_peak(int n_threads, struct lp_peak *out) {
    memset(out, 0, sizeof *out);
    out->threads = n_threads;
    __builtin_cpu_init();
    const long iters = 20000000;
    if (__builtin_cpu_supports("avx512f")) {
        out->fp32_gflops = best_rate(PEAK_FMA512, n_threads, iters, ACC * 16 * 2) / 1e9;
        out->simd = "avx512";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        out->fp32_gflops = best_rate(PEAK_FMA256, n_threads, iters, ACC * 8 * 2) / 1e9;
        out->simd = "avx2";
    } else {
        out->simd = "scalar";
    }
    if (__builtin_cpu_supports("avx512bf16"))
        out->bf16_gflops = best_rate(PEAK_BF16, n_threads, iters, ACC * 64) / 1e9;
    if (__builtin_cpu_supports("avx512vnni"))
        out->int8_gops = best_rate(PEAK_INT8, n_threads, iters, ACC * 128) / 1e9;

    /* bandwidth: 1 GiB buffer, far larger than any cache, touched once before timing */
    size_t n = (size_t)1 << 28;
    float *buf = malloc(n * sizeof(float));
    if (!buf) return -1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 7);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double s = run_threads(PEAK_BW, n_threads, 0, buf, n);
        double gbs = n * sizeof(float) / s / 1e9;
        if (gbs > best) best = gbs;
    }
    out->bandwidth_gbs = best;
    free(buf);
    return 0;
}
