"""Vocabulary: tokens <-> ids, with its special tokens, saved as JSON. Pure Python (no paddle import).

The special tokens (unknown, padding, mask, sentence start, separator) are a property of the vocabulary:
this project's own vocabularies use `<unk> <pad> <mask> <cls> <sep>` at ids 0-4, a published BERT keeps
its own (`[PAD]`=0, `[UNK]`=100, `[CLS]`=101, `[SEP]`=102, `[MASK]`=103 in bert-base-uncased). Every
part of the pipeline asks the vocabulary for them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.files import write_text_atomic


@dataclass(frozen=True)
class SpecialTokens:
    """The five special tokens' strings."""

    unk: str = "<unk>"
    pad: str = "<pad>"
    mask: str = "<mask>"
    cls: str = "<cls>"
    sep: str = "<sep>"

    def strings(self) -> tuple[str, str, str, str, str]:
        return self.unk, self.pad, self.mask, self.cls, self.sep


OWN_SPECIALS = SpecialTokens()  # this project's vocabularies: ids 0-4 in this order
SPECIAL_TOKENS = OWN_SPECIALS.strings()


class Vocab:
    """Tokens by id, and where the special tokens are (`unk`, `pad`, `mask`, `cls`, `sep` are ids)."""

    def __init__(self, idx_to_token: Sequence[str], specials: SpecialTokens = OWN_SPECIALS):
        self.idx_to_token = list(idx_to_token)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        missing = [t for t in specials.strings() if t not in self.token_to_idx]
        if missing:
            raise ValueError(f"the vocabulary lacks its special token(s) {', '.join(missing)}")
        self.specials = specials
        self.unk, self.pad, self.mask, self.cls, self.sep = (self.token_to_idx[t] for t in specials.strings())
        self.special_ids = np.array(sorted({self.unk, self.pad, self.mask, self.cls, self.sep}), dtype=np.int64)
        # random replacement tokens (MLM's 10%) are drawn from the ids after the last special token:
        # for this project's vocabularies 5 on, for BERT's past [MASK] (its [unusedN] come before)
        self.first_regular = int(self.special_ids.max()) + 1

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
        special token (say a literal "<mask>"), become the unknown token."""
        get, unk, specials = self.token_to_idx.get, self.unk, set(self.specials.strings())
        return np.array([unk if f in specials else get(f, unk) for f in forms], dtype=np.int32)

    def digest(self) -> str:
        """SHA-256 of the tokens in id order: what a cache made with this vocabulary is keyed by."""
        return hashlib.sha256("\n".join(self.idx_to_token).encode()).hexdigest()

    def save(self, path: Path) -> None:
        """Write JSON atomically (temporary file + rename)."""
        write_text_atomic(Path(path), json.dumps({"idx_to_token": self.idx_to_token,
                                                  "special_tokens": asdict(self.specials)}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["idx_to_token"], SpecialTokens(**data.get("special_tokens", {})))
        except FileNotFoundError:
            raise UserError(f"vocabulary not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not a vocabulary file ({err})") from None
