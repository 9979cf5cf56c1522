"""Corpora and batching.

Batching is the lecture's: each sequence is truncated to block_size + 1 tokens, padded with <pad> to that
length, and mapped to ids through the vocabulary; inputs are ids[:, :-1] and targets ids[:, 1:]. Padded
targets are ignored by the loss (ignore_index = pad_id) and padded keys are masked in attention
(key_mask = inputs != pad_id). Token ids live on the host (NumPy) and are fed to the graph.
"""
import os
import sysconfig

import numpy as np


class CorpusError(ValueError):
    pass


def default_corpus(max_chars=4_000_000):
    """The standard library's own Python source (ASCII files at the top level, sorted by name): text that
    every Python install holds offline. Returns (documents, description)."""
    root = sysconfig.get_paths()["stdlib"]
    docs, total = [], 0
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(root, name), encoding="ascii") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) < 200:
            continue
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not docs:
        raise CorpusError(f"found no Python source files in the standard library folder {root!r}; "
                          "pass --corpus FILE")
    return docs, f"Python standard library source ({len(docs)} files in {root}, {total:,} characters)"


def load_corpus(path=None, min_chars=64):
    """Documents from a UTF-8 text file (str or os.PathLike; one document), or the default corpus when path
    is None."""
    if path is None:
        return default_corpus()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CorpusError(f"corpus file {path!r} does not exist; pass --corpus with a UTF-8 text file, or "
                          "leave it out to train on the Python standard library's source")
    if os.path.isdir(path):
        raise CorpusError(f"corpus {path!r} is a directory; pass one UTF-8 text file")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw[:8192]:
        raise CorpusError(f"corpus {path!r} looks binary (it contains NUL bytes); pass a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus {path!r} is not UTF-8 text ({e}); convert it, e.g. "
                          f"iconv -f latin1 -t utf-8") from None
    if len(text) < min_chars:
        raise CorpusError(f"corpus {path!r} has {len(text)} characters; it needs at least {min_chars} "
                          "to train and validate on")
    return [text], f"{path} ({len(text):,} characters)"


def split_documents(docs, val_fraction=0.1):
    """(train, val) documents: every 10th document is held out; a single document is split by its end."""
    if len(docs) >= 10:
        k = max(2, int(round(1 / val_fraction)))
        return [d for i, d in enumerate(docs) if i % k != k - 1], [d for i, d in enumerate(docs) if i % k == k - 1]
    text = "".join(docs)
    cut = int(len(text) * (1 - val_fraction))
    return [text[:cut]], [text[cut:]]


def make_batch(sequences, block_size, pad_id):
    """The lecture's batching of id sequences.

    Args:
        sequences: a list of B lists of token ids (any lengths).
        block_size: T, the model's context length.
        pad_id: the <pad> id.
    Returns:
        idx (B, T) int64 inputs, targets (B, T) int64 (pad_id where padded), key_mask (B, T) bool
        (False for <pad> inputs).
    """
    B = len(sequences)
    arr = np.full((B, block_size + 1), pad_id, dtype=np.int64)   # (B, T+1)
    for b, s in enumerate(sequences):
        s = list(s)[:block_size + 1]                             # truncate
        arr[b, :len(s)] = s                                      # pad the rest
    idx, targets = arr[:, :-1], arr[:, 1:]                       # (B, T), (B, T)
    return np.ascontiguousarray(idx), np.ascontiguousarray(targets), idx != pad_id


def batch_texts(texts, tokenizer, block_size):
    """make_batch on texts: ids through the tokenizer's vocabulary, then truncate and pad."""
    return make_batch([tokenizer.encode(t) for t in texts], block_size, tokenizer.pad_id)


class Sampler:
    """Random windows of block_size + 1 tokens from tokenized documents; windows near a document's end
    are shorter and get padded by make_batch.

    Args:
        docs: a list of 1-d int arrays.  rng: numpy Generator (its state goes into checkpoints).
    """

    def __init__(self, docs, block_size, batch_size, pad_id, rng):
        self.docs = [np.asarray(d, dtype=np.int64) for d in docs if len(d) >= 2]
        if not self.docs:
            raise CorpusError("every document is shorter than 2 tokens; the corpus is too small to train on")
        self.block_size, self.batch_size, self.pad_id, self.rng = block_size, batch_size, pad_id, rng
        lens = np.array([len(d) - 1 for d in self.docs], dtype=np.float64)
        self.p = lens / lens.sum()

    def next(self):
        di = self.rng.choice(len(self.docs), size=self.batch_size, p=self.p)
        seqs = []
        for d in di:
            doc = self.docs[d]
            s = int(self.rng.integers(0, len(doc) - 1))
            seqs.append(doc[s:s + self.block_size + 1])
        return make_batch(seqs, self.block_size, self.pad_id)


def tokenize_docs(docs, tokenizer):
    return [np.asarray(tokenizer.encode(d), dtype=np.int64) for d in docs]
