"""The lecture's batching, and corpus errors."""
import numpy as np
import pytest

from graphdiff.lm import CharTokenizer, batch_texts, load_corpus, make_batch
from graphdiff.lm.data import CorpusError, Sampler, default_corpus, split_documents


def test_make_batch_truncates_pads_and_shifts():
    idx, targets, mask = make_batch([[5, 6, 7, 8, 9, 10], [5, 6]], block_size=4, pad_id=0)
    np.testing.assert_array_equal(idx, [[5, 6, 7, 8], [5, 6, 0, 0]])
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9], [6, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 0, 0]])
    assert idx.dtype == targets.dtype == np.int64 and mask.dtype == bool


def test_batch_texts_goes_through_the_vocabulary():
    tok = CharTokenizer.train("abc")
    idx, targets, mask = batch_texts(["abca", "b"], tok, 3)
    assert tok.decode(idx[0]) == "abc" and tok.decode(targets[0]) == "bca"
    assert mask.tolist() == [[True] * 3, [True, False, False]]


def test_sampler_is_deterministic_and_pads_near_the_end():
    docs = [np.arange(1, 30), np.arange(1, 6)]
    a = Sampler(docs, 8, 64, 0, np.random.default_rng(0)).next()
    b = Sampler(docs, 8, 64, 0, np.random.default_rng(0)).next()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (a[1] == 0).any() and not a[2].all()


def test_default_corpus_is_python_source():
    docs, desc = default_corpus(max_chars=200_000)
    assert "standard library" in desc and any("def " in d and "import " in d for d in docs)
    train, val = split_documents(docs)
    assert train and val


def test_corpus_errors_are_clear(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(CorpusError, match="binary"):
        load_corpus(str(tmp_path / "bin"))
    (tmp_path / "latin").write_bytes("caf\xe9 ".encode("latin1") * 100)
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(str(tmp_path / "latin"))
    (tmp_path / "short").write_text("hi")
    with pytest.raises(CorpusError, match="at least"):
        load_corpus(str(tmp_path / "short"))
    with pytest.raises(CorpusError, match="directory"):
        load_corpus(str(tmp_path))
