"""Batch samplers: hybrid X-X-mono / X-Y batches for multilingual dense retrieval training."""

from mlir.sampling.hybrid import CROSS, MONO, BatchInfo, GlobalBatch, HybridBatchSampler, preview_records
from mlir.sampling.schedule import AlphaSchedule

__all__ = [
    "CROSS",
    "MONO",
    "AlphaSchedule",
    "BatchInfo",
    "GlobalBatch",
    "HybridBatchSampler",
    "preview_records",
]
