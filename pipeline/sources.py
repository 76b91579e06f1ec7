"""Text in, tokenizer and NSP pairs out: your own corpus (files, folders, globs) or WikiText-2 with a
WordPiece tokenizer. (WikiText-2 with the seed's whitespace vocabulary, cached, is `dataset.prepare`.)

Documents of sentences -> token ids through the one tokenizer -> `examples.make_pairs`, the same
vectorised pair building as WikiText's.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.corpus import find_files, read_documents
from pipeline.errors import UserError
from pipeline.examples import Pairs, make_pairs
from pipeline.tokenizer import Tokenizer, WhitespaceTokenizer, WordPieceTokenizer
from pipeline.vocab import Vocab
from pipeline.wikitext import read_sentences

log = logging.getLogger(__name__)
Documents = list[list[str]]  # documents, each a list of sentences


@dataclass
class SentenceIndex:
    """Where each sentence and each document starts in a flat array of token ids (a SentenceBounds)."""

    sentence_starts: np.ndarray  # [sentences + 1]
    paragraph_starts: np.ndarray  # [documents + 1], in sentences


def corpus_documents(paths: Sequence[str]) -> Documents:
    """Every document of the --corpus files; empty files are skipped with a count."""
    found = find_files(paths)
    if found.empty:
        log.warning("skipped %d empty file(s), e.g. %s", len(found.empty), found.empty[0])
    if not found.files:
        raise UserError(f"--corpus {' '.join(paths)}: every file is empty")
    return list(read_documents(found.files))


def wikitext_documents(path: Path) -> Documents:
    """WikiText paragraphs as documents, sentences as written (case kept: the tokenizer decides)."""
    s = read_sentences(path)
    words = np.array(s.words, dtype=object)
    sentences = [" ".join(words[s.token_ids[a:b]]) for a, b in zip(s.sentence_starts[:-1], s.sentence_starts[1:])]
    return [sentences[a:b] for a, b in zip(s.paragraph_starts[:-1], s.paragraph_starts[1:])]


def train_tokenizer(documents: Documents, kind: str, vocab_size: int, lowercase: bool, min_freq: int) -> Tokenizer:
    """A WordPiece tokenizer learnt from the documents, or the whitespace vocabulary of their words."""
    sentences = [s for doc in documents for s in doc]
    if kind == "wordpiece":
        return WordPieceTokenizer.train(iter(sentences), vocab_size, lowercase, total=len(sentences))
    counts = Counter(w for s in sentences for w in s.lower().split())
    return WhitespaceTokenizer(Vocab.from_counts(counts, min_freq))


def token_ids(documents: Documents, tokenizer: Tokenizer) -> tuple[np.ndarray, SentenceIndex]:
    """Flat int32 ids of every sentence, and where sentences and documents start (empty sentences,
    say a line of control characters, are dropped)."""
    sentences = [s for doc in documents for s in doc]
    if isinstance(tokenizer, WordPieceTokenizer):
        ids = tokenizer.ids_batch(sentences)
    else:
        ids = [tokenizer.vocab.ids_of(tokenizer.tokens(s)).tolist() for s in sentences]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    doc_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    kept = lengths > 0
    sentence_starts = np.concatenate([[0], np.cumsum(lengths[kept])])
    paragraph_starts = np.concatenate([[0], np.cumsum(np.bincount(doc_of[kept], minlength=len(documents)))])
    flat = np.fromiter((t for x, keep in zip(ids, kept) if keep for t in x), dtype=np.int32, count=int(lengths.sum()))
    return flat, SentenceIndex(sentence_starts, paragraph_starts)


def documents_to_pairs(documents: Documents, tokenizer: Tokenizer, max_len: int, seed: int, what: str) -> Pairs:
    """NSP pairs (unmasked) of `documents`, drawn within documents as for WikiText."""
    ids, index = token_ids(documents, tokenizer)
    if not (np.diff(index.paragraph_starts) >= 2).any():
        raise UserError(f"{what} has no document with two sentences: next-sentence pairs need them "
                        f"(separate documents by blank lines, sentences by . ! ? or 。！？)")
    return make_pairs(ids, index, tokenizer.vocab, max_len, np.random.default_rng([seed, 0]))
