#!/usr/bin/env bash
# lm_eval_tiny_gsm.sh - lm-evaluation-harness (PyPI lm_eval) through `lopad serve` with its
# local-chat-completions model on the tiny-gsm task definition kept here
# (lm_eval/tiny_gsm.yaml), against `lopad eval --task tiny-gsm` on the same problems: the
# accuracies must be equal (and so must each answer). Not part of ctest: lm_eval pulls in
# about 70 packages (no PyTorch), installed into BUILD/lmeval-venv on the first run.
# usage: bash tests/serve/lm_eval_tiny_gsm.sh LOPAD_BIN [N=20] [BUILD_DIR=dir of LOPAD_BIN]
set -u
BIN=$(realpath "$1")
N=${2:-20}
BUILD=$(realpath "${3:-$(dirname "$BIN")}")
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
VENV=$BUILD/lmeval-venv
if ! "$VENV/bin/python" -c "import lm_eval, tenacity" 2>/dev/null; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "lm_eval[api]" || {
        echo "lm_eval_tiny_gsm: cannot install lm_eval" >&2
        exit 1
    }
fi
TMP=$(mktemp -d)
trap 'kill $SRV 2>/dev/null; rm -rf "$TMP"' EXIT
sed "s|@DATA@|$SRC/data/tiny-gsm/heldout.jsonl|" "$HERE/lm_eval/tiny_gsm.yaml" >"$TMP/tiny_gsm.yaml"
"$BIN" serve -m "$SRC/models/demo" --port 0 --threads 1 2>"$TMP/serve.log" &
SRV=$!
for _ in $(seq 100); do
    PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/serve.log")
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$TMP/serve.log" >&2; exit 1; }
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
(cd "$TMP" && "$VENV/bin/lm_eval" --model local-chat-completions \
    --model_args "model=demo,base_url=http://127.0.0.1:$PORT/v1/chat/completions,num_concurrent=1,max_retries=1,tokenized_requests=False,tokenizer_backend=None" \
    --apply_chat_template --include_path "$TMP" --tasks lopad_tiny_gsm --limit "$N" \
    --output_path "$TMP/out" --log_samples) >"$TMP/lm_eval.log" 2>&1 || {
    tail -30 "$TMP/lm_eval.log" >&2
    exit 1
}
ours=$("$BIN" eval --task tiny-gsm --limit "$N" --threads 1 --json --samples "$TMP/ours.jsonl" \
    2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
"$VENV/bin/python" - "$TMP/out" "$TMP/ours.jsonl" "$ours" "$N" <<'PY'
import glob, json, sys
out, ours_file, ours, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
f = sorted(glob.glob(out + "/**/results_*.json", recursive=True))[-1]
lm = json.load(open(f))["results"]["lopad_tiny_gsm"]["exact_match,strict-match"]
s = sorted(glob.glob(out + "/**/samples_lopad_tiny_gsm_*.jsonl", recursive=True))[-1]
theirs = {d["doc_id"]: d["resps"][0][0] for d in map(json.loads, open(s))}
mine = {int(d["id"]): d["output"] for d in map(json.loads, open(ours_file))}
differ = [i for i in mine if theirs.get(i) != mine[i]]
print(f"tiny-gsm, {n} problems: lm-evaluation-harness through lopad serve {lm:.3f}, "
      f"lopad eval {ours:.3f}; answers that differ: {len(differ)} {differ[:5]}")
sys.exit(abs(lm - ours) > 1e-9 or bool(differ))
PY
