"""Test helpers: the processes of a multi-rank job, its progress and its final weights."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline import checkpoint


def rank_process(rank: int, marker: str) -> int | None:
    """PID of the training process of `rank` whose command line mentions `marker` (its output folder)."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if "pipeline/train.py" in cmdline and marker in cmdline and f"PADDLE_TRAINER_ID={rank}".encode() in environ:
            return int(entry.name) if int(entry.name) != os.getpid() else None
    return None


def wait_for_checkpoint(out: Path, step: int, processes: list, timeout: float = 120) -> None:
    """Until `out` holds a checkpoint of `step` or later; fails if a process ends first or time runs out."""
    deadline = time.time() + timeout
    while checkpoint.latest(out) is None or checkpoint.load(checkpoint.latest(out)).step < step:
        assert time.time() < deadline and all(p.poll() is None for p in processes), "the job made no progress"
        time.sleep(0.2)


def final_weights(out: Path) -> dict:
    return checkpoint.load(checkpoint.latest(out)).model_state
