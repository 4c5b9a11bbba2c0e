#!/usr/bin/env bash
# test_commands.sh - `lopad info`, `convert`, `logits` and `bench`: what they print on
# good input, and a clear message with a non-zero exit on bad input.
# usage: bash test_commands.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=${1:?lopad binary}
SRC=${2:?source dir}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
expect_fail() { # expected-substring, args...
    local want=$1
    shift
    "$BIN" "$@" >/dev/null 2>"$TMP/err"
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$want" "$TMP/err"; then ok; else
        bad "lopad $* -> rc $rc, stderr '$(cat "$TMP/err")' (want '$want')"; fi
}
DREAM=$SRC/tests/fixtures/tiny-dream
LLADA=$SRC/tests/fixtures/tiny-llada

# info
out=$("$BIN" info "$DREAM") && printf '%s' "$out" | grep -q '^architecture    dream' &&
    printf '%s' "$out" | grep -q '^shift_logits    yes' && ok || bad "info dream: $out"
out=$("$BIN" info "$SRC/tests/fixtures/tiny-llada.gguf") &&
    printf '%s' "$out" | grep -q 'norm (interleaved)' && ok || bad "info llada gguf: $out"
expect_fail "no model given" info
expect_fail "nonexistent" info "$SRC/tests/fixtures/nonexistent"
expect_fail "unknown option" info "$DREAM" --bogus

# convert: a round trip keeps the logits; bad type and bad input are refused
if "$BIN" convert "$LLADA" "$TMP/l.gguf" --type f32 2>/dev/null &&
    "$BIN" logits -m "$LLADA" --tokens 1,2,3 --out "$TMP/a.f32" &&
    "$BIN" logits -m "$TMP/l.gguf" --tokens 1,2,3 --out "$TMP/b.f32" &&
    python3 -c "import struct,sys
a=open(sys.argv[1],'rb').read(); b=open(sys.argv[2],'rb').read()
x=struct.unpack('%df'%(len(a)//4),a); y=struct.unpack('%df'%(len(b)//4),b)
sys.exit(0 if len(a)==len(b)==3*272*4 and max(abs(p-q) for p,q in zip(x,y))<1e-4 else 1)" \
        "$TMP/a.f32" "$TMP/b.f32"; then ok; else bad "convert round trip"; fi
expect_fail "unknown --type 'q3'" convert "$LLADA" "$TMP/x.gguf" --type q3
expect_fail "nonexistent" convert "$SRC/tests/fixtures/nonexistent" "$TMP/x.gguf"
[ ! -e "$TMP/x.gguf" ] && ok || bad "a failed convert left a file"

# logits: bad arguments
expect_fail "outside the vocabulary" logits -m "$LLADA" --tokens 1,99999 --out "$TMP/c.f32"
expect_fail "has 2 entries but --tokens has 3" logits -m "$LLADA" --tokens 1,2,3 --positions 0,1 --out "$TMP/c.f32"
expect_fail "no output file" logits -m "$LLADA" --tokens 1,2
expect_fail "bad integer list" logits -m "$LLADA" --tokens 1,x --out "$TMP/c.f32"
[ ! -e "$TMP/c.f32" ] && ok || bad "a failed logits left a file"

# bench forward: one JSON object per window with the documented fields
out=$("$BIN" bench forward --shape tiny --type f32 --tokens 8,16 --prefix 32 --layers 1 \
    --out-rows 4 --repeat 1 --no-peak --json)
if printf '%s\n' "$out" | python3 -c "import json,sys
rows=[json.loads(l) for l in sys.stdin if l.strip()]
need={'shape','type','tokens','prefix','threads','ms','gflops','layers','out_rows'}
assert len(rows)==2 and all(need<=set(r) for r in rows), rows
assert [r['tokens'] for r in rows]==[8,16] and all(r['layers']==1 and r['out_rows']==4 and r['ms']>0 for r in rows)"
then ok; else bad "bench forward --json: $out"; fi
expect_fail "unknown --type" bench forward --type q5 --no-peak
expect_fail "--layers expects an integer" bench forward --layers 0 --no-peak
expect_fail "--out-rows expects an integer" bench forward --out-rows -3 --no-peak
expect_fail "window sizes must be positive" bench forward --tokens 0 --no-peak
expect_fail "unknown benchmark" bench bogus
expect_fail "unknown option" bench peak --bogus

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
