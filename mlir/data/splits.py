"""Train / dev / test splits by group (article), with folds.

Why groups: questions about one article share their passages, and translations of one question share
meaning; if any of them were on two sides, evaluation would measure memorisation. So whole groups go
to one side. Why a dev part: the checkpoint, early stopping and any tuning are chosen on dev, never on
test. Why folds: with ``n_folds`` every group is test exactly once over the folds, so a study over
folds replicates the whole design on different training sets and uses every article for testing.

Which groups go where is decided by a keyed hash of ``(seed, group)``: the same seed gives the same
split whatever the row order, the languages loaded or the other groups present.

* ``n_folds=K, fold=k``: groups ranked by hash; test = every K-th from position k (balanced folds).
* ``n_test_groups=n`` or ``test_fraction=f``: test = the n groups with the smallest hash (no folds).
* dev: ``n_dev_groups`` (or ``dev_fraction`` of the non-test groups), ranked by a second hash among the
  groups that are not test; train = the rest.

Example, the study's fold 0 on XQuAD-R (48 articles -> test 12, dev 4, train 32)::

    plan = plan_split(corpus.groups, n_folds=4, fold=0, n_dev_groups=4, seed=0)
    train, dev = split_corpus(corpus, plan, train_langs)  # benchmarks restrict to plan.test
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlir.core.errors import ConfigError
from mlir.data.corpus import ParallelCorpus

SPLIT_KEYS = ("n_folds", "fold", "n_test_groups", "test_fraction", "n_dev_groups", "dev_fraction", "seed")
RENAMED = {"n_eval_groups": "n_test_groups", "eval_fraction": "test_fraction"}
PARTS = ("train", "dev", "test")


@dataclass(frozen=True)
class GroupSplit:
    """Sorted group keys of each part; ``fold`` is ``None`` without folds."""

    train: list[str]
    dev: list[str]
    test: list[str]
    fold: int | None = None

    def part(self, name: str) -> list[str]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]


def _rank(seed: int, group: str, salt: str = "") -> bytes:
    return hashlib.blake2b(f"{seed}\0{salt}{group}".encode(), digest_size=16).digest()


def _count(n_groups: int, number: Any, fraction: Any, key: str, minimum: int) -> int:
    """``number`` or ``round(fraction * n_groups)`` as an int in ``[minimum, n_groups - 1]``."""
    if number is not None and fraction is not None:
        raise ConfigError(f"give n_{key}_groups or {key}_fraction, not both", where=f"split.n_{key}_groups")
    if fraction is not None:
        if not 0.0 < float(fraction) < 1.0:
            raise ConfigError(f"must be in (0, 1), got {fraction}", where=f"split.{key}_fraction")
        return min(max(1, round(float(fraction) * n_groups)), n_groups - 1)
    n = int(number or 0)
    if not minimum <= n < n_groups:
        raise ConfigError(
            f"must be between {minimum} and {n_groups - 1} (there are {n_groups} groups), got {number}",
            where=f"split.n_{key}_groups",
        )
    return n


def _test_groups(ranked: list[str], n_folds: Any, fold: Any, n_test: Any, test_fraction: Any) -> tuple:
    if n_folds is None:
        if n_test is None and test_fraction is None:
            raise ConfigError("give n_folds, n_test_groups or test_fraction", where="split")
        return ranked[: _count(len(ranked), n_test, test_fraction, "test", 1)], None
    if n_test is not None or test_fraction is not None:
        raise ConfigError("n_folds decides the test groups: drop n_test_groups/test_fraction", where="split")
    k = int(n_folds)
    if not 2 <= k <= len(ranked):
        raise ConfigError(f"must be between 2 and {len(ranked)} groups, got {n_folds}", where="split.n_folds")
    f = int(fold or 0)
    if not 0 <= f < k:
        raise ConfigError(f"must be between 0 and {k - 1}, got {fold}", where="split.fold")
    return ranked[f::k], f


def plan_split(
    groups: Iterable[str],
    *,
    n_folds: int | None = None,
    fold: int | None = 0,
    n_test_groups: int | None = None,
    test_fraction: float | None = None,
    n_dev_groups: int | None = None,
    dev_fraction: float | None = None,
    seed: int = 0,
) -> GroupSplit:
    """Decide which groups are train, dev and test (see the module docstring)."""
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise ConfigError(f"need at least 2 groups to split, the data has {len(uniq)}", where="split")
    ranked = sorted(uniq, key=lambda g: (_rank(seed, g), g))
    test, fold_ = _test_groups(ranked, n_folds, fold, n_test_groups, test_fraction)
    rest = sorted(set(uniq) - set(test), key=lambda g: (_rank(seed, g, "dev\0"), g))
    n_dev = _count(len(rest), n_dev_groups, dev_fraction, "dev", 0) if n_dev_groups or dev_fraction else 0
    return GroupSplit(train=sorted(rest[n_dev:]), dev=sorted(rest[:n_dev]), test=sorted(test), fold=fold_)


def split_kwargs(split: Mapping[str, Any] | None, where: str = "data.split") -> dict[str, Any]:
    """The ``plan_split`` keyword arguments of a config mapping; unknown or renamed keys are refused."""
    out = dict(split or {})
    for old, new in RENAMED.items():
        if old in out:
            raise ConfigError(
                f"'{old}' is now '{new}' (the held-out part is the test part)", where=f"{where}.{old}"
            )
    bad = sorted(set(out) - set(SPLIT_KEYS))
    if bad:
        raise ConfigError(f"unknown key(s) {bad}; known: {list(SPLIT_KEYS)}", where=where)
    return out


def plan_from_config(
    groups: Iterable[str], split: Mapping[str, Any] | None, where: str = "data.split"
) -> GroupSplit:
    """:func:`plan_split` from a config mapping (``data.split`` or a benchmark's ``split``)."""
    try:
        return plan_split(groups, **split_kwargs(split, where))
    except ConfigError as e:
        if not (e.where or "").startswith("split"):
            raise
        raise ConfigError(e.message, where=where + e.where[len("split") :]) from None


def filter_langs(corpus: ParallelCorpus, langs: Sequence[str] | None, where: str = "langs") -> ParallelCorpus:
    """The rows in these languages (``None``: all). Unknown languages are a :class:`ConfigError`."""
    if langs is None:
        return corpus
    unknown = [lang for lang in langs if lang not in corpus.langs]
    if unknown:
        raise ConfigError(f"language(s) {unknown} not in {corpus.name} (has {corpus.langs})", where=where)
    sub = corpus.select(corpus.rows_in_langs(langs))
    sub.meta.update(corpus.meta)
    return sub


def group_rows(
    corpus: ParallelCorpus, groups: Iterable[str], langs: Sequence[str] | None = None
) -> np.ndarray:
    """Row indices of the corpus in these groups (and languages)."""
    wanted = set(groups)
    gidx = np.asarray([i for i, g in enumerate(corpus.groups) if g in wanted], dtype=np.int64)
    rows = np.flatnonzero(np.isin(corpus.group_idx, gidx))
    return rows if langs is None else np.intersect1d(rows, corpus.rows_in_langs(langs))


def split_corpus(
    corpus: ParallelCorpus, plan: GroupSplit, langs: Sequence[str] | None = None
) -> tuple[ParallelCorpus, ParallelCorpus | None]:
    """``(train, dev)`` sub-corpora in ``langs``; dev is ``None`` when the plan has no dev groups.

    The test part is not built here: benchmarks restrict their own data to ``plan.test``.
    """
    unknown = [lang for lang in langs or [] if lang not in corpus.langs]
    if unknown:
        raise ConfigError(
            f"language(s) {unknown} not in {corpus.name} (has {corpus.langs})", where="data.train_langs"
        )
    parts = []
    for name in ("train", "dev"):
        rows = group_rows(corpus, plan.part(name), langs)
        if not len(rows):
            if name == "dev":
                parts.append(None)
                continue
            raise ConfigError(f"the train split of {corpus.name} is empty", where="data.split")
        sub = corpus.select(rows, name=f"{corpus.name}:{name}")
        sub.meta.update(corpus.meta)
        sub.meta.update(split=name, fold=plan.fold, **{f"{p}_groups": plan.part(p) for p in PARTS})
        parts.append(sub)
    return parts[0], parts[1]
