#!/usr/bin/env bash
# cuda_emu_build.sh - build the whole library for the CUDA emulation (docs/CUDA.md, "What is
# verified here"): every src/**/*.c compiled with -DLOPAD_CUDA=1 -DLP_CUDA_FAKE_RUNTIME (so
# src/backend/cuda/emu/fake_cuda.c stands in for the CUDA runtime and cuBLAS on host memory),
# and the kernels of src/backend/cuda/*.cu with their real launchers, the <<<...>>> launches
# rewritten to the pthread emulator (emu/emu.h), compiled by g++.
# Used by test_cuda_build.sh (LOPAD_CUDA_EMU_FULL=1) and test_nccl_emu.sh (with MPI and the
# fake NCCL). Objects are kept in OUT and rebuilt by make only when their sources, the
# headers they include or the flags change.
# usage: bash cuda_emu_build.sh SOURCE_DIR OUT CC CFLAGS
#   CC: the C compiler (gcc, or mpicc for -DLOPAD_MPI=1); CFLAGS: one string, added to
#   -std=gnu17 -D_GNU_SOURCE -DLOPAD_CUDA=1 -DLP_CUDA_FAKE_RUNTIME -Isrc/include -Isrc/src.
# On success OUT/objs lists the objects to link (plus -lstdc++ -lpthread -lm and the
# pkg-config libraries of libpcre2-8 libcjson libutf8proc). Needs g++, perl, make and the
# CUDA runtime / cuBLAS headers (in CFLAGS' -I).
set -u
src=${1:?source dir}
out=${2:?output dir}
cc=${3:?C compiler}
extra=${4-}
cu="$src/src/backend/cuda"
mkdir -p "$out/obj"

# Write stdin to FILE only when it differs, so make sees unchanged files as old.
put() {
    local tmp="$1.new"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

{
    echo '#include "emu.h"'
    sed -e '/#include <cuda_runtime.h>/d' -e '/#include <cuda_bf16.h>/d' \
        -e 's/return (int)cudaGetLastError();/return 0;/' "$cu/common.cuh"
    echo '#define cudaErrorInvalidValue 1'
} | put "$out/common.cuh"
for f in "$cu"/*.cu; do
    b=$(basename "$f" .cu)
    echo "#include \"$b.inc\""
    perl -0pe 's/^#include <mma.h>$//mg; s/(\w+)<<<(.*?),\s*(.*?),\s*0,\s*s>>>\((.*?)\);/emu_launch(dim3($2), dim3($3), [=] { $1($4); });/gs' \
        "$f" | put "$out/$b.inc"
done | put "$out/kernels_full.cpp"

pc=$(pkg-config --cflags libpcre2-8 libcjson libutf8proc)
cflags="-std=gnu17 -O1 -D_GNU_SOURCE -DLOPAD_CUDA=1 -DLP_CUDA_FAKE_RUNTIME -I$src/include \
-I$src/src $pc $extra"
echo "$cc $cflags" | put "$out/flags"
srcs=$(cd "$src" && find src -name '*.c' | sort)
{
    echo "CC := $cc"
    echo "CFLAGS := $cflags"
    echo "CXXFLAGS := -std=c++17 -O2 -I$out -I$cu -I$cu/emu"
    printf 'OBJS :='
    for f in $srcs; do printf ' obj/%s.o' "$(echo "$f" | tr / _)"; done
    echo
    echo 'all: $(OBJS) kernels_full.o emu.o'
    for f in $srcs; do
        printf 'obj/%s.o: %s flags\n\t$(CC) $(CFLAGS) -MMD -MP -c $< -o $@\n' \
            "$(echo "$f" | tr / _)" "$src/$f"
    done
    printf 'kernels_full.o: kernels_full.cpp\n\tg++ $(CXXFLAGS) -MMD -MP -c $< -o $@\n'
    printf 'emu.o: %s\n\tg++ $(CXXFLAGS) -MMD -MP -c $< -o $@\n' "$cu/emu/emu.cpp"
    echo '-include $(OBJS:.o=.d) kernels_full.d emu.d'
} | put "$out/Makefile"
make -s -j2 -C "$out" || exit 1
{
    for f in $srcs; do echo "$out/obj/$(echo "$f" | tr / _).o"; done
    echo "$out/kernels_full.o"
    echo "$out/emu.o"
} | put "$out/objs"
