#!/usr/bin/env bash
# test_cuda_build.sh - the CUDA backend compiles and links: when nvcc exists, configure a
# separate build with -DLOPAD_CUDA=ON (sm_90 only, to keep it short), build the library,
# the CLI and test_cuda, and run test_cuda (it skips its GPU cases without a device; the
# Dream-7B-shaped case is left to bench/gpu.sh here). Skips with a message without nvcc.
# usage: bash test_cuda_build.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
src=${2:?source dir}
bin=${3:?binary dir}

nvcc=$(command -v nvcc || true)
if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [ -z "$nvcc" ]; then
    echo "SKIP: nvcc not found (no CUDA toolkit): CUDA build not checked"
    exit 0
fi

dir="$bin/cuda-build-check"
log="$dir.log"
fail() {
    echo "FAIL: $1 (log: $log)"
    tail -40 "$log"
    exit 1
}
echo "nvcc: $nvcc ($("$nvcc" --version | tail -1))"
cmake -S "$src" -B "$dir" -DLOPAD_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="90-real" >"$log" 2>&1 ||
    fail "configure with -DLOPAD_CUDA=ON"
cmake --build "$dir" -j2 --target lopad lopad-cli test_cuda >>"$log" 2>&1 || fail "build"

# the CUDA build knows the device option (it may have no device: then the message says so)
out=$("$dir/lopad" logits -m "$src/tests/fixtures/tiny-dream" --tokens 1,2,3 --device cuda \
    --out "$dir/logits.bin" 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
    case "$out" in
    *"built without CUDA"*) fail "a -DLOPAD_CUDA=ON build says it was built without CUDA: $out" ;;
    *"no CUDA device"*) echo "no CUDA device here: $out" ;;
    *) fail "lopad logits --device cuda: $out" ;;
    esac
fi

LOPAD_TEST_CUDA_NO_7B=1 "$dir/test_cuda" >>"$log" 2>&1 || fail "test_cuda"
grep -E "SKIP|passed" "$log" | tail -3
echo "CUDA build OK"
