#!/usr/bin/env bash
# The quick-start demo: run lopad on the embedded default model.
set -euo pipefail
bin=${1:-build/lopad}
echo "== lopad info (the embedded default model)"
"$bin" info "${LOPAD_DEFAULT_MODEL:-tests/fixtures/tiny-dream}" | head -8
echo
echo "== lopad run: dream decoder, 32 tokens, entropy ranking"
"$bin" run -p "Natalia sold clips to 48 of her friends in April. How many clips did she sell?" \
    --gen 32 --steps 32 --seed 1
echo
echo "(the default model is still a tiny random model made by tools/ref: the text is noise until"
echo " the project's trained demo model ships; see docs/STATUS.md)"
