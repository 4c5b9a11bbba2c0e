/* bench.h - measurement helpers shared by `lopad bench` subcommands. */
#ifndef LP_BENCH_H
#define LP_BENCH_H

struct lp_peak {
    int threads;
    const char *simd;    /* widest fp32 FMA path measured */
    double fp32_gflops;  /* FMA throughput, all threads */
    double bf16_gflops;  /* AVX512-BF16 dot product, 0 when absent */
    double int8_gops;    /* AVX512-VNNI u8*s8 dot product, 0 when absent */
    double bandwidth_gbs; /* memory read bandwidth */
};

/* Measure the machine's peaks with n_threads threads; 0 on success. */
int lp_bench_peak(int n_threads, struct lp_peak *out);

#endif
