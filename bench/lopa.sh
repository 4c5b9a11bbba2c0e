#!/usr/bin/env bash
# bench/lopa.sh - per-iteration cost of LoPA against D2F as the number of lookahead
# branches K grows: ONE batched forward of K+1 sequences of B tokens (each branch's
# window, sharing a cached prefix of P rows read-only; weights read once) against the
# D2F iteration (one window of B tokens) and against K+1 separate forwards (what the
# released single-GPU LoPA code does). Synthetic random weights (src/model/synthetic.h),
# Dream-7B shape by default, logits for every fed row (LoPA needs the predictions of
# every branch's masked positions).
#
#   bash bench/lopa.sh [--build DIR] [--shape dream-7b] [--type q4_0] [--layers N]
#                      [--prefix 512] [--block 32] [--ks 1,2,4,7,14] [--repeat 2]
#                      [--threads N] [--logits all|none]
#
# --build  a lopad build directory holding liblopad.a (default build; configure it with
#          -DCMAKE_BUILD_TYPE=Release -DLOPAD_NATIVE=ON for real numbers)
# --layers run only the first N transformer layers of the shape (all are generated):
#          a 28-layer 7B forward takes seconds per iteration on a 2-core machine; the
#          per-layer cost and the output head keep their real shapes
# Output: one line per K: ms of the batched forward, of one D2F window, of K+1
# separate forwards, and their ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
args=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --shape | --type | --layers | --prefix | --block | --ks | --repeat | --threads | --logits)
        args+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench/lopa.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
lib=$build/liblopad.a
[ -f "$lib" ] || { echo "bench/lopa.sh: no $lib (build lopad first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/lopa_bench.c" <<'EOF'
/* lopa_bench.c - written by bench/lopa.sh: batched LoPA verification vs one D2F window vs
 * K+1 separate forwards, on a synthetic model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/common.h"
#include "lopad.h"
#include "model/model.h"
#include "model/synthetic.h"

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

static int type_of(const char *s) {
    if (!strcmp(s, "f32")) return LOPAD_TYPE_F32;
    if (!strcmp(s, "f16")) return LOPAD_TYPE_F16;
    if (!strcmp(s, "bf16")) return LOPAD_TYPE_BF16;
    if (!strcmp(s, "q8_0")) return LOPAD_TYPE_Q8_0;
    if (!strcmp(s, "q4_0")) return LOPAD_TYPE_Q4_0;
    return -1;
}

/* best wall time of `repeat` forwards of n_seq sequences of B tokens */
static double time_fwd(lopad_ctx *c, int n_seq, int B, int prefix, int repeat, bool logits,
                       int V, int32_t *tok, int32_t *pos, int32_t *seq, int32_t *rows,
                       float *lg) {
    int n = n_seq * B;
    for (int i = 0; i < n; i++) {
        tok[i] = (100 + (i * 7919) % 5000) % V;
        pos[i] = prefix + i % B;
        seq[i] = i / B;
        rows[i] = i;
    }
    struct lopad_batch b = {.n_tokens = n, .tokens = tok, .pos = pos, .n_seq = n_seq,
                            .seq = seq, .n_cache = prefix, .n_out = logits ? n : 0,
                            .out_rows = rows, .logits = lg};
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double t0 = lp_time();
        if (lopad_forward(c, &b)) {
            fprintf(stderr, "forward: %s\n", lopad_errmsg());
            exit(1);
        }
        double dt = lp_time() - t0;
        if (dt < best) best = dt;
    }
    (void)V;
    return best;
}

int main(int argc, char **argv) {
    const char *shape = opt(argc, argv, "--shape", "dream-7b");
    const char *type_s = opt(argc, argv, "--type", "q4_0");
    int layers = atoi(opt(argc, argv, "--layers", "0"));
    int prefix = atoi(opt(argc, argv, "--prefix", "512"));
    int B = atoi(opt(argc, argv, "--block", "32"));
    int repeat = atoi(opt(argc, argv, "--repeat", "2"));
    int threads = atoi(opt(argc, argv, "--threads", "0"));
    bool logits = strcmp(opt(argc, argv, "--logits", "all"), "none") != 0;
    int ks[64], nk = 0, kmax = 0;
    for (const char *s = opt(argc, argv, "--ks", "1,2,4,7,14"); *s && nk < 64;) {
        char *e;
        ks[nk] = (int)strtol(s, &e, 10);
        if (e == s || ks[nk] < 0) break;
        if (ks[nk] > kmax) kmax = ks[nk];
        nk++;
        s = *e == ',' ? e + 1 : e;
    }
    int type = type_of(type_s);
    if (type < 0 || B < 1 || prefix < 1 || repeat < 1 || nk == 0) {
        fprintf(stderr, "bad options\n");
        return 2;
    }
    double t0 = lp_time();
    lopad_model *m = NULL;
    if (lp_model_synthetic(shape, type, 1, &m)) {
        fprintf(stderr, "synthetic: %s\n", lopad_errmsg());
        return 1;
    }
    int n_layer_all = m->hp.n_layer;
    if (layers > 0 && layers < m->hp.n_layer) m->hp.n_layer = layers; /* the first N */
    const int V = m->hp.n_vocab, nb = (kmax + 1) * B;
    struct lopad_ctx_params cp = {.n_ctx = prefix + B, .n_batch_max = nb > 32 ? nb : 32,
                                  .n_threads = threads};
    lopad_ctx *c = NULL;
    if (lopad_ctx_new(m, &cp, &c)) {
        fprintf(stderr, "ctx: %s\n", lopad_errmsg());
        return 1;
    }
    int32_t *tok = malloc(sizeof(int32_t) * nb), *pos = malloc(sizeof(int32_t) * nb);
    int32_t *seq = malloc(sizeof(int32_t) * nb), *rows = malloc(sizeof(int32_t) * nb);
    float *lg = malloc(sizeof(float) * (size_t)nb * V);
    if (!tok || !pos || !seq || !rows || !lg) return 1;
    /* the prefix: one 32-row forward, its K/V committed over all P rows (attention cost
     * depends on the number of cached rows, not their values) */
    int n0 = prefix < 32 ? prefix : 32;
    for (int i = 0; i < n0; i++) {
        tok[i] = (1000 + i) % m->hp.n_vocab;
        pos[i] = i;
    }
    struct lopad_batch pb = {.n_tokens = n0, .tokens = tok, .pos = pos, .n_seq = 1};
    int rc = lopad_forward(c, &pb);
    for (int r = 0; r < prefix && !rc; r += n0)
        rc = lopad_kv_commit(c, 0, prefix - r < n0 ? prefix - r : n0, r);
    if (rc) {
        fprintf(stderr, "prefix: %s\n", lopad_errmsg());
        return 1;
    }
    printf("shape %s (%d of %d layers), %s, %d threads, prefix %d, block %d, logits %s, "
           "best of %d (setup %.1f s)\n",
           shape, m->hp.n_layer, n_layer_all, type_s, lopad_ctx_n_threads(c), prefix, B,
           logits ? "all rows" : "none", repeat, lp_time() - t0);
    double one = time_fwd(c, 1, B, prefix, repeat, logits, V, tok, pos, seq, rows, lg);
    printf("%3s %8s %12s %12s %14s %10s %10s\n", "K", "branches", "batched_ms", "d2f_iter_ms",
           "separate_ms", "vs_d2f", "vs_separ");
    for (int i = 0; i < nk; i++) {
        int K = ks[i];
        double t = time_fwd(c, K + 1, B, prefix, repeat, logits, V, tok, pos, seq, rows, lg);
        printf("%3d %8d %12.1f %12.1f %14.1f %9.2fx %9.2fx\n", K, K + 1, t * 1e3, one * 1e3,
               (K + 1) * one * 1e3, t / one, (K + 1) * one / t);
        fflush(stdout);
    }
    lopad_ctx_free(c);
    lopad_model_free(m);
    free(tok);
    free(pos);
    free(seq);
    free(rows);
    free(lg);
    return 0;
}
EOF
libs=$(pkg-config --libs libpcre2-8 libutf8proc libcjson 2>/dev/null || echo "-lpcre2-8 -lutf8proc -lcjson")
cc -std=gnu17 -O2 -I"$here/include" -I"$here/src" "$tmp/lopa_bench.c" "$lib" $libs -lpthread -lm \
    -o "$tmp/lopa_bench"
"$tmp/lopa_bench" "${args[@]}" || { echo "bench/lopa.sh: the benchmark failed (rc $?)" >&2; exit 1; }
