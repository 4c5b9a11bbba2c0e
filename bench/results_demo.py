#!/usr/bin/env python3
"""results_demo.py - the decoder tables of docs/RESULTS.md, in one run.

    python3 bench/results_demo.py [--lopad build/lopad] [--model models/demo] [--limit 200]
        [--threads 1] [--out /tmp/results.md] [--plot-dir docs/img]

Runs `lopad eval --task tiny-gsm --json` once per row (vanilla, Fast-dLLM cache modes,
D2F, D2F + LoPA for K = 1..14, Fast-dLLM + LoPA, DPad with each block decoder, and
long canvases with and without DPad) on the demo model's held-out problems, and prints
Markdown tables (accuracy, flexible accuracy, TPF, NFE, tokens/s) with the exact flags
of every row. Only the standard library; lopad does the work.
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


def run(args, flags):
    cmd = [args.lopad, "eval", "--task", "tiny-gsm", "-m", args.model, "--limit",
           str(args.limit), "--threads", str(args.threads), "--json"] + flags.split()
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
    args = ap.parse_args()
    print("lopad eval --task tiny-gsm -m %s --limit %d --threads %d --json FLAGS\n"
          % (args.model, args.limit, args.threads))
    for title, rows in TABLES:
        if args.only and args.only not in title:
            continue
        print("### %s\n" % title)
        print("| run | accuracy | flexible | TPF | NFE | tokens/s | FLAGS |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name, flags in rows:
            r = run(args, flags)
            print("| %s | %.3f | %.3f | %.2f | %.1f | %.0f | `%s` |" % (
                name, r["accuracy"], r["flexible_accuracy"], r["tpf"], r["nfe"],
                r["tokens_per_second"], flags), flush=True)
        print()


if __name__ == "__main__":
    main()
