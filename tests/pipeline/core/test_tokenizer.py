"""pipeline/core/tokenizer.py: tokens, pairs, windows and padding as training and inference share them."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.tokenizer import (
    WINDOW_OVERLAP,
    TextTooLong,
    TokenizationError,
    WhitespaceTokenizer,
    learn_tokenizer,
    pad_batch,
    tokenize,
    window_starts,
)
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab


@given(length=st.integers(1, 2000), width=st.integers(1, 510))
def test_windows_cover_every_token_and_overlap(length, width):
    starts = window_starts(length, width)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        covered[start:start + width] += 1
        assert 0 <= start and start + width <= max(length, width)
    assert covered.min() >= 1 and starts == sorted(set(starts))
    if length > width:
        assert len(starts) >= 2 and starts[-1] + width == length
        assert all(b - a <= width - int(width * WINDOW_OVERLAP) for a, b in zip(starts, starts[1:]))


def test_wordpiece_normalises_like_bert():
    docs = [["The crane, flying over Berlin, isn't here.", "Café naïve 我们去北京。"]] * 50
    sentences = [s for doc in docs for s in doc]
    tok = learn_tokenizer(sentences, "wordpiece", 120, True, 1)
    assert tok.vocab.idx_to_token[:5] == list(SPECIAL_TOKENS), "special tokens keep their ids"
    tokens = tok.tokens("CAFÉ, Berlin! 北京")
    assert tokens[:3] == ["cafe", ",", "berlin"] and tokens[-2:] == ["北", "京"], tokens
    cased = learn_tokenizer(sentences, "wordpiece", 120, False, 1)
    assert "Berlin" in "".join(cased.tokens("Berlin")).replace("##", "")


def whitespace(words: str) -> WhitespaceTokenizer:
    return WhitespaceTokenizer(Vocab([*SPECIAL_TOKENS, *words.split()]))


def test_a_pair_is_cls_a_sep_b_sep_with_segments():
    tokenizer = whitespace("a crane is flying over the river")
    tokens, segments = tokenize(tokenizer, ("a crane", "is flying"), 16)
    assert tokens == ["<cls>", "a", "crane", "<sep>", "is", "flying", "<sep>"]
    assert segments == [0, 0, 0, 0, 1, 1, 1]


def test_too_long_is_refused_unless_truncated_and_the_longer_side_loses_tokens_first():
    tokenizer = whitespace("a crane is flying over the river")
    with pytest.raises(TextTooLong):
        tokenize(tokenizer, "a crane is flying over the river", 6)
    tokens, _ = tokenize(tokenizer, ("a", "crane is flying over the river"), 7, truncate=True)
    assert tokens == ["<cls>", "a", "<sep>", "crane", "is", "flying", "<sep>"]
    with pytest.raises(TokenizationError, match="empty text"):
        tokenize(tokenizer, ("a", " "), 8)


def test_pad_batch_pads_with_the_pad_id_and_records_each_length():
    tokenizer = whitespace("a crane is flying")
    items = [tokenize(tokenizer, "a crane", 8), tokenize(tokenizer, "a crane is flying", 8)]
    arrays = pad_batch(tokenizer.vocab, items, width=8)
    assert arrays["input_ids"].shape == (2, 8) and arrays["input_ids"].dtype == np.int64
    assert arrays["valid_length"].tolist() == [4, 6]
    assert (arrays["input_ids"][0, 4:] == tokenizer.vocab.pad).all()
