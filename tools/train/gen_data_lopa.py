"""gen_data_lopa.py - the lopa-demo task: exact answers written in many equivalent ways.

--kind worded (default, the shipped models/lopa-demo): tiny-gsm's problems (gen_data.py's
five templates, same numbers), but every worked step is written in one of several
equivalent forms: free operand order for + and *, "=" or "gives", "4 more to 9 gives
13", "3 times 7 = 21", and a lead word ("", "then ", "now "); only the first line starts
with its first operand, so the answer's first token is certain. The final `#### <n>` is
exact; the wording is not, and the forms differ in length. So a model that has
learned the task is unsure of a line's first tokens until one of them is fixed, and
then sure of the rest of the line: the regime where LoPA's lookahead branches can win
(one guessed token unlocks a run).

--kind totals: a start count and 4-8 additions worked as a running total in the same
kind of forms (longer answers, 41-123 tokens). Tried first; the 1.1 M model did not
learn it within the CPU budget (tools/train/README.md).

    python3 tools/train/gen_data_lopa.py --out tools/train/data_lopa \
        --heldout data/lopa-demo/heldout.jsonl

writes train.jsonl (seed 11) and heldout.jsonl (seed 12, every question absent from
train and, for --kind worded, from tiny-gsm's training set), one {"question",
"answer", "number"} object per line, the format of gen_data.py (so `lopad eval --task
tiny-gsm --data FILE` reads it). The words are those of the tiny-gsm task where
possible, so the demo model's tokenizer encodes them in few tokens and its weights
are a useful start.
"""

import argparse
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_data  # noqa: E402

NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lily", "Max", "Zoe", "Leo", "Emma", "Noah", "Ava"]
ITEMS = ["apples", "pens", "books", "cards", "eggs", "shells", "stamps", "coins", "toys",
         "cups", "rocks", "beads"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "then"]

# One step: running total x, addition d, new total y. Equivalent forms of one line.
FORMS = [
    "{x} + {d} = {y}",
    "{d} + {x} = {y}",
    "{x} + {d} gives {y}",
    "{x} and {d} more = {y}",
    "{d} more to {x} gives {y}",
    "{d} and {x} in all = {y}",
]
LEADS = ["", "then ", "now "]


def step_line(rs, x, d, y):
    return rs.choice(LEADS) + rs.choice(FORMS).format(x=x, d=d, y=y)


def problem_totals(rs):
    """One running-total problem (question, answer text, number): 4-8 steps."""
    n = rs.choice(NAMES)
    it = rs.choice(ITEMS)
    steps = rs.randint(4, 8)
    start = rs.randint(2, 9)
    adds = [rs.randint(1, 9) for _ in range(steps)]
    listed = ", then ".join(str(a) for a in adds[:-1]) + " and %d" % adds[-1]
    if rs.random() < 0.5:
        q = ("%s has %d %s. %s buys %s more. How many %s does %s have now?"
             % (n, start, it, n, listed, it, n))
    else:
        q = ("%s picks %d %s. Then %s also picks %s. How many %s does %s have in all?"
             % (n, start, it, n, listed, it, n))
    lines, x = [], start
    for d in adds:
        y = x + d
        lines.append(step_line(rs, x, d, y))
        x = y
    lines.append("#### %d" % x)
    return q, "\n".join(lines), x


# The worded tiny-gsm task: gen_data.py's problems, every step line rewritten in an
# equivalent form (a, b operands, c the result).
WORDED = {
    "+": ["{a} + {b} = {c}", "{b} + {a} = {c}", "{a} + {b} gives {c}", "{a} and {b} more = {c}",
          "{b} more to {a} gives {c}", "{a} and {b} in all = {c}"],
    "*": ["{a} * {b} = {c}", "{b} * {a} = {c}", "{a} * {b} gives {c}", "{a} times {b} = {c}",
          "{b} times {a} gives {c}"],
    "-": ["{a} - {b} = {c}", "{a} - {b} gives {c}", "{a} and {b} less = {c}"],
}


FREE_FIRST = False  # --free-first: phase 1's data (the first line not constrained)


def problem_worded(rs):
    """One tiny-gsm problem (gen_data.problem: same questions, same numbers) whose worked
    steps are each written in one of the WORDED forms, with a lead word."""
    q, ans, r = gen_data.problem(rs)
    lines = []
    for line in ans.split("\n"):
        m = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)", line)
        if m:
            a, op, b, c = m.groups()
            forms = WORDED[op]
            lead = rs.choice(LEADS)
            if not lines and not FREE_FIRST:
                # The first answer token is predicted from the prompt alone (Dream's shifted
                # logits: D2F reads it from the prefill), so it is kept certain: no lead
                # word, a form that starts with the first operand.
                forms = [f for f in forms if f.startswith("{a}")]
                lead = ""
            line = lead + rs.choice(forms).format(a=a, b=b, c=c)
        lines.append(line)
    return q, "\n".join(lines), r


KINDS = {"worded": problem_worded, "totals": problem_totals}


def generate(seed, n, exclude=(), kind="worded"):
    rs = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < n:
        q, a, r = KINDS[kind](rs)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": a, "number": r})
    return out


def write(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "data_lopa"))
    ap.add_argument("--heldout", help="write the held-out set here instead of OUT/heldout.jsonl")
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument("--n-heldout", type=int, default=500)
    ap.add_argument("--kind", choices=sorted(KINDS), default="worded",
                    help="worded: tiny-gsm's problems in varied wording (the shipped model); "
                    "totals: 4-8 step running totals (tried first, not learned in time)")
    ap.add_argument("--free-first", action="store_true",
                    help="worded: let the first line vary too (the data of phase 1)")
    args = ap.parse_args()
    global FREE_FIRST
    FREE_FIRST = args.free_first
    train = generate(11, args.n_train, kind=args.kind)
    seen = {p["question"] for p in train}
    if args.kind == "worded":  # also unseen by models/demo (tiny-gsm's training set)
        seen |= {p["question"] for p in gen_data.generate(1, 60000)}
    held = generate(12, args.n_heldout, exclude=seen, kind=args.kind)
    write(os.path.join(args.out, "train.jsonl"), train)
    write(args.heldout or os.path.join(args.out, "heldout.jsonl"), held)
    print("train %d, held-out %d (disjoint questions)" % (len(train), len(held)))


if __name__ == "__main__":
    main()
