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
# A held-out problem of the generated task (line 20 of tools/train/data/heldout.jsonl,
# seed 2): never seen in training. Expected: 2 * 3 = 6, 6 + 4 = 10, #### 10. The model
# solves only ~5% of held-out problems exactly; this is one that it gets right.
q="Lily has 2 boxes with 3 books in each box. Lily also has 4 loose books. How many books does Lily have in all?"
echo "== lopad run: dream decoder, 48 positions in 48 steps, entropy ranking"
echo "Q: $q"
"$bin" run -p "$q" --gen 48 --steps 48 --seed 1
echo
echo "== the same with half the steps (two tokens per forward)"
"$bin" run -p "$q" --gen 48 --steps 24 --seed 1
echo
echo "(a 1.1 M-parameter model trained for ~34 CPU-minutes on templated 2-3 step arithmetic"
echo " word problems; it knows nothing else. It writes the steps in the right form with the"
echo " right operands but its arithmetic is mostly wrong: ~5% of held-out answers exact."
echo " Numbers and commands: tools/train/README.md)"
