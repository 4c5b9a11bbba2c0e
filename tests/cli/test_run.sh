#!/usr/bin/env bash
# test_run.sh - `lopad run` end to end on the tiny fixture models: every golden decode
# case of tests/fixtures/decode/tiny-*.txt through --prompt-ids --json (ids must equal
# the reference), determinism of seeds, text prompts, and every bad input giving a
# clear message and a non-zero exit.
# usage: bash test_run.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$1
SRC=$2
FIX=$SRC/tests/fixtures
LLADA=$FIX/tiny-llada
DREAM=$FIX/tiny-dream
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
unset LOPAD_DEFAULT_MODEL
# one worker: keep the suite light (and independent of the thread pool)
T="--threads 1"

val() { sed -n "s/^$1 //p" "$2"; }

# ---- golden cases: ids through the CLI equal the reference's
n_cases=0
for f in "$FIX"/decode/tiny-*.txt; do
    n_cases=$((n_cases + 1))
    name=$(basename "$f" .txt)
    model=$FIX/$(val model "$f")
    dec=$(val decoder "$f")
    args=(--prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" --steps "$(val steps "$f")"
          --decoder "$dec" --temperature "$(val temperature "$f")" --seed "$(val seed "$f")")
    if [ "$dec" = llada ]; then
        args+=(--block "$(val block "$f")" --remasking "$(val remasking "$f")"
               --cfg-scale "$(val cfg_scale "$f")")
        [ "$(val logits_eos_inf "$f")" = 1 ] && args+=(--logits-eos-inf)
        [ "$(val confidence_eos_eot_inf "$f")" = 1 ] && args+=(--confidence-eos-eot-inf)
    else
        args+=(--alg "$(val alg "$f")" --alg-temp "$(val alg_temp "$f")" --eps "$(val eps "$f")"
               --top-p "$(val top_p "$f")" --top-k "$(val top_k "$f")")
    fi
    out=$(timeout 60 "$BIN" run -m "$model" "${args[@]}" --json $T 2>/tmp/lopad_run_err.$$)
    rc=$?
    want=$(val ids "$f")
    [ "$want" = "-" ] && want=""
    got=$(printf '%s' "$out" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
    nfe=$(printf '%s' "$out" | sed -n 's/.*"nfe":\([0-9]*\).*/\1/p')
    if [ $rc -eq 0 ] && [ "$got" = "$want" ] && [ "$nfe" = "$(val nfe "$f")" ]; then
        ok
    else
        bad "$name: rc $rc, ids [$got] vs [$want], nfe $nfe: $(cat /tmp/lopad_run_err.$$)"
    fi
done
[ $n_cases -ge 10 ] && ok || bad "only $n_cases tiny fixtures found"

# ---- the same cases from the GGUF files (same weights), and with 2 worker threads
gguf_case() { # fixture model-file extra-args...
    local f=$FIX/decode/$1.txt m=$2
    shift 2
    local want got
    want=$(val ids "$f")
    got=$("$BIN" run -m "$m" --prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" \
        --steps "$(val steps "$f")" --temperature "$(val temperature "$f")" \
        --seed "$(val seed "$f")" "$@" --json 2>/dev/null |
        sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
    [ "$got" = "$want" ] && ok || bad "$1 on $(basename "$m") $*: [$got] vs [$want]"
}
gguf_case tiny-dream-entropy "$FIX/tiny-dream.gguf" --decoder dream --alg entropy $T
gguf_case tiny-llada-lowconf "$FIX/tiny-llada.gguf" --decoder llada --block 8 $T
gguf_case tiny-llada-temp "$LLADA" --decoder llada --block 8 --threads 2
gguf_case tiny-dream-origin "$DREAM" --decoder dream --alg origin --threads 2

# ---- settings appear in the JSON; summary on stderr
out=$("$BIN" run -m "$LLADA" --prompt-ids 5,6,7 --gen 8 --decoder llada --json $T 2>/tmp/lopad_run_err.$$)
case "$out" in *'"decoder":"llada"'*'"block":8'*) ok ;; *) bad "json settings: $out" ;; esac
grep -q "NFE 8" /tmp/lopad_run_err.$$ && ok || bad "summary: $(cat /tmp/lopad_run_err.$$)"
out=$("$BIN" run -m "$DREAM" --prompt-ids 5,6,7 --gen 8 --decoder dream --json $T 2>/dev/null)
case "$out" in *'"decoder":"dream"'*'"alg":"entropy"'*) ok ;; *) bad "dream settings: $out" ;; esac
# no --decoder: Fast-dLLM with the dual cache, and the summary says so
out=$("$BIN" run -m "$DREAM" --prompt-ids 5,6,7 --gen 8 --json $T 2>/tmp/lopad_run_err.$$)
case "$out" in *'"decoder":"fast"'*'"cache":"dual"'*'"threshold":0.9'*) ok ;; *) bad "default decoder: $out" ;; esac
grep -q "decoder fast (dual cache)" /tmp/lopad_run_err.$$ && ok || bad "summary decoder: $(cat /tmp/lopad_run_err.$$)"

# ---- seeds: same seed same ids, another seed other ids
run_ids() { "$BIN" run -m "$DREAM" --prompt-ids 10,20,30 --gen 32 --temperature 1 --seed "$1" \
    --json $T 2>/dev/null | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
a=$(run_ids 1); b=$(run_ids 1); c=$(run_ids 2)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "seed 1 twice: [$a] [$b]"
[ "$a" != "$c" ] && ok || bad "seeds 1 and 2 gave the same ids"

# ---- text prompts (tokenizer + chat template), streaming text, --visual
out=$("$BIN" run -m "$LLADA" -p "hello" --gen 8 $T 2>/tmp/lopad_run_err.$$)
[ $? -eq 0 ] && ok || bad "text prompt: $(cat /tmp/lopad_run_err.$$)"
out=$("$BIN" run -m "$DREAM" -p "hello" --raw --gen 8 --json $T 2>/dev/null)
case "$out" in *'"text":'*) ok ;; *) bad "json text: $out" ;; esac
"$BIN" run -m "$DREAM" -p "hello" --gen 8 --decoder dream --visual $T >/dev/null 2>/tmp/lopad_run_err.$$ &&
    grep -q "step 8/8" /tmp/lopad_run_err.$$ && ok || bad "visual: $(cat /tmp/lopad_run_err.$$)"
# chat: two turns from stdin
printf 'hi\nhow are you\n' | "$BIN" chat -m "$DREAM" --gen 8 $T >/dev/null 2>/tmp/lopad_run_err.$$
[ $? -eq 0 ] && [ "$(grep -c 'NFE' /tmp/lopad_run_err.$$)" = 2 ] && ok ||
    bad "chat: $(cat /tmp/lopad_run_err.$$)"

# chat: a turn the context cannot hold is dropped with a pointer to /reset, the next
# turn still runs, and a conversation whose last turn failed exits non-zero
printf 'hi\nhi\n' | "$BIN" chat -m "$DREAM" --gen 600 $T >/dev/null 2>/tmp/lopad_run_err.$$
rc=$?
[ $rc -ne 0 ] && grep -q "/reset" /tmp/lopad_run_err.$$ &&
    [ "$(grep -c 'exceed the context' /tmp/lopad_run_err.$$)" = 2 ] && ok ||
    bad "chat past the context: rc $rc, $(cat /tmp/lopad_run_err.$$)"
printf 'hi\n/reset\nhi\n' | "$BIN" chat -m "$DREAM" --gen 8 $T >/dev/null 2>/tmp/lopad_run_err.$$ &&
    ok || bad "chat with /reset: $(cat /tmp/lopad_run_err.$$)"

# a model that does not say its context length: canvases are bounded all the same
NOCTX=$(mktemp -d)
cp -r "$DREAM"/. "$NOCTX"/
sed -i '/max_position_embeddings/d' "$NOCTX/config.json"
"$BIN" run -m "$NOCTX" --prompt-ids 1,2,3 --gen 1048576 $T >/dev/null 2>/tmp/lopad_run_err.$$
rc=$?
[ $rc -eq 2 ] && grep -q "exceed the context length 32768" /tmp/lopad_run_err.$$ && ok ||
    bad "no context length: rc $rc, $(cat /tmp/lopad_run_err.$$)"
rm -rf "$NOCTX"

# ---- bad inputs: non-zero exit and a message naming the problem
expect_fail() { # expected-substring, args...
    local want=$1
    shift
    "$BIN" "$@" >/dev/null 2>/tmp/lopad_run_err.$$
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$want" /tmp/lopad_run_err.$$; then
        ok
    else
        bad "lopad $* -> rc $rc, stderr '$(cat /tmp/lopad_run_err.$$)' (want '$want')"
    fi
}
expect_fail "empty prompt" run -m "$LLADA" -p ""
expect_fail "--prompt-ids" run -m "$LLADA" --prompt-ids ""
expect_fail "--prompt-ids" run -m "$LLADA" --prompt-ids 1,x
expect_fail "exactly one of" run -m "$LLADA" -p hi --prompt-ids 1,2
expect_fail "exactly one of" run -m "$LLADA"
expect_fail "exceed the context" run -m "$LLADA" --prompt-ids 1,2,3 --gen 4096 --block 32 $T
expect_fail "multiple of --block" run -m "$LLADA" --prompt-ids 1,2,3 --gen 16 --block 5 $T
expect_fail "divisible by the number of blocks" run -m "$LLADA" --prompt-ids 1,2,3 --gen 16 --block 8 --steps 7 --decoder llada $T
expect_fail "--decoder: option 'decoder' expects one of llada, dream, fast, d2f, got 'foo'" run -m "$LLADA" --prompt-ids 1,2,3 --decoder foo
expect_fail "--alg: option 'alg' expects one of" run -m "$DREAM" --prompt-ids 1,2,3 --alg greedy
expect_fail "--remasking" run -m "$LLADA" --prompt-ids 1,2,3 --remasking high
expect_fail "--temperature" run -m "$LLADA" --prompt-ids 1,2,3 --temperature -1
expect_fail "--temperature" run -m "$LLADA" --prompt-ids 1,2,3 --temperature abc
expect_fail "--top-p" run -m "$DREAM" --prompt-ids 1,2,3 --top-p 0
expect_fail "--top-p" run -m "$DREAM" --prompt-ids 1,2,3 --top-p 1.5
expect_fail "--top-k" run -m "$DREAM" --prompt-ids 1,2,3 --top-k -2
expect_fail "--eps" run -m "$DREAM" --prompt-ids 1,2,3 --eps 1.5
expect_fail "--cfg-scale" run -m "$LLADA" --prompt-ids 1,2,3 --cfg-scale -1
expect_fail "--cfg-scale" run -m "$DREAM" --prompt-ids 1,2,3 --cfg-scale 1
expect_fail "--block" run -m "$DREAM" --prompt-ids 1,2,3 --gen 16 --block 8 --decoder dream
expect_fail "--gen" run -m "$LLADA" --prompt-ids 1,2,3 --gen 0
expect_fail "--steps" run -m "$LLADA" --prompt-ids 1,2,3 --steps 0
expect_fail "--seed" run -m "$LLADA" --prompt-ids 1,2,3 --seed -4
expect_fail "outside the vocabulary" run -m "$LLADA" --prompt-ids 1,5000 $T
expect_fail "mask token" run -m "$LLADA" --prompt-ids 1,266 $T
# without -m: $LOPAD_DEFAULT_MODEL, else the model compiled into the binary
LOPAD_DEFAULT_MODEL=/nonexistent-default-model expect_fail "nonexistent-default-model" run --prompt-ids 1,2,3
if "$BIN" run --prompt-ids 1,2,3 --gen 8 --steps 8 >/dev/null 2>&1; then ok; else bad "run without -m did not use the embedded default model"; fi
expect_fail "nonexistent" run -m "$SRC/tests/fixtures/nonexistent" --prompt-ids 1,2,3
expect_fail "unknown option" run -m "$LLADA" --prompt-ids 1,2,3 --bogus
expect_fail "needs a value" run -m "$LLADA" --prompt-ids 1,2,3 --gen
expect_fail "exclude each other" run -m "$LLADA" -p hi --chat --raw
expect_fail "unknown option" chat -m "$LLADA" --bogus

# ---- synthetic models (-m synthetic:SHAPE[:LAYERS][@TYPE], used by bench/fast_dllm.sh and bench/dpad.sh)
ids_of() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
syn() { # model -> ids of a fixed 8-token llada generation, or FAIL
    "$BIN" run -m "$1" --prompt-ids 1,2,3,4 --gen 8 --steps 8 --block 8 --decoder llada --json \
        $T 2>/tmp/lopad_run_err.$$ | { read -r l && [ -n "$l" ] && printf '%s' "$l" | ids_of; } ||
        echo FAIL
}
s_full=$(syn synthetic:tiny-llada)
s_two=$(syn synthetic:tiny-llada:2)
s_one=$(syn synthetic:tiny-llada:1)
s_one_b=$(syn synthetic:tiny-llada:1)
s_q8=$(syn synthetic:tiny-llada:1@q8_0)
case "$s_full,$s_one,$s_q8" in *FAIL*) bad "synthetic run failed: $(cat /tmp/lopad_run_err.$$)" ;; *) ok ;; esac
# ":2" of a 2-layer shape is the same model; fewer layers, other ids; same name, same ids
[ -n "$s_full" ] && [ "$s_full" = "$s_two" ] && ok || bad "synthetic:tiny-llada:2 [$s_two] != synthetic:tiny-llada [$s_full]"
[ -n "$s_one" ] && [ "$s_one" != "$s_full" ] && ok || bad "1-layer synthetic gave the 2-layer ids [$s_one]"
[ "$s_one" = "$s_one_b" ] && ok || bad "synthetic:tiny-llada:1 is not deterministic"
[ -n "$s_q8" ] && [ "$s_q8" != "$s_one" ] && ok || bad "@q8_0 gave the bf16 ids [$s_q8]"
# bench forward takes the same names and runs the given depth
out=$("$BIN" bench forward --shape tiny:1 --tokens 8 --repeat 1 --threads 1 --no-peak --json 2>&1)
printf '%s' "$out" | grep -q '"layers": 1' && ok || bad "bench forward --shape tiny:1: $out"
expect_fail "unknown shape 'nope'" run -m synthetic:nope --prompt-ids 1,2,3
expect_fail "bad layer count '0'" run -m synthetic:tiny:0 --prompt-ids 1,2,3
expect_fail "bad layer count '3'" run -m synthetic:tiny:3 --prompt-ids 1,2,3
expect_fail "bad layer count 'x'" run -m synthetic:tiny:x --prompt-ids 1,2,3
expect_fail "bad layer count ''" run -m synthetic:tiny: --prompt-ids 1,2,3
expect_fail "unknown type 'q9'" run -m synthetic:tiny@q9 --prompt-ids 1,2,3
expect_fail "--lora" run -m synthetic:tiny --lora /nonexistent --prompt-ids 1,2,3
expect_fail "no tokenizer" run -m synthetic:tiny -p hello
expect_fail "bad layer count '1:2'" bench forward --shape tiny:1:2 --tokens 8 --no-peak

rm -f /tmp/lopad_run_err.$$
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
