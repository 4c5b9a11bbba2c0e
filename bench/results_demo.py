#!/usr/bin/env python3
"""results_demo.py - the decoder tables of docs/RESULTS.md, in one run.

    python3 bench/results_demo.py [--lopad build/lopad] [--model models/demo] [--limit 200]
        [--threads 1] [--only TITLE]
    python3 bench/results_demo.py --suite lopa-demo --model models/lopa-demo --limit 500

Runs `lopad eval --task tiny-gsm --json` once per row (vanilla, Fast-dLLM cache modes,
D2F, D2F + LoPA for K = 1..14, Fast-dLLM + LoPA, DPad with each block decoder, and
long canvases with and without DPad) on the demo model's held-out problems, and prints
Markdown tables (accuracy, flexible accuracy, TPF, NFE, tokens/s) with the exact flags
of every row. Only the standard library; lopad does the work.

--suite lopa-demo runs the lopa-demo model's tables instead (gen 64, block 16: vanilla,
Fast-dLLM, D2F, D2F + LoPA for K = 0..14, DPad) with `lopad eval --task lopa-demo`
(data/lopa-demo/heldout.jsonl; --task tiny-gsm reads the same file as a tiny-gsm one).
Rows marked with a cap (the slow vanilla decoders) run on at most that many problems.
"""

import argparse
import concurrent.futures
import json
import re
import subprocess
import sys

FAST = "--decoder fast --block 16 --threshold 0.9"
D2F = "--decoder d2f --block 16"

TABLES = [
    ("Vanilla and Fast-dLLM (gen 48)", [
        ("dream, 48 steps (vanilla)", "--decoder dream --gen 48 --steps 48"),
        ("llada-style blocks of 16, 48 steps", "--decoder llada --gen 48 --steps 48 --block 16"),
        ("fast, cache none, threshold 0.9", FAST + " --gen 48 --cache none"),
        ("fast, cache prefix, threshold 0.9", FAST + " --gen 48 --cache prefix"),
        ("fast, cache dual, threshold 0.9", FAST + " --gen 48 --cache dual"),
    ]),
    ("D2F and D2F + LoPA (gen 48, block 16, tau_conf 0.9)", [
        ("d2f (block-causal)", D2F + " --gen 48"),
        ("d2f, LoPA K=0 (full window attention)", D2F + " --gen 48 --lopa 0"),
    ] + [("d2f + LoPA K=%d" % k, D2F + " --gen 48 --lopa %d" % k)
         for k in range(1, 15)] + [
        ("fast dual + LoPA K=4", FAST + " --gen 48 --cache dual --lopa 4"),
    ]),
    ("DPad with each block decoder (gen 48, window 16)", [
        ("llada blocks of 16 + DPad (early stop)", "--decoder llada --gen 48 --steps 48 --block 16 --dpad "
         "--dpad-window 16"),
        ("dream by blocks of 16 + DPad (early stop)", "--decoder dream --gen 48 --steps 48 "
         "--block 16 --dpad --dpad-window 16"),
        ("fast none + DPad", FAST + " --gen 48 --cache none --dpad --dpad-window 16"),
        ("fast prefix + DPad", FAST + " --gen 48 --cache prefix --dpad --dpad-window 16"),
        ("fast dual + DPad", FAST + " --gen 48 --cache dual --dpad --dpad-window 16"),
        ("fast dual + LoPA K=4 + DPad", FAST + " --gen 48 --cache dual --lopa 4 --dpad "
         "--dpad-window 16"),
    ]),
    ("Long canvases: Fast-dLLM dual with and without DPad (window 32)", [
        (("gen %d" % g) + (", DPad" if d else ""),
         FAST + " --gen %d --cache dual" % g + (" --dpad --dpad-window 32" if d else ""))
        for g in (48, 96, 160) for d in (False, True)
    ]),
]

GL = " --gen 64"
LOPA_TABLES = [
    ("lopa-demo: vanilla and Fast-dLLM (gen 64)", [
        ("dream, 64 steps (vanilla)", "--decoder dream --gen 64 --steps 64", 50),
        ("llada-style blocks of 16, 64 steps", "--decoder llada --gen 64 --steps 64 --block 16",
         50),
        ("fast, cache none, threshold 0.9", FAST + GL + " --cache none"),
        ("fast, cache prefix, threshold 0.9", FAST + GL + " --cache prefix"),
        ("fast, cache dual, threshold 0.9", FAST + GL + " --cache dual"),
    ]),
    ("lopa-demo: D2F and D2F + LoPA (gen 64, block 16, tau_conf 0.9)", [
        ("d2f (block-causal)", D2F + GL),
    ] + [("d2f + LoPA K=%d" % k, D2F + GL + " --lopa %d" % k) for k in range(0, 15)] + [
        ("fast dual + LoPA K=4", FAST + GL + " --cache dual --lopa 4"),
    ]),
    ("lopa-demo: DPad (gen 64, window 32)", [
        ("llada blocks of 16 + DPad (early stop)", "--decoder llada --gen 64 --steps 64 "
         "--block 16 --dpad --dpad-window 32", 50),
        ("dream by blocks of 16 + DPad (early stop)", "--decoder dream --gen 64 --steps 64 "
         "--block 16 --dpad --dpad-window 32", 50),
        ("fast dual + DPad", FAST + GL + " --cache dual --dpad --dpad-window 32"),
    ]),
]


def run(args, flags, cap=0):
    limit = min(args.limit, cap) if cap else args.limit
    cmd = [args.lopad, "eval", "--task", args.task, "-m", args.model, "--limit",
           str(limit), "--threads", str(args.threads), "--json"] + flags.split()
    if args.data:
        cmd += ["--data", args.data]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr[-2000:]))
    return json.loads(p.stdout)


def plot_lopa(path, curve, d2f):
    """curve: [(K, accuracy, TPF)]; d2f: (accuracy, TPF) of plain D2F. gnuplot PNG."""
    data = "\n".join("%d %.4f %.4f" % c for c in curve)
    script = """set terminal pngcairo size 800,480
set output '%s'
set title 'LoPA on D2F (lopa-demo): accuracy and tokens per forward vs K'
set xlabel 'lookahead branches K'
set ylabel 'accuracy (%%)'
set y2label 'TPF'
set ytics nomirror
set y2tics
set key bottom right
set xrange [-0.5:14.5]
set yrange [0:100]
set y2range [0:*]
$d << EOD
%s
EOD
plot $d using 1:($2*100) with linespoints title 'accuracy (%%)', \\
     $d using 1:3 axes x1y2 with linespoints title 'TPF', \\
     %.4f axes x1y2 dashtype 2 title 'TPF of plain D2F', \\
     %.4f dashtype 3 title 'accuracy of plain D2F'
""" % (path, data, d2f[1], d2f[0] * 100)
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lopad", default="build/lopad")
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1,
                    help="rows run at once (each with --threads); the printed order is kept")
    ap.add_argument("--only", help="run only the tables whose title contains this")
    ap.add_argument("--plot", help="lopa-demo suite: the LoPA curve (K = 0..14) as a PNG")
    ap.add_argument("--suite", choices=["demo", "lopa-demo"], default="demo")
    ap.add_argument("--task", help="default: tiny-gsm (demo suite), lopa-demo (lopa-demo suite)")
    ap.add_argument("--data", help="problems file (lopa-demo suite with --task tiny-gsm: "
                    "data/lopa-demo/heldout.jsonl)")
    args = ap.parse_args()
    tables = TABLES
    if not args.task:
        args.task = "lopa-demo" if args.suite == "lopa-demo" else "tiny-gsm"
    if args.suite == "lopa-demo":
        tables = LOPA_TABLES
        if args.task == "tiny-gsm" and not args.data:
            args.data = "data/lopa-demo/heldout.jsonl"
    print("lopad eval --task %s%s -m %s --limit %d --threads %d --json FLAGS\n"
          % (args.task, " --data " + args.data if args.data else "", args.model, args.limit,
             args.threads))
    curve, d2f = [], None
    for title, rows in tables:
        if args.only and args.only not in title:
            continue
        print("### %s\n" % title)
        print("| run | accuracy | flexible | TPF | NFE | tokens/s | FLAGS |")
        print("|---|---:|---:|---:|---:|---:|---|")
        rows = [row if len(row) == 3 else row + (0,) for row in rows]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            results = ex.map(lambda row: run(args, row[1], row[2]), rows)
        for (name, flags, cap), r in zip(rows, results):
            k = re.fullmatch(r"d2f \+ LoPA K=(\d+)", name)
            if k:
                curve.append((int(k.group(1)), r["accuracy"], r["tpf"]))
            elif name == "d2f (block-causal)":
                d2f = (r["accuracy"], r["tpf"])
            print("| %s%s | %.3f | %.3f | %.2f | %.1f | %.0f | `%s` |" % (
                name, " (first %d)" % r["n"] if cap and r["n"] < args.limit else "",
                r["accuracy"], r["flexible_accuracy"], r["tpf"], r["nfe"],
                r["tokens_per_second"], flags), flush=True)
        print()
    if args.plot and curve and d2f:
        plot_lopa(args.plot, curve, d2f)


if __name__ == "__main__":
    main()
