#!/usr/bin/env bash
# test_lopa.sh - `lopad run --decoder d2f [--lopa K]` end to end on the tiny fixture
# models: every golden case of tests/fixtures/d2f/tiny-*.txt through --prompt-ids --json
# (ids and NFE equal the reference; tpf = non-pad tokens / NFE; the LoPA winner
# histogram sums to the NFE), --lopa implying d2f, --visual showing the winner and the
# positions it added, a LoRA adapter through --lora, LoPA on Fast-dLLM (--lopa 0 equals
# --decoder fast), and bad inputs exiting 2 with a message naming the option.
# usage: bash test_lopa.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$1
SRC=$2
FIX=$SRC/tests/fixtures
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "  FAIL: $*" >&2; }
unset LOPAD_DEFAULT_MODEL
T="--threads 1"
ERR=/tmp/lopad_lopa_err.$$
trap 'rm -f $ERR' EXIT

val() { sed -n "s/^$1 //p" "$2"; }
jnum() { printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }

args_of() { # fixture -> the run options of the case
    local f=$1
    A=(--prompt-ids "$(val prompt "$f")" --gen "$(val gen "$f")" --block "$(val block "$f")"
       --decoder d2f --tau-add "$(val tau_add "$f")" --tau-act "$(val tau_act "$f")"
       --tau-conf "$(val tau_conf "$f")" --confidence "$(val confidence "$f")")
    local k
    k=$(val lopa "$f")
    if [ "$k" -ge 0 ]; then
        A+=(--lopa "$k" --lopa-window-attention "$(val window "$f")")
    fi
}

# ---- golden cases
n_cases=0
for f in "$FIX"/d2f/tiny-*.txt; do
    n_cases=$((n_cases + 1))
    name=$(basename "$f" .txt)
    model=$FIX/$(val model "$f")
    args_of "$f"
    out=$(timeout 60 "$BIN" run -m "$model" "${A[@]}" --json $T 2>$ERR)
    rc=$?
    want=$(val ids "$f")
    [ "$want" = "-" ] && want=""
    got=$(printf '%s' "$out" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
    nfe=$(jnum nfe "$out")
    if [ $rc -eq 0 ] && [ "$got" = "$want" ] && [ "$nfe" = "$(val nfe "$f")" ]; then
        ok
    else
        bad "$name: rc $rc, ids [$got] vs [$want], nfe $nfe vs $(val nfe "$f"): $(cat $ERR)"
        continue
    fi
    # tpf = non-pad committed tokens / NFE
    nonpad=$(jnum n_nonpad "$out")
    tpf=$(jnum tpf "$out")
    if awk -v a="$tpf" -v n="$nonpad" -v d="$nfe" 'BEGIN { e = a - n / d; exit !(e < 1e-9 && e > -1e-9) }'; then
        ok
    else
        bad "$name: tpf $tpf != $nonpad / $nfe"
    fi
    # LoPA: the winner histogram counts every forward once
    if [ "$(val lopa "$f")" -ge 0 ]; then
        hist=$(printf '%s' "$out" | sed -n 's/.*"winner_hist":\[\([0-9,]*\)\].*/\1/p')
        sum=$(printf '%s' "$hist" | tr ',' '\n' | awk '{ s += $1 } END { print s + 0 }')
        n_hist=$(printf '%s' "$hist" | tr ',' '\n' | grep -c .)
        if [ "$sum" = "$nfe" ] && [ "$n_hist" = $(($(val lopa "$f") + 1)) ]; then
            ok
        else
            bad "$name: winner_hist [$hist] does not sum to nfe $nfe"
        fi
    fi
done
[ $n_cases -ge 18 ] && ok || bad "only $n_cases tiny d2f fixtures found"

# ---- --lopa implies --decoder d2f; block-causal K = 0 is plain d2f
f=$FIX/d2f/tiny-dream-lopa2-negent.txt
model=$FIX/tiny-dream
P=$(val prompt "$f")
common=(--prompt-ids "$P" --gen 24 --block 4 --tau-add 0.3 --tau-act 0.5 --tau-conf 0.3 --json $T)
a=$("$BIN" run -m "$model" "${common[@]}" --lopa 2 2>/dev/null)
b=$("$BIN" run -m "$model" "${common[@]}" --lopa 2 --decoder d2f --confidence negent \
    --lopa-window-attention full 2>/dev/null)
[ -n "$a" ] && [ "$a" != "${a%\"winner_hist\"*}" ] && ok || bad "--lopa alone: $a"
ida=$(printf '%s' "$a" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
idb=$(printf '%s' "$b" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
[ "$ida" = "$idb" ] && ok || bad "--lopa alone [$ida] vs --decoder d2f --lopa [$idb]"
case "$a" in *'"decoder":"d2f"'*'"lopa":2'*) ok ;; *) bad "settings: $a" ;; esac
c=$("$BIN" run -m "$model" "${common[@]}" --decoder d2f 2>/dev/null)
d=$("$BIN" run -m "$model" "${common[@]}" --lopa 0 --lopa-window-attention block-causal 2>/dev/null)
idc=$(printf '%s' "$c" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
idd=$(printf '%s' "$d" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
[ -n "$c" ] && [ "$idc" = "$idd" ] && [ "$(jnum nfe "$c")" = "$(jnum nfe "$d")" ] && ok ||
    bad "d2f [$idc] vs --lopa 0 block-causal [$idd]"

# ---- --visual: the winner and the positions it added, every step
vis=$("$BIN" run -m "$model" --prompt-ids "$P" --gen 24 --block 4 --tau-add 0.3 --tau-act 0.5 \
    --tau-conf 0.3 --lopa 2 --visual $T 2>&1 >/dev/null)
nl=$(printf '%s\n' "$vis" | grep -c '^lopa: [0-9]* branches, winner: ')
nla=$(printf '%s\n' "$vis" | grep -c 'winner: lookahead [0-9]* (token at position [0-9]*); added positions: .*\*')
[ "$nl" -ge 3 ] && [ "$nla" -ge 1 ] && ok || bad "--visual: $nl winner lines, $nla lookahead: $vis"
printf '%s\n' "$vis" | grep -q 'LoPA wins: anchor [0-9]*, lookahead' && ok || bad "summary: $vis"

# ---- a D2F LoRA adapter through --lora
out=$("$BIN" run -m "$model" --lora "$FIX/tiny-dream-lora" "${common[@]}" --lopa 1 2>$ERR)
[ $? -eq 0 ] && [ -n "$(jnum nfe "$out")" ] && ok || bad "--lora: $(cat $ERR)"

# ---- LoPA on Fast-dLLM: --lopa 0 is --decoder fast (threshold rule), token for token
for cache in none prefix dual; do
    fa=(--prompt-ids "$P" --gen 16 --block 4 --decoder fast --cache $cache --threshold 0.3 --json $T)
    a=$("$BIN" run -m "$model" "${fa[@]}" 2>/dev/null)
    b=$("$BIN" run -m "$model" "${fa[@]}" --lopa 0 2>/dev/null)
    c=$("$BIN" run -m "$model" "${fa[@]}" --lopa 2 2>$ERR)
    ida=$(printf '%s' "$a" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
    idb=$(printf '%s' "$b" | sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p')
    if [ -n "$a" ] && [ "$ida" = "$idb" ] && [ "$(jnum nfe "$a")" = "$(jnum nfe "$b")" ]; then
        ok
    else
        bad "fast --cache $cache: [$ida] vs --lopa 0 [$idb]"
    fi
    case "$c" in *'"winner_hist":['*) ok ;; *) bad "fast --cache $cache --lopa 2: $c $(cat $ERR)" ;; esac
done

# ---- bad inputs: exit 2, the message names the option
expect2() { # needle args...
    local needle=$1
    shift
    "$BIN" run -m "$model" --prompt-ids "$P" $T "$@" >/dev/null 2>$ERR
    local rc=$?
    if [ $rc -eq 2 ] && grep -q -- "$needle" $ERR; then ok; else bad "$* -> rc $rc: $(cat $ERR)"; fi
}
expect2 "--lopa" --lopa 65
expect2 "--lopa" --lopa -2
expect2 "block-causal" --lopa 1 --lopa-window-attention causal
expect2 "--tau-add" --decoder d2f --tau-add 1.5 --gen 8 --block 4
expect2 "--tau-conf" --decoder d2f --tau-conf -1 --gen 8 --block 4
expect2 "option 'tau_conf' needs decoder d2f" --decoder dream --tau-conf 0.5
expect2 "option 'lopa' needs decoder fast or d2f" --decoder llada --lopa 2
expect2 "threshold" --decoder fast --rule factor --lopa 2 --gen 8 --block 4
expect2 "needs option 'lopa'" --decoder d2f --lopa-window-attention full --gen 8 --block 4
expect2 "multiple of --block" --decoder d2f --gen 10 --block 4
expect2 "--temperature" --decoder d2f --gen 8 --block 4 --temperature 0.5

echo "test_lopa.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
