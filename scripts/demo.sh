#!/usr/bin/env bash
# The quick-start demo: run lopad on the embedded default model (models/demo, the small
# Dream-architecture diffusion LM the project trains itself: tools/train/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-build/lopad}
# A build directory configured before the default changed keeps its cached
# LOPAD_DEFAULT_MODEL_PATH; the environment variable wins over the compiled-in path.
export LOPAD_DEFAULT_MODEL=${LOPAD_DEFAULT_MODEL:-$root/models/demo}
echo "== lopad info (the embedded default model)"
"$bin" info "$LOPAD_DEFAULT_MODEL" | head -8
echo
# A held-out problem of the generated task (line 3 of data/tiny-gsm/heldout.jsonl,
# seed 2): never seen in training. Expected: 6 + 9 = 15, 15 + 15 = 30, 30 - 15 = 15, #### 15.
q="Noah picks 6 stamps on Monday, 9 on Tuesday and 15 on Wednesday. Noah uses 15. How many stamps are left?"
echo "Q: $q"
echo
echo "== the default decoder: Fast-dLLM, dual KV cache, commit every position with p >= 0.9"
"$bin" run -p "$q" --gen 48
echo
echo "== vanilla Dream decoding: 48 positions, one token per forward (entropy ranking)"
"$bin" run -p "$q" --gen 48 --steps 48 --decoder dream
echo
echo "== D2F pipelined blocks + LoPA: 4 lookahead branches verified in one batched forward"
"$bin" run -p "$q" --gen 48 --decoder d2f --block 16 --lopa 4
echo
echo "(a 1.1 M-parameter model trained on one CPU core for ~100 minutes on templated 2-3 step"
echo " arithmetic word problems; it knows nothing else. It answers 99% of the 500 held-out"
echo " problems exactly. Numbers and commands: tools/train/README.md, docs/RESULTS.md)"
