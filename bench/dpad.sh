#!/usr/bin/env bash
# bench/dpad.sh - DPad suffix dropout: the Fast-dLLM cache modes with and without --dpad
# (ms per forward, NFE, TPF), through bench/fast_dllm.sh.
#
#   bash bench/dpad.sh [LOPAD_BIN] [MODEL] [GENS] [DPAD OPTIONS...]
#     DPAD OPTIONS default: --dpad (W 256, k 4, the architecture's scale)
# Early stop is off in both runs, so the difference is the pruned suffix alone.
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
