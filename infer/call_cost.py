"""The cost model of a predictor call: a model's work per token, the size below which a call is "small"
(one thread, no oneDNN), and inputs of many lengths cut into calls that waste little on padding.

Each backend states its own figures (its fixed cost per call, its small-call boundary for the tiny model);
this module turns them into tokens of a given model's work.

A call pads every input to its longest, so a batch of mixed lengths does work on padding that can be
larger than the real work (32 WikiText sentences of 5-60 words: about half). Sorted by length, the inputs
are cut into consecutive groups that minimise padded tokens plus a fixed cost per call (in tokens), by
dynamic programming over the cut points, as text-embeddings-inference avoids padding altogether.
"""
from __future__ import annotations

import math
from typing import Sequence

TINY_SHAPE = {"num_layers": 2, "hidden_size": 128, "ffn_size": 256}  # where the small-call boundaries were measured


def flops_per_token(model: dict) -> int:
    """The encoder's matrix work per token (projections and feed-forward), a model's size for the CPU choice."""
    hidden, layers, ffn = model["hidden_size"], model["num_layers"], model["ffn_size"]
    return 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn)


def small_call_tokens(model: dict, tiny_tokens: int) -> int:
    """Tokens per call up to which this model runs in the small-call regime: `tiny_tokens` for the tiny
    model (and smaller ones, where it was measured), fewer for a larger one, in proportion to its work."""
    return max(1, min(tiny_tokens, tiny_tokens * flops_per_token(TINY_SHAPE) // flops_per_token(model)))


def call_tokens(model: dict, call_flops: float) -> float:
    """A backend's fixed cost per call (`call_flops` of matrix work) in tokens of this model."""
    return call_flops / flops_per_token(model)


def padding_groups(lengths: Sequence[int], max_rows: int, call_tokens: float) -> list[tuple[int, int]]:
    """[lo, hi) ranges over `lengths` (sorted ascending) of at most `max_rows` each, minimising
    sum(rows x longest) + call_tokens x calls."""
    n = len(lengths)
    if math.isinf(call_tokens):  # calls cost more than any padding: the fewest calls, in order
        return [(lo, min(lo + max_rows, n)) for lo in range(0, n, max_rows)]
    best = [0.0] + [float("inf")] * n  # best[i]: cheapest cost of the first i inputs
    cut = [0] * (n + 1)
    for hi in range(1, n + 1):
        for lo in range(max(0, hi - max_rows), hi):
            cost = best[lo] + (hi - lo) * lengths[hi - 1] + call_tokens
            if cost < best[hi]:
                best[hi], cut[hi] = cost, lo
    groups, hi = [], n
    while hi > 0:
        groups.append((cut[hi], hi))
        hi = cut[hi]
    return groups[::-1]
