#!/usr/bin/env bash
# tensor_parallel.sh - tensor parallelism (docs/DISTRIBUTED.md): per-forward time, bytes
# sent per forward and peak RSS per rank for T ranks splitting every forward, against one
# process (T = 1). MODEL should be a GGUF file (mapped: a rank keeps only its slice
# resident); `lopad convert synthetic:dream-7b:2@q4_0 m.gguf` makes one.
# usage: bash bench/tensor_parallel.sh LOPAD_BIN MODEL "T list" [threads per rank] [repeats]
# prints: T nfe decode_s ms_per_forward bytes_per_forward(all ranks) max_rss_mb_per_rank
# (the fastest of `repeats` runs, default 3: the machine is shared)
set -u
BIN=$1 MODEL=$2 TS=${3:-"1 2 4"} TH=${4:-1} REP=${5:-3}
MPI=(mpirun --oversubscribe -np)
[ "$(id -u)" = 0 ] && MPI=(mpirun --oversubscribe --allow-run-as-root -np)
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_vader_single_copy_mechanism=none
A=(--prompt-ids 5,9,14,3,7,11,20,31 --gen 16 --block 8 --decoder d2f --threads "$TH" --json)
TMP=/tmp/lopad_tp_bench.$$
trap 'rm -f $TMP.*' EXIT
echo "T nfe decode_s ms_per_forward bytes_per_forward max_rss_mb_per_rank"
for T in $TS; do
  for rep in $(seq "$REP"); do
    if [ "$T" = 1 ]; then
        /usr/bin/time -f "rss %M" -o $TMP.rss.0 "$BIN" run -m "$MODEL" "${A[@]}" >$TMP.out 2>/dev/null
    else
        LOPAD_DIST_STATS=1 "${MPI[@]}" "$T" -x LOPAD_DIST_STATS sh -c \
            '/usr/bin/time -f "rss %M" -o '$TMP'.rss.$OMPI_COMM_WORLD_RANK "$@"' sh \
            "$BIN" run -m "$MODEL" "${A[@]}" --tensor-parallel "$T" >$TMP.out 2>$TMP.err
    fi
    nfe=$(sed -n 's/.*"nfe":\([0-9]*\).*/\1/p' $TMP.out)
    dec=$(sed -n 's/.*"decode_seconds":\([0-9.e-]*\).*/\1/p' $TMP.out)
    bytes=$(cat $TMP.err 2>/dev/null | sed -n 's/.* \([0-9]*\) bytes sent.*/\1/p' | awk '{s += $1} END {print s + 0}')
    rss=$(cat $TMP.rss.* | sed -n 's/^rss //p' | sort -n | tail -1)
    awk -v T="$T" -v n="$nfe" -v d="$dec" -v b="$bytes" -v r="$rss" \
        'BEGIN { printf "%s %s %.3f %.1f %.0f %.0f\n", T, n, d, 1000 * d / n, b / n, r / 1024 }'
    rm -f $TMP.rss.* $TMP.err
  done | sort -k3 -g | head -1
done
