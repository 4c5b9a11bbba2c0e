#!/bin/bash
# kernels.sh - CPU kernel throughput on Dream-7B shapes (matmul per weight type,
# attention, optionally the fused head + scores), as a fraction of the zmm FMA
# peak measured next to each case. With THREADS=1 times are thread CPU time, so
# the figures hold on a shared machine.
#
#   bench/kernels.sh [BUILD_DIR] [THREADS] [ROWS] [TYPES]
#   defaults: build, 1, 32,128,512, f32,bf16,f16,q8_0,q4_0,q4_k,q6_k
#   env: LOPAD_KERNELS=ref|avx2|avx512f32|avx512 (kernel level), KB_HEAD=1 (output head),
#        KB_OPENBLAS=1 (also time OpenBLAS sgemm on the f32 shapes, needs libopenblas-dev)
#
#   bench/kernels.sh stream [BUILD_DIR] [THREADS] [TOKENS] [TYPES] [SHAPE]
#   defaults: build, 1, 32,128,512, bf16,q8_0, dream-7b:2
#   Whole forwards (`lopad bench forward`, window of T tokens over a 512-row prefix)
#   against the memory floor: ms per forward, the weight bytes one forward streams
#   (layers + output head), the read bandwidth measured in the same run, and
#   x stream = ms / (bytes / bandwidth). "x dot" is the compute floor on the same
#   scale: the forward's flops at the measured bf16 / int8 dot peak (fp32 for the
#   other types) over the streaming time; a window cannot get below max(1, x dot).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = stream ]; then
    BUILD=${2:-$SRC/build}
    THREADS=${3:-1}
    TOKENS=${4:-32,128,512}
    TYPES=${5:-bf16,q8_0}
    SHAPE=${6:-dream-7b:2}
    BIN=$BUILD/lopad
    [ -x "$BIN" ] || { echo "kernels: build lopad first ($BIN missing)" >&2; exit 2; }
    num() { sed -n "s/.*\"$1\": \([0-9.eE+-]*\).*/\1/p"; }
    PEAK=$("$BIN" bench peak --threads "$THREADS" --json)
    BF=$(printf '%s' "$PEAK" | num bf16_gflops)
    I8=$(printf '%s' "$PEAK" | num int8_gops)
    F32=$(printf '%s' "$PEAK" | num fp32_gflops)
    echo "shape $SHAPE, prefix 512, $THREADS thread(s); peaks: $PEAK"
    printf '%-5s %6s %10s %9s %8s %10s %9s %7s\n' type tokens ms MB_stream GB/s floor_ms "x stream" "x dot"
    for t in ${TYPES//,/ }; do
        case $t in bf16) P=$BF ;; q8_0 | q4_0 | q4_k | q6_k) P=$I8 ;; *) P=$F32 ;; esac
        "$BIN" bench forward --shape "$SHAPE" --type "$t" --tokens "$TOKENS" --prefix 512 \
            --threads "$THREADS" --repeat 2 --json | while read -r l; do
            T=$(printf '%s' "$l" | num tokens)
            MS=$(printf '%s' "$l" | num ms)
            GF=$(printf '%s' "$l" | num gflops)
            B=$(printf '%s' "$l" | num stream_bytes)
            BW=$(printf '%s' "$l" | num peak_bandwidth_gbs)
            FL=$(printf '%s' "$l" | num stream_floor_ms)
            R=$(printf '%s' "$l" | num stream_ratio)
            awk -v t="$t" -v T="$T" -v ms="$MS" -v b="$B" -v bw="$BW" -v fl="$FL" -v r="$R" \
                -v gf="$GF" -v p="$P" 'BEGIN { dot = (p > 0 && fl > 0) ? gf * ms / p / fl : 0;
                printf "%-5s %6d %10.1f %9.1f %8.1f %10.1f %8.2fx %6.2fx\n", t, T, ms, b / 1048576,
                bw, fl, r, dot }'
        done
    done
    exit 0
fi
BUILD=${1:-$SRC/build}
THREADS=${2:-1}
ROWS=${3:-32,128,512}
TYPES=${4:-f32,bf16,f16,q8_0,q4_0,q4_k,q6_k}
LIB=$BUILD/liblopad.a
[ -f "$LIB" ] || { echo "kernels: build lopad first ($LIB missing)" >&2; exit 2; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
EXTRA=()
[ "${KB_OPENBLAS:-0}" = 1 ] && EXTRA=(-DKB_OPENBLAS -lopenblas)
gcc -O2 -std=gnu17 -D_GNU_SOURCE -I"$SRC/include" -I"$SRC/src" "$SRC/bench/kernels.c" "$LIB" \
    "${EXTRA[@]}" $(pkg-config --libs libpcre2-8 libutf8proc libcjson) -lpthread -lm \
    -o "$DIR/kernels"
"$DIR/kernels" "$THREADS" "$ROWS" "$TYPES"
