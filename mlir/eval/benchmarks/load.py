"""Building benchmarks from config: the steps every benchmark type shares, in the order they run.

1. check the entry (:class:`~mlir.eval.benchmarks.config.BenchmarkConfig`);
2. its type reads the data and builds the task (:mod:`mlir.eval.benchmarks.registry`), applying the
   group ``split`` if it has groups (:func:`mlir.eval.benchmarks.split.eval_groups`);
3. keep the configured languages (``langs``);
4. subsample the queries (``max_queries_per_lang``: seeded, parallel across languages);
5. log what was built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks.config import BenchmarkConfig, plain
from mlir.eval.benchmarks.registry import get_type
from mlir.eval.tasks import RetrievalTask

log = logging.getLogger("mlir.eval.benchmarks")  # the package: log lines keep their name


@dataclass
class Benchmark:
    """A configured benchmark with its (language-selected, split, subsampled) task."""

    config: BenchmarkConfig
    task: RetrievalTask

    @property
    def name(self) -> str:
        return self.config.name

    def cross_pairs(self) -> list[tuple[str, str]]:
        c = self.config.cross
        return self.task.cross_pairs(c.get("pairs"), c.get("source"), c.get("target"))

    def with_max_queries(self, max_queries_per_lang: int | None, seed: int | None = None) -> Benchmark:
        """A cheaper copy for periodic evaluation (``None`` = unchanged)."""
        if max_queries_per_lang is None:
            return self
        seed = self.config.seed if seed is None else int(seed)
        return Benchmark(self.config, self.task.subsample_queries(max_queries_per_lang, seed))


def load_benchmark(name: str, cfg: Mapping[str, Any] | BenchmarkConfig, seed: int | None = None) -> Benchmark:
    """Read the data and build the task: type (and group split), then languages, then query subsample."""
    if not isinstance(cfg, BenchmarkConfig):
        cfg = BenchmarkConfig.from_mapping(name, cfg, seed=seed)
    t0 = time.perf_counter()
    task = get_type(cfg.type, where=f"benchmarks.{cfg.name}.type")(cfg)
    groups = task.meta.get("groups")
    if cfg.split and groups is None:  # a type without groups must refuse a split, never ignore it
        raise ConfigError(
            f"type {cfg.type!r} has no groups to split on; remove split", where=f"benchmarks.{cfg.name}.split"
        )
    task = task.select_langs(cfg.langs)
    task = task.subsample_queries(cfg.max_queries_per_lang, cfg.seed)
    log.info(
        "benchmark %s (%s): %d langs, %d queries, %d candidates%s, built in %.1fs",
        cfg.name,
        cfg.type,
        len(task.langs),
        sum(len(task.queries[x].ids) for x in task.langs),
        sum(len(task.docs[x]) for x in task.langs),
        f", {len(groups)} groups" if groups is not None else "",
        time.perf_counter() - t0,
    )
    return Benchmark(cfg, task)


def check_benchmarks(benchmarks: Mapping[str, Any] | None, seed: int | None = None) -> list[BenchmarkConfig]:
    """Check every configured entry (``eval.benchmarks``) without reading any data: keys, type,
    settings, candidates, and a split that holds nothing out (``data.split=null`` under a held-out
    benchmark). Step 1 of :func:`load_benchmark`, for all entries at once, so that ``train.py`` can
    find such a mistake before training instead of after it.
    """
    out = []
    for name, cfg in (plain(benchmarks) or {}).items():
        if cfg is None or isinstance(cfg, Benchmark):
            continue
        out.append(
            cfg if isinstance(cfg, BenchmarkConfig) else BenchmarkConfig.from_mapping(str(name), cfg, seed)
        )
    return out


def load_benchmarks(
    benchmarks: Mapping[str, Any] | Sequence[Benchmark], seed: int | None = None
) -> list[Benchmark]:
    """Build every configured benchmark (``eval.benchmarks``: name -> config); Benchmarks pass through."""
    if isinstance(benchmarks, Sequence) and not isinstance(benchmarks, str):
        if all(isinstance(b, Benchmark) for b in benchmarks):
            return list(benchmarks)
        raise ConfigError("benchmarks must be a mapping name -> config", where="eval.benchmarks")
    out = []
    for name, cfg in plain(benchmarks).items():
        if cfg is None:  # `~eval.benchmarks.x` or `x: null` disables one
            continue
        out.append(cfg if isinstance(cfg, Benchmark) else load_benchmark(str(name), cfg, seed=seed))
    return out
