"""Tokenizers: character level and byte-level BPE trained on the corpus; both save to and load from JSON.

Both reserve the id `pad_id` for "<pad>", which batching uses to fill short sequences.
Loading checks a tokenizer's dict before building anything (`check_dict`): a vocabulary has at most
MAX_VOCAB ids and a BPE token at most MAX_TOKEN_BYTES bytes, so a small file cannot ask for huge memory.
"""
import json
import os
import re
from collections import Counter

from ..nn.serialization import atomic_write

PAD = "<pad>"
MAX_VOCAB = 1 << 18          # ids, <pad> included (GPT-4o's tokenizer has about 200k)
MAX_TOKEN_BYTES = 256        # bytes one BPE token may stand for


class TokenizerError(ValueError):
    """A tokenizer that cannot encode a text, or a tokenizer file or dict that is malformed."""


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
    def from_dict(cls, d, source="tokenizer"):
        check_dict(d, source)
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
    def from_dict(cls, d, source="tokenizer"):
        check_dict(d, source)
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


KINDS = {"char": CharTokenizer, "bpe": ByteBPETokenizer}


def check_dict(d, source="tokenizer"):
    """Raise TokenizerError, naming `source` and the field, unless d is a valid to_dict() form.

    BPE merges must be pairs of earlier ids (bytes 0..255 or merges before them); each token's length is
    computed from its two parts, without building it, and must stay within MAX_TOKEN_BYTES."""
    def bad(field, why):
        return TokenizerError(f"{source}: field {field!r} {why}")
    if not isinstance(d, dict):
        raise bad("type", f"missing: the tokenizer is a {type(d).__name__}, expected a JSON object")
    kind = d.get("type")
    if kind not in KINDS:
        raise bad("type", f"is {kind!r}; expected one of {sorted(KINDS)}")
    fields = {"char": {"type", "chars"}, "bpe": {"type", "merges"}}[kind]
    if set(d) != fields:
        raise bad(sorted(set(d) ^ fields)[0], f"is {'missing' if fields - set(d) else 'unexpected'}; a {kind} "
                  f"tokenizer has exactly the fields {sorted(fields)}")
    if kind == "char":
        chars = d["chars"]
        if not isinstance(chars, str) or not chars:
            raise bad("chars", "must be a non-empty string of the vocabulary's characters")
        if len(set(chars)) != len(chars):
            raise bad("chars", "repeats a character")
        if len(chars) + 1 > MAX_VOCAB:
            raise bad("chars", f"has {len(chars)} characters; at most {MAX_VOCAB - 1} are allowed")
        return
    merges = d["merges"]
    if not isinstance(merges, list):
        raise bad("merges", f"is a {type(merges).__name__}, expected a list of [id, id] pairs")
    if len(merges) + 257 > MAX_VOCAB:
        raise bad("merges", f"has {len(merges)} merges; at most {MAX_VOCAB - 257} are allowed")
    lengths = [1] * 256
    seen = set()
    for k, m in enumerate(merges):
        if not (isinstance(m, list) and len(m) == 2 and all(type(i) is int for i in m)):
            raise bad(f"merges[{k}]", f"is {m!r}, expected a pair of integer ids")
        a, b = m
        if not (0 <= a < 256 + k and 0 <= b < 256 + k):
            raise bad(f"merges[{k}]", f"is {m!r}: ids must be bytes 0..255 or earlier merges (< {256 + k})")
        if (a, b) in seen:
            raise bad(f"merges[{k}]", f"repeats the merge {m!r}")
        seen.add((a, b))
        lengths.append(lengths[a] + lengths[b])
        if lengths[-1] > MAX_TOKEN_BYTES:
            raise bad(f"merges[{k}]", f"makes a token of {lengths[-1]} bytes; at most {MAX_TOKEN_BYTES} allowed")


def from_dict(d, source="tokenizer"):
    """A tokenizer from its to_dict() form; TokenizerError (naming `source` and the field) if malformed."""
    check_dict(d, source)
    return KINDS[d["type"]].from_dict(d, source)


def save(tok, path):
    """Write tok.to_dict() as JSON to `path`, atomically (a crash leaves the old file or the new one)."""
    atomic_write(os.fspath(path), lambda f: f.write(json.dumps(tok.to_dict()).encode()))


def load(path):
    """A tokenizer from a JSON file written by save; TokenizerError names the file and what is wrong."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            d = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer {path!r}: {e.strerror or e}") from None
    except ValueError as e:                      # JSONDecodeError and UnicodeDecodeError
        raise TokenizerError(f"tokenizer {path!r} is not JSON text ({e}); use the <checkpoint>.tokenizer.json "
                             "that `graphdiff train` wrote") from None
    return from_dict(d, f"tokenizer {path!r}")
