#!/usr/bin/env bash
# test_harden_out.sh - `lopad convert` and `lopad logits` write their output
# safely: a symlink planted at the old predictable temporary name
# ("<out>.tmp.<pid>") is not followed, failures leave no file, convert does
# not replace an existing OUT without --force, logits checks positions against
# the trained context and says why it cannot write.
# usage: bash test_harden_out.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
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
# Only OUT (and the listed names) in the directory: no temporary file or directory.
expect_only() { # dir, names...
    local dir=$1
    shift
    local got want
    got=$(cd "$dir" && ls -A | sort | tr '\n' ' ')
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    [ "$got" = "$want" ] && ok || bad "$dir holds [$got], want [$want]"
}
DREAM=$SRC/tests/fixtures/tiny-dream
LLADA=$SRC/tests/fixtures/tiny-llada.gguf

# a symlink at "<out>.tmp.<pid>" (exec keeps the subshell's pid) is not followed
mkdir "$TMP/plant"
echo secret >"$TMP/victim"
(
    ln -s "$TMP/victim" "$TMP/plant/m.gguf.tmp.$BASHPID"
    exec "$BIN" convert "$DREAM" "$TMP/plant/m.gguf" 2>/dev/null
) && ok || bad "convert with a planted symlink failed"
[ "$(cat "$TMP/victim")" = secret ] && ok || bad "convert wrote through a planted symlink"
[ -f "$TMP/plant/m.gguf" ] && [ ! -L "$TMP/plant/m.gguf" ] && ok || bad "convert: OUT is not a file"
rm -f "$TMP"/plant/m.gguf.tmp.*
(
    ln -s "$TMP/victim" "$TMP/plant/l.f32.tmp.$BASHPID"
    exec "$BIN" logits -m "$DREAM" --tokens 1,2,3 --out "$TMP/plant/l.f32" 2>/dev/null
) && ok || bad "logits with a planted symlink failed"
[ "$(cat "$TMP/victim")" = secret ] && ok || bad "logits wrote through a planted symlink"
[ "$(stat -c %s "$TMP/plant/l.f32")" = $((3 * 272 * 4)) ] && ok || bad "logits: wrong size"
rm -f "$TMP"/plant/l.f32.tmp.*
expect_only "$TMP/plant" m.gguf l.f32

# convert: an existing OUT (or a symlink there) is kept unless --force
mkdir "$TMP/force"
echo old >"$TMP/force/o.gguf"
expect_fail "exists; pass --force" convert "$DREAM" "$TMP/force/o.gguf"
[ "$(cat "$TMP/force/o.gguf")" = old ] && ok || bad "convert replaced OUT without --force"
ln -s "$TMP/nowhere" "$TMP/force/dangling.gguf"
expect_fail "exists; pass --force" convert "$DREAM" "$TMP/force/dangling.gguf"
"$BIN" convert "$DREAM" "$TMP/force/o.gguf" --force 2>/dev/null && ok || bad "convert --force failed"
"$BIN" info "$TMP/force/o.gguf" >/dev/null && ok || bad "convert --force: OUT does not load"
"$BIN" convert --help | grep -q -- "--force" && ok || bad "convert --help does not mention --force"
# a convert failing after it started writing leaves the old OUT and nothing else
mkdir "$TMP/half"
cp "$DREAM"/config.json "$DREAM"/model.safetensors "$TMP/half/"
printf '{"model": [' >"$TMP/half/tokenizer.json"
expect_fail "tokenizer.json" convert "$TMP/half" "$TMP/force/o.gguf" --force
"$BIN" info "$TMP/force/o.gguf" >/dev/null && ok || bad "a failed convert damaged OUT"
expect_only "$TMP/force" o.gguf dangling.gguf

# logits: positions beyond the trained context, and why a file cannot be written
expect_fail "outside the model's trained context" logits -m "$LLADA" --tokens 1,2 \
    --positions 0,512 --out "$TMP/force/p.f32"
"$BIN" logits -m "$LLADA" --tokens 1,2 --positions 0,511 --out "$TMP/force/p.f32" 2>/dev/null &&
    ok || bad "logits at the last trained position failed"
rm -f "$TMP/force/p.f32"
expect_fail "No such file or directory" logits -m "$LLADA" --tokens 1,2 --out "$TMP/no/dir/x.f32"
mkdir "$TMP/force/adir"
expect_fail "adir: cannot replace it: Is a directory" logits -m "$LLADA" --tokens 1,2 \
    --out "$TMP/force/adir"
expect_only "$TMP/force" o.gguf dangling.gguf adir

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
