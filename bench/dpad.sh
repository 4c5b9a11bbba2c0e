#!/usr/bin/env bash
# bench/dpad.sh - DPad suffix dropout: the Fast-dLLM cache modes with and without --dpad
# (ms per forward, NFE, TPF), through bench/fast_dllm.sh.
#
#   bash bench/dpad.sh [LOPAD_BIN] [MODEL] [GENS] [DPAD OPTIONS...]
#     DPAD OPTIONS default: --dpad (W 256, k 4, the architecture's scale)
# Early stop is off in both runs, so the difference is the pruned suffix alone. THREADS,
# TPS and MODES pass through to fast_dllm.sh. End to end on a 7B shape (2 layers, fixed
# schedule of 8 tokens per forward, so both runs do the same forwards):
#   TPS=8 bash bench/dpad.sh build/lopad synthetic:llada-8b:2@q8_0 "256 512 1024"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/lopad}
model=${2:-$here/../tests/fixtures/tiny-llada}
gens=${3:-"512 1024"}
shift $(( $# < 3 ? $# : 3 ))
dpad=("$@")
[ ${#dpad[@]} -eq 0 ] && dpad=(--dpad)
echo "== without DPad"
bash "$here/fast_dllm.sh" "$bin" "$model" "$gens"
echo "== with ${dpad[*]}"
bash "$here/fast_dllm.sh" "$bin" "$model" "$gens" "${dpad[@]}"
