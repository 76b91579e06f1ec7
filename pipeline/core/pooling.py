"""One vector per input from its token vectors, as the export's manifest says ("embedding": pooling,
normalisation, dimensions). Pure numpy, below training (evaluate.py's retrieval figures), export and
inference, so that all pool the same way; training's graph-side twin is `pipeline.model.pooled`.

Pooling is over every real token, <cls> and <sep> included, as sentence-transformers pools: `cls` takes
row 0, `mean` the mean, `max` the element-wise maximum, `weighted` the mean weighted by each token's weight
(the export's TOKEN_WEIGHTS, learned by the contrastive stage). A text longer than the model's maximum may be
embedded by overlapping windows (`pipeline.core.tokenizer.tokenize_windows`): each window is pooled, then the
windows are combined into one vector, weighted by their tokens (mean, cls; `weighted`: by their tokens'
weights) or element-wise (max), before any normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.export_format import POOLINGS


def pool(vectors: np.ndarray, pooling: str, weights: np.ndarray | None = None) -> np.ndarray:
    """[tokens, hidden] -> [hidden]; `weighted` takes each token's weight ([tokens])."""
    if pooling == "cls":
        return vectors[0]
    if pooling == "mean":
        return vectors.mean(axis=0)
    if pooling == "weighted":
        return weights @ vectors / weights.sum()
    if pooling == "max":
        return vectors.max(axis=0)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")



@dataclass(frozen=True)
class EmbeddingSpec:
    """The manifest's "embedding": how encodings become one vector, and its length."""

    pooling: str
    normalize: bool
    dimensions: int

    @classmethod
    def from_manifest(cls, manifest: dict) -> "EmbeddingSpec":
        """The export's own spec; an export made before the field existed pools <cls>, unnormalised."""
        hidden = int(manifest["model"]["hidden_size"])
        spec = manifest.get("embedding") or {"pooling": "cls", "normalize": False, "dimensions": hidden}
        return cls(str(spec["pooling"]), bool(spec["normalize"]), int(spec["dimensions"]))


def combine_windows(pooled: list[np.ndarray], tokens: list[float], pooling: str) -> np.ndarray:
    """The windows of one text as one vector: their mean weighted by `tokens` (each window's tokens, or the sum
    of their weights), or their element-wise max."""
    if len(pooled) == 1:
        return pooled[0]
    if pooling == "max":
        return np.max(pooled, axis=0)
    weights = np.asarray(tokens, dtype=np.float32)
    return (np.asarray(pooled) * weights[:, None]).sum(axis=0) / weights.sum()


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as torch's F.normalize does."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def first_dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` values of each row, renormalised (a Matryoshka model's shorter vector)."""
    if dimensions is None or dimensions == vectors.shape[-1]:
        return vectors
    return normalized(vectors[..., :dimensions])

