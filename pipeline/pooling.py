"""One vector from an input's token vectors, as the export's manifest says ("embedding"."pooling"). Pure
numpy, below both training (evaluate.py's retrieval figures) and inference (infer/embedding.py), so that both
pool the same way."""
from __future__ import annotations

import numpy as np

from pipeline.export_format import POOLINGS


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
