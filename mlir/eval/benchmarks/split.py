"""Which groups (articles) a benchmark evaluates on: ``split.part`` of training's split, or ``split.groups``.

One function for every type with groups, so a benchmark's test articles are always the ones that
training and checkpoint selection never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlir.core.errors import ConfigError
from mlir.data.splits import PARTS, plan_from_config
from mlir.eval.benchmarks.config import BenchmarkConfig


def eval_groups(cfg: BenchmarkConfig, groups: Sequence[str]) -> list[str]:
    """The groups to evaluate on: ``split.groups`` as given, else one part of the training split.

    :func:`mlir.data.splits.plan_split` is what training uses: it depends only on the set of groups and
    the split keys, so the same ``split`` values as ``data.split`` give exactly the test articles of that
    run (``split.part: test``, the default), its dev articles (``dev``) or its training articles
    (``train``, to measure fit).
    """
    where = f"benchmarks.{cfg.name}.split"
    split = dict(cfg.split or {})
    part = split.pop("part", "test")
    if part not in PARTS:
        raise ConfigError(f"must be one of {list(PARTS)}, got {part!r}", where=f"{where}.part")
    if "groups" in split:
        held = [str(g) for g in split.pop("groups")]
        unknown = sorted(set(held) - set(groups))
        if unknown:
            raise ConfigError(
                f"unknown group(s) {unknown[:5]} (known e.g. {sorted(groups)[:3]})", where=f"{where}.groups"
            )
        return sorted(held) if part == "test" else sorted(set(groups) - set(held))
    return plan_from_config(groups, split, where=where).part(part)
