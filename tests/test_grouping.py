"""infer/grouping.py: calls cut from length-sorted inputs to waste little on padding."""
import numpy as np
import pytest

from infer.grouping import padding_groups


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
