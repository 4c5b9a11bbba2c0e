"""winners.py - LoPA's winner histogram on a held-out set: which branch wins each
iteration (lookahead branch i = the i-th most confident masked position's argmax,
or the anchor), summed over the problems, from `lopad run --json`'s winner_hist.

    python3 tools/train/winners.py --model models/lopa-demo \
        --data data/lopa-demo/heldout.jsonl --n 100 --k 1,2,4,8 -- --decoder d2f --gen 128 --block 16

Prints one Markdown row per K: accuracy (number after the last `####`), mean TPF and
NFE, the share of iterations the anchor won, and the wins of lookahead branches
0..K-1. Arguments after `--` go to `lopad run` unchanged. Only the standard library.
"""

import argparse
import json
import re
import subprocess
import sys


def run_one(args, extra, question, k):
    cmd = [args.lopad, "run", "-m", args.model, "-p", question, "--json", "--threads",
           str(args.threads), "--lopa", str(k)] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/lopa-demo")
    ap.add_argument("--lopad", default="build/lopad")
    ap.add_argument("--data", default="data/lopa-demo/heldout.jsonl")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--k", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    rows = [json.loads(l) for l in open(args.data)][:args.n]
    print("| K | accuracy | TPF | NFE | anchor wins | lookahead wins (branch 0, 1, ...) |")
    print("|---:|---:|---:|---:|---:|---|")
    for k in [int(v) for v in args.k.split(",")]:
        ok, tpf, nfe, hist = 0, 0.0, 0, [0] * (k + 1)
        for r in rows:
            out = run_one(args, extra, r["question"], k)
            m = re.findall(r"####\s*(-?\d+)", out["text"])
            ok += bool(m) and int(m[-1]) == r["number"]
            tpf += out["tpf"]
            nfe += out["nfe"]
            for i, v in enumerate(out.get("winner_hist", [])):
                hist[i] += v
        n, total = len(rows), max(1, sum(hist))
        print("| %d | %.3f | %.2f | %.1f | %.1f %% (%d of %d) | %s |" % (
            k, ok / n, tpf / n, nfe / n, 100.0 * hist[k] / total, hist[k], sum(hist),
            " ".join(str(v) for v in hist[:k])), flush=True)


if __name__ == "__main__":
    main()
