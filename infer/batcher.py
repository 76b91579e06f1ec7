"""Dynamic batching: requests that arrive together are padded into one predictor call.

Worker threads, each with its own predictor (an `Encoder.clone()`), take tokenized items from one
bounded queue: a worker waits up to `max_wait_ms` after the first item for more, up to `max_batch`,
then runs them in the predictor calls its encoder would choose in process (`call_groups`: sorted by
length, cut where padding costs more than a call) and completes each item's future. A full queue
refuses new work at once (`QueueFull`) instead of letting latency grow.
Each worker first runs a warm-up call (`warmup`); `ready` is set once every worker has.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from pipeline.core.tokenizer import Item


class QueueFull(Exception):
    """More work is waiting than the queue holds; the caller should retry later."""


@dataclass
class Job:
    item: Item
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs tokenized items on `encoders` (one worker thread each) in dynamic batches."""

    def __init__(self, encoders: list, max_batch: int = 32, max_wait_ms: float = 2.0, queue_size: int = 1024,
                 warmup: Item | None = None, on_batch: Callable[[int], None] | None = None):
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.batch_sizes: Counter[int] = Counter()  # predictor calls by batch size, for bench/serve.py
        self.ready = threading.Event()  # every worker has run its warm-up call
        self.warmup_error: Exception | None = None
        self._warmup, self._on_batch = warmup, on_batch
        self._warm = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers = [threading.Thread(target=self._work, args=(enc,), name=f"encoder-{i}", daemon=True)
                         for i, enc in enumerate(encoders)]
        for worker in self._workers:
            worker.start()

    def submit(self, items: list[Item]) -> list[Future]:
        """Queue `items` (all or none); their futures give each item's Output (vectors, and a head's logits)."""
        with self._lock:  # all-or-none: one request's items are not split by a full queue
            if self._stopping.is_set():
                raise QueueFull("the service is shutting down")
            if self.jobs.qsize() + len(items) > self.jobs.maxsize:
                raise QueueFull(f"{self.jobs.qsize()} texts are waiting")
            jobs = [Job(item) for item in items]
            for job in jobs:
                self.jobs.put_nowait(job)
        return [job.future for job in jobs]

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the workers."""
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout)

    def _next_batch(self) -> list[Job]:
        try:
            batch = [self.jobs.get(timeout=0.05)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                batch.append(self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _warm_up(self, encoder) -> None:
        """One predictor call before serving: the first call of a predictor pays for its set-up."""
        try:
            if self._warmup is not None:
                encoder.run_tokenized([self._warmup])
        except Exception as err:  # noqa: BLE001 - reported by the readiness check, the worker still serves
            self.warmup_error = err
            return
        with self._lock:
            self._warm += 1
            if self._warm == len(self._workers):
                self.ready.set()

    def _work(self, encoder) -> None:
        self._warm_up(encoder)
        while not (self._stopping.is_set() and self.jobs.empty()):
            batch = self._next_batch()
            for chunk in encoder.call_groups([job.item for job in batch], self.max_batch):
                group = [batch[i] for i in chunk]
                self.batch_sizes[len(group)] += 1
                if self._on_batch is not None:
                    self._on_batch(len(group))
                try:
                    outputs = encoder.run_tokenized([job.item for job in group])
                except Exception as err:  # noqa: BLE001 - handed to the waiting requests, the worker lives on
                    for job in group:
                        job.future.set_exception(err)
                    continue
                for job, output in zip(group, outputs):
                    job.future.set_result(output)
