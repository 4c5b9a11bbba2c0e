#!/usr/bin/env bash
# test_mpi.sh - LoPA's branches across ranks (issue 17, docs/DISTRIBUTED.md):
# `mpirun -np R lopad run --lopa K` on loopback gives the ids, NFE and LoPA winner
# histogram of one process, for R = 2, 3, 4, on LoPA over D2F (full and block-causal
# window attention, every tiny golden case) and over Fast-dLLM (every cache mode, DPad),
# on the tiny fixture models and the demo model, and `lopad eval`; ranks > 0 print nothing; a rank that
# dies or stops answering ends the job with an error within the deadline; ranks with
# another model, options or prompt are refused at start; a build without MPI says so
# under mpirun (when build-f-nompi style builds are given in LOPAD_NOMPI_BIN).
# Skipped (exit 0 with a message) without mpirun or in a build without MPI.
# usage: bash test_mpi.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$1
SRC=$2
FIX=$SRC/tests/fixtures
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_mpi.sh: skipped (no mpirun; apt install openmpi-bin libopenmpi-dev)"
    exit 0
fi
if ! grep -q "LOPAD_MPI:BOOL=ON" "$3/CMakeCache.txt" 2>/dev/null; then
    echo "test_mpi.sh: skipped (this build has no MPI: LOPAD_MPI=OFF)"
    exit 0
fi
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
unset LOPAD_DEFAULT_MODEL LOPAD_DIST_FAULT
MPI=(mpirun --oversubscribe -np)
[ "$(id -u)" = 0 ] && MPI=(mpirun --oversubscribe --allow-run-as-root -np)
# OpenMPI on a container without a network: loopback TCP, no shared-memory checks
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export LOPAD_DIST_TIMEOUT=20
# ASan build: Open MPI's own allocations at exit are not lopad's leaks (lsan_openmpi.supp)
if grep -aq __asan_init "$BIN"; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
    export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(realpath "$SRC/tests/cli/lsan_openmpi.supp")"
fi
T="--threads 1"
ERR=/tmp/lopad_mpi_err.$$
trap 'rm -f $ERR $ERR.*' EXIT

# the part of --json that must not change with the number of ranks
key() { grep -o '"ids":\[[0-9,]*\]\|"nfe":[0-9]*\|"winner_hist":\[[0-9,]*\]' | tr '\n' ' '; }

# same_as_one NAME MODEL RANKS... -- ARGS: ids / NFE / winner_hist of R ranks = one process
# ($RANK_ARGS: added to the runs under mpirun only)
same_as_one() {
    local name=$1 model=$2
    shift 2
    local ranks=()
    while [ "$1" != "--" ]; do ranks+=("$1"); shift; done
    shift
    local one got
    one=$("$BIN" run -m "$model" "$@" --json $T 2>$ERR | key)
    case "$one" in *winner_hist*) ;; *) bad "$name: one process: $(cat $ERR)"; return ;; esac
    for R in "${ranks[@]}"; do
        got=$(timeout 120 "${MPI[@]}" "$R" "$BIN" run -m "$model" "$@" ${RANK_ARGS:-} --json $T 2>$ERR.$R | key)
        if [ "$got" = "$one" ]; then ok; else bad "$name R=$R: [$got] vs one process [$one]: $(tail -3 $ERR.$R)"; fi
    done
}

val() { sed -n "s/^$1 //p" "$2"; }

# ---- LoPA on D2F: every tiny golden case (full and block-causal), R = 2, 3, 4
for f in "$FIX"/d2f/tiny-*lopa*.txt; do
    A=(--prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" --block "$(val block "$f")"
       --decoder d2f --tau-add "$(val tau_add "$f")" --tau-act "$(val tau_act "$f")"
       --tau-conf "$(val tau_conf "$f")" --confidence "$(val confidence "$f")"
       --lopa "$(val lopa "$f")" --lopa-window-attention "$(val window "$f")")
    same_as_one "$(basename "$f" .txt)" "$FIX/$(val model "$f")" 2 3 4 -- "${A[@]}"
done
# more branches than ranks and the reverse, block-causal with a rank left out
for m in tiny-dream tiny-llada; do
    D=(--prompt-ids 5,9,14,3,7,11 --gen 32 --block 4 --decoder d2f --tau-add 0.2 --tau-act 0.4
       --tau-conf 0.25)
    same_as_one "$m d2f lopa 7 full" "$FIX/$m" 2 3 4 -- "${D[@]}" --lopa 7
    same_as_one "$m d2f lopa 1 block-causal" "$FIX/$m" 3 4 -- "${D[@]}" --lopa 1 \
        --lopa-window-attention block-causal
done

# ---- LoPA on Fast-dLLM: every cache mode, with and without DPad
for m in tiny-dream tiny-llada; do
    for cache in none prefix dual; do
        F=(--prompt-ids 5,9,14,3,7,11 --gen 16 --block 8 --decoder fast --cache "$cache"
           --threshold 0.3)
        same_as_one "$m fast $cache lopa 3" "$FIX/$m" 2 4 -- "${F[@]}" --lopa 3
    done
    same_as_one "$m fast dpad lopa 2" "$FIX/$m" 3 -- --prompt-ids 5,9,14,3,7,11 --gen 16 \
        --block 8 --decoder fast --cache prefix --threshold 0.3 --dpad --lopa 2
done

# ---- the demo model (a trained Dream-shaped model, text prompt through its template)
DEMO=$SRC/models/demo
same_as_one "demo d2f lopa 3" "$DEMO" 2 3 4 -- -p "What is 12 plus 7?" --gen 32 --block 8 --lopa 3
same_as_one "demo d2f lopa 2 block-causal" "$DEMO" 2 -- -p "What is 12 plus 7?" --gen 32 \
    --block 8 --lopa 2 --lopa-window-attention block-causal
same_as_one "demo fast lopa 2" "$DEMO" 2 3 -- -p "What is 12 plus 7?" --gen 32 --block 8 \
    --decoder fast --lopa 2

# ---- tensor parallelism: logits within float rounding of one process (tests/mpi/tp_check.c),
# at T = 2 alone and beside branch parallelism (2 x 2), T = 4 on the models whose heads split
TPC=$3/tp_check
"$BIN" convert "$FIX/tiny-llada" "$ERR.q8.gguf" --type q8_0 >/dev/null 2>&1 || bad "convert q8_0"
TPM=("$FIX/tiny-dream" "$FIX/tiny-llada" "$FIX/tiny-dream-q8_0.gguf" "$FIX/tiny-llada.gguf")
for RT in "2 2" "4 2" "4 4"; do
    set -- $RT
    models=("${TPM[@]}")
    [ "$2" = 4 ] && models=("$FIX/tiny-llada" "$ERR.q8.gguf") # 4 heads, 4 K/V heads
    timeout 120 "${MPI[@]}" "$1" "$TPC" "$2" "${models[@]}" >$ERR.tp 2>&1 &&
        grep -q "tp_check T=$2: 0 failures" $ERR.tp && ok || bad "tp_check R=$1 T=$2: $(tail -25 $ERR.tp)"
done
# the same tokens, NFE and LoPA winners as one process on the decoding cases (a token can
# differ only where its top two logits are closer than the rounding: none is here),
# with tensor parallelism alone (R = T = 2) and with 2 branch groups (R = 4)
RANK_ARGS="--tensor-parallel 2"
for f in "$FIX"/d2f/tiny-*lopa*.txt; do
    A=(--prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" --block "$(val block "$f")"
       --decoder d2f --tau-add "$(val tau_add "$f")" --tau-act "$(val tau_act "$f")"
       --tau-conf "$(val tau_conf "$f")" --confidence "$(val confidence "$f")"
       --lopa "$(val lopa "$f")" --lopa-window-attention "$(val window "$f")")
    same_as_one "tp $(basename "$f" .txt)" "$FIX/$(val model "$f")" 2 4 -- "${A[@]}"
done
for m in tiny-dream tiny-llada; do
    same_as_one "tp $m fast dual lopa 3" "$FIX/$m" 2 4 -- --prompt-ids 5,9,14,3,7,11 --gen 16 \
        --block 8 --decoder fast --cache dual --threshold 0.3 --lopa 3
    same_as_one "tp $m d2f lopa 0" "$FIX/$m" 2 -- --prompt-ids 5,9,14,3,7,11 --gen 32 --block 4 \
        --decoder d2f --tau-add 0.2 --tau-act 0.4 --tau-conf 0.25 --lopa 0
done
same_as_one "tp demo d2f lopa 3" "$DEMO" 2 4 -- -p "What is 12 plus 7?" --gen 32 --block 8 --lopa 3
RANK_ARGS=""
# T must fit the job and the model
D2=(--prompt-ids 5,9,14,3,7,11 --gen 16 --block 4 --decoder d2f --lopa 1 $T)
timeout 60 "${MPI[@]}" 3 "$BIN" run -m "$FIX/tiny-dream" "${D2[@]}" --tensor-parallel 2 >/dev/null 2>$ERR
rc=$?
[ $rc -ne 0 ] && grep -q "needs a job of a multiple of 2 ranks" $ERR && ok || bad "T=2 on 3 ranks: rc $rc: $(head -3 $ERR)"
timeout 60 "${MPI[@]}" 3 "$BIN" run -m "$FIX/tiny-dream" "${D2[@]}" --tensor-parallel 3 >/dev/null 2>$ERR
rc=$?
[ $rc -ne 0 ] && grep -q "4 attention heads do not split into 3" $ERR && ok || bad "T=3: rc $rc: $(head -3 $ERR)"
"$BIN" run -m "$FIX/tiny-dream" "${D2[@]}" --tensor-parallel 2 >/dev/null 2>$ERR
rc=$?
[ $rc -ne 0 ] && grep -q "this one has 1" $ERR && ok || bad "T=2 alone: rc $rc: $(head -3 $ERR)"
# a tensor-parallel group decodes one request: another prompt on rank 1 is refused (any
# decoder, here LLaDA), and a rank that stops answering inside a forward ends the job
P1=(--prompt-ids 5,9,14,3,7,11 --gen 16 --block 4 --decoder llada --steps 8 --tensor-parallel 2 $T)
out=$(timeout 60 mpirun --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) \
    -np 1 "$BIN" run -m "$FIX/tiny-dream" "${P1[@]}" : \
    -np 1 "$BIN" run -m "$FIX/tiny-dream" "${P1[@]}" --prompt-ids 5,9,14,3,7,12 2>$ERR)
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "has another prompt" $ERR && ok || bad "tp prompt mismatch: rc $rc: $(tail -3 $ERR)"
t0=$(date +%s)
out=$(LOPAD_DIST_FAULT=1:5:hang LOPAD_DIST_TIMEOUT=5 timeout 60 "${MPI[@]}" 2 -x LOPAD_DIST_FAULT \
    -x LOPAD_DIST_TIMEOUT "$BIN" run -m "$FIX/tiny-dream" "${P1[@]}" --json 2>$ERR)
rc=$?
dt=$(($(date +%s) - t0))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -lt 40 ] && ! printf '%s' "$out" | grep -q '"ids"' &&
    grep -q "no answer from the other ranks within 5 s" $ERR; then ok; else
    bad "tp rank 1 hang: rc $rc after ${dt}s: $(tail -3 $ERR)"
fi

# ---- lopad eval: the same accuracy, TPF and NFE as one process
E=(eval --task tiny-gsm --limit 4 --lopa 2 --json $T)
ekey() { grep -o '"accuracy":[0-9.]*\|"nfe":[0-9]*\|"tpf":[0-9.]*' | tr '\n' ' '; }
one=$("$BIN" "${E[@]}" 2>$ERR | ekey)
got=$(timeout 120 "${MPI[@]}" 2 "$BIN" "${E[@]}" 2>$ERR | ekey)
[ -n "$one" ] && [ "$got" = "$one" ] && ok || bad "eval R=2: [$got] vs one process [$one]: $(tail -3 $ERR)"
for R in 2 4; do # tensor parallelism (T = 2), alone and beside branch parallelism
    got=$(timeout 120 "${MPI[@]}" $R "$BIN" "${E[@]}" --tensor-parallel 2 2>$ERR | ekey)
    [ -n "$one" ] && [ "$got" = "$one" ] && ok || bad "eval R=$R T=2: [$got] vs one process [$one]: $(tail -3 $ERR)"
done

# ---- rank 0 alone prints: one summary line set, one JSON object
D=(--prompt-ids 5,9,14,3,7,11 --gen 16 --block 4 --decoder d2f --tau-add 0.2 --tau-act 0.4
   --tau-conf 0.25 --lopa 3)
out=$(timeout 60 "${MPI[@]}" 3 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" --json $T 2>$ERR)
n_json=$(printf '%s\n' "$out" | grep -c '"ids"')
n_sum=$(grep -c "LoPA wins" $ERR)
[ "$n_json" = 1 ] && [ "$n_sum" = 1 ] && ok || bad "3 ranks printed $n_json JSON objects, $n_sum summaries"

# ---- a rank that dies, and one that stops answering: an error within the deadline
for how in exit hang; do
    t0=$(date +%s)
    out=$(LOPAD_DIST_FAULT=1:3:$how LOPAD_DIST_TIMEOUT=5 timeout 60 "${MPI[@]}" 2 \
        -x LOPAD_DIST_FAULT -x LOPAD_DIST_TIMEOUT "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" \
        --json $T 2>$ERR)
    rc=$?
    dt=$(($(date +%s) - t0))
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -lt 40 ] && ! printf '%s' "$out" | grep -q '"ids"'; then
        ok
    else
        bad "rank 1 $how: rc $rc after ${dt}s, output [$out]: $(tail -3 $ERR)"
    fi
    if [ $how = hang ]; then
        grep -q "no answer from the other ranks within 5 s" $ERR && ok || bad "hang: no deadline message: $(tail -5 $ERR)"
    fi
done

# ---- ranks that disagree are refused at start, naming what differs
mism() { # what MPMD-args...
    local what=$1
    shift
    out=$(timeout 60 mpirun --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) "$@" 2>$ERR)
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "has another $what" $ERR; then
        ok
    else
        bad "mismatched $what: rc $rc: $(tail -3 $ERR)"
    fi
}
mism model -np 1 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" $T : \
    -np 1 "$BIN" run -m "$FIX/tiny-dream-q8_0.gguf" "${D[@]}" $T
mism "decoding request" -np 1 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" $T : \
    -np 1 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" --tau-conf 0.3 $T
mism prompt -np 1 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" $T : \
    -np 1 "$BIN" run -m "$FIX/tiny-dream" "${D[@]}" --prompt-ids 5,9,14,3,7,12 $T

# ---- commands that do not run across ranks say so
timeout 60 "${MPI[@]}" 2 "$BIN" info -m "$FIX/tiny-dream" >/dev/null 2>$ERR
rc=$?
[ $rc -ne 0 ] && grep -q "does not run across ranks" $ERR && ok || bad "info under mpirun: rc $rc: $(cat $ERR)"

# ---- a build without MPI under mpirun (LOPAD_NOMPI_BIN=path/to/lopad of such a build)
if [ -n "${LOPAD_NOMPI_BIN:-}" ]; then
    timeout 60 "${MPI[@]}" 2 "$LOPAD_NOMPI_BIN" run -m "$FIX/tiny-dream" "${D[@]}" >/dev/null 2>$ERR
    rc=$?
    [ $rc -ne 0 ] && grep -q "this build has no MPI" $ERR && ok || bad "no-MPI build: rc $rc: $(cat $ERR)"
fi

echo "test_mpi.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
