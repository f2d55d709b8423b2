"""Types ``xquad_r_mkqa`` and ``mlqa_r_mkqa``: XQuAD-R / MLQA-R evaluated with the MKQA protocol.

Why: the same questions as ``xquad_r``, but the documents are the unique answer texts (as MKQA's), so
the two protocols can be compared on one set. The data is read and split as for ``xquad_r``
(:func:`~mlir.eval.benchmarks.lareqa.read_lareqa`), turned into MKQA records
(:func:`mlir.data.xquad_r.xquad_r_to_mkqa_records`) and run through
:func:`~mlir.eval.benchmarks.mkqa.mkqa_task`. Report keys carry the benchmark's name (``xquad_r_mkqa``),
never ``mkqa`` (:class:`~mlir.eval.benchmarks.config.BenchmarkConfig` refuses that name).
"""

from __future__ import annotations

from mlir.data.mkqa import mkqa_from_records
from mlir.data.xquad_r import xquad_r_to_mkqa_records
from mlir.eval.benchmarks.config import BenchmarkConfig
from mlir.eval.benchmarks.lareqa import read_lareqa
from mlir.eval.benchmarks.mkqa import mkqa_task
from mlir.eval.benchmarks.registry import register_type
from mlir.eval.tasks import RetrievalTask


@register_type("xquad_r_mkqa", "mlqa_r_mkqa")
def load_lareqa_as_mkqa(cfg: BenchmarkConfig) -> RetrievalTask:
    """The MKQA task of the configured directory's questions on the configured articles."""
    data, groups = read_lareqa(cfg)
    as_mkqa = mkqa_from_records(xquad_r_to_mkqa_records(data), source=f"{cfg.type}:{data.directory}")
    task = mkqa_task(as_mkqa, name=cfg.name)
    if groups is not None:
        task.meta["groups"] = groups
    return task
