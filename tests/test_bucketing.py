"""plan_sub_batches: a partition of the batch, within the budget, at the least estimated cost."""

import itertools
import math

import numpy as np
import pytest

from mlir.models.bucketing import attention_width, padded_tokens, plan_sub_batches


def _cost(lengths, groups, overhead, attn):
    total = 0.0
    for g in groups:
        w = max(lengths[i] for i in g)
        total += len(g) * w * (1 + w / attn) + overhead
    return total


def _brute_force(lengths, budget, overhead, attn):
    """Every way to cut the sorted list into contiguous runs (2^(n-1) of them)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = math.inf
    for cuts in itertools.product((False, True), repeat=len(lengths) - 1):
        groups, cur = [], [order[0]]
        for i, cut in zip(order[1:], cuts):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(i)
        groups.append(cur)
        if all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget for g in groups):
            best = min(best, _cost(lengths, groups, overhead, attn))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=int(rng.integers(2, 11))).tolist()
    budget = int(rng.integers(60, 300))
    overhead = float(rng.choice([0.0, 8.0, 40.0, 500.0]))
    attn = float(rng.choice([math.inf, 100.0]))
    groups = plan_sub_batches(lengths, budget, overhead, attn)
    assert _cost(lengths, groups, overhead, attn) == pytest.approx(
        _brute_force(lengths, budget, overhead, attn)
    )


def test_partition_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 256, size=3000).tolist()
    groups = plan_sub_batches(lengths, 4096, 64.0, 2304.0)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) * max(lengths[i] for i in g) <= 4096 for g in groups)


def test_overhead_trades_padding_for_calls():
    lengths = np.random.default_rng(1).integers(10, 150, size=32).tolist()
    free_calls = plan_sub_batches(lengths, 4096, 0.0)
    assert padded_tokens(lengths, free_calls) == sum(lengths)  # no padding at all
    costly = plan_sub_batches(lengths, 4096, 1e9)
    assert len(costly) == math.ceil(32 * max(lengths) / 4096)  # as few calls as the budget allows
    middle = plan_sub_batches(lengths, 4096, 64.0)
    assert len(free_calls) > len(middle) > len(costly)
    assert sum(lengths) < padded_tokens(lengths, middle) < padded_tokens(lengths, costly)


def test_too_long_sequence_gets_its_own_sub_batch():
    groups = plan_sub_batches([5, 300, 7], 100, 10.0)
    assert [1] in groups and sorted(i for g in groups for i in g) == [0, 1, 2]
    assert plan_sub_batches([], 100) == []


def test_attention_width_of_e5_small_shape():
    class Cfg:
        hidden_size, num_hidden_layers, intermediate_size = 384, 12, 1536

    assert attention_width(Cfg()) == pytest.approx(2 * (4 * 384**2 + 2 * 384 * 1536) / (4 * 384))
    assert attention_width(object()) == math.inf
