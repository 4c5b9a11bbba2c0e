#!/bin/bash
# repack_rss.sh - peak RSS of one forward on a Dream-7B-shaped Q8_0 GGUF with
# 2 layers, without and with the Q8_0 repack (docs/PERFORMANCE.md); then saves
# the model while a repacked context lives (the save reads the released pages
# back from the file) and checks the copy is byte-identical to FILE.
#
#   bench/repack_rss.sh [BUILD_DIR] [FILE] [THREADS] [TOKENS]
#   defaults: build, /tmp/lopad-dream7b-2l-q8_0.gguf (made when missing), 2, 32
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
FILE=${2:-/tmp/lopad-dream7b-2l-q8_0.gguf}
THREADS=${3:-2}
TOKENS=${4:-32}
LIB=$BUILD/liblopad.a
[ -f "$LIB" ] || { echo "repack_rss: build lopad first ($LIB missing)" >&2; exit 2; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
gcc -O2 -std=gnu17 -D_GNU_SOURCE -I"$SRC/include" -I"$SRC/src" "$SRC/bench/repack_rss.c" "$LIB" \
    $(pkg-config --libs libpcre2-8 libutf8proc libcjson) -lpthread -lm -o "$DIR/repack_rss"
[ -f "$FILE" ] || "$DIR/repack_rss" make "$FILE" 2
for mode in off on; do
    /usr/bin/time -v "$DIR/repack_rss" run "$FILE" "$mode" "$THREADS" "$TOKENS" 2>"$DIR/time"
    grep -E "Maximum resident|Elapsed" "$DIR/time" | sed 's/^\s*/  /'
done
"$DIR/repack_rss" run "$FILE" on "$THREADS" "$TOKENS" "$DIR/saved.gguf" >/dev/null
cmp "$FILE" "$DIR/saved.gguf" && echo "  saved after the repack: identical to $FILE"
