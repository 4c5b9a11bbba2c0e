"""export.py - write a trained checkpoint as a Hugging Face Dream directory that lopad
loads (config.json with Dream field names, model.safetensors, tokenizer.json,
tokenizer_config.json, generation_config.json), check it against the project's PyTorch
reference (tools/ref/model.py), and optionally convert it to GGUF with lopad itself.

    /usr/bin/python3 tools/train/export.py --ckpt tools/train/out/ckpt.pt \
        --tokenizer tools/train/out/tokenizer --out models/demo \
        --gguf models/demo.gguf --gguf-type bf16 --lopad build/lopad
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "ref"))
from train import Dream  # noqa: E402
import model as ref  # noqa: E402


def write_safetensors(path, tensors, dtype):
    """tensors: name -> float32 numpy array; dtype F32 or BF16 (round to nearest even)."""
    hdr = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype=np.float32)
        if dtype == "BF16":
            u = a.view(np.uint32).astype(np.uint64)
            b = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")).tobytes()
        else:
            b = a.astype("<f4").tobytes()
        hdr[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(HERE, "out", "ckpt.pt"))
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "out", "tokenizer"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["F32", "BF16"], default="F32")
    ap.add_argument("--gguf", help="also write this GGUF through `lopad convert`")
    ap.add_argument("--gguf-type", default="bf16")
    ap.add_argument("--lopad", default="build/lopad")
    args = ap.parse_args()

    ck = torch.load(args.ckpt, map_location="cpu")
    c = ck["config"]
    model = Dream(c)
    model.load_state_dict(ck["state"])
    model.eval()
    with open(os.path.join(args.tokenizer, "tokenizer_config.json")) as f:
        tc = json.load(f)
    ids = {v["content"]: int(k) for k, v in tc["added_tokens_decoder"].items()}
    eos, mask = ids["<|endoftext|>"], ids["<|mask|>"]

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    tensors = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors, args.dtype)
    cfg = {
        "architectures": ["DreamModel"], "model_type": "Dream",
        "hidden_size": c["n_embd"], "num_hidden_layers": c["n_layer"],
        "num_attention_heads": c["n_head"], "num_key_value_heads": c["n_head_kv"],
        "intermediate_size": c["n_ff"], "vocab_size": c["n_vocab"], "hidden_act": "silu",
        "rope_theta": c["rope_theta"], "rope_scaling": None, "rms_norm_eps": c["norm_eps"],
        "max_position_embeddings": 256, "max_window_layers": c["n_layer"],
        "sliding_window": None, "use_sliding_window": False, "attention_dropout": 0.0,
        "tie_word_embeddings": False, "torch_dtype": "float32" if args.dtype == "F32"
        else "bfloat16", "use_cache": False, "mask_token_id": mask, "bos_token_id": None,
        "eos_token_id": eos, "pad_token_id": eos, "initializer_range": 0.02,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": eos, "mask_token_id": mask}, f, indent=1)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.tokenizer, fn), os.path.join(args.out, fn))

    # the written directory through the project's independent reference == the trained module
    rcfg, W = ref.load_hf(args.out)
    toks = [ids["<|im_start|>"], 10, 20, 30, mask, mask, eos, mask]
    with torch.no_grad():
        mine = model(torch.tensor([toks]), torch.ones(1, len(toks), len(toks), dtype=torch.bool))[0]
    theirs = ref.forward(rcfg, W, toks, list(range(len(toks))), dtype=torch.float32)
    dev = float((mine - theirs).abs().max())
    tol = 1e-3 if args.dtype == "F32" else 0.5
    print("export vs tools/ref/model.py forward: max |dlogit| %.3g" % dev)
    assert dev < tol, dev

    if args.gguf:
        subprocess.check_call([args.lopad, "convert", args.out, args.gguf, "--type",
                               args.gguf_type])
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print("wrote %s (%.2f MiB)%s; trained %d steps, loss avg %.4f" % (
        args.out, total / 2 ** 20, (" and " + args.gguf) if args.gguf else "", ck["step"],
        ck["loss_avg"]))


if __name__ == "__main__":
    main()
