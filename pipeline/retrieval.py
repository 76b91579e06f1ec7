"""Same-document retrieval: do a model's sentence vectors find text of the same document? A label-free
figure of what users want from embeddings (search, clustering), next to two baselines it must beat.

Each paragraph of at least MIN_WORDS words is represented by its first sentence; for every such sentence
the others are ranked by cosine similarity, and a hit is one from the same document (a WikiText article,
or one of your documents separated by blank lines, whose lines are its paragraphs). recall@1: how often the
nearest is a hit; MRR: the mean of 1 / the rank of the first hit. The baselines, on the same sentences:
tf-idf of words and word pairs (scikit-learn's TfidfVectorizer defaults, written here in numpy) and the same
architecture with random weights.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.core.errors import UserError
from pipeline.data.text_files import split_sentences, text_files

MIN_WORDS = 40  # a paragraph shorter than this is not a unit (headings, captions, list items)
WIKITEXT_ARTICLE = re.compile(r"^ = [^=].* = $")  # " = Title = ", not " = = Section = = "
WORD = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's token pattern

EmbedFn = Callable[[list[str]], np.ndarray]  # texts -> [N, H] vectors


@dataclass(frozen=True)
class RetrievalSet:
    """The first sentence of each unit and the document it comes from."""

    texts: list[str]
    documents: np.ndarray  # [N] document number of each text

    @property
    def document_count(self) -> int:
        return len(set(self.documents.tolist()))


def wikitext_articles(path: Path) -> list[list[str]]:
    """A WikiText split as articles (a " = Title = " line starts one), each a list of its paragraphs."""
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if WIKITEXT_ARTICLE.match(line):
            articles.append([])
        elif line.strip() and not line.lstrip().startswith("=") and articles:
            articles[-1].append(line.strip())
    return articles


def corpus_articles(paths: Sequence[str]) -> list[list[str]]:
    """Your own files as documents (separated by blank lines), each a list of its lines."""
    documents: list[list[str]] = []
    for path in text_files(paths):
        current: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines() + [""]:
            if line.strip():
                current.append(line.strip())
            elif current:
                documents.append(current)
                current = []
    return documents


def first_sentence(paragraph: str) -> str:
    """WikiText's sentences end with " . "; other text is split as the corpus reader splits it."""
    if " . " in paragraph:
        return paragraph.split(" . ")[0] + " ."
    sentences = split_sentences(paragraph)
    return sentences[0] if sentences else paragraph


def retrieval_set(documents: list[list[str]], min_words: int = MIN_WORDS) -> RetrievalSet:
    """The units of `documents` (paragraphs of at least `min_words` words, in documents that have two)."""
    texts, numbers = [], []
    for number, paragraphs in enumerate(documents):
        long = [p for p in paragraphs if len(p.split()) >= min_words]
        if len(long) >= 2:
            texts += [first_sentence(p) for p in long]
            numbers += [number] * len(long)
    if len(set(numbers)) < 2:
        raise UserError(f"retrieval needs two documents with two paragraphs of at least {min_words} words each; "
                        f"the text has {len(set(numbers))}")
    return RetrievalSet(texts, np.asarray(numbers))


def ranking_figures(vectors: np.ndarray, documents: np.ndarray, unit: bool = False) -> dict[str, float]:
    """recall@1 and MRR of same-document retrieval by cosine similarity (a zero vector matches nothing);
    `unit`: the rows are already scaled as they must be (tf-idf's, with columns left out)."""
    if not unit:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)  # a text is not its own neighbour
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = documents[order] == documents[:, None]  # itself comes last (-inf): another of its document is first
    first_hit = hits.argmax(axis=1)
    return {"recall_at_1": float(hits[:, 0].mean()), "mrr": float((1.0 / (first_hit + 1)).mean())}


def tfidf_vectors(texts: list[str]) -> np.ndarray:
    """TfidfVectorizer(ngram_range=(1, 2)) defaults: lower-cased words of 2+ characters and their pairs,
    raw counts times smooth idf (ln((1 + n) / (1 + df)) + 1), rows scaled to unit length. Only features
    of two or more texts are kept as columns (the others cannot make two texts alike), after the norms:
    rank these with `unit=True`, so that the dot products are the full vectors' cosines."""
    counts = []
    for text in texts:
        words = WORD.findall(text.lower())
        counts.append(Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])]))
    df = Counter(feature for c in counts for feature in c)
    n = len(texts)
    idf = {f: np.log((1 + n) / (1 + d)) + 1 for f, d in df.items()}
    shared = sorted(f for f, d in df.items() if d >= 2)
    column = {f: i for i, f in enumerate(shared)}
    out = np.zeros((n, len(shared)), dtype=np.float32)
    for row, c in enumerate(counts):
        weights = {f: k * idf[f] for f, k in c.items()}
        norm = np.sqrt(sum(w * w for w in weights.values())) or 1.0
        for f, w in weights.items():
            if f in column:
                out[row, column[f]] = w / norm
    return out


def retrieval_figures(embed: EmbedFn, retrieval: RetrievalSet, baselines: dict[str, EmbedFn] | None = None
                      ) -> dict[str, dict[str, float]]:
    """{"model": figures, "tfidf": figures, name: figures for each other baseline}."""
    figures = {"model": ranking_figures(embed(retrieval.texts), retrieval.documents),
               "tfidf": ranking_figures(tfidf_vectors(retrieval.texts), retrieval.documents, unit=True)}
    for name, baseline in (baselines or {}).items():
        figures[name] = ranking_figures(baseline(retrieval.texts), retrieval.documents)
    return figures


def format_retrieval(figures: dict[str, dict[str, float]], retrieval: RetrievalSet, pooling: str) -> str:
    """One line: the model's recall@1 and MRR next to each baseline's."""
    parts = [f"{name} {f['recall_at_1']:.3f} / {f['mrr']:.3f}" for name, f in figures.items() if name != "model"]
    m = figures["model"]
    return (f"same-document retrieval over {len(retrieval.texts)} sentences of {retrieval.document_count} documents "
            f"({pooling} pooling): recall@1 {m['recall_at_1']:.3f}, MRR {m['mrr']:.3f} "
            f"(baselines, recall@1 / MRR: {', '.join(parts)})")
