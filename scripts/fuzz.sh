#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang +
# ASan + UBSan and run each one for a bounded time on its seed corpus.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60 (`make test` runs 5 s each: test-fuzz-brief)
#   TARGET              e.g. fuzz_gguf (default: every tests/fuzz/fuzz_*.c)
#        scripts/fuzz.sh --tests
#   builds everything (unit tests too) in the same clang build and runs the
#   CTest suite under clang's ASan + UBSan (pointer-overflow included): `make
#   test-clang-ubsan`. One build serves both, so `make test` compiles it once.
# Environment:
#   LOPAD_FUZZ_BUILD    build directory (default <repo>/build-fuzz)
#   LOPAD_FUZZ_JOBS     parallel libFuzzer workers per target (default 1)
#   LOPAD_FUZZ_AVOID    steer the harnesses around known open bugs so fuzzing
#                       reaches past them (see docs/FUZZING.md), e.g.
#                       LOPAD_FUZZ_AVOID=tok-empty-piece
#   LOPAD_FUZZ_OPTIONAL=1  without clang, say so and exit 0 (used by make test)
#
# Inputs libFuzzer discovers go to <build>/fuzz-work/<target>/corpus (not the
# repository). Every crash / leak / timeout / out-of-memory input is copied to
# tests/fuzz/regress/<target>/, where the CTest test_fuzz_regress replays it;
# the script then exits 1, as it does when a seed or an already saved finding
# still fails (those are replayed first). Exit 0: nothing found.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=fuzz
if [[ ${1:-} == --tests ]]; then
  mode=tests
  shift
fi
secs=${1:-60}
[[ $# -gt 0 ]] && shift
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
build=${LOPAD_FUZZ_BUILD:-$root/build-fuzz}
jobs=${LOPAD_FUZZ_JOBS:-1}

if ! command -v clang >/dev/null || ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
  clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
  if [[ ${LOPAD_FUZZ_OPTIONAL:-0} == 1 ]]; then
    echo "fuzz.sh: SKIPPED (clang with libFuzzer not found; install clang)" >&2
    exit 0
  fi
  echo "fuzz.sh: clang with libFuzzer not found" >&2
  exit 2
fi

if (($# > 0)); then
  targets=("$@")
else
  targets=()
  for f in "$root"/tests/fuzz/fuzz_*.c; do
    [[ -e $f ]] && targets+=("$(basename "$f" .c)")
  done
fi
((${#targets[@]})) || { echo "fuzz.sh: no harnesses in tests/fuzz" >&2; exit 2; }

# The whole library is built with clang; -fsanitize=fuzzer-no-link gives the
# library the coverage instrumentation libFuzzer steers by (the harness
# executables get -fsanitize=fuzzer from CMakeLists.txt). Only the fuzz
# targets are built, not the CLI or the unit tests.
echo "== configure $build" >&2
mkdir -p "$build"
CC=clang cmake -S "$root" -B "$build" -DLOPAD_FUZZ=ON -DLOPAD_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -fsanitize=pointer-overflow" >/dev/null ||
  { echo "fuzz.sh: cmake configure failed" >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [[ $mode == tests ]]; then
  echo "== build all (clang, ASan + UBSan)" >&2
  cmake --build "$build" -j"${LOPAD_FUZZ_BUILD_JOBS:-2}" || { echo "fuzz.sh: build failed" >&2; exit 2; }
  cd "$build" && ctest --output-on-failure -j"${LOPAD_FUZZ_BUILD_JOBS:-2}"
  exit $?
fi
echo "== build ${targets[*]}" >&2
cmake --build "$build" -j"${LOPAD_FUZZ_BUILD_JOBS:-2}" --target "${targets[@]}" >"$build/fuzz-build.log" 2>&1 ||
  { tail -40 "$build/fuzz-build.log" >&2; echo "fuzz.sh: build failed (log: $build/fuzz-build.log)" >&2; exit 2; }

# Scratch files of the harnesses (a crashing run cannot clean up after itself).
scratch=$(mktemp -d "${TMPDIR:-/dev/shm}/lopad-fuzz-run.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export LOPAD_FUZZ_TMP=$scratch

# A crash's signature: the error kind plus the first three frames of lopad
# code (sanitizer and libFuzzer frames skipped), so fork mode's many copies
# of one bug are saved once.
signature() { # LOG
  local kind frames
  kind=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer): [a-z-]+|runtime error: [^0-9]*|contract violation: [^:]*|ERROR: libFuzzer: [a-z-]+' "$1")
  frames=$(grep -E '^ *#[0-9]+ 0x[0-9a-f]+ in ' "$1" | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in ([^ ]+).*/\1/' |
    grep -vE '^(__|fuzzer::|abort|raise|gsignal|lp_fuzz_fail|malloc|calloc|realloc|free|LLVMFuzzer|main$)' | head -3 | tr '\n' ' ')
  echo "$kind | $frames"
}

found=0
summary=()
for t in "${targets[@]}"; do
  bin="$build/$t"
  [[ -x $bin ]] || { echo "fuzz.sh: $bin missing" >&2; found=1; continue; }
  work="$build/fuzz-work/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  rm -f "$work/artifacts"/*
  dirs=("$work/corpus")
  [[ -d $root/tests/fuzz/corpus/$t ]] && dirs+=("$root/tests/fuzz/corpus/$t")
  [[ -d $root/tests/fuzz/regress/$t ]] && dirs+=("$root/tests/fuzz/regress/$t")
  dict=()
  [[ -f $root/tests/fuzz/$t.dict ]] && dict=(-dict="$root/tests/fuzz/$t.dict")
  # Replay the seeds and saved findings one by one first: fork mode silently
  # drops seed inputs that crash, so it would not report them.
  n_replay_bad=0
  : >"$work/replay.sigs"
  for d in "${dirs[@]:1}"; do
    for f in "$d"/*; do
      [[ -f $f ]] || continue
      if ! "$bin" -runs=1 -timeout=10 -rss_limit_mb=2048 "$f" >"$work/replay.log" 2>&1; then
        n_replay_bad=$((n_replay_bad + 1))
        signature "$work/replay.log" >>"$work/replay.sigs"
        echo "   replay fails: ${f#$root/}" >&2
        grep -m2 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|contract violation' \
          "$work/replay.log" | sed 's/^/     /' >&2
      fi
    done
  done
  for d in "${dirs[@]:1}"; do
    for f in "$d"/*; do [[ -f $f ]] && sha1sum "$f" | cut -c1-40; done
  done >"$work/known.sha1"
  echo "== $t: ${secs}s (log $work/fuzz.log)" >&2
  # fork mode keeps going after a crash, so one run can collect several.
  "$bin" -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "${dict[@]}" \
    "${dirs[@]}" >"$work/fuzz.log" 2>&1
  rc=$?
  n_new=0
  cp "$work/replay.sigs" "$work/signatures"
  for a in "$work"/artifacts/crash-* "$work"/artifacts/leak-* "$work"/artifacts/timeout-* \
    "$work"/artifacts/oom-*; do
    [[ -f $a ]] || continue
    # an input identical to a seed or a saved finding is already covered by
    # the replay above (libFuzzer names artifacts by their SHA-1)
    sum=$(sha1sum "$a" | cut -c1-40)
    if grep -qx "$sum" "$work/known.sha1" 2>/dev/null; then continue; fi
    "$bin" -runs=1 -timeout=10 -rss_limit_mb=2048 "$a" >"$work/triage.log" 2>&1
    sig=$(signature "$work/triage.log")
    if grep -qxF "$sig" "$work/signatures"; then continue; fi
    echo "$sig" >>"$work/signatures"
    mkdir -p "$root/tests/fuzz/regress/$t"
    dst="$root/tests/fuzz/regress/$t/$(basename "$a")"
    if [[ ! -e $dst ]]; then
      cp "$a" "$dst"
      echo "   new finding: ${dst#$root/}" >&2
      echo "     $sig" >&2
    fi
    n_new=$((n_new + 1))
  done
  execs=$(grep -o "^#[0-9]*" "$work/fuzz.log" | tail -1 | tr -d "#")
  cov=$(grep -o 'cov: [0-9]*' "$work/fuzz.log" | tail -1)
  if ((n_replay_bad)); then
    found=1
    summary+=("$t: $n_replay_bad seed/regress input(s) still fail (see above)")
  fi
  if ((n_new)); then
    found=1
    summary+=("$t: $n_new finding(s) -> tests/fuzz/regress/$t/ (${cov:-cov ?}, log $work/fuzz.log)")
  elif ((rc != 0)) && ! grep -q 'Done [0-9]* runs\|INFO: exiting: 0' "$work/fuzz.log"; then
    found=1
    summary+=("$t: libFuzzer exited $rc without an artifact (see $work/fuzz.log)")
  else
    summary+=("$t: no new findings, ${execs:-?} runs, ${cov:-cov ?}")
  fi
done

echo "== summary" >&2
printf '   %s\n' "${summary[@]}" >&2
exit $found
