#!/bin/bash
# vs_torch.sh - lopad vs PyTorch (CPU) on the same Dream-7B-shaped forward, in one run.
#
#   bench/vs_torch.sh [BUILD_DIR] [LAYERS] [TOKENS] [PREFIX] [THREADS] [REPEAT] [TYPES]
#   defaults: build, 2 layers, 32,128,512 tokens, prefix 512, all cores, repeat 1,
#             lopad types "bf16 f32 q8_0" (torch runs f32)
#
# Both sides: Dream-7B (Qwen2-7B) shapes with LAYERS layers instead of 28 (memory and
# time on a small machine), the tied 152064 x 3584 embedding/head, q/k/v biases, RoPE,
# GQA attention over PREFIX cached rows plus the window, logits for every window row,
# the same thread count. Random weights (the cost does not depend on the values).
# PyTorch is Debian's /usr/bin/python3 torch; its f32 matmuls go to whatever
# libblas.so.3 resolves to (reported: OpenBLAS when update-alternatives points there,
# else the reference netlib BLAS).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
LAYERS=${2:-2}
TOKENS=${3:-32,128,512}
PREFIX=${4:-512}
THREADS=${5:-$(nproc)}
REPEAT=${6:-1}
TYPES=${7:-"bf16 f32 q8_0"}
LIB=$BUILD/liblopad.a
[ -f "$LIB" ] || { echo "vs_torch: build lopad first ($LIB missing)" >&2; exit 2; }
BIN=$(mktemp -d)/vs_torch
trap 'rm -rf "$(dirname "$BIN")"' EXIT
gcc -O2 -std=gnu17 -D_GNU_SOURCE -I"$SRC/include" -I"$SRC/src" "$SRC/bench/vs_torch.c" "$LIB" \
    $(pkg-config --libs libpcre2-8 libutf8proc libcjson) -lpthread -lm -o "$BIN"
OUT=$(mktemp)
for t in $TYPES; do
    "$BIN" "$LAYERS" "$t" "$TOKENS" "$PREFIX" "$THREADS" "$REPEAT" | tee -a "$OUT"
done
/usr/bin/python3 "$SRC/bench/vs_torch.py" "$LAYERS" "$TOKENS" "$PREFIX" "$THREADS" "$REPEAT" f32 \
    | tee -a "$OUT"
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
E, H, HKV, HD, F, V = 3584, 28, 4, 128, 18944, 152064
def flops(L, T, P):
    per_tok = 2 * (E * H * HD * 2 + E * HKV * HD * 2 + 3 * E * F)
    return L * (per_tok * T + 4.0 * H * HD * T * (P + T)) + 2.0 * E * V * T
fw = [r for r in rows if r["impl"] in ("lopad", "torch")]
print("\n%-6s %-7s %6s %6s %6s %10s %10s %9s %9s %9s" % ("impl", "type", "layers", "tokens",
      "prefix", "wall ms", "cpu ms", "GF/cpu-s", "wall vs", "cpu vs"))
for r in fw:
    tr = [x for x in fw if x["impl"] == "torch" and x["tokens"] == r["tokens"]]
    rel = tr[0]["ms"] / r["ms"] if tr else float("nan")
    relc = tr[0]["cpu_ms"] / r["cpu_ms"] if tr else float("nan")
    print("%-6s %-7s %6d %6d %6d %10.1f %10.1f %9.1f %8.2fx %8.2fx" % (r["impl"], r["type"],
          r["layers"], r["tokens"], r["prefix"], r["ms"], r["cpu_ms"],
          flops(r["layers"], r["tokens"], r["prefix"]) / r["cpu_ms"] / 1e6, rel, relc))
print("(GF/cpu-s: GFLOP per CPU-second of the process; 'vs' = torch time / this time. On a"
      "\n shared machine compare CPU time: with 1 thread it is the time on an otherwise idle core.)")
for r in rows:
    if r["impl"] == "torch-matmul":
        print("\ntorch %s %s matmul %s: %.1f GFLOP/s wall, %.1f per CPU-second; libraries: %s"
              % (r["torch"], r["type"], "x".join(map(str, r["shape"])), r["gflops"],
                 r["gflops_per_cpu_s"], ", ".join(r["libs"]) or "none found"))
PY
rm -f "$OUT"
