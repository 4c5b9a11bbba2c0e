"""make_fixtures.py - regenerate every golden fixture under tests/fixtures/.

    /usr/bin/python3 tools/ref/make_fixtures.py            # from the repository root

Needs torch + numpy, and the `gguf` and `safetensors` PyPI packages (independent
writers, so lopad's readers are checked against code that is not ours). Output is
deterministic (fixed seeds). See tools/ref/README.md for the layout and the golden
file format.

What it writes:
  tiny-dream/         HF directory, Dream/Qwen2 names, BF16 model.safetensors
  tiny-dream-lora/    PEFT adapter (q,k,v,o_proj; plain alpha/r scale)
  tiny-dream.gguf     GGUF F32   (arch dream, NEOX RoPE, tensors as stored)
  tiny-dream-bf16.gguf, tiny-dream-q8_0.gguf   the same weights in BF16 / Q8_0
  tiny-llada/         HF directory, LLaDA names, F32, sharded in 2 files + index
  tiny-llada-lora/    PEFT adapter (q,k,v_proj, attn_out; use_rslora)
  tiny-llada.gguf     GGUF F16, q/k rows permuted to interleaved RoPE as llama.cpp does
  golden/*.lpgl       inputs + golden logits (float64 reference, stored as f32)

All weights are rounded to values exactly representable in BF16 and F16, so the
F32, BF16 and F16 files hold the same numbers and share golden logits.
"""

import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402

import gguf  # noqa: E402
from gguf.quants import quantize, dequantize  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures")
GOLD = os.path.join(OUT, "golden")

N_VOCAB = 272
N_CTX = 512
# rows of the long case kept in its golden: block edges, tile edges (32, 64), ends
LONG_ROWS = [0, 5, 19, 20, 31, 32, 33, 39, 40, 47, 59, 60, 63, 64, 69]

# ---------------------------------------------------------------- tokenizer
# A tiny byte-level BPE vocabulary: the 256 GPT-2 byte symbols, 8 merges, then
# special tokens, then unused rows (like the real checkpoints, whose embedding
# tables are larger than the tokenizer).

MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("Ġ", "a"),
          ("o", "n"), ("r", "e")]

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"]

DREAM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLADA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")


def byte_symbols():
    """GPT-2's reversible byte -> printable unicode map, in its id order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cps = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            cps.append(256 + n)
            n += 1
    return [chr(c) for c in cps]  # id i -> symbol of byte keep[i]


def vocab(specials):
    toks = byte_symbols() + [a + b for a, b in MERGES]
    n_normal = len(toks)
    toks += specials
    n_tok = len(toks)
    assert n_tok <= N_VOCAB
    return toks, n_normal, n_tok


def write_tokenizer(d, specials, special_roles, template, add_bos):
    toks, n_normal, n_tok = vocab(specials)
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": n_normal + i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(specials)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(toks[:n_normal])},
                  "merges": ["%s %s" % m for m in MERGES]},
    }
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    tc = {"add_bos_token": add_bos, "add_eos_token": False, "chat_template": template,
          "clean_up_tokenization_spaces": False, "model_max_length": N_CTX,
          "tokenizer_class": "PreTrainedTokenizerFast",
          "added_tokens_decoder": {str(n_normal + i): {"content": s, "special": True}
                                   for i, s in enumerate(specials)}}
    tc.update(special_roles)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, ensure_ascii=False, indent=1)


def gguf_tokenizer(w, specials, ids, template, add_bos):
    toks, n_normal, n_tok = vocab(specials)
    types = [gguf.TokenType.NORMAL] * n_normal + [gguf.TokenType.CONTROL] * len(specials)
    for i in range(n_tok, N_VOCAB):  # as llama.cpp pads a short tokenizer
        toks.append("[PAD%d]" % i)
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["%s %s" % m for m in MERGES])
    for key, v in ids.items():
        getattr(w, "add_%s_token_id" % key)(v)
    w.add_add_bos_token(add_bos)
    w.add_chat_template(template)


# ------------------------------------------------------------------ weights


def exact16(a):
    """Round to BF16 (nearest even), then flush |x| < 2^-14 to 0 so the value is
    also exact in F16: one set of numbers serves F32, BF16 and F16 files."""
    a = np.asarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    r = u.astype(np.uint32).view(np.float32)
    r = np.where(np.abs(r) < 2.0 ** -14, np.float32(0), r).astype(np.float32)
    assert np.array_equal(r.astype(np.float16).astype(np.float32), r)
    return r


def make_weights(cfg, seed):
    """Canonical weight dict with O(1) activations: matrices ~ N(0, 1/n_in),
    norms ~ 1 +- 0.1, biases ~ N(0, 0.1^2), output scaled for logits ~ 2."""
    rs = np.random.RandomState(seed)
    E, F, hd = cfg.n_embd, cfg.n_ff, cfg.head_dim
    nq, nkv = cfg.n_head * hd, cfg.n_head_kv * hd

    def mat(o, i, gain=1.0):
        return exact16(rs.randn(o, i) * gain / math.sqrt(i))

    W = {"token_embd.weight": exact16(rs.randn(cfg.n_vocab, E))}
    for il in range(cfg.n_layer):
        p = "blk.%d." % il
        W[p + "attn_norm.weight"] = exact16(1 + 0.1 * rs.randn(E))
        W[p + "attn_q.weight"] = mat(nq, E, 1.5)
        W[p + "attn_k.weight"] = mat(nkv, E, 1.5)
        W[p + "attn_v.weight"] = mat(nkv, E)
        if cfg.has_qkv_bias:
            W[p + "attn_q.bias"] = exact16(0.1 * rs.randn(nq))
            W[p + "attn_k.bias"] = exact16(0.1 * rs.randn(nkv))
            W[p + "attn_v.bias"] = exact16(0.1 * rs.randn(nkv))
        W[p + "attn_output.weight"] = mat(E, nq)
        W[p + "ffn_norm.weight"] = exact16(1 + 0.1 * rs.randn(E))
        W[p + "ffn_gate.weight"] = mat(F, E)
        W[p + "ffn_up.weight"] = mat(F, E)
        W[p + "ffn_down.weight"] = mat(E, F)
    W["output_norm.weight"] = exact16(1 + 0.1 * rs.randn(E))
    W["output.weight"] = mat(cfg.n_vocab, E, 2.0)
    return W


def write_hf(d, cfg, W, hf_config, dtype, shards=1):
    names = ref.hf_names(cfg)
    tensors = {}
    for canon, arr in W.items():
        tensors[names[canon]] = arr
    if dtype == "bf16":
        def conv(a):  # exact: values are bf16-representable
            return (a.view(np.uint32) >> 16).astype(np.uint16)
        # safetensors.numpy has no bfloat16; write the header ourselves.
        write_st_bf16(os.path.join(d, "model.safetensors"),
                      {k: conv(v) for k, v in tensors.items()},
                      {k: list(v.shape) for k, v in tensors.items()})
    else:
        keys = list(tensors.keys())
        if shards == 1:
            save_file({k: np.ascontiguousarray(tensors[k]) for k in keys},
                      os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        else:
            per = (len(keys) + shards - 1) // shards
            wmap = {}
            total = 0
            for s in range(shards):
                fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
                part = {k: np.ascontiguousarray(tensors[k]) for k in keys[s * per:(s + 1) * per]}
                save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
                for k, v in part.items():
                    wmap[k] = fn
                    total += v.nbytes
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=1)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=1)


def write_st_bf16(path, u16, shapes):
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    blobs = []
    for k in sorted(u16):
        b = u16[k].astype("<u2").tobytes()
        hdr[k] = {"dtype": "BF16", "shape": shapes[k], "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_gguf(path, cfg, W, wtype, name, tok):
    """Write W (canonical names) as GGUF; 1-D tensors stay F32, matrices in wtype."""
    arch = cfg.arch
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_block_count(cfg.n_layer)
    w.add_context_length(N_CTX)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_causal_attention(False)
    ft = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[wtype]
    w.add_file_type(ft)
    if wtype == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if arch == "llada":
        w.add_vocab_size(cfg.n_vocab)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_diffusion_shift_logits(False)
    gguf_tokenizer(w, *tok)
    for nm in sorted(W, key=gguf_order):
        a = np.ascontiguousarray(W[nm], dtype=np.float32)
        if a.ndim == 1 or wtype == "f32":
            w.add_tensor(nm, a)
        elif wtype == "f16":
            w.add_tensor(nm, a.astype(np.float16))
        else:
            qt = {"bf16": gguf.GGMLQuantizationType.BF16,
                  "q8_0": gguf.GGMLQuantizationType.Q8_0}[wtype]
            w.add_tensor(nm, quantize(a, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_order(nm):
    # token_embd first, then layers in order, output tensors last (converter order)
    if nm.startswith("blk."):
        return (1, int(nm.split(".")[1]), nm)
    return (0 if nm.startswith("token_embd") else 2, 0, nm)


def write_lora(d, cfg, targets, r, alpha, rslora, seed, dtype):
    """PEFT adapter: lora_A [r, in], lora_B [out, r] for each targeted HF module."""
    rs = np.random.RandomState(seed)
    names = ref.hf_names(cfg)
    t = {}
    hf_targets = set()
    for canon in sorted(names):
        hf = names[canon]
        if not hf.endswith(".weight"):
            continue
        leaf = hf[:-len(".weight")].split(".")[-1]
        if leaf not in targets:
            continue
        hf_targets.add(leaf)
        n_in = {"attn_output.weight": cfg.n_head * cfg.head_dim}.get(canon.split(".", 2)[2],
                                                                    cfg.n_embd)
        n_out = {"attn_q.weight": cfg.n_head * cfg.head_dim,
                 "attn_k.weight": cfg.n_head_kv * cfg.head_dim,
                 "attn_v.weight": cfg.n_head_kv * cfg.head_dim,
                 "attn_output.weight": cfg.n_embd}[canon.split(".", 2)[2]]
        stem = "base_model.model." + hf[:-len(".weight")]
        t[stem + ".lora_A.weight"] = exact16(rs.randn(r, n_in) / math.sqrt(n_in))
        t[stem + ".lora_B.weight"] = exact16(rs.randn(n_out, r) * 0.1)
    assert hf_targets == set(targets), hf_targets
    if dtype == "bf16":
        write_st_bf16(os.path.join(d, "adapter_model.safetensors"),
                      {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in t.items()},
                      {k: list(v.shape) for k, v in t.items()})
    else:
        save_file(t, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
    ac = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
          "r": r, "lora_alpha": alpha, "lora_dropout": 0.05, "bias": "none",
          "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
          "target_modules": list(targets), "use_rslora": rslora, "use_dora": False,
          "modules_to_save": None, "layers_to_transform": None, "revision": None}
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(ac, f, indent=1)


# ------------------------------------------------------------ golden files

LPGL_MAGIC = b"LPGL"
LPGL_VERSION = 1


def write_lpgl(path, tokens, pos, blocks, logits, rows=None):
    """rows: the fed rows whose logits are stored (None = every row, in order)."""
    n = len(tokens)
    nv = logits.shape[1]
    assert logits.shape == (n, nv)
    flags = 1 if blocks is not None else 0
    blk = blocks if blocks is not None else [0] * n
    with open(path, "wb") as f:
        f.write(LPGL_MAGIC)
        f.write(struct.pack("<IIIII", LPGL_VERSION, n, nv, flags, 0 if rows is None else len(rows)))
        f.write(np.asarray(tokens, dtype="<i4").tobytes())
        f.write(np.asarray(pos, dtype="<i4").tobytes())
        f.write(np.asarray(blk, dtype="<i4").tobytes())
        if rows is not None:
            f.write(np.asarray(rows, dtype="<i4").tobytes())
            logits = logits[list(rows)]
        f.write(np.asarray(logits, dtype="<f4").tobytes())


def read_lpgl(path):
    """(tokens, pos, blocks or None, logits of the stored rows, rows or None)."""
    with open(path, "rb") as f:
        b = f.read()
    assert b[:4] == LPGL_MAGIC
    ver, n, nv, flags, n_out = struct.unpack_from("<IIIII", b, 4)
    assert ver == LPGL_VERSION
    o = 24
    arr = lambda cnt, dt: np.frombuffer(b, dtype=dt, count=cnt, offset=o).copy()  # noqa: E731
    tokens = arr(n, "<i4"); o += 4 * n
    pos = arr(n, "<i4"); o += 4 * n
    blk = arr(n, "<i4"); o += 4 * n
    rows = None
    if n_out:
        rows = arr(n_out, "<i4"); o += 4 * n_out
    logits = arr((n_out or n) * nv, "<f4").reshape(n_out or n, nv)
    assert o + logits.nbytes == len(b)
    return tokens, pos, (blk if flags & 1 else None), logits, rows


# ------------------------------------------------------------------ checks


def max_rel(a, b):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def act_round_forward(cfg, W, tokens, pos, mask, kind):
    """Forward where every matmul input is rounded the way a reduced-precision
    engine might (bf16 / f16 activations, or ggml's Q8_0 activation blocks); used
    only to size the tolerances of the C test."""
    orig = ref.linear

    def rnd(x):
        if kind == "bf16":
            return torch.from_numpy(exact16(x.float().numpy()).astype(np.float64))
        if kind == "f16":
            return x.to(torch.float16).to(torch.float64)
        shp = x.shape
        xb = x.reshape(-1, 32)
        d = xb.abs().max(dim=1, keepdim=True).values / 127.0
        d = d.to(torch.float16).to(torch.float64)
        q = torch.where(d > 0, torch.round(xb / torch.where(d > 0, d, torch.ones_like(d))),
                        torch.zeros_like(xb))
        return (q * d).reshape(shp)

    ref.linear = lambda x, w, b=None: orig(rnd(x), w, b)
    try:
        return ref.forward(cfg, W, tokens, pos, mask)
    finally:
        ref.linear = orig


# -------------------------------------------------------------------- main


def main():
    torch.set_grad_enabled(False)
    for sub in ("tiny-dream", "tiny-dream-lora", "tiny-llada", "tiny-llada-lora", "golden"):
        p = os.path.join(OUT, sub)
        if os.path.isdir(p):
            shutil.rmtree(p)
        os.makedirs(p)

    # --- configurations (spec: Qwen2 / LLaDA field names) ---
    dcfg = ref.Config("dream", 64, 2, 4, 2, 128, N_VOCAB, 10000.0, 1e-6)
    lcfg = ref.Config("llada", 64, 2, 4, 4, 128, N_VOCAB, 500000.0, 1e-5)
    dtoks, dn_normal, _ = vocab(DREAM_SPECIALS)
    ltoks, ln_normal, _ = vocab(LLADA_SPECIALS)
    d_eos, d_bos, d_mask = dn_normal + 0, dn_normal + 3, dn_normal + 4
    l_bos, l_eos, l_mask, l_eot = ln_normal + 0, ln_normal + 1, ln_normal + 2, ln_normal + 5
    dream_hf = {
        "architectures": ["DreamModel"], "model_type": "Dream",
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig",
                     "AutoModel": "modeling_dream.DreamModel"},
        "hidden_size": dcfg.n_embd, "num_hidden_layers": dcfg.n_layer,
        "num_attention_heads": dcfg.n_head, "num_key_value_heads": dcfg.n_head_kv,
        "intermediate_size": dcfg.n_ff, "vocab_size": dcfg.n_vocab, "hidden_act": "silu",
        "rope_theta": dcfg.rope_theta, "rope_scaling": None, "rms_norm_eps": dcfg.norm_eps,
        "max_position_embeddings": N_CTX, "max_window_layers": dcfg.n_layer,
        "sliding_window": None, "use_sliding_window": False, "attention_dropout": 0.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": False,
        "mask_token_id": d_mask, "bos_token_id": d_bos, "eos_token_id": d_eos,
        "pad_token_id": d_eos, "initializer_range": 0.02,
    }
    llada_hf = {
        "architectures": ["LLaDAModelLM"], "model_type": "llada",
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModel": "modeling_llada.LLaDAModelLM"},
        "d_model": lcfg.n_embd, "n_layers": lcfg.n_layer, "n_heads": lcfg.n_head,
        "n_kv_heads": lcfg.n_head_kv, "mlp_hidden_size": lcfg.n_ff, "mlp_ratio": 2,
        "vocab_size": lcfg.n_vocab, "embedding_size": lcfg.n_vocab,
        "rope": True, "rope_theta": lcfg.rope_theta, "rope_full_precision": True,
        "rms_norm_eps": lcfg.norm_eps, "layer_norm_type": "rms", "activation_type": "silu",
        "block_type": "llama", "max_sequence_length": N_CTX, "include_bias": False,
        "include_qkv_bias": False, "bias_for_layer_norm": False, "weight_tying": False,
        "scale_logits": False, "input_emb_norm": False, "alibi": False, "multi_query_attention":
        None, "attention_layer_norm": False, "use_cache": False, "torch_dtype": "float32",
        "mask_token_id": l_mask, "eos_token_id": l_eos, "pad_token_id": l_eos,
        "bos_token_id": l_bos,
    }

    dW = make_weights(dcfg, 1234)
    lW = make_weights(lcfg, 5678)

    # --- Dream files ---
    dd = os.path.join(OUT, "tiny-dream")
    write_hf(dd, dcfg, dW, dream_hf, "bf16")
    write_tokenizer(dd, DREAM_SPECIALS,
                    {"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>",
                     "pad_token": "<|endoftext|>", "mask_token": "<|mask|>"},
                    DREAM_TEMPLATE, False)
    dtok = (DREAM_SPECIALS, {"bos": d_bos, "eos": d_eos, "pad": d_eos, "mask": d_mask},
            DREAM_TEMPLATE, False)
    for wt, fn in (("f32", "tiny-dream.gguf"), ("bf16", "tiny-dream-bf16.gguf"),
                   ("q8_0", "tiny-dream-q8_0.gguf")):
        write_gguf(os.path.join(OUT, fn), dcfg, dW, wt, "tiny-dream", dtok)
    write_lora(os.path.join(OUT, "tiny-dream-lora"), dcfg, ["q_proj", "k_proj", "v_proj", "o_proj"],
               r=4, alpha=8, rslora=False, seed=99, dtype="bf16")

    # --- LLaDA files ---
    ld = os.path.join(OUT, "tiny-llada")
    write_hf(ld, lcfg, lW, llada_hf, "f32", shards=2)
    write_tokenizer(ld, LLADA_SPECIALS,
                    {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                     "pad_token": "<|endoftext|>", "mask_token": "<|mdm_mask|>"},
                    LLADA_TEMPLATE, True)
    lWp = dict(lW)
    for il in range(lcfg.n_layer):
        lWp["blk.%d.attn_q.weight" % il] = ref.permute_norm(lW["blk.%d.attn_q.weight" % il],
                                                            lcfg.n_head)
        lWp["blk.%d.attn_k.weight" % il] = ref.permute_norm(lW["blk.%d.attn_k.weight" % il],
                                                            lcfg.n_head_kv)
    ltok = (LLADA_SPECIALS, {"bos": l_bos, "eos": l_eos, "pad": l_eos, "mask": l_mask,
                             "eot": l_eot}, LLADA_TEMPLATE, True)
    write_gguf(os.path.join(OUT, "tiny-llada.gguf"), lcfg, lWp, "f16", "tiny-llada", ltok)
    write_lora(os.path.join(OUT, "tiny-llada-lora"), lcfg, ["q_proj", "k_proj", "v_proj", "attn_out"],
               r=4, alpha=8, rslora=True, seed=77, dtype="f32")

    # --- read every file back through the reference's own readers ---
    dcfg_hf, dW_hf = ref.load_hf(dd)
    lcfg_hf, lW_hf = ref.load_hf(ld)
    for a, b in ((dW, dW_hf), (lW, lW_hf)):
        assert set(a) == set(b)
        for k in a:
            assert np.array_equal(a[k], b[k].numpy()), k
    dcfg_g, dW_g, _ = ref.load_gguf(os.path.join(OUT, "tiny-dream.gguf"))
    _, dW_bf, _ = ref.load_gguf(os.path.join(OUT, "tiny-dream-bf16.gguf"))
    _, dW_q8, _ = ref.load_gguf(os.path.join(OUT, "tiny-dream-q8_0.gguf"))
    lcfg_g, lW_g, lmeta = ref.load_gguf(os.path.join(OUT, "tiny-llada.gguf"))
    assert lcfg_g.rope == "norm" and dcfg_g.rope == "neox"
    for k in dW:
        assert np.array_equal(dW[k], dW_g[k].numpy()), k
        assert np.array_equal(dW[k], dW_bf[k].numpy()), k
    for k in lW:
        assert np.array_equal(lWp[k], lW_g[k].numpy()), k
    assert lmeta["diffusion.shift_logits"] is False or lmeta["diffusion.shift_logits"] == 0

    # --- inputs ---
    # (a) 12 fed tokens at positions 0..11: a prompt then a masked canvas
    # (b) DPad-pruned: prefix 0..5 kept, suffix masks kept at 9, 12, 20 only
    # (c) the same 12 tokens, block-causal with blocks of 4
    def inputs(bos, mask):
        prompt = [bos, 72, 101, 108, 108, 111, 44, 256, 259]  # BOS + bytes + merged ids
        a_tok = prompt + [mask] * 3
        a_pos = list(range(12))
        b_tok = prompt[:6] + [mask] * 3
        b_pos = [0, 1, 2, 3, 4, 5, 9, 12, 20]
        c_blk = [i // 4 for i in range(12)]
        return a_tok, a_pos, b_tok, b_pos, c_blk

    sizes = {}
    for tag, cfg, W, cfg_hf, W_hf, special, lora_dir in (
            ("dream", dcfg, dW, dcfg_hf, dW_hf, (d_bos, d_mask), "tiny-dream-lora"),
            ("llada", lcfg, lW, lcfg_hf, lW_hf, (l_bos, l_mask), "tiny-llada-lora")):
        a_tok, a_pos, b_tok, b_pos, c_blk = inputs(*special)
        la = ref.forward(cfg_hf, W_hf, a_tok, a_pos)
        lb = ref.forward(cfg_hf, W_hf, b_tok, b_pos)
        lc = ref.forward(cfg_hf, W_hf, a_tok, a_pos, ref.block_mask(c_blk))
        Wl = ref.merge_lora(cfg_hf, W_hf, os.path.join(OUT, lora_dir))
        ld_ = ref.forward(cfg_hf, Wl, a_tok, a_pos)
        write_lpgl(os.path.join(GOLD, tag + "-full.lpgl"), a_tok, a_pos, None, la)
        write_lpgl(os.path.join(GOLD, tag + "-pruned.lpgl"), b_tok, b_pos, None, lb)
        write_lpgl(os.path.join(GOLD, tag + "-block.lpgl"), a_tok, a_pos, c_blk, lc)
        write_lpgl(os.path.join(GOLD, tag + "-lora.lpgl"), a_tok, a_pos, None, ld_)
        # (e) long: 70 tokens (several 32-key attention tiles), blocks of 20, the last
        # block's positions spread out; a subset of rows is stored to keep the file small
        rs = np.random.RandomState(42)
        e_tok = [special[0]] + rs.randint(0, 256, 49).tolist() + [special[1]] * 20
        e_pos = list(range(60)) + [60 + 3 * i for i in range(10)]
        e_blk = [i // 20 for i in range(70)]
        le = ref.forward(cfg_hf, W_hf, e_tok, e_pos, ref.block_mask(e_blk))
        write_lpgl(os.path.join(GOLD, tag + "-long.lpgl"), e_tok, e_pos, e_blk, le,
                   rows=LONG_ROWS)
        # the long case's rows of block 0 = block 0 fed alone (mask sanity)
        assert max_rel(ref.forward(cfg_hf, W_hf, e_tok[:20], e_pos[:20]), le[:20]) < 1e-12

        # self-checks of the reference and the fixtures
        lf32 = ref.forward(cfg_hf, W_hf, a_tok, a_pos, dtype=torch.float32)
        assert max_rel(lf32, la) < 1e-5, max_rel(lf32, la)
        # the first block under the block-causal mask = that block fed alone
        assert max_rel(ref.forward(cfg_hf, W_hf, a_tok[:4], a_pos[:4]), lc[:4]) < 1e-12
        # an all-true mask = no mask
        assert max_rel(ref.forward(cfg_hf, W_hf, a_tok, a_pos, torch.ones(12, 12, dtype=bool)),
                       la) < 1e-12
        # positions matter (pruned rows differ from a contiguous feed of the same tokens)
        assert max_rel(ref.forward(cfg_hf, W_hf, b_tok, list(range(9))), lb) > 1e-3
        assert max_rel(ld_, la) > 1e-2  # the adapter changes the logits
        sizes[tag] = float(la.abs().max())
        print("%s: logit scale %.3f, LoRA change %.3g" % (tag, sizes[tag], max_rel(ld_, la)))

        for kind in ("bf16", "f16", "q8"):
            dev = max_rel(act_round_forward(cfg_hf, W_hf, a_tok, a_pos, None, kind), la)
            print("  %s: activations rounded to %s before matmuls: max rel dev %.3g"
                  % (tag, kind, dev))

    # GGUF vs HF in the reference: permuted LLaDA with NORM RoPE == HF with NEOX
    a_tok, a_pos, b_tok, b_pos, c_blk = inputs(l_bos, l_mask)
    assert max_rel(ref.forward(lcfg_g, lW_g, b_tok, b_pos),
                   read_lpgl(os.path.join(GOLD, "llada-pruned.lpgl"))[3]) < 1e-6
    # and NEOX on the permuted weights is wrong (the test can tell them apart)
    wrong = ref.Config("llada", 64, 2, 4, 4, 128, N_VOCAB, lcfg.rope_theta, lcfg.norm_eps)
    assert max_rel(ref.forward(wrong, lW_g, b_tok, b_pos),
                   read_lpgl(os.path.join(GOLD, "llada-pruned.lpgl"))[3]) > 1e-2

    # Q8_0: golden of the dequantised weights (what an exact Q8_0 engine computes)
    a_tok, a_pos, b_tok, b_pos, c_blk = inputs(d_bos, d_mask)
    lq = ref.forward(dcfg_g, dW_q8, a_tok, a_pos)
    write_lpgl(os.path.join(GOLD, "dream-q8_0-full.lpgl"), a_tok, a_pos, None, lq)
    la = read_lpgl(os.path.join(GOLD, "dream-full.lpgl"))[3]
    print("dream q8_0 weights vs f32: max rel dev %.3g" % max_rel(lq, la))
    print("  q8_0 weights + q8_0 activations vs q8_0 golden: %.3g" %
          max_rel(act_round_forward(dcfg_g, dW_q8, a_tok, a_pos, None, "q8"), lq))
    # GGUF F32 read back == HF: same golden
    assert max_rel(ref.forward(dcfg_g, dW_g, a_tok, a_pos), la) < 1e-6

    total = 0
    for dp, _, fns in os.walk(OUT):
        if os.path.relpath(dp, OUT).startswith("tmp"):
            continue
        for fn in fns:
            total += os.path.getsize(os.path.join(dp, fn))
    print("fixtures: %.1f KiB" % (total / 1024.0))


if __name__ == "__main__":
    main()
