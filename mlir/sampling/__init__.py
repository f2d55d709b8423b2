"""Hybrid X-X-mono / X-Y batches for multilingual dense retrieval training.

Start with :mod:`mlir.sampling.rule`: the paper's rule, in about fifty lines. Then
:mod:`~mlir.sampling.index` (ids x languages, clusters), :mod:`~mlir.sampling.dedup` (which ids fill a
batch), :mod:`~mlir.sampling.cursor` (replaying an epoch, resuming), :mod:`~mlir.sampling.mix` (several
weighted corpora in one epoch's id stream) and :mod:`~mlir.sampling.hybrid` (the DataLoader batch
sampler that wires them together).
"""

from typing import Any

from mlir.sampling.rule import CROSS, MONO
from mlir.sampling.schedule import AlphaSchedule

__all__ = ["CROSS", "MONO", "AlphaSchedule", "GlobalBatch", "HybridBatchSampler"]


def __getattr__(name: str) -> Any:
    """The sampler imports torch: load it on first use, so config checks stay fast (``mlir.core.config``)."""
    if name in ("GlobalBatch", "HybridBatchSampler"):
        from mlir.sampling import hybrid

        return getattr(hybrid, name)
    raise AttributeError(f"module 'mlir.sampling' has no attribute {name!r}")
