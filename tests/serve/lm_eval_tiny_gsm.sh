#!/usr/bin/env bash
# lm_eval_tiny_gsm.sh - lm-evaluation-harness (PyPI lm_eval) through `lopad serve` on the
# tiny-gsm task definitions kept here: local-chat-completions on lm_eval/tiny_gsm.yaml against
# `lopad eval --task tiny-gsm`, and local-completions on lm_eval/tiny_gsm_raw.yaml against
# `lopad eval --raw --task tiny-gsm`, on the same problems: the accuracies must be equal (and
# so must each answer). Not part of ctest: lm_eval pulls in
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
sed "s|@DATA@|$SRC/data/tiny-gsm/heldout.jsonl|" "$HERE/lm_eval/tiny_gsm_raw.yaml" \
    >"$TMP/tiny_gsm_raw.yaml"
rc=0
# chat: local-chat-completions through the template = lopad eval; raw: local-completions on
# "Question: ...\nAnswer:" text = lopad eval --raw
for mode in chat raw; do
    if [ $mode = chat ]; then
        model=local-chat-completions task=lopad_tiny_gsm path=chat/completions
        extra=(--apply_chat_template) eval_flags=()
    else
        model=local-completions task=lopad_tiny_gsm_raw path=completions extra=()
        eval_flags=(--raw)
    fi
    (cd "$TMP" && "$VENV/bin/lm_eval" --model $model \
        --model_args "model=demo,base_url=http://127.0.0.1:$PORT/v1/$path,num_concurrent=1,max_retries=1,tokenized_requests=False,tokenizer_backend=None" \
        "${extra[@]}" --include_path "$TMP" --tasks $task --limit "$N" \
        --output_path "$TMP/out-$mode" --log_samples) >"$TMP/lm_eval.log" 2>&1 || {
        tail -30 "$TMP/lm_eval.log" >&2
        exit 1
    }
    ours=$("$BIN" eval --task tiny-gsm "${eval_flags[@]}" --limit "$N" --threads 1 --json \
        --samples "$TMP/ours-$mode.jsonl" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
    "$VENV/bin/python" - "$TMP/out-$mode" "$TMP/ours-$mode.jsonl" "$ours" "$N" $task $mode <<'PY' || rc=1
import glob, json, sys
out, ours_file, ours, n, task, mode = sys.argv[1:7]
f = sorted(glob.glob(out + "/**/results_*.json", recursive=True))[-1]
lm = json.load(open(f))["results"][task]["exact_match,strict-match"]
s = sorted(glob.glob(out + f"/**/samples_{task}_*.jsonl", recursive=True))[-1]
theirs = {d["doc_id"]: d["resps"][0][0] for d in map(json.loads, open(s))}
mine = {int(d["id"]): d["output"] for d in map(json.loads, open(ours_file))}
differ = [i for i in mine if theirs.get(i) != mine[i]]
print(f"tiny-gsm ({mode}), {n} problems: lm-evaluation-harness through lopad serve {lm:.3f}, "
      f"lopad eval {float(ours):.3f}; answers that differ: {len(differ)} {differ[:5]}")
sys.exit(abs(lm - float(ours)) > 1e-9 or bool(differ))
PY
done
exit $rc
