#!/usr/bin/python3
"""vs_torch.py - PyTorch's side of bench/vs_torch.sh: the same Dream-7B-shaped
forward as bench/vs_torch.c (L layers, tied embedding/head, a window of T tokens
over a cached prefix of P rows, logits for every fed row), on the CPU in f32
(or bf16), one JSON line per window, plus torch's plain matmul GFLOP/s and the
BLAS library it loaded.

usage: vs_torch.py LAYERS TOKENS PREFIX THREADS REPEAT [f32|bf16]
"""
import json
import sys
import time

import torch

E, H, HKV, HD, F, V = 3584, 28, 4, 128, 18944, 152064


def blas_library():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in p or "mkl" in p or "dnnl" in p:
                libs.add(p)
    return sorted(libs)


def main():
    L, toks, P, threads, R = (int(sys.argv[1]), [int(t) for t in sys.argv[2].split(",")],
                              int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    dt = torch.bfloat16 if len(sys.argv) > 6 and sys.argv[6] == "bf16" else torch.float32
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=0.02, base=0.0):
        return torch.empty(*shape).uniform_(base - scale, base + scale, generator=g).to(dt)

    t0 = time.time()
    layers = []
    for _ in range(L):
        layers.append(dict(
            an=rnd(E, scale=0.1, base=1.0), fn=rnd(E, scale=0.1, base=1.0),
            wq=rnd(H * HD, E), wk=rnd(HKV * HD, E), wv=rnd(HKV * HD, E), wo=rnd(E, H * HD),
            bq=rnd(H * HD), bk=rnd(HKV * HD), bv=rnd(HKV * HD),
            wg=rnd(F, E), wu=rnd(F, E), wd=rnd(E, F),
            kc=rnd(HKV, P, HD, scale=1.0), vc=rnd(HKV, P, HD, scale=1.0)))
    head = rnd(V, E)
    onorm = rnd(E, scale=0.1, base=1.0)
    print(f"torch: {L} layers of {dt} generated in {time.time() - t0:.1f} s", file=sys.stderr)

    inv = 1.0 / (1e6 ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD))

    def rope(x, pos):  # x (heads, T, HD), NEOX rotate-half
        ang = pos[:, None].float() * inv[None, :]
        c, s = torch.cos(ang).to(dt), torch.sin(ang).to(dt)
        x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def rms(x, w):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(dt) * w

    def forward(tok, pos):
        T = tok.shape[0]
        x = head[tok]  # tied embedding
        for ly in layers:
            h = rms(x, ly["an"])
            q = (h @ ly["wq"].T + ly["bq"]).view(T, H, HD).transpose(0, 1)
            k = (h @ ly["wk"].T + ly["bk"]).view(T, HKV, HD).transpose(0, 1)
            v = (h @ ly["wv"].T + ly["bv"]).view(T, HKV, HD).transpose(0, 1)
            q, k = rope(q, pos), rope(k, pos)
            keys = torch.cat([ly["kc"], k], dim=1).repeat_interleave(H // HKV, dim=0)
            vals = torch.cat([ly["vc"], v], dim=1).repeat_interleave(H // HKV, dim=0)
            att = torch.softmax((q @ keys.transpose(1, 2)) * (HD ** -0.5), dim=-1) @ vals
            x = x + att.transpose(0, 1).reshape(T, H * HD) @ ly["wo"].T
            h = rms(x, ly["fn"])
            x = x + (torch.nn.functional.silu(h @ ly["wg"].T) * (h @ ly["wu"].T)) @ ly["wd"].T
        return rms(x, onorm) @ head.T

    with torch.inference_mode():
        for T in toks:
            tok = torch.arange(T) * 7919 % V
            pos = torch.arange(P, P + T)
            best, best_cpu = 1e30, 1e30
            for r in range(R + 1):
                s, sc = time.time(), time.process_time()
                forward(tok, pos)
                s, sc = time.time() - s, time.process_time() - sc
                if r > 0:
                    best, best_cpu = min(best, s), min(best_cpu, sc)
            print(json.dumps(dict(impl="torch", type=str(dt).replace("torch.", ""), layers=L,
                                  tokens=T, prefix=P, threads=threads, ms=round(best * 1e3, 2),
                                  cpu_ms=round(best_cpu * 1e3, 2))),
                  flush=True)
        # plain matmul throughput: (T, E) x (E, F)
        a, b = rnd(max(toks), E, scale=1.0), rnd(F, E)
        a @ b.T
        best, best_cpu = 1e30, 1e30
        for _ in range(3):
            s, sc = time.time(), time.process_time()
            a @ b.T
            best, best_cpu = min(best, time.time() - s), min(best_cpu, time.process_time() - sc)
        fl = 2.0 * max(toks) * E * F
        print(json.dumps(dict(impl="torch-matmul", type=str(dt).replace("torch.", ""),
                              shape=[max(toks), E, F], gflops=round(fl / best / 1e9, 1),
                              gflops_per_cpu_s=round(fl / best_cpu / 1e9, 1),
                              libs=blas_library(), torch=torch.__version__)), flush=True)


if __name__ == "__main__":
    main()
