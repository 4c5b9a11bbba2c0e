"""dpad.py - reference of lopad's DPad suffix dropout (src/decode/dpad.c) and the
golden DPad fixtures under tests/fixtures/dpad/.

keep(d) = min(1, a exp(-x^2/2) / sqrt(2 pi)), x = k d / (W - 1) (0 when W = 1), for
d < W, and 0 for d >= W (d = offset after the current block). Drawn once per block from
the request's PRNG (decoders.Rng): offsets with 0 < keep(d) < 1 draw one u01 each
(kept iff u < keep(d)); keep(d) >= 1 keeps without a draw; keep(d) = 0 drops without
a draw. Same order and float64 formula as the C code, so the kept sets are identical.

Regenerate the fixtures: /usr/bin/python3 tools/ref/dpad.py (see tools/ref/fast_dllm.py
for the decoder and the fixture format).
"""

import math
import os
import sys


def keep_prob(window, sigma, scale, d):
    if d < 0 or d >= window:
        return 0.0
    x = sigma * d / (window - 1) if window > 1 else 0.0
    pdf = scale * math.exp(-x * x / 2.0) / math.sqrt(2.0 * 3.14159265358979323846)
    return pdf if pdf < 1.0 else 1.0


def draw(window, sigma, scale, first_pos, n_suffix, rng):
    out = []
    for d in range(min(n_suffix, window)):
        kp = keep_prob(window, sigma, scale, d)
        if kp <= 0.0:
            continue
        if kp >= 1.0 or rng.u01() < kp:
            out.append(first_pos + d)
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fast_dllm
    fast_dllm.main(dpad_only=True)
