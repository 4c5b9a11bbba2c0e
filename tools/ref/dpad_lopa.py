"""dpad_lopa.py - reference of LoPA on Fast-dLLM with DPad suffix dropout
(`lopad run --decoder fast --lopa K --dpad`, src/decode/lopa.c "LoPA on Fast-dLLM"),
and the golden fixtures tests/fixtures/dpad_lopa/*.txt read by
tests/unit/test_dpad_lopa.c.

Written from docs/ALGORITHMS.md sections 2, 3 and 5 and lopad's decisions
(docs/DECODERS.md), independently of the C code:

  - semi-AR blocks of B; greedy proposals of the fast decoder (tools/ref/fast_dllm.py
    `propose`: MASK never proposed, LLaDA pmax in f64);
  - DPad: the kept suffix is drawn ONCE per block, at block start, from the request's
    PRNG (tools/ref/dpad.py `draw`; nothing else draws: greedy), and every branch of
    every forward of that block feeds the same kept set: [from, block end) ++ kept at
    the original position ids (from = 0 for the refresh and cache none, the block
    start for prefix steps); dual-cache steps feed the block alone over the cache of
    the refresh forward (prefix + block + kept suffix), hiding the cached block rows;
  - LoPA: the refresh forward has the anchor alone; later forwards verify the K
    lookahead variants of the block and the anchor, here ONE MODEL CALL PER BRANCH
    (lopad batches them into one call: the test checks both give these decisions);
    branch confidence = mean ranking confidence of its masked block positions (1.0 if
    none), winner = highest, ties to the earlier branch (lookahead in creation order,
    then the anchor); next anchor = winner + threshold fill (pmax >= tau, else the
    single most confident); lookahead branch i = anchor + the argmax token at the
    anchor's i-th most confident masked block position (i < K);
  - early stop: a finished block holding EOS fills the rest with EOS and ends.

Models: the fake predictor with a KV cache of tests/unit/test_d2f.c (`dfake`; the same
row formula as FakeCached in tools/ref/d2f_lopa.py): a cached row's K/V is its
(token, position); a row's logits hash the pairs it sees: the visible cached rows
plus every fed row of its own sequence. And the tiny fixture models with a real K/V
cache in float64 (tools/ref/fast_dllm.py TinyEngine; each branch is its own call, so
no branch sees another's rows); their prompt is the first of RandomState(3000 + i)
whose decisions all have a margin > 1e-3.

Each fixture records the kept set of every block and, per forward, the fed span of
its sequences (`from-eb+n_kept`, all sequences alike) and n_cache; min_margin is the
smallest gap of a model-dependent decision.

Regenerate: /usr/bin/python3 tools/ref/dpad_lopa.py
"""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import decoders as D  # noqa: E402
import dpad as DP  # noqa: E402
import fast_dllm as F  # noqa: E402
from d2f_lopa import FakeCached  # noqa: E402


class FakeEngine:
    """dfake of tests/unit/test_d2f.c, one sequence per call."""

    def __init__(self, shift, eos_from):
        self.fc = FakeCached(shift, eos_from)
        self.hp = dict(n_vocab=40, mask_id=39, eos_id=38, eot_id=37, shift_logits=shift,
                       dream=shift)
        self.cache = []  # (token, position) per cached row
        self.last = []

    def forward(self, toks, pos, n_cache, skb, ske, out_rows):
        assert n_cache <= len(self.cache)
        ctx = 0
        for r in range(n_cache):
            if not (skb <= r < ske):
                t, p = self.cache[r]
                ctx += (t + 1) * (p + 1)
        for t, p in zip(toks, pos):
            ctx += (int(t) + 1) * (int(p) + 1)
        ctx &= D.M64
        self.last = [(int(t), int(p)) for t, p in zip(toks, pos)]
        out = np.empty((len(out_rows), 40), dtype=np.float32)
        for o, r in enumerate(out_rows):
            out[o] = self.fc.row(ctx, int(pos[r]))
        return out

    def kv_commit(self, src, n, dst):
        assert dst <= len(self.cache)
        self.cache[dst:dst + n] = self.last[src:src + n]

    def kv_truncate(self, n):
        del self.cache[n:]


def lopa_fast_generate(eng, prompt, gen, block, cache, threshold, confidence, early_stop, K,
                       dpad, seed):
    """dpad = (window, sigma, scale) or None. Returns a dict of the results."""
    hp = eng.hp
    mask, eos = hp["mask_id"], hp["eos_id"]
    shift = hp["shift_logits"]
    if confidence == "auto":  # LoPA on Fast-dLLM: the threshold rule ranks by pmax
        confidence = "pmax"
    P, L = len(prompt), len(prompt) + gen
    x = np.full(L, mask, dtype=np.int64)
    x[:P] = prompt
    rng = D.Rng(seed)
    mg = D.Margins()
    nb = gen // block
    nfe = 0
    kept_sets, feeds, winners = [], [], []
    n_refresh = 0
    for b in range(nb):
        sb, eb = P + b * block, P + (b + 1) * block
        if dpad is not None:
            kept = DP.draw(dpad[0], dpad[1], dpad[2], eb, L - eb, rng)
        else:
            kept = list(range(eb, L))
        kept_sets.append(kept)
        # branches: (block tokens, lookahead position, lookahead token); anchor last
        br = [(x[sb:eb].copy(), -1, -1)]
        refreshed = False
        last = None
        stop = False
        while True:
            if len(br) == 1 and not np.any(br[0][0] == mask):
                break
            refresh = not refreshed
            assert not refresh or len(br) == 1
            n_cache, skb, ske, suffix, frm = 0, 0, 0, kept, 0
            if not refresh and cache == "prefix":
                frm, n_cache = sb, sb
            elif not refresh and cache == "dual":
                frm, n_cache, skb, ske, suffix = sb, n_refresh, sb, eb, []
            fpos = list(range(frm, eb)) + list(suffix)
            want_last = refresh and shift and cache != "none" and sb > 0
            # the rows each branch asks for
            plan = []
            total = 0
            for blk, _, _ in br:
                mpos = [sb + q for q in range(block) if blk[q] == mask]
                rows, src = [], []
                for j in mpos:
                    r = D.pred_row(shift, j) - frm
                    if r < 0:
                        src.append(-1)
                        continue
                    if r not in rows:
                        rows.append(r)
                    src.append(rows.index(r))
                lrow = -1
                if want_last:
                    if (sb - 1 - frm) not in rows:
                        rows.append(sb - 1 - frm)
                    lrow = rows.index(sb - 1 - frm)
                plan.append((mpos, rows, src, lrow))
                total += len(rows)
            outs = [None] * len(br)
            if total > 0 or refresh:
                for j, (blk, _, _) in enumerate(br):
                    ftok = [int(blk[p - sb]) if sb <= p < eb else int(x[p]) for p in fpos]
                    outs[j] = eng.forward(ftok, fpos, n_cache, skb, ske, plan[j][1])
                nfe += 1
                feeds.append("%d-%d+%d:%d" % (frm, eb, len(suffix), n_cache))
            if refresh and cache != "none":
                if cache == "prefix":
                    eng.kv_commit(0, sb, 0)
                    eng.kv_truncate(sb)
                else:
                    eng.kv_commit(0, len(fpos), 0)
                    eng.kv_truncate(len(fpos))
                    n_refresh = len(fpos)
            if want_last:
                last = outs[0][plan[0][3]].copy()
            refreshed = True
            # proposals and branch confidences
            props = []
            cj = []
            for j in range(len(br)):
                mpos, rows, src, _ = plan[j]
                pr = {}
                for q, pj in enumerate(mpos):
                    lg = outs[j][src[q]] if src[q] >= 0 else last
                    pr[pj] = F.propose(hp, lg, pj, confidence, 0.0, 1.0, 0, False, 0, 0.5, mg)
                props.append(pr)
                cj.append(sum(v[2] for v in pr.values()) / len(pr) if pr else 1.0)
            w = 0
            for j in range(1, len(br)):
                if cj[j] > cj[w]:
                    w = j
            if len(br) > 1:
                srt = sorted(cj, reverse=True)
                mg.add(srt[0] - srt[1])
            winners.append((w, len(br)))
            wb, lap, latok = br[w][0].copy(), br[w][1], br[w][2]
            if lap >= 0:
                x[lap] = latok
            pw = props[w]
            mpos = sorted(pw)
            sel = [p for p in mpos if pw[p][1] >= threshold]
            for p in mpos:
                mg.add(abs(pw[p][1] - threshold))
            if not sel:
                sel = [mpos[i] for i in D.select_topk([pw[p][2] for p in mpos], mpos, 1, mg)]
            for p in sel:
                wb[p - sb] = pw[p][0]
                x[p] = pw[p][0]
            cand = [sb + q for q in range(block) if wb[q] == mask]
            k = min(K, len(cand))
            order = D.select_topk([pw[p][2] for p in cand], cand, k, mg)
            nbr = []
            for i in order:
                q = cand[i]
                nbk = wb.copy()
                nbk[q - sb] = pw[q][0]
                nbr.append((nbk, q, int(pw[q][0])))
            nbr.append((wb, -1, -1))
            br = nbr
            if not cand:
                break
        if early_stop and np.any(x[sb:eb] == eos) and b < nb - 1:
            for j in range(eb, L):
                if x[j] == mask:
                    x[j] = eos
            stop = True
        if stop:
            break
    return dict(canvas=x, nfe=nfe, margin=mg.m, kept=kept_sets, feeds=feeds, winners=winners)


# -------------------------------------------------------------- fixtures
# Format: one `key value` per line: model (fake-llada | fake-dream), eos_from, prompt,
# the request (gen block cache threshold confidence early_stop lopa dpad dpad_window
# dpad_sigma dpad_scale seed), then nfe, min_margin, winners (per forward
# `winner/branches`, the anchor = branches-1), feeds (per forward `from-eb+n:n_cache`:
# every sequence fed positions [from, eb) then n kept suffix positions), kept (per
# block, `|`-separated, `-` when empty) and canvas.

PROMPT = [5, 17, 2, 30, 11]


def cases():
    out = []
    for shift in (0, 1):
        for cache in ("none", "prefix", "dual"):
            for K, thr, es, dp, seed in ((0, 0.6, 0, (16, 3.0, 2.0), 3),
                                         (2, 0.6, 0, (16, 3.0, 2.0), 7),
                                         (3, 0.9, 1, (8, 4.0, 1.6), 11)):
                name = "fake-%s-%s-lopa%d" % ("dream" if shift else "llada", cache, K)
                out.append((name, shift, dict(gen=24, block=4, cache=cache, threshold=thr,
                                              confidence="negent" if shift else "auto",
                                              early_stop=es, lopa=K,
                                              dpad=1, dpad_window=dp[0], dpad_sigma=dp[1],
                                              dpad_scale=dp[2], seed=seed)))
    return out


# The Dream cases were written when `auto` meant negent here; they keep that ranking
# explicitly (`auto` is pmax now, as LoPA's Fast-dLLM threshold rule ranks).
def tiny_cases():
    out = []
    for fam in ("llada", "dream"):
        for cache in ("none", "prefix", "dual"):
            out.append(("tiny-%s-%s-lopa2" % (fam, cache), fam,
                        dict(gen=16, block=4, cache=cache, threshold=0.3,
                             confidence="negent" if fam == "dream" else "auto",
                             early_stop=0, lopa=2, dpad=1, dpad_window=8, dpad_sigma=3.0,
                             dpad_scale=1.6, seed=7)))
    return out


def run(eng, prompt, c):
    return lopa_fast_generate(eng, prompt, c["gen"], c["block"], c["cache"], c["threshold"],
                              c["confidence"], bool(c["early_stop"]), c["lopa"],
                              (c["dpad_window"], c["dpad_sigma"], c["dpad_scale"]), c["seed"])


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    outdir = os.path.join(root, "tests", "fixtures", "dpad_lopa")
    os.makedirs(outdir, exist_ok=True)
    eos_from = 5 + 14
    todo = []
    for name, shift, c in cases():
        r = run(FakeEngine(bool(shift), eos_from), PROMPT, c)
        assert r["margin"] > 1e-6, (name, r["margin"])
        todo.append((name, "fake-%s" % ("dream" if shift else "llada"), eos_from, PROMPT, c, r))
    if "--no-tiny" not in sys.argv:
        for name, fam, c in tiny_cases():
            best = None
            for ps in range(40):
                prompt = [int(t) for t in np.random.RandomState(3000 + ps).randint(0, 256, 6)]
                r = run(F.TinyEngine(os.path.abspath(root), "tiny-" + fam), prompt, c)
                if best is None or r["margin"] > best[1]["margin"]:
                    best = (prompt, r)
                if r["margin"] > 1e-3:
                    break
            prompt, r = best
            assert r["margin"] > 2e-4, (name, r["margin"])
            todo.append((name, "tiny-" + fam, 1 << 30, prompt, c, r))
    for name, model, eos_from, prompt, c, r in todo:
        with open(os.path.join(outdir, name + ".txt"), "w") as f:
            f.write("# golden LoPA-on-Fast-dLLM + DPad case, written by "
                    "tools/ref/dpad_lopa.py (do not edit)\n")
            f.write("model %s\n" % model)
            f.write("eos_from %d\n" % eos_from)
            f.write("prompt %s\n" % ",".join(str(t) for t in prompt))
            for k in ("gen", "block", "cache", "threshold", "confidence", "early_stop", "lopa",
                      "dpad", "dpad_window", "dpad_sigma", "dpad_scale", "seed"):
                f.write("%s %s\n" % (k, c[k]))
            f.write("nfe %d\n" % r["nfe"])
            f.write("min_margin %.6g\n" % r["margin"])
            f.write("winners %s\n" % ",".join("%d/%d" % w for w in r["winners"]))
            f.write("feeds %s\n" % ",".join(r["feeds"]))
            f.write("kept %s\n" % "|".join(",".join(str(p) for p in ks) if ks else "-"
                                            for ks in r["kept"]))
            f.write("canvas %s\n" % ",".join(str(int(t)) for t in r["canvas"]))
        la = sum(1 for w, n in r["winners"] if w != n - 1)
        print("%-28s nfe %3d  lookahead wins %2d  margin %.3g" % (name, r["nfe"], la,
                                                                   r["margin"]))


if __name__ == "__main__":
    main()
