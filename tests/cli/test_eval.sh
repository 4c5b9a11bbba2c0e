#!/usr/bin/env bash
# test_eval.sh - `lopad eval` end to end: the built-in scorer cases (--self-test), every
# benchmark of the repository's data/ on the tiny random Dream fixture (--limit 2: JSON fields
# present, accuracy in [0, 1]) and with --oracle (the datasets' own solutions must all score),
# found with no ../shared and from a copied binary, tiny-gsm with every default on the demo
# model, the code sandbox refusing to run without bwrap unless unsafe execution is allowed,
# a GSM-format --data file with few-shot exemplars, --sweep with the table, JSON and --plot,
# and bad input (exit status 2 with a message naming the problem).
# usage: bash test_eval.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$2
DREAM=$SRC/tests/fixtures/tiny-dream
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
unset LOPAD_DEFAULT_MODEL LOPAD_SHARED
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
T=(--threads 1 --gen 8 --steps 4)

# check_json JSON [KEY=VALUE ...]: the fields scripts rely on exist, accuracy in [0, 1]
check_json() {
    "$PY" - "$@" <<'EOF'
import json, sys
j = json.loads(sys.argv[1])
for k in ("task", "n", "accuracy", "flexible_accuracy", "tpf", "nfe", "tokens_per_second",
          "settings"):
    assert k in j or (k == "settings" and j.get("oracle")), "missing " + k
assert 0 <= j["accuracy"] <= 1, j["accuracy"]
assert j["flexible_accuracy"] is None or 0 <= j["flexible_accuracy"] <= 1
assert j["tpf"] >= 0 and j["nfe"] >= 0 and j["tokens_per_second"] >= 0
assert j.get("oracle") or "decoder" in j["settings"]
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    assert str(j[k]) == v, "%s: %r != %r" % (k, j[k], v)
EOF
}

# ---- scorer unit cases
out=$("$BIN" eval --self-test 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s' "$out" | grep -Eq '^[0-9]+ passed, 0 failed$'; then ok; else
    bad "--self-test rc $rc: $out"; fi

# ---- the benchmarks in the repository's data/ (nothing from ../shared: LOPAD_SHARED points
# to an empty folder)
mkdir -p "$TMP/empty"
export LOPAD_SHARED=$TMP/empty
for task in gsm8k mbpp humaneval math500; do
    out=$(timeout 60 "$BIN" eval --task $task --limit 2 -m "$DREAM" "${T[@]}" --json \
          2>"$TMP/err")
    rc=$?
    if [ $rc -eq 0 ] && err=$(check_json "$out" task=$task n=2 2>&1); then ok; else
        bad "$task: rc $rc, $out $err $(cat "$TMP/err")"; fi
done
# the datasets' solutions through the same extraction / execution: all correct
for task in tiny-gsm gsm8k mbpp humaneval math500; do
    out=$(timeout 60 "$BIN" eval --task $task --limit 4 --oracle --json 2>"$TMP/err")
    rc=$?
    if [ $rc -eq 0 ] && err=$(check_json "$out" n=4 accuracy=1 2>&1); then ok; else
        bad "$task --oracle: rc $rc, $out $err $(cat "$TMP/err")"; fi
done
# found from a directory below the project, and from a copy of the binary beside a copy of
# data/ (a fresh clone elsewhere), run from / with no LOPAD_SHARED at all
out=$(cd "$SRC/tests" && "$BIN" eval --task math500 --limit 1 --oracle --json 2>&1)
if err=$(check_json "$out" n=1 2>&1); then ok; else bad "data/ not found by walking up: $out"; fi
mkdir -p "$TMP/clone/build"
cp -r "$SRC/data" "$TMP/clone/" && cp "$BIN" "$TMP/clone/build/lopad"
out=$(cd / && env -u LOPAD_SHARED "$TMP/clone/build/lopad" eval --task gsm8k --limit 2 --shots 2 \
      --oracle --json 2>&1)
if err=$(check_json "$out" n=2 shots=2 accuracy=1 2>&1); then ok; else
    bad "data/ beside a copied binary: $out $err"; fi
# $LOPAD_DATA names the folder; a folder without the file is an error naming it
out=$(cd / && LOPAD_DATA=$TMP/clone/data "$BIN" eval --task mbpp --limit 2 --oracle --json 2>&1)
if err=$(check_json "$out" n=2 2>&1); then ok; else bad "LOPAD_DATA: $out $err"; fi
# the tiny-gsm held-out set is the committed one: the generator's 500 problems
n=$(wc -l <"$SRC/data/tiny-gsm/heldout.jsonl")
[ "$n" = 500 ] && ok || bad "data/tiny-gsm/heldout.jsonl has $n problems, want 500"
# the Markdown table
out=$("$BIN" eval --task gsm8k --limit 1 --shots 0 -m "$DREAM" "${T[@]}" 2>/dev/null)
if printf '%s\n' "$out" | grep -q '^| task | n | accuracy | flexible | TPF | NFE |' &&
   printf '%s\n' "$out" | grep -q '^| gsm8k | 1 | '; then ok; else bad "table: $out"; fi
# tiny-gsm with every default (the demo model, the task's gen length) on a fresh checkout:
# the demo model answers nearly all (docs/RESULTS.md: 0.99 of 500)
out=$(cd / && env -u LOPAD_SHARED "$BIN" eval --task tiny-gsm --limit 20 --json 2>"$TMP/err")
rc=$?
if [ $rc -eq 0 ] && err=$(check_json "$out" n=20 2>&1) &&
   "$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["accuracy"] >= 0.9, j["accuracy"]' \
       "$out" 2>/dev/null; then ok; else
    bad "tiny-gsm with defaults: rc $rc, $out $err $(cat "$TMP/err")"; fi
unset LOPAD_SHARED

# ---- a GSM-format data file (tiny-gsm): shots come from its first records
for i in 1 2 3 4; do
    printf '{"question": "What is %d plus %d?", "answer": "%d + %d = <<%d+%d=%d>>%d\\n#### %d"}\n' \
        $i $i $i $i $i $i $((2 * i)) $((2 * i)) $((2 * i))
done >"$TMP/heldout.jsonl"
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --shots 1 -m "$DREAM" "${T[@]}" \
      --json 2>"$TMP/err")
rc=$?
if [ $rc -eq 0 ] && err=$(check_json "$out" task=tiny-gsm n=3 shots=1 2>&1); then ok; else
    bad "tiny-gsm: rc $rc, $out $err $(cat "$TMP/err")"; fi
# the prompts: exemplar turns then the question (chat); Question/Answer text (raw)
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --shots 1 -m "$DREAM" --show-prompt)
if printf '%s' "$out" | grep -q '^<|im_start|>user' &&
   printf '%s' "$out" | grep -q '^#### 2<|im_end|>' &&
   printf '%s' "$out" | grep -q '^What is 2 plus 2?' &&
   ! printf '%s' "$out" | grep -q '<<'; then ok; else bad "chat prompt: $out"; fi
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --shots 2 --raw -m "$DREAM" \
      --show-prompt)
want=$(printf 'Question: What is 1 plus 1?\nAnswer: 1 + 1 = 2\n#### 2\n\nQuestion: What is 2 plus 2?')
if [ "${out#"$want"}" != "$out" ] && printf '%s' "$out" | grep -q '^Question: What is 3 plus 3?'
then ok; else bad "raw prompt: $out"; fi
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --oracle --raw --json 2>&1)
if err=$(check_json "$out" n=4 accuracy=1 flexible_accuracy=1 2>&1); then ok; else
    bad "tiny-gsm --oracle: $out $err"; fi
"$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --limit 2 -m "$DREAM" "${T[@]}" \
    --samples "$TMP/samples.jsonl" >/dev/null 2>&1
if [ "$(wc -l <"$TMP/samples.jsonl")" = 2 ] && grep -q '"reference":"2"' "$TMP/samples.jsonl"
then ok; else bad "--samples: $(cat "$TMP/samples.jsonl")"; fi

# ---- code tasks end to end through --oracle with crafted solutions: a body completion, a
# whole function in a fenced block (after prose), a wrong one, one that never ends
"$PY" - "$TMP" <<'EOF'
import json, sys
d = sys.argv[1]
p = 'def inc(x):\n    """add one"""\n'
t = "def check(f):\n    assert f(1) == 2\n    assert f(-1) == 0\n"
sols = ["    return x + 1\n",
        "Sure:\n```python\ndef inc(x):\n    return 1 + x\n```\nDone.",
        "    return x\n",
        "    while True:\n        pass\n"]
with open(d + "/he.jsonl", "w") as f:
    for i, s in enumerate(sols):
        f.write(json.dumps({"task_id": "T/%d" % i, "prompt": p, "canonical_solution": s,
                            "test": t, "entry_point": "inc"}) + "\n")
with open(d + "/mbpp.jsonl", "w") as f:
    for i, code in enumerate(["def inc(x):\r\n    return x + 1", "def inc(x):\n    return x + 2"]):
        f.write(json.dumps({"task_id": 11 + i, "text": "Increment.", "code": code,
                            "test_setup_code": "", "test_list": ["assert inc(1) == 2"]}) + "\n")
EOF
out=$("$BIN" eval --task humaneval --data "$TMP/he.jsonl" --oracle --timeout 1 --json 2>&1)
if err=$(check_json "$out" n=4 accuracy=0.5 timeouts=1 2>&1); then ok; else
    bad "humaneval pass/fail/timeout: $out $err"; fi
out=$("$BIN" eval --task mbpp --data "$TMP/mbpp.jsonl" --oracle --json 2>&1)
if err=$(check_json "$out" n=2 accuracy=0.5 shots=0 2>&1); then ok; else
    bad "mbpp pass/fail: $out $err"; fi

# ---- the sandbox (tests/unit/test_eval_sandbox.c has the escapes): without a working bwrap
# (simulated with $LOPAD_BWRAP) a code task is refused before any work, naming bwrap and
# --unsafe-exec; --unsafe-exec runs it unconfined; tasks without code do not care
for bw in /nonexistent/bwrap /bin/false; do
    err=$(LOPAD_BWRAP=$bw "$BIN" eval --task humaneval --data "$TMP/he.jsonl" --oracle --limit 2 \
          --json 2>&1 >/dev/null)
    rc=$?
    if [ $rc -eq 2 ] && printf '%s' "$err" | grep -q bwrap &&
       printf '%s' "$err" | grep -q -- --unsafe-exec; then ok; else
        bad "no sandbox ($bw): rc $rc, '$err'"; fi
done
out=$(LOPAD_BWRAP=/nonexistent/bwrap "$BIN" eval --task mbpp --data "$TMP/mbpp.jsonl" --oracle \
      --unsafe-exec --json 2>"$TMP/err")
if err=$(check_json "$out" n=2 accuracy=0.5 2>&1); then ok; else
    bad "--unsafe-exec without bwrap: $out $err $(cat "$TMP/err")"; fi
out=$(LOPAD_BWRAP=/nonexistent/bwrap "$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" \
      --oracle --json 2>&1)
if err=$(check_json "$out" n=4 accuracy=1 2>&1); then ok; else bad "no bwrap, no code: $out"; fi

# ---- sweeps
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --limit 2 -m "$DREAM" "${T[@]}" \
      --decoder fast --sweep threshold=0.5,0.9 --json 2>"$TMP/err")
rc=$?
if [ $rc -eq 0 ] && "$PY" - "$out" <<'EOF'; then ok; else bad "sweep json: rc $rc $out $(cat "$TMP/err")"; fi
import json, sys
j = json.loads(sys.argv[1])
assert j["sweep"] == "threshold"
r = j["results"]
assert [x["value"] for x in r] == ["0.5", "0.9"]
assert [x["settings"]["threshold"] for x in r] == [0.5, 0.9]
assert all(x["n"] == 2 and 0 <= x["accuracy"] <= 1 for x in r)
EOF
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --limit 1 -m "$DREAM" "${T[@]}" \
      --sweep lopa=0,1,2 --plot "$TMP/sweep.png" 2>"$TMP/err")
rc=$?
rows=$(printf '%s\n' "$out" | grep -c '^| [012] | tiny-gsm | 1 |')
want_rc=0
command -v gnuplot >/dev/null || want_rc=1 # no plot is a failure, after the table
if [ $rc -eq $want_rc ] && [ "$rows" = 3 ] && printf '%s\n' "$out" | grep -q '^| lopa | task |'; then ok
else bad "sweep table: rc $rc rows $rows: $out $(cat "$TMP/err")"; fi
if command -v gnuplot >/dev/null; then
    if [ "$(head -c 4 "$TMP/sweep.png" | od -An -c | tr -d ' ')" = "211PNG" ]; then ok; else
        bad "--plot wrote no PNG: $(cat "$TMP/err")"; fi
else
    grep -q "gnuplot is not installed" "$TMP/err" && ok || bad "no gnuplot message"
fi
# without gnuplot on PATH: the table, a message, and a non-zero exit (no silent success)
rm -f "$TMP/sweep2.png"
PATH=/nonexistent "$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --limit 1 -m "$DREAM" \
    "${T[@]}" --sweep lopa=0,1 --plot "$TMP/sweep2.png" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -ne 0 ] && grep -q "gnuplot is not installed" "$TMP/err" && [ ! -e "$TMP/sweep2.png" ] && ok ||
    bad "--plot without gnuplot: rc $rc, $(cat "$TMP/err")"

# ---- bad input: exit status 2 and a message naming the problem
expect2() { # expected-message-fragment args...
    local want=$1
    shift
    local err rc
    err=$("$BIN" eval "$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -eq 2 ] && printf '%s' "$err" | grep -qF -- "$want"; then ok; else
        bad "eval $*: rc $rc, '$err' (want '$want')"; fi
}
expect2 "unknown task 'gsm9k'" --task gsm9k -m "$DREAM"
expect2 "give --task" -m "$DREAM"
expect2 "$TMP/none.jsonl" --task tiny-gsm --data "$TMP/none.jsonl" -m "$DREAM"
LOPAD_DATA=$TMP/nowhere expect2 "LOPAD_DATA=$TMP/nowhere has no bench/gsm8k_test.jsonl" \
    --task gsm8k -m "$DREAM"
expect2 "PARAM=v1,v2" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep lopa -m "$DREAM"
expect2 "empty value" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep lopa=1,,2 -m "$DREAM"
expect2 "unknown option 'frobnicate'" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep frobnicate=1 -m "$DREAM"
expect2 "'lopa' expects an integer" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep lopa=1,x -m "$DREAM"
expect2 "unknown option 'model'" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep model=a,b
expect2 "needs decoder fast" --task tiny-gsm --data "$TMP/heldout.jsonl" --sweep threshold=0.5,0.9 \
    --decoder dream -m "$DREAM"
expect2 "--plot needs --sweep" --task tiny-gsm --data "$TMP/heldout.jsonl" --plot "$TMP/p.png"
expect2 "unknown option" --task gsm8k --bogus
echo '{"question": "no answer"}' >"$TMP/bad.jsonl"
expect2 "record 1" --task tiny-gsm --data "$TMP/bad.jsonl" -m "$DREAM"

# ---- generation goes through lopad run's path in quiet mode: one JSON line on stdout,
# nothing on stderr (no per-problem summary, no streamed text), and the same counts
out=$("$BIN" eval --task tiny-gsm --data "$TMP/heldout.jsonl" --limit 2 -m "$DREAM" "${T[@]}" \
    --decoder dream --json 2>"$TMP/quiet_err")
rc=$?
if [ $rc -eq 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [ ! -s "$TMP/quiet_err" ] &&
    printf '%s' "$out" | grep -q '"nfe":4,' && printf '%s' "$out" | grep -q '"n_committed":16,'; then
    ok
else
    bad "quiet eval: rc $rc, stdout '$out', stderr '$(cat "$TMP/quiet_err")'"
fi

# ---- the lopa-demo task (issue 18): its held-out set and defaults need no other flag
if [ -d "$SRC/models/lopa-demo" ]; then
    for extra in "" "--lopa 2"; do
        out=$("$BIN" eval --task lopa-demo -m "$SRC/models/lopa-demo" --decoder d2f $extra \
              --limit 3 --threads 1 --json 2>"$TMP/err")
        rc=$?
        if [ $rc -eq 0 ] && check_json "$out" task=lopa-demo n=3 &&
            printf '%s' "$out" | grep -q '"gen":64' && printf '%s' "$out" | grep -q '"block":16'; then
            ok; else bad "lopa-demo $extra: rc $rc, $out $(cat "$TMP/err")"; fi
    done
fi

echo "test_eval: $pass passed, $fail failed"
[ $fail -eq 0 ]
