#!/usr/bin/env bash
# Per-forward cost of each decoding mode on a 7B/8B shape, from `lopad bench forward`.
#
# For a generation of G tokens after a P0-token prompt, in blocks of B = 32, take the
# forward of a step in the middle block (block start b = P0 + G/2) and feed what each
# mode feeds:
#   none          the whole canvas                      T = P0+G,    cache 0
#   prefix        block + suffix over the cached prefix T = P0+G-b,  cache b
#   dual          the block over everything else cached T = B,       cache P0+G-B
#   dpad+none     prefix + block + kept suffix          T = b+B+K,   cache 0
#   dpad+prefix   block + kept suffix                   T = B+K,     cache b
#   dpad+dual     the block                             T = B,       cache b+K
# K = expected DPad kept count, sum over d < min(W, suffix) of min(1, a e^{-x^2/2}/sqrt(2 pi)),
# x = k d/(W-1) (W 256, k 4, a 2.0 LLaDA / 1.6 Dream). Logits for the B block rows only.
# LAYERS runs the first N layers of the real shape (the ratios between modes do not
# depend on depth); the output head is always computed for the B rows. Only those layers
# are generated (shape "SHAPE:LAYERS", model/synthetic.h), so a call takes seconds, not
# the minutes a whole 7B model takes to build. THREADS (default: all cores) sets
# --threads; with 1 thread `bench forward` times by CPU time (robust on a shared machine).
# REPEAT (default 1) forwards are timed after a warm-up, the best counts.
#
#   bash bench/decode_modes.sh [BIN] [SHAPE] [TYPE] [LAYERS] [GENS]
#   THREADS=1 bash bench/decode_modes.sh build/lopad llada-8b q8_0 2 "256 512 1024 2048"
set -euo pipefail
BIN=${1:-build/lopad}
SHAPE=${2:-llada-8b}
TYPE=${3:-bf16}
LAYERS=${4:-2}
GENS=${5:-256 512 1024 2048}
P0=64
B=32
if [[ $SHAPE == dream* ]]; then SCALE=1.6; else SCALE=2.0; fi
kept() { # suffix length -> expected kept count
    python3 -c "import math,sys
S,W,k,a=int(sys.argv[1]),256,4.0,float(sys.argv[2])
print(round(sum(min(1.0,a*math.exp(-(k*d/(W-1))**2/2)/math.sqrt(2*math.pi)) for d in range(min(W,S)))))" "$1" "$SCALE"
}
THREADS=${THREADS:-$(nproc)}
ms() { # tokens prefix -> ms (best of REPEAT after a warm-up)
    "$BIN" bench forward --shape "$SHAPE:$LAYERS" --type "$TYPE" --tokens "$1" --prefix "$2" \
        --out-rows $B --repeat "${REPEAT:-1}" --threads "$THREADS" --no-peak --json |
        python3 -c "import json,sys;print(json.loads(sys.stdin.readline())['ms'])"
}
echo "shape $SHAPE ($TYPE, first $LAYERS layers), prompt $P0, block $B, $THREADS threads"
echo "| G | none ms | prefix ms | dual ms | DPad K | dpad+none ms | dpad+prefix ms | dpad+dual ms | none/prefix | none/dual | none/(dpad+dual) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for G in $GENS; do
    L=$((P0 + G)); b=$((P0 + G / 2)); S=$((L - b - B)); K=$(kept $S)
    n=$(ms $L 0); p=$(ms $((L - b)) $b); d=$(ms $B $((L - B)))
    dn=$(ms $((b + B + K)) 0); dp=$(ms $((B + K)) $b); dd=$(ms $B $((b + K)))
    python3 -c "import sys
G,n,p,d,K,dn,dp,dd=sys.argv[1:]
n,p,d,dn,dp,dd=map(float,(n,p,d,dn,dp,dd))
print(f'| {G} | {n:.0f} | {p:.0f} | {d:.0f} | {K} | {dn:.0f} | {dp:.0f} | {dd:.0f} | {n/p:.2f}x | {n/d:.2f}x | {n/dd:.2f}x |')" \
        "$G" "$n" "$p" "$d" "$K" "$dn" "$dp" "$dd"
done
