"""bpe.py - the byte-level BPE used by the demo model: GPT-2 byte alphabet, Qwen2-style
pre-tokenisation (digits one by one), merges applied by rank. Shared by
train_tokenizer.py (learning the merges) and train.py / eval (encoding).

The pre-tokeniser here is the Qwen2 pattern restricted to ASCII (Python's `re` has
no \\p{L}); the generated task text is pure ASCII, where both give the same pieces.
"""

import json
import re

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
ASCII_PATTERN = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]"
                           r"| ?[^\sA-Za-z0-9]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_symbols():
    """GPT-2's reversible byte -> printable unicode map: list of (byte, symbol) in id order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cps = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            cps.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(keep, cps)]


BYTE_SYM = {b: s for b, s in byte_symbols()}


def pretokenize(text):
    assert all(ord(c) < 128 for c in text), "the demo tokenizer's trainer handles ASCII only"
    return [m.group(0) for m in ASCII_PATTERN.finditer(text)]


def to_symbols(piece):
    return [BYTE_SYM[b] for b in piece.encode("utf-8")]


class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        self.vocab = tj["model"]["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.rank = {tuple(m.split(" ")): i for i, m in enumerate(tj["model"]["merges"])}
        self.special = {t["content"]: t["id"] for t in tj["added_tokens"]}
        for t, i in self.special.items():
            self.inv[i] = t
        self.sym_byte = {s: b for b, s in byte_symbols()}
        self.cache = {}

    def encode_piece(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        sy = to_symbols(piece)
        while len(sy) > 1:
            best = None
            for i in range(len(sy) - 1):
                r = self.rank.get((sy[i], sy[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            sy = sy[:i] + [sy[i] + sy[i + 1]] + sy[i + 2:]
        ids = [self.vocab[s] for s in sy]
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        out = []
        for p in pretokenize(text):
            out += self.encode_piece(p)
        return out

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            t = self.inv[i]
            if t in self.special:
                bs += t.encode()
            else:
                bs += bytes(self.sym_byte[c] for c in t)
        return bs.decode("utf-8", errors="replace")

    def chat_prompt(self, question):
        """ids of the ChatML prompt the shipped chat_template renders (no system turn)."""
        s = self.special
        return ([s["<|im_start|>"]] + self.encode("user\n" + question) + [s["<|im_end|>"]] +
                self.encode("\n") + [s["<|im_start|>"]] + self.encode("assistant\n"))
