"""The sharded, re-masked batch streams: in-memory pairs (PretrainingData) or a prepared folder's memory
maps (MappedPretrainingData), and the fixed-mask evaluation batches."""
from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.vocab import Vocab
from pipeline.data.pretraining_examples import MaskedTokens, Pairs, mask_tokens, max_predictions

if TYPE_CHECKING:
    from pipeline.data.prepared_corpus import MappedCorpus


def _gather(pairs: Pairs, masked: MaskedTokens, rows: np.ndarray | slice, mlm_norm: float) -> dict[str, np.ndarray]:
    """The model's inputs and targets for `rows`, as int64 / float32 arrays."""
    return {
        "input_ids": masked.input_ids[rows].astype(np.int64),
        "token_type_ids": pairs.token_type_ids[rows].astype(np.int64),
        "valid_length": pairs.valid_length[rows].astype(np.int64),
        "pred_positions": masked.pred_positions[rows].astype(np.int64),
        "mlm_weights": masked.mlm_weights[rows],
        "mlm_labels": masked.mlm_labels[rows].astype(np.int64),
        "nsp_labels": pairs.nsp_labels[rows].astype(np.int64),
        "mlm_norm": np.array([max(mlm_norm, 1e-6)], dtype=np.float32),
    }


def compact_predictions(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training step's inputs: the [B, P] predictions compacted to the real ones (weight 1), as
    flat indices into the B * L tokens and their labels, so no work is spent on padded predictions."""
    rows, max_len = batch["input_ids"].shape
    real = batch["mlm_weights"] > 0
    flat = np.arange(rows)[:, None] * max_len + batch["pred_positions"]
    out = {k: v for k, v in batch.items() if k not in ("pred_positions", "mlm_weights", "mlm_labels")}
    out["mlm_positions"] = flat[real].astype(np.int64)
    out["mlm_labels"] = batch["mlm_labels"][real]
    return out


def dropped_bytes(p: float) -> int:
    """Host dropout masks are random bytes, a byte below this one dropped: `p` quantised to 1/256."""
    return round(256 * p)


def dropout_keep_probability(p: float) -> float:
    """The keep probability those masks really have (the model scales kept values by its inverse)."""
    return 1.0 - dropped_bytes(p) / 256


def rows_per_part(batch_size: int, ranks: int, accumulate_steps: int = 1) -> int:
    """Rows of one rank's micro-batch: the global batch must split evenly over ranks x accumulation steps."""
    if batch_size % (ranks * accumulate_steps):
        raise UserError(f"train.batch_size={batch_size} is not divisible by the {ranks} ranks x "
                        f"train.accumulate_steps={accumulate_steps}")
    return batch_size // (ranks * accumulate_steps)


def prefetched(make: Callable[[int], dict[str, np.ndarray]], start: int, stop: int,
               prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """make(step) for steps `start`..`stop-1`, made by a background thread `prefetch` steps ahead."""
    ready: queue.Queue = queue.Queue(maxsize=prefetch)
    stop_flag = threading.Event()

    def produce() -> None:
        try:
            for step in range(start, stop):
                item = make(step)
                while not stop_flag.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop_flag.is_set():
                    return
        except BaseException as err:  # handed to the consumer, raised there
            ready.put(err)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        for _ in range(start, stop):
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop_flag.set()


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The order in which epoch `epoch` visits `count` pairs, from (seed, epoch) only: resumable."""
    return np.random.default_rng([seed, epoch, 1]).permutation(count)


class PretrainingData:
    """Global batches of a fixed size, each split into disjoint per-rank shards.

    Epoch e visits the pairs in a permutation seeded by (seed, e); masks are drawn again each epoch
    (dynamic masking) or once (the seed's fixed masks). Both depend only on (seed, epoch), so a resumed
    run sees exactly the batches an unbroken run would have seen.
    """

    def __init__(self, pairs: Pairs, vocab: Vocab, max_len: int, mask_prob: float = 0.15,
                 dynamic_masking: bool = True, seed: int = 0, continuation: np.ndarray | None = None,
                 mask_replace: bool = True):
        self.pairs = pairs
        self.continuation = continuation  # whole-word masking: which vocabulary ids continue a word
        self.mask_replace = mask_replace  # 80/10/10, or every chosen token masked
        self.host_dropout: tuple[int, int, float] | None = None
        self.batch_ramp: tuple[int, int] | None = None  # (ramp steps, multiple): see ramp_batch
        self.vocab = vocab
        self.max_len = max_len
        self.max_preds = max_predictions(max_len, mask_prob)
        self.mask_prob = mask_prob
        self.dynamic_masking = dynamic_masking
        self.seed = seed
        self._epoch: tuple[int, np.ndarray, MaskedTokens] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def steps_per_epoch(self, batch_size: int) -> int:
        steps = len(self.pairs) // batch_size
        if steps == 0:
            raise UserError(f"the corpus makes {len(self.pairs)} sentence pairs, fewer than one batch "
                            f"(train.batch_size={batch_size})")
        return steps

    def masks(self, epoch: int) -> MaskedTokens:
        """The masked tokens of every pair for `epoch`."""
        mask_epoch = epoch if self.dynamic_masking else 0
        rng = np.random.default_rng([self.seed, mask_epoch, 2])
        return mask_tokens(self.pairs.input_ids, self.vocab, self.max_preds, self.mask_prob, rng,
                           self.continuation, self.mask_replace)

    def _epoch_state(self, epoch: int) -> tuple[np.ndarray, MaskedTokens]:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_order(self.seed, epoch, len(self)), self.masks(epoch))
        return self._epoch[1], self._epoch[2]

    def _order_of(self, epoch: int) -> np.ndarray:
        return self._epoch_state(epoch)[0]

    def ramp_batch(self, ramp_steps: int, multiple: int) -> None:
        """train.batch_ramp_steps: global batch `step` is the first `global_batch_size(step)` rows of the
        usual one (the rest are skipped), a multiple of `multiple` (ranks x accumulation steps)."""
        self.batch_ramp = (ramp_steps, multiple)

    def global_batch_size(self, step: int, batch_size: int) -> int:
        """Rows of global batch `step`: batch_size, or with the ramp from a quarter of it at step 0 growing
        linearly to all of it at step ramp_steps."""
        if self.batch_ramp is None or step >= self.batch_ramp[0]:
            return batch_size
        ramp_steps, multiple = self.batch_ramp
        rows = batch_size / 4 + 0.75 * batch_size * step / ramp_steps
        return max(multiple, int(rows) // multiple * multiple)

    def _rows(self, step: int, batch_size: int, rank: int, world: int) -> tuple[int, int, np.ndarray, slice]:
        """(epoch, batch index in it, the global batch's rows, this rank's slice of them): the one row
        selection of both data classes."""
        epoch, index = divmod(step, self.steps_per_epoch(batch_size))
        size = self.global_batch_size(step, batch_size)
        per_rank = rows_per_part(size, world)
        rows = self._order_of(epoch)[index * batch_size:index * batch_size + size]
        return epoch, index, rows, slice(rank * per_rank, (rank + 1) * per_rank)

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        """Rank `rank`'s shard of global batch `step` (0-based), as int64 / float32 arrays.

        `mlm_norm` is the number of real masked positions in the whole global batch divided by the
        world size, so that averaging the ranks' gradients equals one process on the global batch.
        """
        epoch, _, global_rows, mine = self._rows(step, batch_size, rank, world)
        masked = self._epoch_state(epoch)[1]
        rows = global_rows[mine]
        norm = masked.mlm_weights[global_rows].sum() / world
        out = _gather(self.pairs, masked, rows, norm)
        if self.host_dropout is not None:
            out["drop_masks"] = self._dropout_masks(step, rank, len(rows))
        return out

    def use_host_dropout(self, num_masks: int, hidden: int, p: float) -> None:
        """Add `drop_masks` [num_masks, rows, max_len, hidden] (uint8, 1 = keep) to every batch."""
        self.host_dropout = (num_masks, hidden, p)

    def _dropout_masks(self, step: int, rank: int, rows: int) -> np.ndarray:
        num_masks, hidden, p = self.host_dropout
        return dropout_masks([self.seed, step, rank, 3], (num_masks, rows, self.max_len, hidden), p)

    def iterate(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1,
                prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches `start`..`stop-1`, made by a background thread `prefetch` steps ahead."""
        return prefetched(lambda step: self.batch(step, batch_size, rank, world), start, stop, prefetch)


def dropout_masks(key: list[int], shape: tuple[int, ...], p: float) -> np.ndarray:
    """uint8 masks of `shape` (1 = keep, with probability 1 - p) drawn from the random stream `key`: numpy's
    random bytes, ~10x cheaper than Paddle's CPU dropout (the encoder applies them, BertLayer)."""
    random_bytes = np.frombuffer(np.random.default_rng(key).bytes(int(np.prod(shape))), dtype=np.uint8)
    return (random_bytes >= dropped_bytes(p)).view(np.uint8).reshape(shape)


class MappedPretrainingData(PretrainingData):
    """The same global batches and shards, built from a prepared folder's memory maps (pipeline/prepare.py)
    as each batch is needed, so the corpus may be larger than memory. Masks are drawn per batch from
    (seed, epoch, batch): always dynamic masking, and a resumed run sees the same batches."""

    def __init__(self, corpus: MappedCorpus, max_len: int, mask_prob: float = 0.15, seed: int = 0,
                 continuation: np.ndarray | None = None, mask_replace: bool = True):
        super().__init__(corpus.pairs, corpus.tokenizer.vocab, max_len, mask_prob, True, seed, continuation,
                         mask_replace)
        self.corpus = corpus
        self._order: tuple[int, np.ndarray] | None = None

    def _order_of(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.seed, epoch, len(self)))
        return self._order[1]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        epoch, index, global_rows, mine = self._rows(step, batch_size, rank, world)
        pairs = self.corpus.take(global_rows, self.max_len)  # every rank builds the global batch: same masks
        masked = mask_tokens(pairs.input_ids, self.vocab, self.max_preds, self.mask_prob,
                             np.random.default_rng([self.seed, epoch, index, 2]), self.continuation,
                             self.mask_replace)
        out = _gather(pairs, masked, mine, masked.mlm_weights.sum() / world)
        if self.host_dropout is not None:
            out["drop_masks"] = self._dropout_masks(step, rank, mine.stop - mine.start)
        return out


def eval_batches(pairs: Pairs, vocab: Vocab, max_len: int, batch_size: int, mask_prob: float = 0.15,
                 seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Every pair once, in order, with fixed masks (the last batch may be smaller)."""
    data = PretrainingData(pairs, vocab, max_len, mask_prob, dynamic_masking=False, seed=seed)
    masked = data.masks(0)
    for lo in range(0, len(pairs), batch_size):
        rows = slice(lo, lo + batch_size)
        yield _gather(pairs, masked, rows, masked.mlm_weights[rows].sum())
