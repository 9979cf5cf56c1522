"""Tokenizers: character level and byte-level BPE trained on the corpus; both save to and load from JSON.

Both reserve the id `pad_id` for "<pad>", which batching uses to fill short sequences.
"""
import json
import re
from collections import Counter

PAD = "<pad>"


class TokenizerError(ValueError):
    pass


class CharTokenizer:
    """One id per character seen in the training text; id 0 is <pad>.

    Args:
        chars: the vocabulary's characters (id k+1 for chars[k]).
    """

    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.itos = [PAD] + self.chars
        self.stoi = {c: i + 1 for i, c in enumerate(self.chars)}
        self.pad_id = 0

    @classmethod
    def train(cls, text):
        if not text:
            raise TokenizerError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.itos)

    def encode(self, text):
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            bad = sorted({c for c in text if c not in self.stoi})
            raise TokenizerError(f"characters {bad[:10]!r} are not in the vocabulary of {len(self.chars)} "
                                 "characters the tokenizer was trained on; remove them or use --tokenizer bpe "
                                 "(byte level, covers any text)") from None

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids if i != self.pad_id)

    def to_dict(self):
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d):
        return cls(list(d["chars"]))


# GPT-2's pre-tokenizer, without the \p{L} classes that the re module lacks: merges never cross these chunks
_CHUNK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z_]+| ?[0-9]+| ?[^\sA-Za-z_0-9]+|\s+(?!\S)|\s+""")


class ByteBPETokenizer:
    """Byte-level BPE: ids 0..255 are bytes, 256.. are merges in the order learned, last is <pad>.

    Any text round-trips (it is UTF-8 bytes underneath); merges are learned within pre-tokenized chunks.
    """

    kind = "bpe"

    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: k for k, m in enumerate(self.merges)}
        self.vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.pad_id = len(self.vocab)
        self._cache = {}

    @property
    def vocab_size(self):
        return len(self.vocab) + 1

    @classmethod
    def train(cls, text, vocab_size=512, max_chars=2_000_000):
        """Learn vocab_size - 257 merges from (the first max_chars characters of) text."""
        n_merges = vocab_size - 257
        if n_merges < 0:
            raise TokenizerError(f"vocab_size must be at least 257 (256 bytes + <pad>), got {vocab_size}")
        words = Counter(_CHUNK.findall(text[:max_chars]))
        seqs = {w: list(w.encode("utf-8")) for w in words}
        merges = []
        for k in range(n_merges):
            pairs = Counter()
            for w, s in seqs.items():
                f = words[w]
                for a, b in zip(s, s[1:]):
                    pairs[a, b] += f
            if not pairs:
                break
            best = max(pairs.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))[0]
            new = 256 + k
            merges.append(best)
            for w, s in seqs.items():
                if len(s) > 1:
                    seqs[w] = _merge(s, best, new)
        return cls(merges)

    def _encode_chunk(self, chunk):
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        s = list(chunk.encode("utf-8"))
        while len(s) > 1:
            pair = min(zip(s, s[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            r = self.ranks.get(pair)
            if r is None:
                break
            s = _merge(s, pair, 256 + r)
        if len(self._cache) < 100_000:
            self._cache[chunk] = s
        return s

    def encode(self, text):
        out = []
        for chunk in _CHUNK.findall(text):
            out.extend(self._encode_chunk(chunk))
        return out

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids if i != self.pad_id).decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": "bpe", "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d):
        return cls(d["merges"])


def _merge(s, pair, new):
    a, b = pair
    out, i, n = [], 0, len(s)
    while i < n:
        if i < n - 1 and s[i] == a and s[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(s[i])
            i += 1
    return out


def from_dict(d):
    """A tokenizer from its to_dict() form."""
    kinds = {"char": CharTokenizer, "bpe": ByteBPETokenizer}
    if d.get("type") not in kinds:
        raise TokenizerError(f"unknown tokenizer type {d.get('type')!r}; expected one of {sorted(kinds)}")
    return kinds[d["type"]].from_dict(d)


def save(tok, path):
    with open(path, "w") as f:
        json.dump(tok.to_dict(), f)


def load(path):
    with open(path) as f:
        return from_dict(json.load(f))
