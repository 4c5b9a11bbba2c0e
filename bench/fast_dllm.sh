#!/usr/bin/env bash
# bench/fast_dllm.sh - Fast-dLLM cache modes: ms per forward, NFE and TPF for
# --cache none | prefix | dual at several generation lengths.
#
#   bash bench/fast_dllm.sh [LOPAD_BIN] [MODEL] [GENS] [EXTRA...]
#     LOPAD_BIN  the lopad binary (default build/lopad)
#     MODEL      model path (default tests/fixtures/tiny-llada), or a synthetic model such
#                as synthetic:llada-8b:2@q8_0 (the first 2 layers of the real shape)
#     GENS       space-separated generation lengths (default "256 512 1024")
#     EXTRA      more `lopad run` options (e.g. --dpad)
#
# ms/forward = wall seconds of the generation / NFE (it includes the proposals and
# commits, which are small next to a forward on real models); cpu_s = the process's CPU
# time while decoding (with one thread: the work itself, whatever else the machine runs).
# THREADS (default 1: on a small shared machine the pool's workers contend) sets --threads.
# The prompt is 16 fixed ids; block 32, early stop off so every mode decodes the same
# length. Commit rule: threshold 0.9 by default; TPS=N (tokens per step) selects a fixed
# schedule instead, --rule topk --steps GEN/N (N tokens per forward whatever the
# confidences: the only meaningful schedule for random weights, and the same with and
# without DPad). MODES (default "none prefix dual") picks the cache modes.
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
printf "%-6s %-7s %6s %6s %9s %9s %11s %9s\n" gen cache nfe tpf seconds cpu_s ms/forward prefill_s
for g in $gens; do
    sched=()
    [ -n "${TPS:-}" ] && sched=(--rule topk --steps $((g / TPS)))
    for c in ${MODES:-none prefix dual}; do
        out=$("$bin" run -m "$model" --prompt-ids "$prompt" --gen "$g" --decoder fast \
            --cache "$c" --early-stop off --threads "${THREADS:-1}" --json "${sched[@]}" "$@" \
            2>/dev/null)
        python3 - "$g" "$c" "$out" <<'PY'
import json, sys
g, c, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("%-6s %-7s %6d %6.2f %9.3f %9.3f %11.2f %9.3f" % (g, c, j["nfe"], j["tpf"], j["seconds"],
      j.get("cpu_seconds", 0), 1000 * j["seconds"] / max(1, j["nfe"]), j["prefill_seconds"]))
PY
    done
done
