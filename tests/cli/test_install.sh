#!/usr/bin/env bash
# test_install.sh - lopad as an installed library: `cmake --install` into a temporary
# prefix, build examples/generate.c there with `pkg-config --cflags --libs lopad` (shared
# and static), run it on the demo model with each decoder, and check that its text is
# `lopad run`'s with the same options.
# Args: lopad-binary source-dir build-dir
BIN=$1 SRC=$2 BUILD=$3
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
command -v pkg-config >/dev/null || { echo "SKIP: pkg-config not installed"; exit 0; }

cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null 2>"$TMP/err" && ok ||
    bad "cmake --install: $(cat "$TMP/err")"
for f in include/lopad.h lib/liblopad.a lib/liblopad.so lib/pkgconfig/lopad.pc bin/lopad; do
    [ -e "$TMP/prefix/$f" ] && ok || bad "not installed: $f"
done
export PKG_CONFIG_PATH="$TMP/prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs lopad) && ok || bad "pkg-config --cflags --libs lopad"
# a sanitizer build's library needs the sanitizer runtime in the program too
san=()
grep -q '^LOPAD_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null &&
    san=(-fsanitize=address,undefined)
cc "${san[@]}" "$SRC/examples/generate.c" $flags -o "$TMP/generate" 2>"$TMP/err" && ok ||
    bad "shared build of the example: $(cat "$TMP/err")"
cc "${san[@]}" "$SRC/examples/generate.c" $(pkg-config --cflags --libs --static lopad) \
    -Wl,-Bstatic -llopad -Wl,-Bdynamic -o "$TMP/generate-static" 2>"$TMP/err" && ok ||
    bad "static build of the example: $(cat "$TMP/err")"
export LD_LIBRARY_PATH="$TMP/prefix/lib"

MODEL=$SRC/models/demo
Q="Noah picks 6 stamps on Monday, 9 on Tuesday and 15 on Wednesday. Noah uses 15. How many stamps are left?"
for dec in "" fast d2f dream llada; do
    want=$("$BIN" run -m "$MODEL" -p "$Q" ${dec:+--decoder "$dec"} --threads 1 2>/dev/null)
    for prog in generate generate-static; do
        [ -x "$TMP/$prog" ] || continue
        got=$(LOPAD_NUM_THREADS=1 "$TMP/$prog" "$MODEL" "$Q" $dec 2>"$TMP/err")
        if [ $? -eq 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then ok; else
            bad "$prog ${dec:-default}: '$got' vs lopad run '$want' ($(cat "$TMP/err"))"; fi
    done
done
# a bad decoder name: the library's message names the option and the choices
"$TMP/generate" "$MODEL" "hi" greedy >/dev/null 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "option 'decoder' expects one of" "$TMP/err" && ok ||
    bad "bad decoder: $(cat "$TMP/err")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
