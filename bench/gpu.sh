#!/usr/bin/env bash
# bench/gpu.sh - build, check and time the CUDA backend in one run.
#
#   1. build   cmake -DLOPAD_CUDA=ON (sm_90 + PTX) in $BUILD (default build-gpu/)
#   2. check   test_cuda: GPU logits / KV ops vs the CPU, incl. a Dream-7B-shaped model;
#              stops here when it fails or finds no device
#   3. ceilings  `lopad bench peak --device cuda`: device-to-device copy bandwidth and a
#              cuBLAS bf16 GEMM (8192^3) - what the forward can at best reach
#   4. time    `lopad bench forward --device cuda` on random BF16 weights, Dream-7B and
#              LLaDA-8B shapes: one LoPA iteration = one forward of K+1 sequences of 32
#              tokens over a 512-row cached prefix (K = 0, 3, 7, 13), twice: every row's
#              logits downloaded to the host (lopad_forward), and the fused head that
#              returns only per-row argmax / confidences (lp_forward_scores, --scores);
#              plus plain forwards of 128 / 512 tokens
#   5. report  ms, TFLOP/s and weight-bytes/s against the ceilings, and tokens/s projected
#              at the papers' tokens per forward (Dream 10.1, LLaDA 8.3): TPF / (ms / 1000)
#
# usage: bench/gpu.sh [BUILD_DIR]
# env:   KS="0 3 7 13" PREFIX=512 WINDOW=32 REPEAT=10 SHAPES="dream-7b llada-8b"
#        ARCH="90-real;90-virtual" JOBS=$(nproc) SKIP_CHECK=1 (skip step 2)
# Target: Dream-7B, K = 7 (8 branches x 32 tokens), prefix 512: under 5 ms on one H200.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu}
KS=${KS:-"0 3 7 13"}
PREFIX=${PREFIX:-512}
WINDOW=${WINDOW:-32}
REPEAT=${REPEAT:-10}
SHAPES=${SHAPES:-"dream-7b llada-8b"}
ARCH=${ARCH:-"90-real;90-virtual"}
JOBS=${JOBS:-$(nproc)}
out="$build/gpu-bench"
mkdir -p "$out"

nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "gpu.sh: nvcc not found" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm \
    --format=csv,noheader || true

echo "== build ($build)"
cmake -S "$root" -B "$build" -DLOPAD_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$out/configure.log"
cmake --build "$build" -j"$JOBS" --target lopad-cli test_cuda >"$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log"; exit 1; }
lopad="$build/lopad"

if [ -z "${SKIP_CHECK:-}" ]; then
    echo "== check (test_cuda)"
    if ! "$build/test_cuda" >"$out/test_cuda.log" 2>&1; then
        grep -E "FAIL|SKIP|passed" "$out/test_cuda.log" | head -40
        echo "gpu.sh: test_cuda failed (log: $out/test_cuda.log)" >&2
        exit 1
    fi
    grep -E "rel diff|SKIP|passed" "$out/test_cuda.log"
    if grep -q "SKIP: no usable CUDA device" "$out/test_cuda.log"; then
        echo "gpu.sh: no CUDA device; nothing to time" >&2
        exit 1
    fi
    # tensor parallelism on the GPU (docs/DISTRIBUTED.md): with 2+ GPUs through NCCL, on
    # one GPU two ranks share it through host staging (NCCL refuses one GPU twice)
    if command -v mpirun >/dev/null && cmake --build "$build" -j"$JOBS" --target tp_check \
        >>"$out/build.log" 2>&1; then
        echo "== check (tensor parallelism, tp_check --device cuda)"
        ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
        nccl=1
        [ "$ngpu" -ge 2 ] || nccl=0
        fx="$root/tests/fixtures"
        LOPAD_NCCL=$nccl mpirun --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) \
            -x LOPAD_NCCL -np 2 "$build/tp_check" --device cuda 2 "$fx/tiny-dream" \
            "$fx/tiny-llada" "$fx/tiny-dream-q8_0.gguf" >"$out/tp_check.log" 2>&1
        grep -E "tp_check" "$out/tp_check.log" | head -20
        grep -q "tp_check cuda T=2: 0 failures" "$out/tp_check.log" ||
            echo "gpu.sh: tp_check --device cuda failed (log: $out/tp_check.log); go on" >&2
    fi
fi

echo "== ceilings"
"$lopad" bench peak --device cuda --json | tee "$out/peak.json"
peak=$(cat "$out/peak.json")
jget() { # jget KEY JSONLINE -> number
    printf '%s\n' "$2" | sed -n "s/.*\"$1\": *\([-0-9.e+]*\).*/\1/p"
}
copy_gbs=$(jget copy_gbs "$peak")
gemm_tflops=$(jget bf16_gemm_tflops "$peak")

seqs=""
for k in $KS; do seqs="$seqs${seqs:+,}$((k + 1))"; done
: >"$out/forward.jsonl"
for shape in $SHAPES; do
    echo "== $shape: LoPA iterations (K+1 = $seqs sequences x $WINDOW tokens, prefix $PREFIX)"
    for mode in "" --scores; do
        "$lopad" bench forward --device cuda --shape "$shape" --type bf16 --tokens "$WINDOW" \
            --seqs "$seqs" --prefix "$PREFIX" --repeat "$REPEAT" $mode --json |
            tee -a "$out/forward.jsonl"
    done
    echo "== $shape: single forwards (128, 512 tokens, prefix $PREFIX)"
    "$lopad" bench forward --device cuda --shape "$shape" --type bf16 --tokens 128,512 \
        --prefix "$PREFIX" --repeat "$REPEAT" --json | tee -a "$out/forward.jsonl"
done

# the f32 CUDA-core attention for comparison (the default is the bf16 tensor-core kernel)
k7=$((7 + 1))
case ",$seqs," in *",$k7,"*)
    echo "== dream-7b, f32 attention (LOPAD_CUDA_ATTN=f32), K = 7, fused head (not in the summary)"
    LOPAD_CUDA_ATTN=f32 "$lopad" bench forward --device cuda --shape dream-7b --type bf16 \
        --tokens "$WINDOW" --seqs "$k7" --prefix "$PREFIX" --repeat "$REPEAT" --scores || true
    ;;
esac

echo
echo "== summary (ceilings: copy $copy_gbs GB/s, bf16 GEMM $gemm_tflops TFLOP/s)"
printf '%-9s %-6s %4s %6s %9s %9s %7s %10s %7s %12s\n' shape head K tokens ms TFLOP/s %gemm \
    "weights/s" %copy "proj tok/s"
status=0
while IFS= read -r line; do
    shape=$(printf '%s' "$line" | sed -n 's/.*"shape": "\([^"]*\)".*/\1/p')
    s=$(jget seqs "$line")
    t=$(jget tokens "$line")
    ms=$(jget ms "$line")
    gf=$(jget gflops "$line")
    gbs=$(jget weight_stream_gbs "$line")
    head=logits
    case "$line" in *'"scores": true'*) head=scores ;; esac
    tpf=10.1
    [ "$shape" = "llada-8b" ] && tpf=8.3
    awk -v sh="$shape" -v hd="$head" -v s="$s" -v t="$t" -v ms="$ms" -v gf="$gf" -v gbs="$gbs" \
        -v cg="$copy_gbs" -v ct="$gemm_tflops" -v tpf="$tpf" 'BEGIN {
        tf = gf / 1000
        proj = (t == 32) ? sprintf("%.0f", tpf / (ms / 1000)) : "-"
        printf "%-9s %-6s %4d %6d %9.3f %9.1f %6.1f%% %7.0f GB/s %6.1f%% %12s\n", sh, hd, s - 1, s * t,
               ms, tf, 100 * tf / ct, gbs, 100 * gbs / cg, proj
    }'
    if [ "$shape" = "dream-7b" ] && [ "$s" = 8 ] && [ "$t" = 32 ] && [ "$PREFIX" = 512 ]; then
        target=$(awk -v ms="$ms" 'BEGIN { print (ms < 5.0) ? "MET" : "MISSED" }')
        echo "          target ($head): Dream-7B, 8 x 32 tokens over 512 cached rows < 5 ms: $target"
    fi
done <"$out/forward.jsonl"
echo "(K = lookahead branches; projected tok/s = TPF / ms per iteration; TPF 10.1 Dream, 8.3 LLaDA;"
echo " head logits: every fed row's logits, (K+1)*32 x n_vocab f32, downloaded to the host;"
echo " head scores: the fused head, only argmax / p_max / margin / entropy / logsumexp per row)"
exit $status
