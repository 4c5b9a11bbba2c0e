#!/usr/bin/env bash
# test_cuda_build.sh - the CUDA backend without a GPU:
#  1. kernel emulation (needs g++): the kernels sections of src/backend/cuda/*.cu run on
#     the CPU through src/backend/cuda/emu (a pthread-per-CUDA-thread emulation) and are
#     compared op by op with the CPU backend (emu_check.c);
#  2. the CUDA build (needs nvcc): configure a separate build with -DLOPAD_CUDA=ON (sm_90
#     only, to keep it short), build the library, the CLI and test_cuda, and run test_cuda
#     (it skips its GPU cases without a device; the Dream-7B-shaped case is left to
#     bench/gpu.sh here).
# Each part skips with a message when its compiler is missing.
# usage: bash test_cuda_build.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
src=${2:?source dir}
bin=${3:?binary dir}

# ---- 1. kernel emulation
cu="$src/src/backend/cuda"
emu="$bin/cuda-emu-check"
if ! command -v g++ >/dev/null; then
    echo "SKIP: g++ not found: CUDA kernels not emulated"
elif [ ! -f "$bin/liblopad.a" ]; then
    echo "SKIP: $bin/liblopad.a not built: CUDA kernels not emulated"
else
    mkdir -p "$emu"
    {
        awk '/__device__ __forceinline__ float lp_warp_sum/ { p = 1 } /^#endif/ { p = 0 } p' \
            "$cu/common.cuh"
        for f in "$cu"/*.cu; do
            awk '/launchers \*\// { exit } !/#include "common.cuh"|#include <mma.h>/' "$f"
        done
    } >"$emu/kernels_emu.inc"
    san=""
    if grep -q "LOPAD_SANITIZE:BOOL=ON" "$bin/CMakeCache.txt" 2>/dev/null; then
        # no null check: UBSan flags g++'s thread_local wrapper for the emulated threadIdx
        san="-fsanitize=address,undefined -fno-sanitize=null"
    fi
    if ! {
        g++ -std=c++17 -O2 $san -I"$cu" -I"$cu/emu" -I"$emu" -c "$cu/emu/launch_emu.cpp" \
            -o "$emu/launch_emu.o" &&
            g++ -std=c++17 -O2 $san -I"$cu/emu" -c "$cu/emu/emu.cpp" -o "$emu/emu.o" &&
            gcc -std=gnu17 -O2 $san -D_GNU_SOURCE -DLP_CUDA_EMU_CHECK -I"$src/include" \
                -I"$src/src" -c "$cu/emu/emu_check.c" -o "$emu/emu_check.o" &&
            g++ $san "$emu/emu_check.o" "$emu/launch_emu.o" "$emu/emu.o" "$bin/liblopad.a" \
                -lpthread -lm -o "$emu/emu_check"
    } >"$emu/build.log" 2>&1; then
        cat "$emu/build.log"
        echo "FAIL: building the CUDA kernel emulation"
        exit 1
    fi
    if ! "$emu/emu_check"; then
        echo "FAIL: emulated CUDA kernels differ from the CPU backend"
        exit 1
    fi
fi

# ---- 1b. (opt-in, LOPAD_CUDA_EMU_FULL=1, ~4 min on 2 cores) the whole CUDA backend on the
# CPU: the library built with -DLOPAD_CUDA against a fake CUDA runtime / cuBLAS on host memory
# (emu/fake_cuda.c) and the emulated kernels with their real launchers (cuda_emu_build.sh,
# which keeps the objects between runs), running test_cuda
if [ "${LOPAD_CUDA_EMU_FULL:-0}" = 1 ]; then
    cuinc=/usr/local/cuda/include
    if ! command -v g++ >/dev/null || ! command -v perl >/dev/null || [ ! -f "$cuinc/cublas_v2.h" ]; then
        echo "SKIP: full CUDA emulation needs g++, perl and the CUDA headers in $cuinc"
    else
        full="$bin/cuda-emu-full"
        if ! {
            bash "$src/tests/cli/cuda_emu_build.sh" "$src" "$full" gcc "-I$cuinc" &&
                gcc $(cut -d' ' -f2- "$full/flags") -DLOPAD_SOURCE_DIR="\"$src\"" \
                    -DLOPAD_BINARY_DIR="\"$full\"" -DLOPAD_CLI="\"none\"" -I"$src/tests/unit" \
                    -c "$src/tests/unit/test_cuda.c" -o "$full/test_cuda.o" &&
                g++ "$full/test_cuda.o" $(cat "$full/objs") \
                    $(pkg-config --libs libpcre2-8 libcjson libutf8proc) -lpthread -lm \
                    -o "$full/test_cuda_emu"
        } >"$full.log" 2>&1; then
            tail -30 "$full.log"
            echo "FAIL: building the full CUDA emulation"
            exit 1
        fi
        if ! LOPAD_TEST_CUDA_NO_7B=1 "$full/test_cuda_emu"; then
            echo "FAIL: test_cuda on the emulated CUDA backend"
            exit 1
        fi
    fi
fi

# ---- 2. the CUDA build
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
