"""A corpus prepared by pipeline/prepare.py, read back: index.json plus raw little-endian arrays,
memory-mapped, whose NSP pairs are built row by row when a batch asks for them. What training and
evaluation import of a prepared folder (prepare.py is the writer and its command)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import VOCAB
from pipeline.core.tokenizer import Tokenizer, load_tokenizer
from pipeline.core.vocab import Vocab
from pipeline.data.pretraining_examples import Pairs, build_pairs

FORMAT = 1  # of the folder's files; a folder of another format is prepared again
INDEX = "index.json"


@dataclass
class MappedCorpus:
    """A prepared folder, memory-mapped: pairs are built row by row when a batch asks for them."""

    folder: Path
    index: dict
    tokenizer: Tokenizer
    tokens: np.ndarray
    sentence_starts: np.ndarray
    pairs: np.ndarray  # [P, 3] int64: first sentence, second sentence, is_next

    @classmethod
    def open(cls, folder: str | Path) -> "MappedCorpus":
        folder = Path(folder)
        try:
            index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{folder} is not a prepared corpus (no {INDEX}): make one with "
                            f"python pipeline/prepare.py --corpus ... --output-dir {folder}") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{folder / INDEX} is unreadable ({err})") from None
        if index.get("format") != FORMAT:
            raise UserError(f"{folder} was prepared by another version (format {index.get('format')}); prepare it again")
        tokenizer = load_tokenizer(folder, Vocab.load(folder / VOCAB))

        def mapped(name: str, dtype: str, shape: tuple) -> np.ndarray:
            path = folder / f"{name}.bin"
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise UserError(f"{path} is missing or has the wrong size (expected {expected} bytes): prepare again")
            return np.memmap(path, dtype=dtype, mode="r", shape=shape)

        return cls(folder, index, tokenizer, mapped("tokens", index["token_dtype"], (index["tokens"],)),
                   mapped("sentence_starts", "int64", (index["sentences"] + 1,)),
                   mapped("pairs", "int64", (index["pairs"], 3)))

    def __len__(self) -> int:
        return len(self.pairs)

    def take(self, rows: np.ndarray, max_len: int) -> Pairs:
        """The padded pairs at `rows` (read from the maps)."""
        chosen = np.asarray(self.pairs[np.sort(rows)])
        order = np.argsort(np.argsort(rows))  # back to the order asked for
        chosen = chosen[order]
        return build_pairs(self.tokens, self.sentence_starts, chosen[:, 0], chosen[:, 1], chosen[:, 2],
                           self.tokenizer.vocab, max_len)
