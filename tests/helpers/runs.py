"""Test helpers: a short training run of pipeline/train.py, its losses, random model inputs, and an export's
parity with its checkpoint."""
from __future__ import annotations

import json

import numpy as np
import paddle

from infer.encoder import Encoder
from pipeline import checkpoint
from pipeline.model import BertForPretraining
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


def assert_export_matches_checkpoint(run_folder, export_dir, rows: int = 4) -> None:
    """The predictor over `export_dir` gives the encodings of `run_folder`'s newest checkpoint (within 1e-5)."""
    ckpt = checkpoint.load(checkpoint.latest(run_folder))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    encoder = Encoder(export_dir, device="cpu")
    arrays = random_inputs(len(encoder.vocab), rows, 20, 0)
    with paddle.no_grad():
        want = model.encoder(*(paddle.to_tensor(arrays[k]) for k in ("input_ids", "token_type_ids", "valid_length")))
    (got,) = encoder.run(arrays)
    for row, n in enumerate(arrays["valid_length"]):
        assert np.abs(got[row, :n] - want.numpy()[row, :n]).max() < 1e-5
