#!/usr/bin/env bash
# bench/fast_dllm.sh - Fast-dLLM cache modes: ms per forward, NFE and TPF for
# --cache none | prefix | dual at several generation lengths.
#
#   bash bench/fast_dllm.sh [LOPAD_BIN] [MODEL] [GENS] [EXTRA...]
#     LOPAD_BIN  the lopad binary (default build/lopad)
#     MODEL      model path (default tests/fixtures/tiny-llada)
#     GENS       space-separated generation lengths (default "256 512 1024")
#     EXTRA      more `lopad run` options (e.g. --rule topk --steps 256, --dpad)
#
# ms/forward = wall seconds of the generation / NFE (it includes the proposals and
# commits, which are small next to a forward on real models). THREADS (default 1: on a
# small shared machine the pool's workers contend) sets --threads. The prompt is 16 fixed
# ids; threshold 0.9, block 32, early stop off so every mode decodes the same length.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/lopad}
model=${2:-$here/tests/fixtures/tiny-llada}
gens=${3:-"256 512 1024"}
shift $(( $# < 3 ? $# : 3 ))
prompt=11,22,33,44,55,66,77,88,99,110,121,132,143,154,165,176
# the tiny fixture models declare a 512-token context: bench a copy with a larger one
# (RoPE has no length limit; the weights are unchanged)
if [ -f "$model/config.json" ] && grep -q '"max_\(sequence_length\|position_embeddings\)": 512' \
    "$model/config.json"; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -r "$model"/. "$tmp"/
    sed -i 's/"max_sequence_length": 512/"max_sequence_length": 8192/;
            s/"max_position_embeddings": 512/"max_position_embeddings": 8192/' "$tmp/config.json"
    model=$tmp
fi
printf "%-6s %-7s %6s %6s %9s %11s %9s\n" gen cache nfe tpf seconds ms/forward prefill_s
for g in $gens; do
    for c in none prefix dual; do
        out=$("$bin" run -m "$model" --prompt-ids "$prompt" --gen "$g" --decoder fast \
            --cache "$c" --early-stop off --threads "${THREADS:-1}" --json "$@" 2>/dev/null)
        python3 - "$g" "$c" "$out" <<'PY'
import json, sys
g, c, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("%-6s %-7s %6d %6.2f %9.3f %11.2f %9.3f" % (g, c, j["nfe"], j["tpf"], j["seconds"],
      1000 * j["seconds"] / max(1, j["nfe"]), j["prefill_seconds"]))
PY
    done
done
