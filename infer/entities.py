"""A tagger's per-token logits -> entities, as transformers' token-classification pipeline gives them with its
`simple` aggregation: each piece takes its best tag and that tag's probability; adjacent pieces of one type
form an entity unless a piece's tag begins another (B-); `O` is left out. Each entity is
`{"entity_group", "score" (the mean of its pieces'), "word", "start", "end"}` with character offsets into the
original text (and `word` that text's slice, so its case and accents are the user's own)."""
from __future__ import annotations

import numpy as np

from pipeline.core.tokenizer import Span


def tag_parts(tag: str) -> tuple[str, str]:
    """("B" or "I", the entity type) as transformers' pipeline reads a tag: B-X, I-X, or a bare X (I)."""
    if tag.startswith(("B-", "I-")):
        return tag[0], tag[2:]
    return "I", tag


def grouped_entities(text: str, spans: list[Span], logits: np.ndarray, labels: list[str]) -> list[dict]:
    """`spans` (each piece with its characters) and their `logits` ([pieces, tags]) -> the text's entities."""
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    best = probabilities.argmax(-1)
    groups: list[list[tuple[str, float, int, int]]] = []
    for (_, start, end), tag_id, row in zip(spans, best, probabilities):
        piece = (labels[tag_id], float(row[tag_id]), start, end)
        if groups:
            bi, kind = tag_parts(piece[0])
            if kind == tag_parts(groups[-1][-1][0])[1] and bi != "B":
                groups[-1].append(piece)
                continue
        groups.append([piece])
    out = []
    for group in groups:
        kind = tag_parts(group[0][0])[1]
        if kind == "O":
            continue
        start, end = group[0][2], group[-1][3]
        out.append({"entity_group": kind, "score": float(np.mean([p[1] for p in group])), "word": text[start:end],
                    "start": start, "end": end})
    return out
