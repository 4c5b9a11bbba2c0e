"""gen_data.py - a generated, verifiable arithmetic word-problem task in GSM8K's format.

Each problem is a short templated story with 2 or 3 steps of small-number arithmetic;
the answer shows the worked steps and ends with `#### <number>` as GSM8K does. Every
answer is computed here, so a model's output can be checked exactly.

    /usr/bin/python3 tools/train/gen_data.py --out tools/train/data

writes train.jsonl (seed 1) and heldout.jsonl (seed 2, every question absent from
train), one {"question", "answer", "number"} object per line.
"""

import argparse
import json
import os
import random

NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lily", "Max", "Zoe", "Leo", "Emma", "Noah", "Ava"]
ITEMS = ["apples", "pens", "books", "cards", "eggs", "shells", "stamps", "coins", "toys",
         "cups", "rocks", "beads"]


def problem(rs):
    """One (question, answer text, number)."""
    n = rs.choice(NAMES)
    it = rs.choice(ITEMS)
    kind = rs.randrange(5)
    if kind == 0:  # a + b - c
        a, b = rs.randint(2, 20), rs.randint(2, 20)
        c = rs.randint(1, a + b - 1)
        q = ("%s has %d %s. %s buys %d more. Then %s gives away %d. How many %s does %s have now?"
             % (n, a, it, n, b, n, c, it, n))
        s1 = a + b
        r = s1 - c
        ans = "%d + %d = %d\n%d - %d = %d\n#### %d" % (a, b, s1, s1, c, r, r)
    elif kind == 1:  # a * b + c
        a, b, c = rs.randint(2, 9), rs.randint(2, 9), rs.randint(1, 20)
        q = ("%s has %d boxes with %d %s in each box. %s also has %d loose %s. How many %s does "
             "%s have in all?" % (n, a, b, it, n, c, it, it, n))
        s1 = a * b
        r = s1 + c
        ans = "%d * %d = %d\n%d + %d = %d\n#### %d" % (a, b, s1, s1, c, r, r)
    elif kind == 2:  # a * b - c
        a, b = rs.randint(2, 9), rs.randint(2, 9)
        c = rs.randint(1, a * b - 1)
        q = ("%s buys %d bags of %s. Each bag has %d %s. %s loses %d of them. How many %s are "
             "left?" % (n, a, it, b, it, n, c, it))
        s1 = a * b
        r = s1 - c
        ans = "%d * %d = %d\n%d - %d = %d\n#### %d" % (a, b, s1, s1, c, r, r)
    elif kind == 3:  # (a + b) * c
        a, b, c = rs.randint(1, 9), rs.randint(1, 9), rs.randint(2, 5)
        q = ("%s has %d red %s and %d blue %s. The friend of %s has %d times as many. How many "
             "%s does the friend have?" % (n, a, it, b, it, n, c, it))
        s1 = a + b
        r = s1 * c
        ans = "%d + %d = %d\n%d * %d = %d\n#### %d" % (a, b, s1, s1, c, r, r)
    else:  # three steps: a + b + c - d
        a, b, c = rs.randint(1, 15), rs.randint(1, 15), rs.randint(1, 15)
        d = rs.randint(1, a + b + c - 1)
        q = ("%s picks %d %s on Monday, %d on Tuesday and %d on Wednesday. %s uses %d. How many "
             "%s are left?" % (n, a, it, b, c, n, d, it))
        s1 = a + b
        s2 = s1 + c
        r = s2 - d
        ans = "%d + %d = %d\n%d + %d = %d\n%d - %d = %d\n#### %d" % (a, b, s1, s1, c, s2, s2, d,
                                                                 r, r)
    return q, ans, r


def generate(seed, n, exclude=()):
    rs = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < n:
        q, a, r = problem(rs)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": a, "number": r})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument("--n-heldout", type=int, default=500)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train = generate(1, args.n_train)
    held = generate(2, args.n_heldout, exclude={p["question"] for p in train})
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        with open(os.path.join(args.out, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print("train %d, held-out %d (disjoint questions)" % (len(train), len(held)))


if __name__ == "__main__":
    main()
