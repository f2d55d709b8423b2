"""Split a batch of token sequences into padded sub-batches at the lowest estimated cost.

Why: a transformer pays for every *padded* token, and on XQuAD-R answer sentences one padded batch of
32 holds about as much padding as text. Sorting by length and cutting the sorted list into
sub-batches removes most of it; where to cut is a trade-off between padding (cut often) and the fixed
cost of each forward call (cut rarely). A greedy "fill up to the token budget" cut keeps ~half the
padding of a batch of 32 (it all fits in one sub-batch); the exact optimum is a small dynamic
programme over the sorted lengths, solved here in ``O(n * k)`` (``k`` = the most sequences one
sub-batch can hold), vectorised per end point.

Cost of a sub-batch of ``n`` sequences padded to width ``w`` (in token-equivalents)::

    n * w * (1 + w / attention_width) + call_overhead

``attention_width`` is the context length at which attention FLOPs equal the weight FLOPs per token
(``2 * non-embedding parameters / (4 * hidden * layers)``; 2304 for e5-small), ``call_overhead`` the
fixed cost of one forward call measured in tokens (``bench/bench_chunk_cost.py`` measures both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def plan_sub_batches(
    lengths: Sequence[int],
    token_budget: int,
    call_overhead: float = 0.0,
    attention_width: float = math.inf,
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into sub-batches (each ``n * max width <= token_budget``).

    Groups are in ascending length order; every index appears exactly once. A sequence longer than
    the budget gets a sub-batch of its own.
    """
    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    widths = lens[order].astype(np.float64)
    per_token = 1.0 + widths / float(attention_width)  # cost factor of a sub-batch whose widest is j-1
    best = np.empty(n + 1)
    best[0] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        w = widths[j - 1]
        lo = max(0, j - max(1, int(token_budget // max(w, 1.0))))
        starts = np.arange(lo, j)
        cost = best[lo:j] + (j - starts) * w * per_token[j - 1] + call_overhead
        k = int(np.argmin(cost))  # first minimum = the longest sub-batch among equals
        best[j] = cost[k]
        cut[j] = lo + k
    groups: list[list[int]] = []
    j = n
    while j > 0:
        i = int(cut[j])
        groups.append(order[i:j].tolist())
        j = i
    groups.reverse()
    return groups


def padded_tokens(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> int:
    """Tokens a plan actually computes (each group padded to its widest member)."""
    return int(sum(len(g) * max(lengths[i] for i in g) for g in groups if g))


def attention_width(config) -> float:
    """Context length at which a BERT-like encoder's attention FLOPs per token equal its weight FLOPs.

    Weight FLOPs per token: ``2 * layers * (4 H^2 + 2 H F)``; attention: ``4 * H * layers`` per context
    token. Returns ``inf`` when the config does not say (then only padding and calls count).
    """
    h = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    ffn = getattr(config, "intermediate_size", None)
    if not (h and layers and ffn):
        return math.inf
    return 2 * layers * (4 * h * h + 2 * h * ffn) / (4 * h * layers)
