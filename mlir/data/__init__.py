"""Parallel QA corpora: readers, the Arrow-backed corpus, splits and the training DataModule."""

import datasets as _datasets

from mlir.data.corpus import ParallelCorpus

# Arrow bookkeeping bars ("Flattening the indices") would bury the one-line errors users must see.
_datasets.disable_progress_bars()

__all__ = ["ParallelCorpus"]
