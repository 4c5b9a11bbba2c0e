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
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
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
