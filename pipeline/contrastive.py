"""The contrastive stage (`train.objective=contrastive`): sentence vectors that carry meaning, trained with
in-batch negatives after (or instead of) masked-LM pretraining, on the same model, ranks and checkpoints.

Positives (`train.positives`), as published:
- `crops` (Contriever, Izacard et al. 2021): two spans cropped independently from one document;
- `dropout` (unsupervised SimCSE, Gao et al. 2021): one sentence twice, the views differing by dropout;
- `pairs`: your own `anchor<TAB>positive[<TAB>hard negative]` lines (`data.pairs`), as
  sentence-transformers' MultipleNegativesRankingLoss takes them.
Every other row of the global batch is a negative. The loss is the cross-entropy of each anchor's cosine
similarities to every positive (and hard negative) of the global batch, over a temperature. With several
ranks each gathers every rank's vectors, so negatives come from the global batch, as in one process; each
rank's loss is the whole global loss, with gradients into its own rows only, scaled by the world size so
that data parallel's gradient average is exactly one process's gradient.

Batches are [views x rows, max_len] int64 arrays (anchors, then positives, then hard negatives), drawn from
(seed, step) alone: resumable, and the same global batch for any number of ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import input_names
from pipeline.core.files import read_utf8
from pipeline.core.tokenizer import Tokenizer
from pipeline.data.batches import prefetched
from pipeline.data.pretraining_examples import encode_documents

SIF_A = 1e-3  # SIF's a (Arora et al. 2017): a token of frequency p starts at weight a / (a + p)
CROP_RATIO = (0.1, 0.5)  # Contriever's span lengths, as a share of the document's tokens
MIN_CROP = 4  # tokens; shorter documents are not cropped


@dataclass
class Units:
    """Token-id sequences (documents, sentences or pair fields) as flat ids and offsets."""

    ids: np.ndarray  # int32
    starts: np.ndarray  # [units + 1]

    def __len__(self) -> int:
        return len(self.starts) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def piece(self, unit: int, start: int, length: int) -> np.ndarray:
        return self.ids[self.starts[unit] + start:self.starts[unit] + start + length]


def document_units(documents: list[list[str]], tokenizer: Tokenizer, positives: str) -> Units:
    """The units positives are drawn from: whole documents (crops) or sentences (dropout)."""
    ids, index = encode_documents(documents, tokenizer)
    starts = index.sentence_starts if positives == "dropout" else index.sentence_starts[index.document_starts]
    units = Units(ids, starts)
    enough = units.lengths() >= (MIN_CROP if positives == "crops" else 1)
    if enough.sum() < 2:
        raise UserError(f"train.positives={positives} needs at least two "
                        f"{'documents of ' + str(MIN_CROP) + '+ tokens' if positives == 'crops' else 'sentences'}; "
                        f"the corpus has {int(enough.sum())}")
    return units


def read_pairs(path: Path, tokenizer: Tokenizer) -> tuple[Units, int]:
    """(the fields of every line, flattened line by line, and the number of fields per line: 2 or 3) of an
    `anchor<TAB>positive[<TAB>hard negative]` file; a malformed line is refused with its number."""
    try:
        lines = read_utf8(path).splitlines()
    except FileNotFoundError:
        raise UserError(f"data.pairs file not found: {path}") from None
    except OSError as err:
        raise UserError(f"cannot read data.pairs {path}: {err.strerror or err}") from None
    rows = [(number, line.split("\t")) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise UserError(f"data.pairs {path} holds no line")
    fields = len(rows[0][1])
    for number, parts in rows:
        if len(parts) not in (2, 3) or len(parts) != fields or not all(p.strip() for p in parts):
            raise UserError(f"data.pairs {path} line {number}: want anchor<TAB>positive[<TAB>hard negative] with "
                            f"the same {fields} non-empty fields on every line, got {len(parts)} field(s)")
    texts = [p for _, parts in rows for p in parts]
    ids = tokenizer.ids_batch(texts)
    empty = next((i for i, x in enumerate(ids) if not x), None)
    if empty is not None:
        raise UserError(f"data.pairs {path} line {rows[empty // fields][0]}: a field has no token")
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return Units(np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]),
                 np.concatenate([[0], np.cumsum(lengths)])), fields


def sif_log_weights(units: Units, vocab_size: int, once_per_unit: tuple[int, ...]) -> np.ndarray:
    """log(a / (a + p)) for every vocabulary token, p its frequency in `units` (the tokens of
    `once_per_unit`, <cls> and <sep>, counted once per unit): `model.pooling=weighted`'s start, frequent
    tokens light and rare ones near 1."""
    counts = np.bincount(units.ids, minlength=vocab_size)[:vocab_size].astype(np.float64)
    counts[list(once_per_unit)] += len(units)
    return np.log(SIF_A / (SIF_A + counts / counts.sum())).astype(np.float32)


class ContrastiveData:
    """Global batches of (anchor, positive[, hard negative]) rows and each rank's share of them."""

    def __init__(self, units: Units, positives: str, max_len: int, cls: int, sep: int, pad: int, seed: int = 0,
                 fields: int = 2):
        self.units, self.positives, self.max_len, self.seed = units, positives, max_len, seed
        self.cls, self.sep, self.pad = cls, sep, pad
        self.views = fields if positives == "pairs" else 2
        lengths = units.lengths()
        if positives == "pairs":
            self.choices = np.arange(len(units) // fields)
        else:
            self.choices = np.flatnonzero(lengths >= (MIN_CROP if positives == "crops" else 1))

    def __len__(self) -> int:
        return len(self.choices)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self) // batch_size)

    def global_batch_size(self, step: int, batch_size: int) -> int:  # noqa: ARG002 - no ramp here
        return batch_size

    def check_batch(self, batch_size: int, world: int) -> None:
        if batch_size < 2 or batch_size % world:
            raise UserError(f"train.batch_size={batch_size}: a contrastive batch needs at least 2 rows (each "
                            f"row's negatives are the others) and a multiple of the {world} rank(s)")
        if batch_size > len(self):
            raise UserError(f"train.batch_size={batch_size} is over the {len(self)} "
                            f"{'pairs' if self.positives == 'pairs' else 'units'} to draw a batch from: a row "
                            f"would be its own negative")

    def _views(self, rng: np.random.Generator, chosen: np.ndarray) -> list[list[np.ndarray]]:
        """Each view's token ids (no special tokens) for the chosen units."""
        width = self.max_len - 2
        if self.positives == "pairs":
            return [[self.units.piece(c * self.views + v, 0, width) for c in chosen] for v in range(self.views)]
        if self.positives == "dropout":
            same = [self.units.piece(c, 0, width) for c in chosen]
            return [same, same]
        views = []
        for _ in range(2):  # independent crops (Contriever): each its own length and start
            crops = []
            for c in chosen:
                n = int(self.units.lengths()[c])
                low, high = max(MIN_CROP, int(CROP_RATIO[0] * n)), max(MIN_CROP, int(CROP_RATIO[1] * n))
                length = int(rng.integers(min(low, width), min(high, width) + 1))
                crops.append(self.units.piece(c, int(rng.integers(0, n - length + 1)), length))
            views.append(crops)
        return views

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        """Rank `rank`'s rows of global batch `step`: its anchors, then their positives (and negatives)."""
        rng = np.random.default_rng([self.seed, step, 11])
        chosen = rng.choice(self.choices, batch_size, replace=False)  # distinct units: no false negatives
        per_rank = batch_size // world
        views = self._views(rng, chosen)
        rows = [view[rank * per_rank:(rank + 1) * per_rank] for view in views]
        flat = [ids for view in rows for ids in view]
        input_ids = np.full((len(flat), self.max_len), self.pad, dtype=np.int64)
        for i, ids in enumerate(flat):
            input_ids[i, :len(ids) + 2] = [self.cls, *ids, self.sep]
        valid = np.array([len(ids) + 2 for ids in flat], dtype=np.int64)
        return dict(zip(input_names(), (input_ids, np.zeros_like(input_ids), valid)))

    def iterate(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        return prefetched(lambda step: self.batch(step, batch_size, rank, world), start, stop)


def contrastive_loss(local, rank: int, world: int, views: int, temperature: float):
    """The global batch's loss from this rank's unit vectors ([views x rows, H], anchors first), and the
    factor its backward pass is scaled by (the world size; see the module docstring)."""
    import paddle
    import paddle.nn.functional as F

    if world > 1:
        gathered: list = []
        paddle.distributed.all_gather(gathered, local.detach())
        gathered[rank] = local  # gradients flow into this rank's own rows only
        blocks = [g.reshape([views, -1, g.shape[-1]]) for g in gathered]
        every = paddle.concat(blocks, axis=1)  # [views, global rows, H], rows in global order
    else:
        every = local.reshape([views, -1, local.shape[-1]])
    anchors = every[0]
    candidates = every[1:].reshape([-1, every.shape[-1]])  # positives, then hard negatives
    scores = paddle.matmul(anchors, candidates, transpose_y=True) / temperature
    labels = paddle.arange(anchors.shape[0], dtype="int64").unsqueeze(1)
    return F.cross_entropy(scores, labels), float(world)
