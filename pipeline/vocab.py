"""Vocabulary: tokens <-> ids, built by frequency, saved as JSON. Pure Python (no paddle import)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.errors import UserError
from pipeline.files import write_text_atomic

UNK, PAD, MASK, CLS, SEP = "<unk>", "<pad>", "<mask>", "<cls>", "<sep>"
SPECIAL_TOKENS = (UNK, PAD, MASK, CLS, SEP)


class Vocab:
    """`<unk>`=0, `<pad>`, `<mask>`, `<cls>`, `<sep>`, then tokens by falling frequency (ties by token)."""

    def __init__(self, idx_to_token: Sequence[str]):
        if tuple(idx_to_token[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}")
        self.idx_to_token = list(idx_to_token)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        self.unk, self.pad, self.mask, self.cls, self.sep = range(len(SPECIAL_TOKENS))

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_freq: int = 5) -> "Vocab":
        kept = [t for t, n in counts.items() if n >= min_freq and t not in SPECIAL_TOKENS]
        kept.sort(key=lambda t: (-counts[t], t))
        return cls(list(SPECIAL_TOKENS) + kept)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, self.unk)

    def ids_of(self, forms: Sequence[str]) -> np.ndarray:
        """Ids (int32) of corpus words, already lower-cased. Unknown words, and text that spells a
        special token (say a literal "<mask>"), become `<unk>`."""
        get = self.token_to_idx.get
        return np.array([0 if f in SPECIAL_TOKENS else get(f, 0) for f in forms], dtype=np.int32)

    def save(self, path: Path) -> None:
        """Write JSON atomically (temporary file + rename)."""
        write_text_atomic(Path(path), json.dumps({"idx_to_token": self.idx_to_token}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["idx_to_token"])
        except FileNotFoundError:
            raise UserError(f"vocabulary not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not a vocabulary file ({err})") from None
