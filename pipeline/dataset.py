"""Prepared pretraining arrays (cached on disk) and the sharded, re-masked batch stream."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.errors import UserError
from pipeline.examples import MaskedTokens, Pairs, make_pairs, mask_tokens, max_predictions
from pipeline.vocab import Vocab
from pipeline.wikitext import read_sentences

log = logging.getLogger(__name__)
CACHE_FORMAT = 3


@dataclass
class Prepared:
    vocab: Vocab
    pairs: Pairs


def _cache_key(corpus: bytes, settings: dict) -> str:
    digest = hashlib.sha256(corpus)
    digest.update(json.dumps({**settings, "format": CACHE_FORMAT}, sort_keys=True).encode())
    return digest.hexdigest()


def _load_cache(path: Path, key: str, max_len: int) -> Prepared | None:
    """The cached arrays if the file is intact and was made from the same corpus and settings."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        if str(arrays["key"]) != key:
            return None
        n = len(arrays["valid_length"])
        shapes_ok = (arrays["input_ids"].shape == (n, max_len) and arrays["token_type_ids"].shape == (n, max_len)
                     and arrays["nsp_labels"].shape == (n,))
        if not shapes_ok:
            return None
        pairs = Pairs(arrays["input_ids"], arrays["token_type_ids"], arrays["valid_length"], arrays["nsp_labels"])
        return Prepared(Vocab(arrays["vocab"].tolist()), pairs)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("ignoring damaged example cache %s (%s); rebuilding it", path, err)
        return None


def _save_cache(path: Path, key: str, prepared: Prepared) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            p = prepared.pairs
            np.savez(f, key=np.array(key), vocab=np.array(prepared.vocab.idx_to_token),
                     input_ids=p.input_ids, token_type_ids=p.token_type_ids, valid_length=p.valid_length,
                     nsp_labels=p.nsp_labels)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write the example cache %s (%s); continuing without it", path, err)


def prepare(corpus_path: Path, max_len: int, min_freq: int, seed: int, cache_dir: Path | None,
            vocab: Vocab | None = None) -> Prepared:
    """Text -> vocabulary and unmasked NSP pairs; served from `cache_dir` when already made.

    Pass the training `vocab` to prepare a held-out split with the same ids.
    """
    try:
        corpus = corpus_path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {corpus_path}: {err.strerror}") from None
    settings = {"max_len": max_len, "min_freq": min_freq, "seed": seed,
                "vocab": None if vocab is None else hashlib.sha256("\n".join(vocab.idx_to_token).encode()).hexdigest()}
    key = _cache_key(corpus, settings)
    cache_file = None if cache_dir is None else cache_dir / f"{corpus_path.stem}-{key[:16]}.npz"
    if cache_file is not None:
        cached = _load_cache(cache_file, key, max_len)
        if cached is not None:
            return cached
    sentences = read_sentences(corpus_path)
    vocab = vocab or Vocab.from_counts(sentences.counts, min_freq)
    ids = vocab.ids_of(sentences.forms)[sentences.token_ids]
    pairs = make_pairs(ids, sentences, vocab, max_len, np.random.default_rng([seed, 0]))
    prepared = Prepared(vocab, pairs)
    if cache_file is not None:
        _save_cache(cache_file, key, prepared)
    return prepared


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


class PretrainingData:
    """Global batches of a fixed size, each split into disjoint per-rank shards.

    Epoch e visits the pairs in a permutation seeded by (seed, e); masks are drawn again each epoch
    (dynamic masking) or once (the seed's fixed masks). Both depend only on (seed, epoch), so a resumed
    run sees exactly the batches an unbroken run would have seen.
    """

    def __init__(self, pairs: Pairs, vocab_size: int, max_len: int, mask_prob: float = 0.15,
                 dynamic_masking: bool = True, seed: int = 0, continuation: np.ndarray | None = None):
        self.pairs = pairs
        self.continuation = continuation  # whole-word masking: which vocabulary ids continue a word
        self.host_dropout: tuple[int, int, float] | None = None
        self.vocab_size = vocab_size
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
        return mask_tokens(self.pairs.input_ids, self.vocab_size, self.max_preds, self.mask_prob, rng,
                           self.continuation)

    def _epoch_state(self, epoch: int) -> tuple[np.ndarray, MaskedTokens]:
        if self._epoch is None or self._epoch[0] != epoch:
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.pairs))
            self._epoch = (epoch, order, self.masks(epoch))
        return self._epoch[1], self._epoch[2]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        """Rank `rank`'s shard of global batch `step` (0-based), as int64 / float32 arrays.

        `mlm_norm` is the number of real masked positions in the whole global batch divided by the
        world size, so that averaging the ranks' gradients equals one process on the global batch.
        """
        if batch_size % world:
            raise UserError(f"train.batch_size={batch_size} is not divisible by the {world} ranks")
        per_rank = batch_size // world
        epoch, index = divmod(step, self.steps_per_epoch(batch_size))
        order, masked = self._epoch_state(epoch)
        global_rows = order[index * batch_size:(index + 1) * batch_size]
        rows = global_rows[rank * per_rank:(rank + 1) * per_rank]
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
        rng = np.random.default_rng([self.seed, step, rank, 3])
        shape = (num_masks, rows, self.max_len, hidden)
        random_bytes = np.frombuffer(rng.bytes(int(np.prod(shape))), dtype=np.uint8)
        return (random_bytes >= round(256 * p)).view(np.uint8).reshape(shape)

    def iterate(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1,
                prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches `start`..`stop-1`, made by a background thread `prefetch` steps ahead."""
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop_flag = threading.Event()

        def produce() -> None:
            try:
                for step in range(start, stop):
                    item = self.batch(step, batch_size, rank, world)
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


class MappedPretrainingData(PretrainingData):
    """The same global batches and shards, built from a prepared folder's memory maps as each batch is
    needed (pipeline/prepare.py), so the corpus may be larger than memory. Masks are drawn per batch
    from (seed, epoch, batch): dynamic masking, and a resumed run sees the same batches."""

    def __init__(self, corpus, max_len: int, mask_prob: float = 0.15, seed: int = 0,
                 continuation: np.ndarray | None = None):
        super().__init__(corpus, len(corpus.tokenizer.vocab), max_len, mask_prob, True, seed, continuation)
        self._order: tuple[int, np.ndarray] | None = None

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
        if batch_size % world:
            raise UserError(f"train.batch_size={batch_size} is not divisible by the {world} ranks")
        per_rank = batch_size // world
        epoch, index = divmod(step, self.steps_per_epoch(batch_size))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.pairs)))
        global_rows = self._order[1][index * batch_size:(index + 1) * batch_size]
        pairs = self.pairs.take(global_rows, self.max_len)  # every rank builds the global batch: same masks
        masked = mask_tokens(pairs.input_ids, self.vocab_size, self.max_preds, self.mask_prob,
                             np.random.default_rng([self.seed, epoch, index, 2]), self.continuation)
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        out = _gather(pairs, masked, mine, masked.mlm_weights.sum() / world)
        if self.host_dropout is not None:
            out["drop_masks"] = self._dropout_masks(step, rank, per_rank)
        return out


def eval_batches(pairs: Pairs, vocab_size: int, max_len: int, batch_size: int, mask_prob: float = 0.15,
                 seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Every pair once, in order, with fixed masks (the last batch may be smaller)."""
    data = PretrainingData(pairs, vocab_size, max_len, mask_prob, dynamic_masking=False, seed=seed)
    masked = data.masks(0)
    for lo in range(0, len(pairs), batch_size):
        rows = slice(lo, lo + batch_size)
        yield _gather(pairs, masked, rows, masked.mlm_weights[rows].sum())
