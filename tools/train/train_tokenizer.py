"""train_tokenizer.py - learn the demo model's byte-level BPE on the training text and
write it as a Hugging Face tokenizer.json + tokenizer_config.json (ChatML template).

    /usr/bin/python3 tools/train/train_tokenizer.py --data tools/train/data \
        --out tools/train/out/tokenizer --vocab 512

Ids: 0..255 the GPT-2 byte symbols, then the merges in the order learned, then the
special tokens <|endoftext|> <|im_start|> <|im_end|> <|mask|>. Deterministic: ties
between equally frequent pairs are broken by the pair itself.
"""

import argparse
import collections
import json
import os

from bpe import QWEN2_PATTERN, SPECIALS, byte_symbols, pretokenize, to_symbols

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def learn(words, n_merges):
    """words: Counter piece -> count. Returns the merges [(a, b), ...]."""
    seqs = [(to_symbols(w), c) for w, c in words.items()]
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for sy, c in seqs:
            for i in range(len(sy) - 1):
                pairs[(sy[i], sy[i + 1])] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        a, b = best
        new = []
        for sy, c in seqs:
            out, i = [], 0
            while i < len(sy):
                if i + 1 < len(sy) and sy[i] == a and sy[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sy[i])
                    i += 1
            new.append((out, c))
        seqs = new
    return merges


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=512)
    args = ap.parse_args()
    words = collections.Counter()
    with open(os.path.join(args.data, "train.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            # the text the model sees: the chat turn bodies and the answer
            for text in ("user\n" + r["question"], "\n", "assistant\n", r["answer"]):
                words.update(pretokenize(text))
    n_merges = args.vocab - 256 - len(SPECIALS)
    merges = learn(words, n_merges)
    toks = [s for _, s in byte_symbols()] + [a + b for a, b in merges]
    assert len(set(toks)) == len(toks)
    n_normal = len(toks)
    os.makedirs(args.out, exist_ok=True)
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": n_normal + i, "content": s, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SPECIALS)],
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
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "vocab": {t: i for i, t in enumerate(toks)},
                  "merges": ["%s %s" % m for m in merges]},
    }
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    tc = {"add_bos_token": False, "add_eos_token": False, "chat_template": CHAT_TEMPLATE,
          "clean_up_tokenization_spaces": False, "model_max_length": 256,
          "tokenizer_class": "PreTrainedTokenizerFast",
          "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
          "mask_token": "<|mask|>",
          "added_tokens_decoder": {str(n_normal + i): {"content": s, "special": True}
                                   for i, s in enumerate(SPECIALS)}}
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, ensure_ascii=False, indent=1)
    print("vocab %d: 256 bytes + %d merges + %d specials" % (n_normal + len(SPECIALS),
                                                              len(merges), len(SPECIALS)))


if __name__ == "__main__":
    main()
