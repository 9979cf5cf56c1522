"""Tokenizers round-trip text and survive a JSON save/load."""
import pytest

from graphdiff.lm import tokenizers
from graphdiff.lm.tokenizers import ByteBPETokenizer, CharTokenizer, TokenizerError

TEXT = ("def f(x):\n    return x * 2  # double\n\nclass A:\n    pass\n\n"
        "if __name__ == '__main__':\n    print(f(21), 'héllo wörld ✓')\n") * 3


def test_char_round_trip_and_pad():
    tok = CharTokenizer.train(TEXT)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.pad_id == 0 and 0 not in ids and tok.vocab_size == len(set(TEXT)) + 1
    assert tok.decode(ids[:3] + [tok.pad_id] * 2) == TEXT[:3]


def test_char_unknown_character_says_what_to_do():
    tok = CharTokenizer.train("abc")
    with pytest.raises(TokenizerError, match=r"'z'.*bpe"):
        tok.encode("abz")


def test_bpe_learns_merges_and_round_trips_any_text():
    tok = ByteBPETokenizer.train(TEXT, vocab_size=300)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert len(ids) < 0.6 * len(TEXT.encode())                    # merges compress
    other = "never seen: ∑ λ 🙂 \t tabs\r\n"
    assert tok.decode(tok.encode(other)) == other                  # byte level: no unknowns
    assert tok.vocab_size == 300 and tok.pad_id == 299


@pytest.mark.parametrize("make", [lambda: CharTokenizer.train(TEXT),
                                  lambda: ByteBPETokenizer.train(TEXT, vocab_size=280)])
def test_json_save_load(tmp_path, make):
    tok = make()
    tokenizers.save(tok, tmp_path / "tok.json")
    back = tokenizers.load(tmp_path / "tok.json")
    assert back.encode(TEXT) == tok.encode(TEXT) and back.decode(tok.encode(TEXT)) == TEXT
    assert (tmp_path / "tok.json").read_text().startswith("{")


def test_bpe_vocab_too_small():
    with pytest.raises(TokenizerError, match="257"):
        ByteBPETokenizer.train("abc", vocab_size=100)
