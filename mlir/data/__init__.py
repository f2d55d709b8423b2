"""Parallel QA corpora: readers, the Arrow-backed corpus, splits and the training DataModule."""

from mlir.data.corpus import ParallelCorpus

__all__ = ["ParallelCorpus"]
