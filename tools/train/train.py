"""train.py - train the demo Dream-architecture diffusion LM on the generated task.

    /usr/bin/python3 tools/train/train.py --data tools/train/data \
        --tokenizer tools/train/out/tokenizer --out tools/train/out/ckpt.pt

The model is the Dream block (Qwen2-style: pre-RMSNorm, q/k/v bias, GQA, NEOX RoPE,
SwiGLU, untied head) with fully bidirectional attention and shifted logits: the
prediction for position j is read from output j-1. Parameter names are the Hugging Face
Dream/Qwen2 names, so export.py writes the state dict as it is.

Objective (masked diffusion, as Dream/LLaDA SFT): per sequence t ~ U(eps, 1]; every
answer-canvas token (answer, <|im_end|>, then <|endoftext|> padding) is replaced by
<|mask|> with probability t; the prompt is never masked; loss = sum over masked
positions of CE / t, divided by the canvas length. The canvas length is drawn per
sequence between answer + 1 and --canvas, so any --gen up to --canvas fits.

Runs on one CPU thread (torch.set_num_threads(1)); deterministic for a given seed and
step count (the schedule is step-based; --max-minutes only stops early, and the step
reached is printed and stored in the checkpoint).
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpe import Tokenizer  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c["n_head"], c["n_head_kv"], c["n_embd"] // c["n_head"]
        E = c["n_embd"]
        self.q_proj = nn.Linear(E, self.nh * self.hd, bias=True)
        self.k_proj = nn.Linear(E, self.nkv * self.hd, bias=True)
        self.v_proj = nn.Linear(E, self.nkv * self.hd, bias=True)
        self.o_proj = nn.Linear(self.nh * self.hd, E, bias=False)

    def forward(self, x, cos, sin, bias):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        g = self.nh // self.nkv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + bias  # (B, nh, T, T)
        o = torch.softmax(att, -1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))


def rope(x, cos, sin):
    """NEOX (rotate-half) RoPE; x (B, h, T, hd), cos/sin (T, hd/2)."""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["n_embd"], c["n_ff"], bias=False)
        self.up_proj = nn.Linear(c["n_embd"], c["n_ff"], bias=False)
        self.down_proj = nn.Linear(c["n_ff"], c["n_embd"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["n_embd"], c["norm_eps"])
        self.self_attn = Attn(c)
        self.post_attention_layernorm = RMSNorm(c["n_embd"], c["norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, bias):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["n_vocab"], c["n_embd"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["n_layer"])])
        self.norm = RMSNorm(c["n_embd"], c["norm_eps"])


class Dream(nn.Module):
    """State-dict keys = HF Dream names (model.embed_tokens.weight, ..., lm_head.weight)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Body(c)
        self.lm_head = nn.Linear(c["n_embd"], c["n_vocab"], bias=False)
        for n, p in self.named_parameters():
            if n.endswith("norm.weight") or n.endswith("layernorm.weight"):
                continue
            if n.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=0.02)
        # residual-branch outputs scaled down with depth (GPT-2 style)
        for l in self.model.layers:
            nn.init.normal_(l.self_attn.o_proj.weight, std=0.02 / math.sqrt(2 * c["n_layer"]))
            nn.init.normal_(l.mlp.down_proj.weight, std=0.02 / math.sqrt(2 * c["n_layer"]))

    def forward(self, ids, allow):
        """ids (B, T); allow (B, T, T) bool: query i may attend key j (real keys only;
        bidirectional, or block-causal for the D2F-style sequences). Returns logits (B, T, V)."""
        T = ids.shape[1]
        hd = self.c["n_embd"] // self.c["n_head"]
        inv = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, hd // 2, dtype=torch.float64)
                                                * 2.0 / hd))
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
        bias = torch.zeros(allow.shape, dtype=torch.float32).masked_fill(~allow, -1e9)
        bias = bias[:, None, :, :]
        x = self.model.embed_tokens(ids)
        for l in self.model.layers:
            x = l(x, cos, sin, bias)
        return self.lm_head(self.model.norm(x))


def result_flags(tok, ans):
    """1 for the digit tokens of a computed number (after ' =' or '####', or in the
    lopa-demo task's worded form after ' gives'), else 0."""
    flags, after_op = [], False
    for i in ans:
        piece = tok.decode([i])
        if piece.isdigit():
            flags.append(1 if after_op else 0)
            continue
        flags.append(0)
        if piece.strip() in ("=", "####", "gives"):
            after_op = True
        elif piece != " ":
            after_op = False
    return flags


def load_rows(path, tok):
    rows = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            ans = tok.encode(r["answer"])
            rows.append((tok.chat_prompt(r["question"]), ans, result_flags(tok, ans)))
    return rows


def make_batch(rows, rs, tok, canvas, eps=1e-3, d2f_frac=0.0, d2f_blocks=(16,), focus_frac=0.0,
               pad_max=0):
    """(ids_in, targets, allow, loss_w): allow (B, T, T) attention mask, loss_w (B, T) =
    1/(t * canvas_len) on masked canvas positions, 0 elsewhere.

    A fraction d2f_frac of the sequences is D2F-style (discrete diffusion forcing): the
    canvas is cut into blocks of a size drawn from d2f_blocks, attention is block-causal
    (the prompt is block 0; a query sees the prompt, earlier blocks and its own block), and
    each block has its own mask ratio, non-decreasing from left to right. The others are
    plain masked diffusion: one ratio t for the whole canvas, bidirectional attention.

    A fraction focus_frac of the plain sequences is result-focused: a light ratio
    t ~ U(eps, 0.5) over the canvas plus each computed number's digits masked with
    probability 0.7 (the conditionals a confidence-ordered decoder meets when the
    operands are committed and the result is not); these carry weight 1/(0.5 canvas_len)
    per masked position. Still a masked denoiser: only the masking distribution changes."""
    eos, im_end, mask = (tok.special["<|endoftext|>"], tok.special["<|im_end|>"],
                         tok.special["<|mask|>"])
    seqs, focus = [], []
    for prompt, ans, rflags in rows:
        body = ans + [im_end]
        hi = max(len(body), canvas)
        if pad_max > 0:  # at most pad_max EOS after <|im_end|> (shorter sequences)
            hi = min(hi, len(body) + pad_max)
        G = rs.randint(len(body), hi)
        seqs.append((prompt, body + [eos] * (G - len(body))))
        focus.append(rflags)
    T = max(len(p) + len(c) for p, c in seqs)
    B = len(seqs)
    x0 = torch.full((B, T), eos, dtype=torch.long)
    allow = torch.zeros(B, T, T, dtype=torch.bool)
    is_canvas = torch.zeros(B, T, dtype=torch.bool)
    t = torch.ones(B, T)
    force = torch.zeros(B, T, dtype=torch.bool)
    wt = torch.zeros(B, T)
    for i, (p, c) in enumerate(seqs):
        P, n = len(p), len(p) + len(c)
        x0[i, :n] = torch.tensor(p + c)
        is_canvas[i, P:n] = True
        if rs.random() < d2f_frac:
            bs = rs.choice(d2f_blocks)
            nb = (len(c) + bs - 1) // bs
            blk = torch.zeros(n, dtype=torch.long)
            blk[P:] = 1 + torch.arange(len(c)) // bs
            allow[i, :n, :n] = blk[None, :] <= blk[:, None]
            tb = sorted((1 - eps) * rs.random() + eps for _ in range(nb))
            t[i, P:n] = torch.tensor(tb)[blk[P:] - 1]
        elif rs.random() < focus_frac / max(1e-9, 1 - d2f_frac):
            allow[i, :n, :n] = True
            t[i, :] = 0.5 * rs.random() + eps
            fl = torch.tensor(focus[i], dtype=torch.bool)
            force[i, P:P + len(fl)] = fl & (torch.rand(len(fl)) < 0.7)
            wt[i, :] = 0.5
        else:
            allow[i, :n, :n] = True
            t[i, :] = (1 - eps) * rs.random() + eps
    masked = ((torch.rand(B, T) < t) | force) & is_canvas
    # at least one masked position per sequence
    for i in range(B):
        if not masked[i].any():
            idx = is_canvas[i].nonzero().flatten()
            masked[i, idx[torch.randint(len(idx), (1,))]] = True
    # padding rows of the batch attend to themselves only (their outputs carry no loss)
    pad = ~allow.any(-1)
    allow |= pad[:, :, None] & torch.eye(T, dtype=torch.bool)[None]
    xt = torch.where(masked, torch.full_like(x0, mask), x0)
    clen = is_canvas.sum(1, keepdim=True).float()
    w = masked.float() / (torch.where(wt > 0, wt, t) * clen)
    return xt, x0, allow, w


def read_safetensors(path):
    """name -> float32 tensor of an F32 safetensors file (what export.py writes)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", "%s: %s is %s, not F32" % (path, k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).view(v["shape"])
    return out


def loss_fn(model, xt, x0, allow, w):
    logits = model(xt, allow)
    # shifted: output j-1 predicts token j
    lg = logits[:, :-1]
    tg = x0[:, 1:]
    wt = w[:, 1:]
    ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), reduction="none")
    return (ce.view_as(wt) * wt).sum() / xt.shape[0]


def main():
    ap = argparse.ArgumentParser()
    d = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(d, "data"))
    ap.add_argument("--tokenizer", default=os.path.join(d, "out", "tokenizer"))
    ap.add_argument("--out", default=os.path.join(d, "out", "ckpt.pt"))
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--n-ff", type=int, default=512)
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop early (0 = never)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d2f-frac", type=float, default=0.0,
                    help="fraction of sequences trained D2F-style (block-causal attention, "
                    "monotone per-block mask ratios)")
    ap.add_argument("--d2f-blocks", default="8,16", help="block sizes drawn for D2F sequences")
    ap.add_argument("--focus-frac", type=float, default=0.0,
                    help="fraction of all sequences with result-focused masking (see make_batch)")
    ap.add_argument("--stop-at", type=int, default=0,
                    help="stop after this step, schedule unchanged (replays a timed-out run)")
    ap.add_argument("--pad-max", type=int, default=0,
                    help="draw at most this many EOS after <|im_end|> (0 = up to --canvas)")
    ap.add_argument("--init-hf", help="start from the weights of this exported HF directory "
                    "(model.safetensors, F32; same shapes), e.g. models/demo")
    ap.add_argument("--init", help="start from this checkpoint's weights (fresh optimizer and "
                    "schedule; the batch stream is seeded by --seed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rs = random.Random(args.seed)

    tok = Tokenizer(os.path.join(args.tokenizer, "tokenizer.json"))
    n_vocab = max(tok.inv) + 1
    c = {"n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head,
         "n_head_kv": args.n_head_kv, "n_ff": args.n_ff, "n_vocab": n_vocab,
         "rope_theta": 10000.0, "norm_eps": 1e-6, "canvas": args.canvas}
    rows = load_rows(os.path.join(args.data, "train.jsonl"), tok)
    model = Dream(c)
    done_before = 0
    if args.init:
        ck = torch.load(args.init, map_location="cpu")
        same = {k: v for k, v in ck["config"].items() if k != "canvas"}
        assert same == {k: v for k, v in c.items() if k != "canvas"}, \
            "--init checkpoint has another configuration"
        model.load_state_dict(ck["state"])
        done_before = ck.get("total_steps", ck["step"])
    if args.init_hf:
        model.load_state_dict(read_safetensors(os.path.join(args.init_hf, "model.safetensors")))
    n_par = sum(p.numel() for p in model.parameters())
    print("params %d (%.2f M), vocab %d, %d training problems" % (n_par, n_par / 1e6, n_vocab,
                                                                  len(rows)), flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    t0 = time.time()
    avg = None
    step = 0
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * \
            (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = [rows[rs.randrange(len(rows))] for _ in range(args.batch)]
        loss = loss_fn(model, *make_batch(batch, rs, tok, args.canvas, d2f_frac=args.d2f_frac,
                                          d2f_blocks=[int(b) for b in
                                                      args.d2f_blocks.split(",")],
                                          focus_frac=args.focus_frac, pad_max=args.pad_max))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        el = time.time() - t0
        if step % 25 == 0 or step == 1:
            print("step %d loss %.4f (avg %.4f) lr %.2e %.1f s" % (step, loss.item(), avg, lr, el),
                  flush=True)
        last = (args.max_minutes and el > 60 * args.max_minutes) or step == args.stop_at
        if step % 200 == 0 or step == args.steps or last:
            torch.save({"config": c, "state": model.state_dict(), "step": step, "loss_avg": avg,
                        "total_steps": done_before + step,
                        "seconds": el, "args": vars(args)}, args.out)
        if last:
            print("stopped (time budget or --stop-at) at step %d" % step, flush=True)
            break
    print("done: %d steps, %.1f s, loss avg %.4f" % (step, time.time() - t0, avg), flush=True)


if __name__ == "__main__":
    main()
