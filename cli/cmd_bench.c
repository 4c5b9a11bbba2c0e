/*
 * cmd_bench.c - `lopad bench peak|forward`.
 *
 *   peak     the machine's fp32 FMA / bf16 / int8 throughput and memory bandwidth.
 *   forward  ms per forward of a window of T tokens over a cached prefix of P rows
 *            on a model with synthetic random weights (no file needed), with the
 *            achieved GFLOP/s and its fraction of the measured fp32 peak, and
 *            "x stream": the time over the time to read the weights one forward
 *            streams (layers + head) once at the measured bandwidth (1.0 = the
 *            memory floor). With --threads 1, times are the thread's CPU time.
 *            --seqs S feeds S sequences of T tokens each over the same prefix (one
 *            LoPA iteration with S-1 lookahead branches); --device cuda runs on the GPU
 *            (peak: the GPU's copy bandwidth and bf16 GEMM ceiling).
 *
 * The prefix cache is filled by committing the K/V rows of one computed chunk
 * over and over: attention cost depends on the number of cached rows, not their
 * values, and this keeps a 7B benchmark from spending minutes in prefill.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "bench.h"
#include "core/common.h"
#include "core/types.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "forward/forward.h"
#ifdef LOPAD_CUDA
#include "backend/cuda/cuda.h"
#endif

static int usage(void) {
    printf(
        "usage: lopad bench peak [--threads N] [--device cpu|cuda] [--json]\n"
        "       lopad bench forward [--shape tiny|tiny-llada|dream-7b|llada-8b] [--type T]\n"
        "                           [--tokens 32,128,512] [--seqs 1,4,8] [--prefix N]\n"
        "                           [--threads N] [--device cpu|cuda] [--repeat R]\n"
        "                           [--layers N] [--out-rows N] [--scores]\n"
        "                           [--no-peak] [--json]\n"
        "  T: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k (weights are random, generated in memory)\n");
    return 0;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* `bench peak --device cuda`: the GPU's measured ceilings */
static int bench_peak_cuda(bool json) {
#ifdef LOPAD_CUDA
    double gbs, tflops;
    enum lopad_status st = lp_cuda_peak(&gbs, &tflops);
    if (st) return lp_cli_fail("bench peak", st);
    if (json)
        printf("{\"device\": \"cuda\", \"copy_gbs\": %.2f, \"bf16_gemm_tflops\": %.2f}\n", gbs,
               tflops);
    else
        printf("device copy      %8.1f GB/s (read + write)\n"
               "bf16 GEMM        %8.1f TFLOP/s (cuBLAS, 8192^3, f32 out)\n",
               gbs, tflops);
    return 0;
#else
    (void)json;
    fprintf(stderr, "lopad bench peak: built without CUDA (-DLOPAD_CUDA=ON)\n");
    return 1;
#endif
}

static int bench_peak(int argc, char **argv) {
    long threads = 0;
    bool json = false;
    const char *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (!lp_cli_parse_int("bench peak", "--threads", argv[++i], 1, 256, &threads)) return 2;
        } else if (!strcmp(argv[i], "--help"))
            return usage();
        else
            return lp_cli_usage_error("bench peak", "unknown option '%s'", argv[i]);
    }
    if (device && !strcmp(device, "cuda")) return bench_peak_cuda(json);
    if (device && strcmp(device, "cpu"))
        return lp_cli_usage_error("bench peak", "unknown --device '%s' (cpu, cuda)", device);
    struct lp_peak pk;
    if (lp_bench_peak(threads ? (int)threads : default_threads(), &pk))
        return lp_cli_usage_error("bench peak", "out of memory for the bandwidth buffer");
    if (json) {
        printf("{\"threads\": %d, \"simd\": \"%s\", \"fp32_gflops\": %.2f", pk.threads, pk.simd,
               pk.fp32_gflops);
        if (pk.bf16_gflops > 0) printf(", \"bf16_gflops\": %.2f", pk.bf16_gflops);
        if (pk.int8_gops > 0) printf(", \"int8_gops\": %.2f", pk.int8_gops);
        printf(", \"bandwidth_gbs\": %.2f}\n", pk.bandwidth_gbs);
    } else {
        printf("threads          %d\n", pk.threads);
        printf("fp32 FMA (%s) %8.1f GFLOP/s\n", pk.simd, pk.fp32_gflops);
        if (pk.bf16_gflops > 0) printf("bf16 dot         %8.1f GFLOP/s\n", pk.bf16_gflops);
        if (pk.int8_gops > 0) printf("int8 dot         %8.1f GOP/s\n", pk.int8_gops);
        printf("memory read      %8.1f GB/s\n", pk.bandwidth_gbs);
    }
    return 0;
}

/* FLOPs of one forward of S sequences of T tokens, each attending to P cached rows
 * and its own T tokens, logits for all S*T rows. */
static double forward_flops(const struct lopad_hparams *hp, int T, int P, int S) {
    double E = hp->n_embd, QD = (double)hp->n_head * hp->head_dim;
    double KD = (double)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    double per_tok_layer = 2 * (E * QD * 2 + E * KD * 2 + 3 * E * F);
    double attn_layer = 4.0 * QD * T * (double)(P + T); /* QK^T and PV */
    return S * (hp->n_layer * (per_tok_layer * T + attn_layer) + 2.0 * E * hp->n_vocab * T);
}

/* Bytes of weights the model holds (matrices, embedding table included), and
 * the bytes one forward streams from memory: every matrix of the run layers and
 * the output head once; the embedding table only where the head shares it (a
 * forward otherwise reads just the fed rows of it). */
static double model_bytes(const lopad_model *m, bool with_embd);

/* CPU seconds of the calling thread: with --threads 1 every kernel runs on it,
 * and time the OS gave to other processes (a shared machine) does not count. */
static double thread_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_forward(int argc, char **argv) {
    const char *shape = "tiny", *type_s = "bf16", *tok_s = "32,128,512", *seq_s = "1";
    const char *device = NULL;
    long prefix = 0, threads = 0, repeat = 3, layers = 0, out_rows = -1;
    bool json = false, peak = true, use_scores = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) json = true;
        /* --scores: the fused head (per-row argmax / confidences, no logits to the host) */
        else if (!strcmp(a, "--scores"))
            use_scores = true;
        else if (!strcmp(a, "--no-peak"))
            peak = false;
        else if (!strcmp(a, "--help"))
            return usage();
        else if (!v)
            return lp_cli_usage_error("bench forward", "option '%s' needs a value or is unknown",
                                      a);
        else {
            i++;
            if (!strcmp(a, "--shape"))
                shape = v;
            else if (!strcmp(a, "--type"))
                type_s = v;
            else if (!strcmp(a, "--tokens"))
                tok_s = v;
            else if (!strcmp(a, "--seqs"))
                seq_s = v;
            else if (!strcmp(a, "--device"))
                device = v;
            else if (!strcmp(a, "--prefix")) {
                if (!lp_cli_parse_int("bench forward", a, v, 0, 1 << 20, &prefix)) return 2;
            } else if (!strcmp(a, "--threads")) {
                if (!lp_cli_parse_int("bench forward", a, v, 1, 1024, &threads)) return 2;
            } else if (!strcmp(a, "--repeat")) {
                if (!lp_cli_parse_int("bench forward", a, v, 1, 1000, &repeat)) return 2;
            } else if (!strcmp(a, "--layers")) {
                if (!lp_cli_parse_int("bench forward", a, v, 1, 1024, &layers)) return 2;
            } else if (!strcmp(a, "--out-rows")) {
                if (!lp_cli_parse_int("bench forward", a, v, 0, 1 << 20, &out_rows)) return 2;
            } else
                return lp_cli_usage_error("bench forward", "unknown option '%s'", a);
        }
    }
    int type = lp_cli_weight_type(type_s);
    if (type < 0) return lp_cli_usage_error("bench forward", "unknown --type '%s'", type_s);
    int32_t *toks, *seqs = NULL;
    int n_win, n_seqs;
    if (!lp_cli_parse_ids("bench forward", "--tokens", tok_s, &toks, &n_win)) return 2;
    if (!lp_cli_parse_ids("bench forward", "--seqs", seq_s, &seqs, &n_seqs)) {
        free(toks);
        return 2;
    }
    int max_t = 0, max_s = 0;
    for (int i = 0; i < n_win; i++) {
        if (toks[i] <= 0) {
            free(toks);
            free(seqs);
            return lp_cli_usage_error("bench forward", "--tokens: window sizes must be positive");
        }
        max_t = LP_MAX(max_t, toks[i]);
    }
    for (int i = 0; i < n_seqs; i++) {
        if (seqs[i] <= 0 || seqs[i] > 4096) {
            free(toks);
            free(seqs);
            return lp_cli_usage_error("bench forward", "--seqs: counts must be in 1..4096");
        }
        max_s = LP_MAX(max_s, seqs[i]);
    }
    if ((int64_t)max_t * max_s > (1 << 20)) {
        free(toks);
        free(seqs);
        return lp_cli_usage_error("bench forward", "--tokens x --seqs is too large");
    }
    if (!threads) threads = default_threads();
    const bool on_gpu = device && !strcmp(device, "cuda");

    struct lp_peak pk = {0};
    /* the CPU peak means nothing for a GPU run (bench peak --device cuda has the GPU's) */
    if (peak && !on_gpu && lp_bench_peak((int)threads, &pk) != 0) pk.fp32_gflops = 0;

    int rc = 1;
    lopad_model *m = NULL;
    lopad_ctx *c = NULL;
    int32_t *tokens = NULL, *pos = NULL, *rows = NULL, *seq = NULL;
    float *logits = NULL;
    struct lp_row_scores *scores = NULL;
    double t0 = lp_time();
    enum lopad_status st = lp_model_synthetic(shape, type, 1234, &m);
    if (st) {
        lp_cli_fail("bench forward", st);
        goto done;
    }
    double gen_s = lp_time() - t0;
    /* --layers: run only the first N layers (all are generated); ratios between
     * windows stay meaningful and 7B-shaped sweeps fit in minutes on a laptop */
    if (layers > 0 && layers < m->hp.n_layer) m->hp.n_layer = (int)layers;
    const struct lopad_hparams *hp = lopad_model_hparams(m);
    int chunk = LP_MAX(max_t * max_s, prefix > 0 ? 32 : 1);
    struct lopad_ctx_params cp = {.n_ctx = (int)prefix + max_t,
                                  .n_batch_max = chunk,
                                  .n_threads = (int)threads,
                                  .device = device};
    if (lp_cli_env_ctx_params("bench forward", &cp.kernels, &cp.repack)) {
        rc = 2;
        goto done;
    }
    if ((st = lopad_ctx_new(m, &cp, &c))) {
        lp_cli_fail("bench forward", st);
        goto done;
    }
    tokens = malloc(sizeof(int32_t) * chunk);
    pos = malloc(sizeof(int32_t) * chunk);
    rows = malloc(sizeof(int32_t) * chunk);
    seq = malloc(sizeof(int32_t) * chunk);
    logits = malloc(sizeof(float) * (size_t)chunk * hp->n_vocab);
    scores = malloc(sizeof *scores * (size_t)chunk);
    if (!tokens || !pos || !rows || !seq || !logits || !scores) {
        fprintf(stderr, "lopad bench forward: out of memory\n");
        goto done;
    }
    uint32_t rng = 12345;
    for (int i = 0; i < chunk; i++) {
        rng = rng * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((rng >> 8) % (uint32_t)hp->n_vocab);
        pos[i] = i;
        rows[i] = i;
    }
    if (prefix > 0) { /* one 32-row forward, its K/V committed over the whole prefix */
        int n = (int)LP_MIN(32, prefix);
        struct lopad_batch b = {.n_tokens = n,
                                .tokens = tokens,
                                .pos = pos,
                                .n_seq = 1,
                                .n_out = 1,
                                .out_rows = rows,
                                .logits = logits};
        if ((st = lopad_forward(c, &b))) {
            lp_cli_fail("bench forward", st);
            goto done;
        }
        for (long r = 0; r < prefix; r += n)
            if ((st = lopad_kv_commit(c, 0, (int)LP_MIN(n, prefix - r), (int)r))) {
                lp_cli_fail("bench forward", st);
                goto done;
            }
    }
    if (!json)
        printf("shape %s, type %s, %s, prefix %ld, weights %.1f MiB (generated in %.1f s)\n"
               "streamed per forward %.1f MiB%s\n"
               "%8s %5s %10s %10s %8s %10s %9s\n",
               shape, type_s, on_gpu ? "cuda" : "cpu", prefix, model_bytes(m, true) / (1 << 20),
               gen_s, model_bytes(m, false) / (1 << 20),
               threads == 1 && !on_gpu ? " (times: CPU time of the one thread)" : "", "tokens",
               "seqs", "ms", "GFLOP/s", "%peak", "weights/s", "x stream");
    for (int w = 0; w < n_win * n_seqs; w++) {
        int T = toks[w / n_seqs], S = seqs[w % n_seqs];
        for (int s = 0; s < S; s++)
            for (int i = 0; i < T; i++) {
                pos[s * T + i] = (int)prefix + i;
                seq[s * T + i] = s;
            }
        /* --out-rows: logits for the first N fed rows only (decoders ask for the
         * block's masked positions, not the whole window) */
        int n_out = out_rows < 0 || out_rows > S * T ? S * T : (int)out_rows;
        struct lopad_batch b = {.n_tokens = S * T,
                                .tokens = tokens,
                                .pos = pos,
                                .n_seq = S,
                                .seq = seq,
                                .n_cache = (int)prefix,
                                .n_out = n_out,
                                .out_rows = rows,
                                .logits = logits};
        /* one CPU thread: timed by its CPU time (the machine may be shared) */
        const bool cpu_clock = threads == 1 && !on_gpu;
        double best = 1e30, best_wall = 1e30;
        for (int r = 0; r <= repeat; r++) { /* r == 0 warms up */
            double s = lp_time(), sc = thread_cpu_now();
            st = use_scores ? lp_forward_scores(c, &b, scores) : lopad_forward(c, &b);
            if (st) {
                lp_cli_fail("bench forward", st);
                goto done;
            }
            s = lp_time() - s;
            sc = thread_cpu_now() - sc;
            if (r > 0 && (cpu_clock ? sc : s) < best) best = cpu_clock ? sc : s;
            if (r > 0 && s < best_wall) best_wall = s;
        }
        double flops = forward_flops(hp, T, (int)prefix, S) -
                       2.0 * hp->n_embd * hp->n_vocab * (S * T - n_out); /* head rows skipped */
        double gflops = flops / best / 1e9;
        double frac = pk.fp32_gflops > 0 ? gflops / pk.fp32_gflops : 0;
        double stream_gbs = model_bytes(m, true) / best / 1e9;
        /* against the time to read the streamed weights once at the measured bandwidth */
        const double sbytes = model_bytes(m, false);
        double floor_s = pk.bandwidth_gbs > 0 ? sbytes / (pk.bandwidth_gbs * 1e9) : 0;
        double ratio = floor_s > 0 ? best / floor_s : 0;
        if (json)
            printf("{\"shape\": \"%s\", \"type\": \"%s\", \"device\": \"%s\", \"tokens\": %d, "
                   "\"seqs\": %d, \"prefix\": %ld, \"layers\": %d, \"out_rows\": %d, "
                   "\"scores\": %s, "
                   "\"threads\": %ld, \"ms\": %.3f, \"gflops\": %.2f, \"peak_fp32_gflops\": %.2f, "
                   "\"peak_fraction\": %.4f, \"weight_stream_gbs\": %.2f, "
                   "\"peak_bandwidth_gbs\": %.2f, \"clock\": \"%s\", \"wall_ms\": %.3f, "
                   "\"stream_bytes\": %.0f, \"stream_floor_ms\": %.3f, \"stream_ratio\": %.3f}\n",
                   shape, type_s, on_gpu ? "cuda" : "cpu", T, S, prefix, hp->n_layer, n_out,
                   use_scores ? "true" : "false", threads, best * 1e3, gflops, pk.fp32_gflops, frac,
                   stream_gbs, pk.bandwidth_gbs, cpu_clock ? "thread_cpu" : "wall", best_wall * 1e3,
                   sbytes, floor_s * 1e3, ratio);
        else
            printf("%8d %5d %10.2f %10.1f %7.1f%% %5.1f GB/s %8.2fx\n", T, S, best * 1e3, gflops,
                   frac * 100, stream_gbs, ratio);
    }
    if (!json && pk.fp32_gflops > 0)
        printf("machine peak: fp32 %.1f GFLOP/s (%s), memory %.1f GB/s, %ld threads\n",
               pk.fp32_gflops, pk.simd, pk.bandwidth_gbs, threads);
    rc = 0;
done:
    free(tokens);
    free(pos);
    free(rows);
    free(seq);
    free(logits);
    free(scores);
    free(toks);
    free(seqs);
    lopad_ctx_free(c);
    lopad_model_free(m);
    return rc;
}

/* Bytes of the layer matrices and the output head, plus the embedding table
 * when with_embd. Without it: what one forward streams (it reads only the fed
 * rows of the embedding; see bench/kernels.sh). */
static double model_bytes(const lopad_model *m, bool with_embd) {
    double b = (double)m->output.row_bytes * m->output.n_out;
    if (with_embd && m->output.data != m->tok_embd.data)
        b += (double)m->tok_embd.row_bytes * m->tok_embd.n_out;
    for (int i = 0; i < m->hp.n_layer; i++) {
        const struct lp_layer *L = &m->layers[i];
        const struct lp_weight *ws[LP_N_LAYER_MATRICES] = LP_LAYER_MATRICES(L);
        for (int j = 0; j < LP_N_LAYER_MATRICES; j++)
            b += (double)ws[j]->row_bytes * ws[j]->n_out;
    }
    return b;
}

static int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "peak")) return bench_peak(argc - 1, argv + 1);
    if (!strcmp(argv[1], "forward")) return bench_forward(argc - 1, argv + 1);
    return lp_cli_usage_error("bench", "unknown benchmark '%s' (peak, forward)", argv[1]);
}

LP_CLI_COMMAND("bench", cmd_bench, "benchmarks: machine peak, forward pass on synthetic weights")
