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

--suite lopa-demo runs the lopa-demo model's tables instead (gen 128, block 16: vanilla,
Fast-dLLM, D2F, D2F + LoPA for K = 0..14, DPad) on data/lopa-demo/heldout.jsonl, read
as a tiny-gsm file (--task tiny-gsm --data FILE) unless --task names another task.
Rows marked with a cap (the slow vanilla decoders) run on at most that many problems.
"""

import argparse
import json
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

G128 = " --gen 128"
LOPA_TABLES = [
    ("lopa-demo: vanilla and Fast-dLLM (gen 128)", [
        ("dream, 128 steps (vanilla)", "--decoder dream --gen 128 --steps 128", 100),
        ("llada-style blocks of 16, 128 steps", "--decoder llada --gen 128 --steps 128 --block 16",
         100),
        ("fast, cache none, threshold 0.9", FAST + G128 + " --cache none"),
        ("fast, cache prefix, threshold 0.9", FAST + G128 + " --cache prefix"),
        ("fast, cache dual, threshold 0.9", FAST + G128 + " --cache dual"),
    ]),
    ("lopa-demo: D2F and D2F + LoPA (gen 128, block 16, tau_conf 0.9)", [
        ("d2f (block-causal)", D2F + G128),
    ] + [("d2f + LoPA K=%d" % k, D2F + G128 + " --lopa %d" % k) for k in range(0, 15)] + [
        ("fast dual + LoPA K=4", FAST + G128 + " --cache dual --lopa 4"),
    ]),
    ("lopa-demo: DPad (gen 128, window 32)", [
        ("llada blocks of 16 + DPad (early stop)", "--decoder llada --gen 128 --steps 128 "
         "--block 16 --dpad --dpad-window 32", 100),
        ("dream by blocks of 16 + DPad (early stop)", "--decoder dream --gen 128 --steps 128 "
         "--block 16 --dpad --dpad-window 32", 100),
        ("fast dual + DPad", FAST + G128 + " --cache dual --dpad --dpad-window 32"),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lopad", default="build/lopad")
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", help="run only the tables whose title contains this")
    ap.add_argument("--suite", choices=["demo", "lopa-demo"], default="demo")
    ap.add_argument("--task", default="tiny-gsm")
    ap.add_argument("--data", help="problems file (lopa-demo suite with --task tiny-gsm: "
                    "data/lopa-demo/heldout.jsonl)")
    args = ap.parse_args()
    tables = TABLES
    if args.suite == "lopa-demo":
        tables = LOPA_TABLES
        if args.task == "tiny-gsm" and not args.data:
            args.data = "data/lopa-demo/heldout.jsonl"
    print("lopad eval --task %s%s -m %s --limit %d --threads %d --json FLAGS\n"
          % (args.task, " --data " + args.data if args.data else "", args.model, args.limit,
             args.threads))
    for title, rows in tables:
        if args.only and args.only not in title:
            continue
        print("### %s\n" % title)
        print("| run | accuracy | flexible | TPF | NFE | tokens/s | FLAGS |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for row in rows:
            name, flags, cap = row if len(row) == 3 else row + (0,)
            r = run(args, flags, cap)
            print("| %s%s | %.3f | %.3f | %.2f | %.1f | %.0f | `%s` |" % (
                name, " (first %d)" % r["n"] if cap and r["n"] < args.limit else "",
                r["accuracy"], r["flexible_accuracy"], r["tpf"], r["nfe"],
                r["tokens_per_second"], flags), flush=True)
        print()


if __name__ == "__main__":
    main()
