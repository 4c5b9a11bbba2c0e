#!/usr/bin/env bash
# test_nccl_emu.sh - the NCCL device door (src/dist/nccl.c, docs/CUDA.md "NCCL") without a GPU:
#  1. compile check: src/dist/nccl.c with -DLOPAD_NCCL against the real nccl.h (-Werror), and
#     when libnccl is there too, link it into a program that is never run, so an NCCL API
#     change shows here;
#  2. emulation: nccl.c, the host door (src/dist/dist.c on MPI) and the fake NCCL
#     (src/backend/cuda/emu/fake_nccl.c: NCCL on MPI over host memory) built into
#     nccl_check (src/backend/cuda/emu/nccl_check.c), run alone and under mpirun -np 2 and 3:
#     all-reduce, all-gather and broadcast on "device" buffers equal the host door bit for bit;
#  3. tensor parallelism on the emulated GPU: the whole library built with -DLOPAD_CUDA=1
#     -DLOPAD_MPI=1 -DLOPAD_NCCL=1 against the fake CUDA runtime / cuBLAS, the emulated
#     kernels (cuda_emu_build.sh) and the fake NCCL, linked into tests/mpi/tp_check.c, run as
#     `mpirun -np 2|4 tp_check --device cuda 2 MODEL...`: the tensor-parallel CUDA context
#     against the whole-model CUDA context (float rounding) and the CPU (bf16 tolerance), and
#     the per-layer all-reduces on NCCL (the group's host exchanges are the head's only).
#     Tiny fixtures (Dream f32 with GQA and a copy with tied embeddings, LLaDA from GGUF) at
#     -np 2, the Dream Q8_0 file at -np 4 (two groups of 2); LOPAD_CUDA_EMU_FULL=1 runs every
#     model at both. About 10 s to build (objects are kept in BINARY_DIR/nccl-emu/tp) and 25 s
#     to run on 2 cores.
# Needs nccl.h and the CUDA runtime headers it includes: the CUDA toolkit's folder, $NCCL_HOME,
# $CUDA_HOME, or $LOPAD_NCCL_WHEELS (default /opt/lopad-nccl) where NCCL's and the CUDA
# runtime's pip wheels were unpacked (nvidia/nccl/include, nvidia/cu13/include); mpicc +
# mpirun for parts 2 and 3; g++, perl, make and cublas_v2.h for part 3. Each part skips with a
# message when something is missing. No nvcc needed.
# usage: bash test_nccl_emu.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
src=${2:?source dir}
bin=${3:?binary dir}
out="$bin/nccl-emu"
wheels=${LOPAD_NCCL_WHEELS:-/opt/lopad-nccl}

first_dir_with() { # FILE DIR...: the first DIR that holds FILE
    local f=$1
    shift
    for d in "$@"; do
        if [ -n "$d" ] && [ -f "$d/$f" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}
cuda_root=${CUDA_HOME:-/usr/local/cuda}
nccl_inc=$(first_dir_with nccl.h ${NCCL_HOME:+"$NCCL_HOME/include"} "$cuda_root/include" \
    "$wheels/nvidia/nccl/include" /usr/include)
cuda_inc=$(first_dir_with cuda_runtime.h "$cuda_root/include" "$wheels/nvidia/cu13/include" \
    "$wheels/nvidia/cuda_runtime/include" /usr/include)
nccl_lib=$(first_dir_with libnccl.so.2 ${NCCL_HOME:+"$NCCL_HOME/lib"} "$cuda_root/lib64" \
    "$wheels/nvidia/nccl/lib" /usr/lib/x86_64-linux-gnu /usr/lib64)
if [ -z "$nccl_inc" ] || [ -z "$cuda_inc" ]; then
    echo "SKIP: nccl.h or cuda_runtime.h not found (CUDA toolkit, \$NCCL_HOME, or NCCL's pip" \
        "wheel unpacked into $wheels): the NCCL door not checked"
    exit 0
fi
if ! command -v gcc >/dev/null; then
    echo "SKIP: gcc not found: the NCCL door not checked"
    exit 0
fi
mkdir -p "$out"
log="$out/build.log"
: >"$log"
fail() {
    echo "FAIL: $1 (log: $log)"
    tail -30 "$log"
    exit 1
}
ver=$(sed -n 's/^#define NCCL_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' "$nccl_inc/nccl.h" |
    paste -sd.)
inc=(-I"$src/include" -I"$src/src" -isystem "$nccl_inc" -isystem "$cuda_inc")
warn=(-Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes)
cflags=(-std=gnu17 -O1 -g -D_GNU_SOURCE "${warn[@]}" "${inc[@]}")

# ---- 1. compile (and link) against the real NCCL
gcc "${cflags[@]}" -Werror -DLOPAD_CUDA=1 -DLOPAD_MPI=1 -DLOPAD_NCCL=1 -c "$src/src/dist/nccl.c" \
    -o "$out/nccl.o" >>"$log" 2>&1 || fail "src/dist/nccl.c against NCCL $ver ($nccl_inc)"
echo "src/dist/nccl.c compiles against NCCL $ver ($nccl_inc/nccl.h)"

if ! command -v mpicc >/dev/null; then
    echo "SKIP: mpicc not found (apt install libopenmpi-dev): NCCL door not emulated"
    exit 0
fi
# mpicc with gcc behind it, whatever compiler the build used (-Werror on the NCCL files only)
export OMPI_CC=gcc MPICH_CC=gcc
mpicc "${cflags[@]}" -DLOPAD_MPI=1 -c "$src/src/dist/dist.c" -o "$out/dist.o" >>"$log" 2>&1 &&
    gcc "${cflags[@]}" -c "$src/src/core/common.c" -o "$out/common.o" >>"$log" 2>&1 &&
    gcc "${cflags[@]}" -Werror -DLP_NCCL_EMU_CHECK -c "$src/src/backend/cuda/emu/nccl_check.c" \
        -o "$out/nccl_check.o" >>"$log" 2>&1 || fail "building nccl_check"
objs=("$out/nccl_check.o" "$out/nccl.o" "$out/dist.o" "$out/common.o")
if [ -n "$nccl_lib" ]; then
    mpicc "${objs[@]}" -L"$nccl_lib" -l:libnccl.so.2 -lpthread -lm -o "$out/nccl_check_real" \
        >>"$log" 2>&1 || fail "linking against $nccl_lib/libnccl.so.2"
    echo "src/dist/nccl.c links against $nccl_lib/libnccl.so.2 (not run)"
fi

# ---- 2. the emulation
if ! command -v mpirun >/dev/null; then
    echo "SKIP: mpirun not found (apt install openmpi-bin): NCCL door not emulated"
    exit 0
fi
mpicc "${cflags[@]}" -Werror -DLP_NCCL_FAKE -c "$src/src/backend/cuda/emu/fake_nccl.c" \
    -o "$out/fake_nccl.o" >>"$log" 2>&1 &&
    mpicc "${objs[@]}" "$out/fake_nccl.o" -lpthread -lm -o "$out/nccl_check" >>"$log" 2>&1 ||
    fail "building the fake NCCL"

MPI=(mpirun --oversubscribe -np)
[ "$(id -u)" = 0 ] && MPI=(mpirun --oversubscribe --allow-run-as-root -np)
# OpenMPI on a container without a network: loopback TCP, no shared-memory checks
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export LOPAD_DIST_TIMEOUT=30
unset LOPAD_DIST_FAULT
pass=0
failed=0
run() { # NAME PASS_LINE COMMAND...
    local name=$1 want=$2
    shift 2
    if timeout 240 "$@" >"$out/run.log" 2>&1 && grep -q "$want" "$out/run.log"; then
        pass=$((pass + 1))
        grep "$want" "$out/run.log"
    else
        failed=$((failed + 1))
        echo "FAIL: $name"
        tail -20 "$out/run.log"
    fi
}
run "one process" "all passed" "$out/nccl_check"
run "2 ranks" "all passed" "${MPI[@]}" 2 "$out/nccl_check"
run "3 ranks" "all passed" "${MPI[@]}" 3 "$out/nccl_check"

# ---- 3. tensor parallelism on the emulated GPU with the fake NCCL
tensor_parallel() {
    local missing="" tool
    for tool in g++ perl make pkg-config; do
        command -v $tool >/dev/null || missing="$missing $tool"
    done
    [ -f "$cuda_inc/cublas_v2.h" ] || missing="$missing $cuda_inc/cublas_v2.h"
    if [ -n "$missing" ]; then
        echo "SKIP: tensor parallelism on the emulated GPU needs$missing"
        return
    fi
    local tp="$out/tp" t0=$SECONDS
    if ! bash "$src/tests/cli/cuda_emu_build.sh" "$src" "$tp" mpicc \
        "-DLOPAD_MPI=1 -DLOPAD_NCCL=1 -DLP_NCCL_FAKE -isystem $nccl_inc -isystem $cuda_inc" \
        >"$tp.log" 2>&1 ||
        ! mpicc $(cut -d' ' -f2- "$tp/flags") "${warn[@]}" -Werror -c "$src/tests/mpi/tp_check.c" \
            -o "$tp/tp_check.o" >>"$tp.log" 2>&1 ||
        ! mpicc "$tp/tp_check.o" $(cat "$tp/objs") \
            $(pkg-config --libs libpcre2-8 libcjson libutf8proc) -lstdc++ -lpthread -lm \
            -o "$tp/tp_check" >>"$tp.log" 2>&1; then
        failed=$((failed + 1))
        echo "FAIL: building tp_check on the CUDA emulation with the fake NCCL (log: $tp.log)"
        tail -30 "$tp.log"
        return
    fi
    echo "tp_check on the CUDA emulation built in $((SECONDS - t0)) s"
    local fix="$src/tests/fixtures" tied="$out/tiny-dream-tied"
    # a copy whose head is its embedding (rank 0's head slice starts at the embedding's data)
    mkdir -p "$tied" && cp "$fix/tiny-dream/"* "$tied/" &&
        sed -i 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' "$tied/config.json"
    local two=("$fix/tiny-dream" "$tied" "$fix/tiny-llada.gguf") four=("$fix/tiny-dream-q8_0.gguf")
    if [ "${LOPAD_CUDA_EMU_FULL:-0}" = 1 ]; then
        two=("$fix/tiny-dream" "$tied" "$fix/tiny-llada" "$fix/tiny-dream-q8_0.gguf"
            "$fix/tiny-llada.gguf")
        four=("${two[@]}")
    fi
    local np models
    for np in 2 4; do
        t0=$SECONDS
        if [ $np = 2 ]; then models=("${two[@]}"); else models=("${four[@]}"); fi
        run "tp_check --device cuda, $np ranks" "tp_check cuda T=2: 0 failures" \
            "${MPI[@]}" $np "$tp/tp_check" --device cuda 2 "${models[@]}"
        echo "  $np ranks, ${#models[@]} models, all-reduces on NCCL in" \
            "$(grep -c "all-reduces on NCCL" "$out/run.log"), $((SECONDS - t0)) s"
    done
}
tensor_parallel
echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
