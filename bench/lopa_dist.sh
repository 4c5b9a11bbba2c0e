#!/usr/bin/env bash
# lopa_dist.sh - LoPA across ranks (docs/DISTRIBUTED.md): per-iteration time and bytes
# sent per iteration against K for R ranks (R = 1: one process, no MPI).
# usage: bash bench/lopa_dist.sh LOPAD_BIN MODEL "K list" "R list" [window [run options...]]
# (default run options: the demo model's prompt, --gen 96 --block 8)
# prints: R K window NFE decode_s ms_per_iter bytes_per_iter(all ranks) exchanges_per_iter
set -u
BIN=$1 MODEL=$2 KS=${3:-"1 3 7"} RS=${4:-"1 2 4"} WIN=${5:-full}
shift 5 2>/dev/null || shift $#
MPI=(mpirun --oversubscribe -np)
[ "$(id -u)" = 0 ] && MPI=(mpirun --oversubscribe --allow-run-as-root -np)
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
A=("$@")
[ ${#A[@]} = 0 ] && A=(-p "Tom has 12 apples and buys 7 more. How many apples does he have?" --gen 96 --block 8)
A+=(--lopa-window-attention "$WIN" --threads 1 --json)
echo "R K window nfe decode_s ms_per_iter bytes_per_iter exchanges_per_iter"
for R in $RS; do
    for K in $KS; do
        if [ "$R" = 1 ]; then
            out=$("$BIN" run -m "$MODEL" "${A[@]}" --lopa "$K" 2>/dev/null)
            stats=""
        else
            out=$(LOPAD_DIST_STATS=1 "${MPI[@]}" "$R" -x LOPAD_DIST_STATS "$BIN" run -m "$MODEL" \
                "${A[@]}" --lopa "$K" 2>/tmp/lopa_dist_stats.$$)
            stats=$(grep "lopad dist:" /tmp/lopa_dist_stats.$$)
        fi
        nfe=$(printf '%s' "$out" | sed -n 's/.*"nfe":\([0-9]*\).*/\1/p')
        dec=$(printf '%s' "$out" | sed -n 's/.*"decode_seconds":\([0-9.e-]*\).*/\1/p')
        bytes=$(printf '%s\n' "$stats" | sed -n 's/.* \([0-9]*\) bytes sent.*/\1/p' | awk '{s += $1} END {print s + 0}')
        exch=$(printf '%s\n' "$stats" | sed -n 's/.*rank 0 of .*: \([0-9]*\) exchanges.*/\1/p')
        awk -v R="$R" -v K="$K" -v w="$WIN" -v n="$nfe" -v d="$dec" -v b="$bytes" -v e="${exch:-0}" \
            'BEGIN { printf "%s %s %s %s %.4f %.3f %.0f %.2f\n", R, K, w, n, d, 1000 * d / n, b / n, e / n }'
    done
done
rm -f /tmp/lopa_dist_stats.$$
