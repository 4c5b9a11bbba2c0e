"""eval_lopad.py - held-out accuracy of a model on the generated task, decoded by the C
engine: one `lopad run --json` per problem, the answer is the number after the last
`####` in the generated text, compared exactly with the computed answer.

    /usr/bin/python3 tools/train/eval_lopad.py --model models/demo --n 50 \
        -- --decoder dream --gen 48 --steps 48

Arguments after `--` go to `lopad run` unchanged.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--lopad", default="build/lopad")
    ap.add_argument("--data", default=os.path.join(HERE, "data", "heldout.jsonl"))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--show", type=int, default=3, help="print this many outputs")
    args = ap.parse_args(argv)
    rows = [json.loads(l) for l in open(args.data)][:args.n]
    ok = fmt = 0
    step1 = eq_true = eq_all = 0  # partial credit: first step's operands, true equations
    nfe = 0
    t0 = time.time()
    for k, r in enumerate(rows):
        cmd = [args.lopad, "run", "-m", args.model, "-p", r["question"], "--json",
               "--threads", "1"] + extra
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        text = out["text"]
        nfe += out["nfe"]
        m = re.findall(r"####\s*(-?\d+)", text)
        fmt += bool(m)
        got = int(m[-1]) if m else None
        ok += got == r["number"]
        want = r["answer"].split("\n")[0].split("=")[0].strip()
        lines = text.split("\n")
        step1 += lines[0].split("=")[0].strip() == want
        for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", text):
            eq_all += 1
            v = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            eq_true += v == int(c)
        if k < args.show:
            print("Q: %s\nA: %r (expected %d)\n" % (r["question"], text, r["number"]))
    n = len(rows)
    print("held-out accuracy %d/%d = %.1f%% (answers with ####: %d/%d), mean NFE %.1f, %.1f s"
          % (ok, n, 100.0 * ok / n, fmt, n, nfe / n, time.time() - t0))
    print("first step's operands copied right: %d/%d; equations arithmetically true: %d/%d"
          % (step1, n, eq_true, eq_all))
    answers = [json.loads(l)["number"] for l in open(args.data)]
    best = max(set(answers), key=answers.count)
    print("baseline: always answering the most frequent held-out answer (%d): %.1f%% of %d"
          % (best, 100.0 * answers.count(best) / len(answers), len(answers)))
    print("settings: lopad run -m %s %s" % (args.model, " ".join(extra)))


if __name__ == "__main__":
    main()
