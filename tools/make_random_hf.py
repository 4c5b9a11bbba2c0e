#!/usr/bin/env python3
"""Write a Hugging Face directory of random BF16 weights in a real 7B/8B layout.

Used to check that lopad loads, inspects and runs full-size models within the
machine's memory (docs/PERFORMANCE.md). Needs only numpy. Weights are random:
one 64 MiB random block, rotated per tensor, so generation is I/O-bound.

  python3 tools/make_random_hf.py dream-7b OUT_DIR [--shard-gib 4]
  python3 tools/make_random_hf.py llada-8b OUT_DIR
"""
import json, os, struct, sys
import numpy as np

SHAPES = {
    "dream-7b": dict(arch="dream", hidden=3584, layers=28, heads=28, kv=4, ff=18944, vocab=152064,
                     theta=1e6, eps=1e-6),
    "llada-8b": dict(arch="llada", hidden=4096, layers=32, heads=32, kv=32, ff=12288, vocab=126464,
                     theta=5e5, eps=1e-5),
}

def tensors(s):
    """(name, shape) in HF naming, in file order."""
    h, hd = s["hidden"], s["hidden"] // s["heads"]
    q, kv, ff, v = s["heads"] * hd, s["kv"] * hd, s["ff"], s["vocab"]
    if s["arch"] == "dream":
        yield "model.embed_tokens.weight", (v, h)
        for i in range(s["layers"]):
            p = f"model.layers.{i}."
            yield p + "input_layernorm.weight", (h,)
            yield p + "self_attn.q_proj.weight", (q, h)
            yield p + "self_attn.q_proj.bias", (q,)
            yield p + "self_attn.k_proj.weight", (kv, h)
            yield p + "self_attn.k_proj.bias", (kv,)
            yield p + "self_attn.v_proj.weight", (kv, h)
            yield p + "self_attn.v_proj.bias", (kv,)
            yield p + "self_attn.o_proj.weight", (h, q)
            yield p + "post_attention_layernorm.weight", (h,)
            yield p + "mlp.gate_proj.weight", (ff, h)
            yield p + "mlp.up_proj.weight", (ff, h)
            yield p + "mlp.down_proj.weight", (h, ff)
        yield "model.norm.weight", (h,)
        yield "lm_head.weight", (v, h)
    else:
        t = "model.transformer."
        yield t + "wte.weight", (v, h)
        for i in range(s["layers"]):
            p = f"{t}blocks.{i}."
            yield p + "attn_norm.weight", (h,)
            yield p + "q_proj.weight", (q, h)
            yield p + "k_proj.weight", (kv, h)
            yield p + "v_proj.weight", (kv, h)
            yield p + "attn_out.weight", (h, q)
            yield p + "ff_norm.weight", (h,)
            yield p + "ff_proj.weight", (ff, h)
            yield p + "up_proj.weight", (ff, h)
            yield p + "ff_out.weight", (h, ff)
        yield t + "ln_f.weight", (h,)
        yield t + "ff_out.weight", (v, h)

def config(s):
    hd = s["hidden"] // s["heads"]
    if s["arch"] == "dream":
        return {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": s["hidden"],
                "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
                "num_key_value_heads": s["kv"], "intermediate_size": s["ff"], "vocab_size": s["vocab"],
                "rope_theta": s["theta"], "rms_norm_eps": s["eps"], "max_position_embeddings": 131072,
                "mask_token_id": 151666, "bos_token_id": 151665, "eos_token_id": 151643,
                "pad_token_id": 151643, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    return {"model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": s["hidden"],
            "n_layers": s["layers"], "n_heads": s["heads"], "n_kv_heads": s["kv"],
            "mlp_hidden_size": s["ff"], "vocab_size": s["vocab"], "embedding_size": s["vocab"],
            "rope_theta": s["theta"], "rms_norm_eps": s["eps"], "max_sequence_length": 4096,
            "mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081,
            "include_bias": False, "include_qkv_bias": False, "weight_tying": False}

def main():
    shape, out = sys.argv[1], sys.argv[2]
    shard_bytes = int(float(sys.argv[4]) * (1 << 30)) if len(sys.argv) > 4 else 4 << 30
    s = SHAPES[shape]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    # bf16 bits of N(0, 0.02): a random block reused with a rotating offset
    block = (rng.standard_normal(32 << 20).astype(np.float32) * 0.02).view(np.uint32)
    block = ((block + 0x7FFF + ((block >> 16) & 1)) >> 16).astype(np.uint16)
    ones = np.full(1 << 16, 0x3F80, dtype=np.uint16)  # bf16 1.0 for norms
    shards, cur, size = [], [], 0
    for name, shp in tensors(s):
        n = int(np.prod(shp)) * 2
        if cur and size + n > shard_bytes:
            shards.append(cur); cur, size = [], 0
        cur.append((name, shp)); size += n
    shards.append(cur)
    weight_map, off = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, pos = {}, 0
        for name, shp in shard:
            n = int(np.prod(shp)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [pos, pos + n]}
            pos += n
            weight_map[name] = fname
        hj = json.dumps(header).encode()
        hj += b" " * (-len(hj) % 8)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj)
            for name, shp in shard:
                count = int(np.prod(shp))
                if len(shp) == 1:
                    f.write(ones[:count].tobytes() if "norm" in name else block[:count].tobytes())
                    continue
                done = 0
                while done < count:
                    take = min(count - done, len(block) - off)
                    f.write(block[off:off + take].tobytes())
                    done += take
                    off = (off + take + 4099) % len(block)
        print(f"wrote {fname}", file=sys.stderr)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(s), f, indent=1)

if __name__ == "__main__":
    main()
