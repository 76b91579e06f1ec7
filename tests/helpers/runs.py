"""Test helpers: a short training run of pipeline/train.py, its losses, and random model inputs."""
from __future__ import annotations

import json

import numpy as np

from tests.conftest import TINY, run_script


def train(corpus_dir, out, *extra, steps=8):
    return run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out),
                      "--steps", str(steps), *TINY, *extra)


def losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["mlm_loss"], r["nsp_loss"]) for r in map(json.loads, lines)]


def random_inputs(vocab_size, rows, length, seed):
    rng = np.random.default_rng(seed)
    valid = rng.integers(2, length + 1, rows)
    valid[0] = length
    ids = rng.integers(5, vocab_size, (rows, length))
    ids[np.arange(length)[None, :] >= valid[:, None]] = 1
    segments = (np.arange(length)[None, :] >= valid[:, None] // 2).astype(np.int64)
    return {"input_ids": ids, "token_type_ids": segments, "valid_length": valid.astype(np.int64)}
