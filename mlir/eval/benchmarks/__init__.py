"""Benchmarks as :class:`~mlir.eval.tasks.RetrievalTask` s, one module per benchmark type.

Following :func:`load_benchmark`:

* ``config.py``      :class:`BenchmarkConfig`: one ``eval.benchmarks`` entry, checked before any data is read;
* ``registry.py``    ``type:`` -> the function that reads that type's data and builds its task;
* ``load.py``        :func:`load_benchmark` / :func:`load_benchmarks`: the steps every type shares
  (type, then languages, query subsample, logging) and :class:`Benchmark`; :func:`check_benchmarks`
  checks every entry's config without reading data (before training);
* ``split.py``       the evaluated groups (articles) of a type with groups: training's split, or given;
* ``mkqa.py``        type ``mkqa`` (MTEB's MKQARetrieval protocol), :func:`mkqa_task`;
* ``lareqa.py``      types ``xquad_r`` / ``mlqa_r`` (LAReQA protocol), :func:`lareqa_task`;
* ``lareqa_mkqa.py`` types ``xquad_r_mkqa`` / ``mlqa_r_mkqa``: XQuAD-R / MLQA-R with the MKQA protocol;
* ``jsonl.py``       type ``jsonl``: your own parallel JSONL (``data=jsonl``), e.g. its held-out test groups;
* ``beir.py``        type ``beir``: BEIR-format datasets per language (MIRACL, Mr. TyDi, ...), graded qrels.

A new type is one new module with a ``@register_type("name")`` function ``load(cfg) -> RetrievalTask``,
imported below.
"""

from __future__ import annotations

# isort: off
from mlir.eval.benchmarks import mkqa, lareqa, lareqa_mkqa, jsonl, beir  # noqa: F401  registers the types, in this order

# isort: on
from mlir.eval.benchmarks.config import CANDIDATE_MODES, DEFAULT_KS, BenchmarkConfig
from mlir.eval.benchmarks.lareqa import lareqa_task
from mlir.eval.benchmarks.load import Benchmark, check_benchmarks, load_benchmark, load_benchmarks
from mlir.eval.benchmarks.mkqa import mkqa_task
from mlir.eval.benchmarks.registry import TYPES, BenchmarkType, get_type, register_type

__all__ = [
    "CANDIDATE_MODES",
    "DEFAULT_KS",
    "TYPES",
    "Benchmark",
    "BenchmarkConfig",
    "BenchmarkType",
    "check_benchmarks",
    "get_type",
    "lareqa_task",
    "load_benchmark",
    "load_benchmarks",
    "mkqa_task",
    "register_type",
]
