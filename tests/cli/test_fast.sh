#!/usr/bin/env bash
# test_fast.sh - `lopad run --decoder fast` and `--dpad` end to end on the tiny fixture
# models: every golden case of tests/fixtures/fast/tiny-*.txt and dpad/tiny-*.txt through
# --prompt-ids --json (the canvas, cut like the CLI's ids, must equal the reference),
# presets, --json settings, and bad options giving a clear message and exit 2.
# usage: bash test_fast.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$1
SRC=$2
FIX=$SRC/tests/fixtures
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
unset LOPAD_DEFAULT_MODEL
T="--threads 1"
val() { sed -n "s/^$1 //p" "$2"; }

# expected ids: the generated part of the canvas, cut before EOS / EoT / MASK
want_ids() {
    python3 - "$1" <<'PY'
import sys
kv = dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[1]) if l[0] != "#" and " " in l)
canvas = [int(t) for t in kv["canvas"].split(",")]
P = len(kv["prompt"].split(","))
stop = {266, 265, 269} if kv["model"] == "tiny-llada" else {268, 264, 266}
out = []
for t in canvas[P:]:
    if t in stop:
        break
    out.append(t)
print(",".join(map(str, out)))
PY
}

n_cases=0
for f in "$FIX"/fast/tiny-*.txt "$FIX"/dpad/tiny-*.txt; do
    n_cases=$((n_cases + 1))
    name=$(basename "$f" .txt)
    args=(--prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" --steps "$(val steps "$f")"
          --block "$(val block "$f")" --temperature "$(val temperature "$f")"
          --seed "$(val seed "$f")")
    if [ "$(val via_llada "$f")" = 1 ]; then
        args+=(--decoder llada)
    else
        args+=(--decoder fast --cache "$(val cache "$f")" --rule "$(val rule "$f")"
               --threshold "$(val threshold "$f")" --factor "$(val factor "$f")"
               --confidence "$(val confidence "$f")" --eps "$(val eps "$f")")
        [ "$(val first_token "$f")" = 1 ] && args+=(--dream-first-token-commit)
    fi
    [ "$(val early_stop "$f")" = 1 ] && args+=(--early-stop on) || args+=(--early-stop off)
    if [ "$(val dpad "$f")" = 1 ]; then
        args+=(--dpad --dpad-window "$(val dpad_window "$f")" --dpad-sigma "$(val dpad_sigma "$f")"
               --dpad-scale "$(val dpad_scale "$f")")
    fi
    out=$("$BIN" run -m "$FIX/$(val model "$f")" "${args[@]}" $T --json 2>/dev/null)
    got=$(printf '%s' "$out" | python3 -c 'import json,sys; print(",".join(map(str, json.load(sys.stdin)["ids"])))' 2>/dev/null)
    nfe=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nfe"])' 2>/dev/null)
    want=$(want_ids "$f")
    if [ "$got" = "$want" ] && [ "$nfe" = "$(val nfe "$f")" ]; then ok; else
        bad "$name: ids '$got' nfe $nfe, want '$want' nfe $(val nfe "$f")"; fi
done
[ "$n_cases" -ge 15 ] && ok || bad "only $n_cases golden cases"

# settings in --json, preset
out=$("$BIN" run -m "$FIX/tiny-llada" --prompt-ids 1,2,3 --gen 32 --decoder fast --cache dual \
      --preset dpad-llada-humaneval $T --json 2>/dev/null)
printf '%s' "$out" | python3 -c '
import json,sys
s = json.load(sys.stdin)["settings"]
assert s["decoder"] == "fast" and s["cache"] == "dual" and s["rule"] == "threshold", s
assert s["dpad_window"] == 512 and s["dpad_sigma"] == 3 and s["dpad_scale"] == 2.3, s
' && ok || bad "--json settings / preset"

# bad options: exit 2 and a message naming the option
expect_usage() {
    local needle=$1
    shift
    local err
    err=$("$BIN" run -m "$FIX/tiny-llada" --prompt-ids 1,2,3 --gen 32 $T "$@" 2>&1 >/dev/null)
    local rc=$?
    if [ $rc -eq 2 ] && printf '%s' "$err" | grep -q -- "$needle"; then ok; else
        bad "$*: rc $rc, message '$err' lacks '$needle'"; fi
}
expect_usage "--cache: option 'cache' expects one of none, prefix, dual" --decoder fast --cache full
expect_usage "rule" --decoder fast --rule greedy
expect_usage "--threshold" --decoder fast --threshold 1.5
expect_usage "--early-stop" --decoder fast --early-stop maybe
expect_usage "option 'cache' needs decoder fast" --decoder llada --cache dual
expect_usage "option 'dpad_window' needs option 'dpad'" --decoder fast --dpad-window 64
expect_usage "preset" --decoder fast --preset dpad-nothing
expect_usage "--dream-first-token-commit" --decoder fast --dream-first-token-commit
expect_usage "origin" --decoder dream --dpad --block 8 --alg origin
# dream --dpad is Dream by blocks (the DPad paper's Dream baseline) with suffix dropout
if "$BIN" run -m "$FIX/tiny-llada" --prompt-ids 1,2,3 --gen 32 $T --decoder dream --block 8 \
    --dpad --dpad-window 8 >/dev/null 2>&1; then ok; else bad "dream --dpad --block 8 failed"; fi
expect_usage "--dpad-window" --decoder fast --dpad --dpad-window 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
