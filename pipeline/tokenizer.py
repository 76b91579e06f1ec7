"""The one tokenizer code path: text -> `<cls> A <sep> [B <sep>]` tokens and segment ids.

Used by training-side evaluation, export and inference alike, so the same text always gives the same
tokens. Words are lower-cased and split on whitespace, as the WikiText vocabulary was built.
"""
from __future__ import annotations

from typing import Union

from pipeline.errors import UserError
from pipeline.export_format import input_names
from pipeline.vocab import CLS, SEP, Vocab

Text = Union[str, tuple[str, str]]


def words(text: str) -> list[str]:
    """Lower-cased whitespace-separated words, as in the training corpus."""
    return text.lower().split()


def tokenize(text: Text, max_len: int, truncate: bool = False) -> tuple[list[str], list[int]]:
    """`<cls> A <sep> [B <sep>]` and segment ids (0 for A, 1 for B); too long is an error unless
    `truncate`, which drops words from the end of the longer side."""
    a, b = (text, None) if isinstance(text, str) else text
    tokens_a, tokens_b = words(a), (words(b) if b is not None else None)
    if not tokens_a or (tokens_b is not None and not tokens_b):
        raise UserError("empty text: give at least one word" + (" on each side of the pair" if b is not None else ""))
    specials = 2 if tokens_b is None else 3
    total = len(tokens_a) + len(tokens_b or []) + specials
    if total > max_len:
        if not truncate:
            raise UserError(f"text is {total} tokens long with <cls>/<sep>, over the model's max_len {max_len} "
                            f"(shorten it or pass --truncate)")
        while len(tokens_a) + len(tokens_b or []) + specials > max_len:
            if tokens_b and len(tokens_b) >= len(tokens_a):
                tokens_b.pop()
            else:
                tokens_a.pop()
    tokens = [CLS, *tokens_a, SEP]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, SEP]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


def pad_batch(vocab: Vocab, items: list[tuple[list[str], list[int]]]) -> dict:
    """Token/segment lists -> the encoder's named int64 inputs, padded to the longest item."""
    import numpy as np

    width = max(len(tokens) for tokens, _ in items)
    ids = np.full((len(items), width), vocab.pad, dtype=np.int64)
    segments = np.zeros((len(items), width), dtype=np.int64)
    for row, (tokens, segs) in enumerate(items):
        ids[row, :len(tokens)] = [vocab[t] for t in tokens]
        segments[row, :len(segs)] = segs
    valid = np.array([len(tokens) for tokens, _ in items], dtype=np.int64)
    return dict(zip(input_names(), (ids, segments, valid)))
