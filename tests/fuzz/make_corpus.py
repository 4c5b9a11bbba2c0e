#!/usr/bin/env python3
"""make_corpus.py - write the seed corpora under tests/fuzz/corpus/<target>/.

The seeds are small valid (and a few nearly valid) files, built here byte by
byte with struct/json so they do not depend on lopad's own writers. Run it
again after changing it; it rewrites only the files it owns (seed_*).

    python3 tests/fuzz/make_corpus.py
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# ------------------------------------------------------------------- GGUF

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def g_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def g_val(t, v):
    if t == STR:
        return g_str(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for it in items:
            out += g_val(et, it)
        return out
    return struct.pack(SCALAR_FMT[t], v)


# ggml type id -> (block elements, block bytes)
GTYPES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18), 12: (256, 144),
          14: (256, 210)}


def gguf(kvs, tensors, align=32, version=3, data_fill=None):
    """kvs: [(key, type, value)]; tensors: [(name, type, [ne0, ne1, ...])]"""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += g_str(k) + struct.pack("<I", t) + g_val(t, v)
    offs, cur = [], 0
    sizes = []
    for name, tt, ne in tensors:
        blk, bb = GTYPES[tt]
        n = 1
        for d in ne:
            n *= d
        size = n // blk * bb
        cur = (cur + align - 1) // align * align
        offs.append(cur)
        sizes.append(size)
        cur += size
        out += g_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", tt, offs[-1])
    pad = (-len(out)) % align
    out += b"\0" * pad
    data = bytearray(cur)
    for i, (o, s) in enumerate(zip(offs, sizes)):
        for j in range(s):
            data[o + j] = (i * 37 + j * 11 + 5) & 0x3f  # small finite values (f16 exponent < 31)
    return out + bytes(data)


def gguf_seeds():
    s = {}
    s["seed_empty"] = gguf([], [])
    s["seed_scalars"] = gguf([
        ("general.architecture", STR, "llada"),
        ("a.u8", U8, 200), ("a.i8", I8, -5), ("a.u16", U16, 65000), ("a.i16", I16, -300),
        ("a.u32", U32, 4096), ("a.i32", I32, -1), ("a.f32", F32, 1e-5), ("a.bool", BOOL, True),
        ("a.u64", U64, 1 << 40), ("a.i64", I64, -(1 << 40)), ("a.f64", F64, 5e5),
    ], [])
    s["seed_arrays"] = gguf([
        ("arr.u8", ARR, (U8, [1, 2, 3])),
        ("arr.i32", ARR, (I32, [-1, 0, 7])),
        ("arr.f32", ARR, (F32, [0.5, -2.0])),
        ("arr.str", ARR, (STR, ["a", "", "\u0120hello"])),
        ("arr.nested", ARR, (ARR, [(U16, [1, 2]), (STR, ["x"])])),
        ("arr.empty", ARR, (U64, [])),
    ], [])
    s["seed_tensors"] = gguf([("general.alignment", U32, 32)], [
        ("f32", 0, [4, 2]), ("f16", 1, [8]), ("bf16", 30, [2, 2, 2]),
        ("q8_0", 8, [32, 2]), ("q4_0", 2, [64]), ("q4_k", 12, [256]), ("q6_k", 14, [256, 1, 1, 1]),
    ])
    s["seed_align64"] = gguf([("general.alignment", U32, 64)], [("w", 0, [3]), ("v", 1, [5])],
                             align=64)
    s["seed_v2"] = gguf([("k", STR, "v")], [("w", 0, [2])], version=2)
    # a tiny llada-like model (metadata + tokenizer keys + weights)
    toks = ["a", "b", "ab", "<|mdm_mask|>"]
    s["seed_model"] = gguf([
        ("general.architecture", STR, "llada"),
        ("llada.block_count", U32, 1), ("llada.embedding_length", U32, 8),
        ("llada.feed_forward_length", U32, 16), ("llada.attention.head_count", U32, 2),
        ("llada.attention.head_count_kv", U32, 2), ("llada.context_length", U32, 64),
        ("llada.attention.layer_norm_rms_epsilon", F32, 1e-5), ("llada.rope.freq_base", F32, 5e5),
        ("llada.attention.causal", BOOL, False), ("diffusion.shift_logits", BOOL, False),
        ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "llama-bpe"),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)),
        ("tokenizer.ggml.token_type", ARR, (I32, [1, 1, 1, 3])),
        ("tokenizer.ggml.merges", ARR, (STR, ["a b"])),
        ("tokenizer.ggml.bos_token_id", U32, 0), ("tokenizer.ggml.eos_token_id", U32, 1),
        ("tokenizer.ggml.mask_token_id", U32, 3),
    ], [
        ("token_embd.weight", 0, [8, 4]), ("output_norm.weight", 0, [8]),
        ("output.weight", 0, [8, 4]),
        ("blk.0.attn_norm.weight", 0, [8]), ("blk.0.attn_q.weight", 0, [8, 8]),
        ("blk.0.attn_k.weight", 0, [8, 8]), ("blk.0.attn_v.weight", 0, [8, 8]),
        ("blk.0.attn_output.weight", 0, [8, 8]), ("blk.0.ffn_norm.weight", 0, [8]),
        ("blk.0.ffn_gate.weight", 0, [8, 16]), ("blk.0.ffn_up.weight", 0, [8, 16]),
        ("blk.0.ffn_down.weight", 0, [16, 8]),
    ])
    # near misses: truncated data, bad magic
    s["seed_truncated"] = s["seed_tensors"][:-7]
    s["seed_badmagic"] = b"GGUX" + s["seed_scalars"][4:]
    return s


# ------------------------------------------------------------ safetensors

ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4}


def safetensors(tensors, meta=None, pad_header=0):
    """tensors: [(name, dtype, shape)]"""
    hdr, off = {}, 0
    for name, dt, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        size = n * ST_SIZE[dt]
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    if meta is not None:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (((-len(h)) % 8) + pad_header)
    data = bytes((i * 13 + 3) & 0x3f for i in range(off))
    return struct.pack("<Q", len(h)) + h + data


def st_seeds():
    s = {}
    s["seed_one"] = safetensors([("w", "F32", [2, 3])])
    s["seed_dtypes"] = safetensors([("a", "F32", [4]), ("b", "F16", [2, 2]),
                                    ("c", "BF16", [1, 2, 2, 2])], meta={"format": "pt"})
    s["seed_scalar_empty"] = safetensors([("s", "F32", []), ("e", "F16", [0, 4])])
    s["seed_empty"] = safetensors([])
    s["seed_unsupported"] = safetensors([("i", "I32", [2])])
    s["seed_llada"] = llada_safetensors()
    return s


# tiny llada-like HF checkpoint (n_embd 8, 1 layer, 2 heads, ff 16, vocab 16)
TINY = dict(d=8, layers=1, heads=2, kv=2, ff=16, vocab=16)


def llada_tensors():
    d, ff, v = TINY["d"], TINY["ff"], TINY["vocab"]
    t = [("model.transformer.wte.weight", "F32", [v, d]),
         ("model.transformer.ln_f.weight", "F32", [d]),
         ("model.transformer.ff_out.weight", "F32", [v, d])]
    for i in range(TINY["layers"]):
        p = "model.transformer.blocks.%d." % i
        t += [(p + "q_proj.weight", "F32", [d, d]), (p + "k_proj.weight", "F32", [d, d]),
              (p + "v_proj.weight", "F32", [d, d]), (p + "attn_out.weight", "F32", [d, d]),
              (p + "ff_proj.weight", "F32", [ff, d]), (p + "up_proj.weight", "F32", [ff, d]),
              (p + "ff_out.weight", "F32", [d, ff]), (p + "attn_norm.weight", "F32", [d]),
              (p + "ff_norm.weight", "F32", [d])]
    return t


def llada_safetensors():
    return safetensors(llada_tensors(), meta={"format": "pt"})


# ------------------------------------------------------------------- JSON

def llada_config():
    d = TINY
    return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d["d"],
            "n_layers": d["layers"], "n_heads": d["heads"], "n_kv_heads": d["kv"],
            "mlp_hidden_size": d["ff"], "vocab_size": d["vocab"], "embedding_size": d["vocab"],
            "max_sequence_length": 64, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
            "mask_token_id": 15, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
            "weight_tying": False, "include_bias": False, "include_qkv_bias": False}


def dream_config():
    d = TINY
    return {"architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": d["d"],
            "num_hidden_layers": d["layers"], "num_attention_heads": d["heads"],
            "num_key_value_heads": d["kv"], "intermediate_size": d["ff"],
            "vocab_size": d["vocab"], "max_position_embeddings": 64, "rope_theta": 1e6,
            "rms_norm_eps": 1e-6, "mask_token_id": 15, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def config_seeds():
    return {"seed_llada.json": json.dumps(llada_config(), indent=1).encode(),
            "seed_dream.json": json.dumps(dream_config(), indent=1).encode()}


def json_seeds():
    s = dict(config_seeds())
    s["seed_misc.json"] = json.dumps({"a": 1, "b": -2.5, "c": "x\u00e9\\n", "d": True,
                                      "e": None, "f": ["s", "t"], "g": [1, 2, 3],
                                      "h": {"i": 9007199254740993, "j": 1e308}}).encode()
    s["seed_array.json"] = b"[1, {\"k\": [\"v\"]}, \"\\ud83d\\ude00\", 1e-400]"
    return s


def tokenizer_json():
    vocab = {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120a": 4, "c": 5}
    return {
        "version": "1.0",
        "added_tokens": [
            {"id": 6, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True},
            {"id": 7, "content": "<|mask|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": ["a b", "\u0120 a"]},
    }


def tokenizer_seeds():
    t = tokenizer_json()
    s = {"seed_small.json": json.dumps(t, ensure_ascii=False).encode()}
    t2 = tokenizer_json()
    t2["model"]["merges"] = [["a", "b"], ["\u0120", "a"]]  # newer list-of-pairs form
    t2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                           "use_regex": True}
    t2["normalizer"] = None
    s["seed_pairs.json"] = json.dumps(t2).encode()
    return s


def gguf_model_seeds():
    """Small complete models for lopad_model_load (both architectures)."""
    g = gguf_seeds()
    s = {"seed_llada": g["seed_model"]}
    kv = [("general.architecture", STR, "dream"),
          ("dream.block_count", U32, 1), ("dream.embedding_length", U32, 8),
          ("dream.feed_forward_length", U32, 16), ("dream.attention.head_count", U32, 2),
          ("dream.attention.head_count_kv", U32, 1), ("dream.context_length", U32, 64),
          ("dream.attention.layer_norm_rms_epsilon", F32, 1e-6), ("dream.rope.freq_base", F32, 1e6),
          ("tokenizer.ggml.mask_token_id", U32, 31), ("tokenizer.ggml.eos_token_id", I32, 1),
          ("lopad.rope_type", STR, "neox"), ("tokenizer.chat_template", STR, "{{ x }}")]
    ts = [("token_embd.weight", 8, [32, 32]), ("output_norm.weight", 0, [32]),
          ("blk.0.attn_norm.weight", 0, [32]), ("blk.0.attn_q.weight", 8, [32, 32]),
          ("blk.0.attn_k.weight", 1, [32, 16]), ("blk.0.attn_v.weight", 30, [32, 16]),
          ("blk.0.attn_q.bias", 0, [32]), ("blk.0.attn_k.bias", 0, [16]),
          ("blk.0.attn_v.bias", 0, [16]),
          ("blk.0.attn_output.weight", 2, [32, 32]), ("blk.0.ffn_norm.weight", 0, [32]),
          ("blk.0.ffn_gate.weight", 8, [32, 64]), ("blk.0.ffn_up.weight", 8, [32, 64]),
          ("blk.0.ffn_down.weight", 8, [64, 32])]
    kv = [(k, t, 32 if k == "dream.embedding_length" else 64 if k.endswith("feed_forward_length")
           else v) for k, t, v in kv]
    s["seed_dream_q8_tied"] = gguf(kv, ts)
    return s


def lora_seeds():
    """u16 length + adapter_config.json + adapter_model.safetensors, for the
    tiny LLaDA base of fuzz_targets.h (n_embd 8, n_ff 16, 1 layer)."""
    def bundle(cfg, st):
        c = json.dumps(cfg).encode()
        return struct.pack("<H", len(c)) + c + st

    def adapter(r, mods, dtype="F32"):
        shapes = {"q_proj": (8, 8), "k_proj": (8, 8), "v_proj": (8, 8), "attn_out": (8, 8),
                  "ff_proj": (16, 8), "up_proj": (16, 8), "ff_out": (8, 16)}
        t = []
        for m in mods:
            out, inn = shapes[m]
            p = "base_model.model.model.transformer.blocks.0.%s." % m
            t += [(p + "lora_A.weight", dtype, [r, inn]), (p + "lora_B.weight", dtype, [out, r])]
        return safetensors(t, meta={"format": "pt"})

    attn = ["q_proj", "k_proj", "v_proj", "attn_out"]
    return {
        "seed_attn": bundle({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                             "target_modules": attn, "bias": "none"}, adapter(2, attn)),
        "seed_mlp_bf16_rslora": bundle({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                        "use_rslora": True,
                                        "target_modules": ["ff_proj", "up_proj", "blocks.0.ff_out"]},
                                       adapter(4, ["ff_proj", "up_proj", "ff_out"], "BF16")),
    }


def hf_dir_seeds():
    """Sections "@@<file>" + bytes: config.json and the side files lp_load_hf reads."""
    def sec(files):
        return b"\n".join(b"@@" + n.encode() + b"\n" + d for n, d in files)

    cfg = dict(llada_config())
    for k in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
        del cfg[k]
    tok_cfg = {"bos_token": "<|startoftext|>", "eos_token": {"content": "<|endoftext|>"},
               "added_tokens_decoder": {
                   "0": {"content": "<|startoftext|>", "special": True},
                   "1": {"content": "<|endoftext|>", "special": True},
                   "14": {"content": "<|eot_id|>", "special": True},
                   "15": {"content": "<|mdm_mask|>", "special": True}},
               "chat_template": [{"name": "default", "template": "{{ messages }}"},
                                 {"name": "tool_use", "template": "x"}]}
    gen = {"bos_token_id": 0, "eos_token_id": [1, 14], "pad_token_id": None,
           "mask_token_id": 15}
    index = {"metadata": {"total_size": 0},
             "weight_map": {n: "model.safetensors" for n, _, _ in llada_tensors()}}
    j = lambda o: json.dumps(o, indent=1).encode()
    return {
        "seed_side_files": sec([("config.json", j(cfg)), ("tokenizer_config.json", j(tok_cfg)),
                                ("generation_config.json", j(gen))]),
        "seed_index_jinja": sec([("config.json", j(dream_config())),
                                 ("model.safetensors.index.json", j(
                                     {"weight_map": {n: "model.safetensors" for n in [
                                         "model.embed_tokens.weight", "model.norm.weight",
                                         "lm_head.weight"] + [
                                         "model.layers.0." + x for x in [
                                             "input_layernorm.weight",
                                             "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                             "self_attn.v_proj.weight", "self_attn.q_proj.bias",
                                             "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                                             "self_attn.o_proj.weight",
                                             "post_attention_layernorm.weight",
                                             "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                             "mlp.down_proj.weight"]]}})),
                                 ("chat_template.jinja", b"{% for m in messages %}{{ m }}{% endfor %}")]),
        "seed_llada_index": sec([("config.json", j(llada_config())),
                                 ("model.safetensors.index.json", j(index))]),
    }


def load_forward_seeds():
    """Whole load path + one forward: "@@<file>" sections of a model directory
    (with tokenizer and an optional adapter), or a GGUF with a tokenizer."""
    def sec(files):
        return b"\n".join(b"@@" + n.encode() + b"\n" + d for n, d in files)

    def j(o):
        return json.dumps(o, ensure_ascii=False).encode()
    base = [("config.json", j(llada_config())), ("model.safetensors", llada_safetensors()),
            ("tokenizer.json", j(tokenizer_json()))]
    lora = lora_seeds()["seed_attn"]
    n = struct.unpack("<H", lora[:2])[0]
    return {
        "seed_llada_dir": sec(base),
        "seed_llada_lora": sec(base + [("adapter/adapter_config.json", lora[2:2 + n]),
                                       ("adapter/adapter_model.safetensors", lora[2 + n:])]),
        "seed_llada_no_tokenizer": sec(base[:2]),
        "seed_gguf_model": gguf_seeds()["seed_model"],
        "seed_gguf_dream": gguf_model_seeds()["seed_dream_q8_tied"],
    }


def write(target, seeds):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    write("fuzz_gguf", gguf_seeds())
    write("fuzz_safetensors", st_seeds())
    write("fuzz_json", json_seeds())
    write("fuzz_json_config", config_seeds())
    write("fuzz_tokenizer_json", tokenizer_seeds())
    write("fuzz_gguf_model", gguf_model_seeds())
    write("fuzz_lora", lora_seeds())
    write("fuzz_hf_dir", hf_dir_seeds())
    write("fuzz_load_forward", load_forward_seeds())
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print("corpus: %d bytes under %s" % (total, OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
