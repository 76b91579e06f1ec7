"""infer/call_cost.py: calls cut from length-sorted inputs to waste little on padding, in process and in the
service's batcher."""
import numpy as np
import pytest

from infer.batcher import Batcher
from infer.call_cost import padding_groups
from infer.encoder import Encoder, Output


def cost(lengths, groups, call_tokens):
    return sum((hi - lo) * lengths[hi - 1] + call_tokens for lo, hi in groups)


@pytest.mark.parametrize("seed", range(5))
def test_groups_cover_every_input_within_the_row_limit_and_beat_plain_chunks(seed):
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(3, 90, rng.integers(1, 120)).tolist())
    groups = padding_groups(lengths, 32, 8.0)
    assert [i for lo, hi in groups for i in range(lo, hi)] == list(range(len(lengths)))
    assert all(0 < hi - lo <= 32 for lo, hi in groups)
    chunks = [(lo, min(lo + 32, len(lengths))) for lo in range(0, len(lengths), 32)]
    assert cost(lengths, groups, 8.0) <= cost(lengths, chunks, 8.0)


def test_a_large_call_cost_keeps_the_fewest_calls_and_none_splits_by_length():
    lengths = [4, 4, 5, 30, 31, 80]
    assert len(padding_groups(lengths, 4, float("inf"))) == 2
    assert padding_groups(lengths, 64, 0.0) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]


class RecordingEncoder:
    """An encoder that records the lengths of each predictor call; its calls are cut as Encoder's are."""
    call_groups = Encoder.call_groups

    def __init__(self, call_tokens: float):
        self.call_tokens, self.calls = call_tokens, []

    def run_tokenized(self, items):
        self.calls.append([len(tokens) for tokens, _ in items])
        return [Output(np.full((len(tokens), 2), len(tokens), dtype=np.float32), None) for tokens, _ in items]


@pytest.mark.parametrize("call_tokens, calls", [
    (float("inf"), [[5, 6, 7, 30, 31]]),  # Paddle's oneDNN: one call per batch
    (3.0, [[5, 6, 7], [30, 31]]),          # ONNX Runtime: cut where padding costs more than a call
    (0.0, [[5], [6], [7], [30], [31]]),
])
def test_the_service_batcher_cuts_calls_as_the_encoder_does_in_process(call_tokens, calls):
    encoder = RecordingEncoder(call_tokens)
    batcher = Batcher([encoder], max_batch=8, max_wait_ms=300)
    lengths = [5, 30, 6, 31, 7]
    try:
        futures = batcher.submit([(["x"] * n, [0] * n) for n in lengths])
        answers = [f.result(10) for f in futures]
    finally:
        batcher.stop()
    assert encoder.calls == calls
    assert [a.vectors.shape[0] for a in answers] == lengths and [int(a.vectors[0, 0]) for a in answers] == lengths
