#!/bin/bash
# test_tokenize.sh - `lopad tokenize` end to end: encode / decode through a
# tokenizer.json, a Hugging Face directory and a GGUF vocabulary (all built from
# ../shared/data/tokenizer/qwen.tiktoken by the unit test binary), throughput
# output, and the error exits.
# usage: bash test_tokenize.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
LOPAD=$1
SRC=$2
BIN=$3
fail=0
check() { # check NAME CONDITION-RESULT(0/1)
    if [ "$2" -ne 0 ]; then
        echo "FAIL: $1"
        fail=1
    else
        echo "ok: $1"
    fi
}

if [ ! -f "$SRC/../shared/data/tokenizer/qwen.tiktoken" ]; then
    echo "SKIP: ../shared/data/tokenizer absent"
    exit 0
fi
if [ ! -x "$BIN/test_tokenizer" ]; then
    echo "SKIP: $BIN/test_tokenizer not built (it writes the fixtures)"
    exit 0
fi
DIR=$BIN/test_tokenize_cli
rm -rf "$DIR"
mkdir -p "$DIR"
"$BIN/test_tokenizer" --make-fixtures "$DIR" 2>/dev/null || { echo "FAIL: cannot make fixtures"; exit 1; }

# encode
out=$("$LOPAD" tokenize --tokenizer "$DIR/tokenizer.json" --text "Hello world")
[ "$out" = "[9707, 1879]" ]; check "encode Hello world ($out)" $?
out=$("$LOPAD" tokenize -m "$DIR/qwen-vocab.gguf" --text " Hello, world!")
[ "$out" = "[21927, 11, 1879, 0]" ]; check "gguf encode ($out)" $?

# special tokens only with --special
out=$("$LOPAD" tokenize -m "$DIR" --text "<|im_start|>user" --special)
[ "$out" = "[151644, 872]" ]; check "--special ($out)" $?
out=$("$LOPAD" tokenize -m "$DIR" --text "<|im_start|>user")
case "$out" in *151644*) r=1 ;; *) r=0 ;; esac
check "no --special: marker is plain text ($out)" $r

# stdin, all three sources agree, and decode gives the text back
TEXT=$'Natalia sold clips to 48 of her friends in April,\n\tand then she sold half as many clips in May. 我想在apple工作1314151天～ 🦙 ½'
a=$(printf '%s' "$TEXT" | "$LOPAD" tokenize --tokenizer "$DIR/tokenizer.json")
b=$(printf '%s' "$TEXT" | "$LOPAD" tokenize -m "$DIR")
c=$(printf '%s' "$TEXT" | "$LOPAD" tokenize -m "$DIR/qwen-vocab.gguf")
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ]; check "json / dir / gguf agree" $?
ids=$(echo "$a" | tr -d '[] ')
back=$("$LOPAD" tokenize -m "$DIR/qwen-vocab.gguf" --decode "$ids")
[ "$back" = "$TEXT" ]; check "decode round trip" $?

# throughput report
out=$(printf '%s' "$TEXT" | "$LOPAD" tokenize --tokenizer "$DIR/tokenizer.json" --bench 0.2)
case "$out" in *'"mb_s"'*) r=0 ;; *) r=1 ;; esac
check "--bench prints MB/s ($out)" $r

# errors: runtime -> 1 with a message naming the file, usage -> 2
err=$("$LOPAD" tokenize --tokenizer "$DIR/missing.json" --text x 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *missing.json* ]]; check "missing file exits 1 ($err)" $?
mkdir -p "$DIR/empty_model"
err=$("$LOPAD" tokenize -m "$DIR/empty_model" --text x 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *"no tokenizer.json"* ]]; check "HF dir without tokenizer exits 1 ($err)" $?
err=$("$LOPAD" tokenize -m "$DIR/notok.gguf" --text x 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *"no tokenizer"* ]]; check "GGUF without tokenizer exits 1 ($err)" $?
err=$("$LOPAD" tokenize -m "$DIR/qwen-vocab.gguf" --decode 1,999999 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *999999* ]]; check "bad id exits 1 ($err)" $?
"$LOPAD" tokenize --text x >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ]; check "no tokenizer given exits 2" $?
"$LOPAD" tokenize -m "$DIR" --frobnicate >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ]; check "unknown option exits 2" $?
"$LOPAD" tokenize -m "$DIR" --decode 1,x >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ]; check "bad --decode list exits 2" $?

rm -rf "$DIR"
exit $fail
