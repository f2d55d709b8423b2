"""Benchmark types: the ``type:`` of a benchmark config -> the one function that builds its task.

Why a registry: each type (MKQA, XQuAD-R / MLQA-R, BEIR, ...) is read in one pass by its own module, and a
new type is one new module that registers itself, with nothing else to edit but the import line in
``mlir/eval/benchmarks/__init__.py``. The steps every type shares (languages, query subsample, logging)
are applied afterwards by :func:`mlir.eval.benchmarks.load.load_benchmark`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mlir.core.errors import ConfigError

if TYPE_CHECKING:
    from mlir.eval.benchmarks.config import BenchmarkConfig
    from mlir.eval.tasks import RetrievalTask


class BenchmarkType(Protocol):
    """Reads one benchmark's data and builds its task: all of its languages, all of its queries.

    A type that can split by group (article) applies ``cfg.split`` itself, with
    :func:`mlir.eval.benchmarks.split.eval_groups`, and records the groups in ``task.meta["groups"]``;
    the caller then selects ``cfg.langs`` and subsamples the queries.
    """

    def __call__(self, cfg: BenchmarkConfig) -> RetrievalTask: ...


TYPES: dict[str, BenchmarkType] = {}  # registration order = the order error messages list them


def register_type(*names: str) -> Callable[[BenchmarkType], BenchmarkType]:
    """Decorator: ``@register_type("xquad_r", "mlqa_r")`` makes the function the loader of those types."""

    def add(load: BenchmarkType) -> BenchmarkType:
        for name in names:
            if TYPES.get(name, load) is not load:
                raise ValueError(f"benchmark type {name!r} is already registered by {TYPES[name]!r}")
            TYPES[name] = load
        return load

    return add


def get_type(name: str, where: str) -> BenchmarkType:
    """The loader of type ``name``; an unknown type is a one-line error listing the known ones."""
    load = TYPES.get(name)
    if load is None:
        raise ConfigError(f"unknown benchmark type {name!r}; use one of {list(TYPES)}", where=where)
    return load
