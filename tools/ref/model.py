"""model.py - an independent PyTorch reference of the two diffusion-LM transformers
lopad runs (Dream = Qwen2-style block, LLaDA = LLaMA-style block), written from the
architecture description in docs/research/dpad_fastdllm.md section 6, not from the
Hugging Face modeling files.

The forward is deliberately plain: one loop over layers, explicit RoPE, explicit
softmax attention. It computes in float32 or float64 (the fixtures use float64 so
the golden logits are the "exact" values of the stored weights).

Weights live in a canonical dict keyed by the GGUF tensor names that lopad also
uses internally (token_embd.weight, blk.N.attn_q.weight, ...), with PyTorch shapes
[n_out, n_in]. Loaders for the Hugging Face layouts (Dream/Qwen2 names, LLaDA names),
for GGUF (through the `gguf` package) and for PEFT LoRA adapters are below.

Only needed for regenerating fixtures: lopad itself never runs Python.
"""

import json
import math
import os
import struct

import numpy as np
import torch

# ----------------------------------------------------------------- config


class Config:
    """Hyper-parameters of one model (names follow include/lopad.h)."""

    def __init__(self, arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab,
                 rope_theta, norm_eps, rope="neox", has_qkv_bias=None):
        assert arch in ("dream", "llada")
        assert rope in ("neox", "norm")
        self.arch = arch
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_head_kv = n_head_kv
        self.head_dim = n_embd // n_head
        self.n_ff = n_ff
        self.n_vocab = n_vocab
        self.rope_theta = float(rope_theta)
        self.norm_eps = float(norm_eps)
        self.rope = rope
        self.has_qkv_bias = (arch == "dream") if has_qkv_bias is None else has_qkv_bias

    @staticmethod
    def from_hf_config(cfg):
        """Read a Hugging Face config.json dict (Dream/Qwen2 or LLaDA field names)."""
        mt = str(cfg.get("model_type", "")).lower()
        if mt == "dream":
            return Config("dream", cfg["hidden_size"], cfg["num_hidden_layers"],
                          cfg["num_attention_heads"],
                          cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
                          cfg["intermediate_size"], cfg["vocab_size"],
                          cfg.get("rope_theta", 10000.0), cfg.get("rms_norm_eps", 1e-6))
        if mt == "llada":
            n_head = cfg["n_heads"]
            return Config("llada", cfg["d_model"], cfg["n_layers"], n_head,
                          cfg.get("n_kv_heads") or n_head, cfg["mlp_hidden_size"],
                          cfg.get("embedding_size") or cfg["vocab_size"],
                          cfg.get("rope_theta", 10000.0), cfg.get("rms_norm_eps", 1e-5))
        raise ValueError("unknown model_type %r" % mt)


# ------------------------------------------------------------ the forward


def rms_norm(x, w, eps):
    """RMSNorm: x * rsqrt(mean(x^2) + eps), computed in at least fp32, then * w."""
    xf = x if x.dtype == torch.float64 else x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y.to(x.dtype) * w


def rope_tables(pos, head_dim, theta, dtype):
    """cos/sin for each (token, frequency): angle = pos * theta^(-2i/head_dim),
    i = 0 .. head_dim/2-1. Shapes (n, head_dim/2)."""
    half = head_dim // 2
    # The exponent is computed in float64 so float32 and float64 runs share the
    # same frequencies (the float32 engine computes them in float/double too).
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, dtype=torch.float64) * 2.0 / head_dim))
    ang = pos.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin, kind):
    """x: (n, heads, head_dim). NEOX rotates pairs (i, i + d/2) (the HF
    rotate-half form x*cos + rotate_half(x)*sin); NORM rotates adjacent pairs
    (2i, 2i+1) (llama.cpp's layout for the permuted LLaDA GGUF)."""
    c = cos[:, None, :]
    s = sin[:, None, :]
    if kind == "neox":
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def block_mask(blocks):
    """Block-causal mask: query i sees key j iff block[j] <= block[i]."""
    b = torch.as_tensor(blocks)
    return b[None, :] <= b[:, None]


def forward(cfg, W, tokens, pos, mask=None, dtype=torch.float64, return_hidden=False):
    """Logits (n, n_vocab) for the fed tokens.

    tokens, pos: sequences of n ints (pos = RoPE position ids, any order / gaps).
    mask: optional bool (n, n) with mask[i, j] = query i may attend key j;
          None = fully bidirectional (the models' own setting).
    W: canonical weight dict (torch tensors, any float dtype; cast to `dtype`).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    pos = torch.as_tensor(pos, dtype=torch.long)
    n = tokens.shape[0]
    hd, nh, nkv = cfg.head_dim, cfg.n_head, cfg.n_head_kv
    group = nh // nkv
    g = lambda name: W[name].to(dtype)  # noqa: E731

    cos, sin = rope_tables(pos, hd, cfg.rope_theta, dtype)
    x = g("token_embd.weight")[tokens]  # (n, n_embd)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        assert mask.shape == (n, n)
    scale = 1.0 / math.sqrt(hd)

    for il in range(cfg.n_layer):
        p = "blk.%d." % il
        bias = (lambda nm: g(p + nm)) if cfg.has_qkv_bias else (lambda nm: None)
        h = rms_norm(x, g(p + "attn_norm.weight"), cfg.norm_eps)
        q = linear(h, g(p + "attn_q.weight"), bias("attn_q.bias")).view(n, nh, hd)
        k = linear(h, g(p + "attn_k.weight"), bias("attn_k.bias")).view(n, nkv, hd)
        v = linear(h, g(p + "attn_v.weight"), bias("attn_v.bias")).view(n, nkv, hd)
        q = apply_rope(q, cos, sin, cfg.rope)
        k = apply_rope(k, cos, sin, cfg.rope)
        # GQA: query head hq reads kv head hq // group (kv heads repeated in place).
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        att = torch.einsum("qhd,khd->hqk", q, k) * scale  # (nh, n, n)
        if mask is not None:
            att = att.masked_fill(~mask[None, :, :], float("-inf"))
        att = torch.softmax(att, dim=-1)
        o = torch.einsum("hqk,khd->qhd", att, v).reshape(n, nh * hd)
        x = x + linear(o, g(p + "attn_output.weight"))

        h = rms_norm(x, g(p + "ffn_norm.weight"), cfg.norm_eps)
        gate = linear(h, g(p + "ffn_gate.weight"))
        up = linear(h, g(p + "ffn_up.weight"))
        x = x + linear(torch.nn.functional.silu(gate) * up, g(p + "ffn_down.weight"))

    x = rms_norm(x, g("output_norm.weight"), cfg.norm_eps)
    logits = linear(x, g("output.weight"))
    return (logits, x) if return_hidden else logits


# ------------------------------------------------------- tensor name maps


def hf_names(cfg):
    """canonical name -> Hugging Face name for cfg.arch."""
    m = {}
    if cfg.arch == "dream":
        m["token_embd.weight"] = "model.embed_tokens.weight"
        m["output_norm.weight"] = "model.norm.weight"
        m["output.weight"] = "lm_head.weight"
        per = {
            "attn_norm.weight": "input_layernorm.weight",
            "attn_q.weight": "self_attn.q_proj.weight",
            "attn_q.bias": "self_attn.q_proj.bias",
            "attn_k.weight": "self_attn.k_proj.weight",
            "attn_k.bias": "self_attn.k_proj.bias",
            "attn_v.weight": "self_attn.v_proj.weight",
            "attn_v.bias": "self_attn.v_proj.bias",
            "attn_output.weight": "self_attn.o_proj.weight",
            "ffn_norm.weight": "post_attention_layernorm.weight",
            "ffn_gate.weight": "mlp.gate_proj.weight",
            "ffn_up.weight": "mlp.up_proj.weight",
            "ffn_down.weight": "mlp.down_proj.weight",
        }
        pre = "model.layers.%d."
    else:
        m["token_embd.weight"] = "model.transformer.wte.weight"
        m["output_norm.weight"] = "model.transformer.ln_f.weight"
        m["output.weight"] = "model.transformer.ff_out.weight"
        per = {
            "attn_norm.weight": "attn_norm.weight",
            "attn_q.weight": "q_proj.weight",
            "attn_k.weight": "k_proj.weight",
            "attn_v.weight": "v_proj.weight",
            "attn_output.weight": "attn_out.weight",
            "ffn_norm.weight": "ff_norm.weight",
            "ffn_gate.weight": "ff_proj.weight",  # LLaDA's ff_proj is the GATE
            "ffn_up.weight": "up_proj.weight",
            "ffn_down.weight": "ff_out.weight",  # per-block ff_out is the DOWN projection
        }
        pre = "model.transformer.blocks.%d."
    for il in range(cfg.n_layer):
        for k, v in per.items():
            m["blk.%d.%s" % (il, k)] = (pre % il) + v
    return m


# ---------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": (np.float32, 4), "F64": (np.float64, 8), "F16": (np.float16, 2),
              "BF16": (None, 2)}


def read_safetensors(path):
    """name -> float32 numpy array (BF16 widened exactly). A small reader of our
    own, so the reference does not depend on the writer it checks."""
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    hdr = json.loads(buf[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        dt, size = _ST_DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        raw = buf[base + a:base + b]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).astype(np.float32)
        out[name] = arr.reshape(shape).copy()
    return out


def load_hf(model_dir):
    """(Config, canonical weight dict) from a Hugging Face directory."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config.from_hf_config(json.load(f))
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        tensors.update(read_safetensors(os.path.join(model_dir, fn)))
    W = {canon: torch.from_numpy(tensors[hf]) for canon, hf in hf_names(cfg).items()
         if hf in tensors}
    return cfg, W


# ----------------------------------------------------------------- LoRA


def merge_lora(cfg, W, adapter_dir):
    """Return a copy of W with a PEFT LoRA adapter merged:
    W' = W + s * B @ A, s = alpha / r (or alpha / sqrt(r) with use_rslora)."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        ac = json.load(f)
    r, alpha = ac["r"], ac["lora_alpha"]
    s = alpha / math.sqrt(r) if ac.get("use_rslora") else alpha / r
    ad = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    out = {k: v.clone() for k, v in W.items()}
    n_merged = 0
    for canon, hf in hf_names(cfg).items():
        stem = "base_model.model." + hf[:-len(".weight")]
        ka, kb = stem + ".lora_A.weight", stem + ".lora_B.weight"
        if ka in ad:
            A = torch.from_numpy(ad[ka]).double()
            B = torch.from_numpy(ad[kb]).double()
            out[canon] = (W[canon].double() + s * (B @ A)).to(W[canon].dtype)
            n_merged += 1
    assert n_merged > 0, "adapter targets nothing"
    return out


# ----------------------------------------------------------------- GGUF


def load_gguf(path):
    """(Config, canonical weight dict, metadata dict) from a GGUF file through
    the `gguf` package's reader; quantised tensors are dequantised."""
    import gguf
    from gguf.quants import dequantize

    rd = gguf.GGUFReader(path)

    def val(key, default=None):
        fld = rd.fields.get(key)
        if fld is None:
            return default
        return fld.contents()

    arch = val("general.architecture")
    a = arch
    n_embd = int(val(a + ".embedding_length"))
    n_head = int(val(a + ".attention.head_count"))
    W = {}
    n_vocab = None
    for t in rd.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]  # PyTorch order
        arr = dequantize(t.data, t.tensor_type).astype(np.float32)
        W[t.name] = torch.from_numpy(np.ascontiguousarray(arr.reshape(shape)))
        if t.name == "token_embd.weight":
            n_vocab = shape[0]
    cfg = Config(arch, n_embd, int(val(a + ".block_count")), n_head,
                 int(val(a + ".attention.head_count_kv", n_head)),
                 int(val(a + ".feed_forward_length")), n_vocab,
                 float(val(a + ".rope.freq_base")),
                 float(val(a + ".attention.layer_norm_rms_epsilon")),
                 rope="norm" if arch == "llada" else "neox")
    meta = {k: f.contents() for k, f in rd.fields.items()
            if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
    return cfg, W, meta


def permute_norm(w, n_head):
    """HF rotate-half rows -> interleaved rows, as llama.cpp's LLaMA-family
    converter does: reshape(n_head, 2, d/n_head/2, ...).swapaxes(1, 2)."""
    shp = w.shape
    return (w.reshape(n_head, 2, shp[0] // n_head // 2, *shp[1:])
            .swapaxes(1, 2).reshape(shp))
