"""Fine-tuning's batches: tokenized examples, each epoch a permutation drawn from (seed, epoch), so a batch
depends on its step alone (an exact resume); the global batch is cut into one block of rows per rank. Each
objective adds its own targets (`targets`: classes or scores, or tags per token)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import input_names
from pipeline.core.tokenizer import Item, Tokenizer, pad_batch
from pipeline.data.batches import dropout_masks, prefetched


def batch_rows(examples: int, seed: int, step: int, batch_size: int) -> np.ndarray:
    """The example indices of global batch `step`: each epoch a permutation drawn from (seed, epoch)."""
    epoch, within = divmod(step, max(1, examples // batch_size))
    order = np.random.default_rng([seed, epoch, 17]).permutation(examples)
    return order[within * batch_size:(within + 1) * batch_size]


class ExampleBatches:
    """The batch protocol the trainer reads (as PretrainingData's), over `items`; subclasses say `targets`."""

    what = "examples"  # what a row is, for refusals

    def __init__(self, items: list[Item], tokenizer: Tokenizer, seed: int = 0):
        self.items, self.tokenizer, self.seed = items, tokenizer, seed
        self.host_dropout: tuple[int, int, float] | None = None  # (masks, hidden, p): see use_host_dropout

    def __len__(self) -> int:
        return len(self.items)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self) // batch_size)

    def global_batch_size(self, step: int, batch_size: int) -> int:  # noqa: ARG002 - no ramp here
        return batch_size

    def check_batch(self, batch_size: int, world: int) -> None:
        if batch_size % world:
            raise UserError(f"train.batch_size={batch_size} is not divisible by the {world} ranks")
        if batch_size > len(self):
            raise UserError(f"train.batch_size={batch_size} is over the {len(self)} {self.what}")

    def rows(self, step: int, batch_size: int) -> np.ndarray:
        return batch_rows(len(self), self.seed, step, batch_size)

    def use_host_dropout(self, num_masks: int, hidden: int, p: float) -> None:
        """Add `drop_masks` [num_masks, rows, width, hidden] (uint8, 1 = keep) to every batch."""
        self.host_dropout = (num_masks, hidden, p)

    def targets(self, chosen: np.ndarray, every: np.ndarray, width: int, world: int) -> dict[str, np.ndarray]:
        """The training targets of this rank's rows `chosen` (of the global batch's `every`), padded to `width`."""
        raise NotImplementedError

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        every = self.rows(step, batch_size)
        per_rank = batch_size // world
        chosen = every[rank * per_rank:(rank + 1) * per_rank]
        arrays = pad_batch(self.tokenizer.vocab, [self.items[i] for i in chosen])
        rows, width = arrays[input_names()[0]].shape
        arrays.update(self.targets(chosen, every, width, world))
        if self.host_dropout is not None:
            num_masks, hidden, p = self.host_dropout
            arrays["drop_masks"] = dropout_masks([self.seed, step, rank, 5], (num_masks, rows, width, hidden), p)
        return arrays

    def iterate(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        return prefetched(lambda step: self.batch(step, batch_size, rank, world), start, stop)
