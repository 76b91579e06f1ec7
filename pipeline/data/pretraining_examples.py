"""Pretraining examples, vectorised with numpy: NSP sentence pairs and MLM masking (80/10/10).

Arrays are fixed-shape int32 (`[pairs, max_len]`, `[pairs, max_preds]`); the training loop casts
each batch to int64. Every draw comes from a numpy Generator the caller seeds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.vocab import Vocab

if TYPE_CHECKING:
    from pipeline.core.tokenizer import Tokenizer

CHUNK_ROWS = 1 << 16  # rows built at a time, so temporaries stay small next to the result


@dataclass
class Pairs:
    """Unmasked `<cls> A <sep> B <sep>` pairs, padded with `<pad>` to max_len."""

    input_ids: np.ndarray  # [N, max_len] int32
    token_type_ids: np.ndarray  # [N, max_len] int32, 0 for A (and padding), 1 for B
    valid_length: np.ndarray  # [N] int32
    nsp_labels: np.ndarray  # [N] int32, 1 when B really follows A

    def __len__(self) -> int:
        return len(self.valid_length)


@dataclass
class MaskedTokens:
    """The MLM side of a set of pairs: corrupted inputs and what to predict where."""

    input_ids: np.ndarray  # [N, max_len] int32, with <mask> / random / kept tokens
    pred_positions: np.ndarray  # [N, max_preds] int32 (0 where the weight is 0)
    mlm_weights: np.ndarray  # [N, max_preds] float32, 1 for a real prediction
    mlm_labels: np.ndarray  # [N, max_preds] int32, the original tokens (0 where the weight is 0)


def max_predictions(max_len: int, mask_prob: float = 0.15) -> int:
    return max(1, round(mask_prob * max_len))


class SentenceBounds(Protocol):
    """Where sentences and documents start in a flat array of token ids."""

    sentence_starts: np.ndarray  # [sentences + 1], offsets into the ids
    document_starts: np.ndarray  # [documents + 1], offsets into the sentences


@dataclass
class SentenceIndex:
    """A SentenceBounds of token ids made from text (`encode_documents`)."""

    sentence_starts: np.ndarray
    document_starts: np.ndarray


def encode_documents(documents: list[list[str]], tokenizer: "Tokenizer") -> tuple[np.ndarray, SentenceIndex]:
    """Flat int32 ids of every sentence of `documents` (each a list of sentences), and where sentences and
    documents start; sentences with no token (a line of control characters) and emptied documents are dropped."""
    ids = tokenizer.ids_batch([s for doc in documents for s in doc])
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    doc_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    kept = lengths > 0
    per_document = np.bincount(doc_of[kept], minlength=len(documents))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return flat, SentenceIndex(np.concatenate([[0], np.cumsum(lengths[kept])]),
                               np.concatenate([[0], np.cumsum(per_document[per_document > 0])]))


def choose_pairs(sentence_starts: np.ndarray, document_starts: np.ndarray, max_len: int, rng: np.random.Generator,
                 documents: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, is_next) sentence indices of the NSP pairs of `documents` (all by default): each
    sentence with a successor in its document is a first sentence; half the time B is that successor,
    otherwise a random sentence of a random document of the whole corpus. Pairs over max_len are skipped.
    Only the index arrays are read, so a corpus on disk can be paired document range by range."""
    doc_starts = np.asarray(document_starts)
    lo, hi, _ = documents.indices(len(doc_starts) - 1)
    first_sentence = int(doc_starts[lo])
    local_sizes = np.diff(doc_starts[lo:hi + 1])
    doc_of = np.repeat(np.arange(len(local_sizes)), local_sizes)
    first = first_sentence + np.flatnonzero(doc_of[:-1] == doc_of[1:])
    all_sizes = np.diff(doc_starts)
    is_next = rng.random(len(first)) < 0.5
    other_doc = rng.integers(0, len(all_sizes), len(first))
    other = doc_starts[other_doc] + (rng.random(len(first)) * all_sizes[other_doc]).astype(np.int64)
    second = np.where(is_next, first + 1, other)
    starts = np.asarray(sentence_starts)
    lengths_first = starts[first + 1] - starts[first]
    lengths_second = starts[second + 1] - starts[second]
    keep = lengths_first + lengths_second + 3 <= max_len
    return first[keep], second[keep], is_next[keep]


def build_pairs(ids: np.ndarray, sentence_starts: np.ndarray, first: np.ndarray, second: np.ndarray,
                is_next: np.ndarray, vocab: Vocab, max_len: int) -> Pairs:
    """`<cls> A <sep> B <sep>` rows for the chosen sentence pairs, padded to max_len (reads only the
    token ids it needs, so `ids` may be a memory map)."""
    starts = np.asarray(sentence_starts)
    lengths_first = (starts[first + 1] - starts[first]).astype(np.int32)
    lengths_second = (starts[second + 1] - starts[second]).astype(np.int32)
    n = len(first)
    input_ids = np.empty((n, max_len), dtype=np.int32)
    token_type_ids = np.empty((n, max_len), dtype=np.int32)
    col = np.arange(max_len, dtype=np.int32)[None, :]
    for lo in range(0, n, CHUNK_ROWS):
        sl = slice(lo, lo + CHUNK_ROWS)
        la, lb = lengths_first[sl][:, None], lengths_second[sl][:, None]
        in_a = (col >= 1) & (col <= la)
        in_b = (col >= la + 2) & (col <= la + lb + 1)
        src = np.where(in_a, starts[first[sl]][:, None] + col - 1, starts[second[sl]][:, None] + col - la - 2)
        src = np.where(in_a | in_b, src, 0)
        row = np.where(in_a | in_b, np.asarray(ids[src.ravel()]).reshape(src.shape), vocab.pad)
        row[:, 0] = vocab.cls
        np.putmask(row, (col == la + 1) | (col == la + lb + 2), vocab.sep)
        input_ids[sl] = row
        token_type_ids[sl] = (col >= la + 2) & (col <= la + lb + 2)
    valid_length = (lengths_first + lengths_second + 3).astype(np.int32)
    return Pairs(input_ids, token_type_ids, valid_length, np.asarray(is_next).astype(np.int32))


def make_pairs(ids: np.ndarray, sentences: SentenceBounds, vocab: Vocab, max_len: int,
               rng: np.random.Generator) -> Pairs:
    """Every NSP pair of a corpus in memory: `choose_pairs`, then `build_pairs`."""
    first, second, is_next = choose_pairs(sentences.sentence_starts, sentences.document_starts, max_len, rng)
    if not len(first):
        lengths = np.diff(sentences.sentence_starts)
        raise UserError(f"no sentence pair fits in data.max_len={max_len} "
                        f"(the shortest sentence has {int(lengths.min())} tokens)")
    return build_pairs(ids, sentences.sentence_starts, first, second, is_next, vocab, max_len)


def mask_tokens(input_ids: np.ndarray, vocab: Vocab, max_preds: int, mask_prob: float,
                rng: np.random.Generator, continuation: np.ndarray | None = None, replace: bool = True) -> MaskedTokens:
    """Choose mask_prob (at least one) of the non-special tokens of each row; of those 80% become
    the mask token, 10% a random regular token, 10% stay (with `replace`; without, all become the mask
    token). Labels are the original tokens. The unknown token is a regular target; padding, mask,
    sentence start and separator are never chosen.

    With `continuation` (per vocabulary id: True for a WordPiece `##` piece), whole words are chosen:
    every piece of a word gets the random key of its first piece, so they are picked together."""
    n, max_len = input_ids.shape
    candidate = ~np.isin(input_ids, vocab.special_ids[vocab.special_ids != vocab.unk])
    n_candidates = candidate.sum(axis=1)
    n_preds = np.minimum(np.maximum(np.rint(mask_prob * n_candidates), 1), n_candidates)
    n_preds = np.minimum(n_preds, max_preds).astype(np.int64)
    keys = rng.random((n, max_len), dtype=np.float32)
    if continuation is not None:
        word_start = np.where(continuation[input_ids], 0, np.arange(max_len)[None, :])
        keys = np.take_along_axis(keys, np.maximum.accumulate(word_start, axis=1), axis=1)
        keys += np.arange(max_len, dtype=np.float32) * 1e-6  # within a word, earlier pieces first
    keys[~candidate] = 2.0
    k = min(max_preds, max_len)
    smallest = np.argpartition(keys, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
    positions = np.take_along_axis(smallest, order, axis=1)
    weights = np.arange(k)[None, :] < n_preds[:, None]
    positions = np.where(weights, positions, 0).astype(np.int32)
    labels = np.where(weights, np.take_along_axis(input_ids, positions, axis=1), 0).astype(np.int32)
    roll = rng.random((n, k), dtype=np.float32)
    random_tokens = rng.integers(vocab.first_regular, len(vocab), (n, k), dtype=np.int32)
    replacement = (np.where(roll < 0.8, vocab.mask, np.where(roll < 0.9, random_tokens, labels)) if replace
                   else np.full_like(labels, vocab.mask))
    masked = input_ids.copy()
    np.put_along_axis(masked, positions, np.where(weights, replacement, masked[:, :1]), axis=1)
    if k < max_preds:
        pad = ((0, 0), (0, max_preds - k))
        positions, labels, weights = (np.pad(a, pad) for a in (positions, labels, weights))
    return MaskedTokens(masked, positions, weights.astype(np.float32), labels)
