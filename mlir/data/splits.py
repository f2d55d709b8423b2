"""Train/eval splits by group (article) and by language.

Why groups: questions about one article share their passages, and translations of one question share
meaning; if any of them were on both sides, evaluation would measure memorisation. So whole groups
are held out. Which groups is decided by a keyed hash of ``(seed, group)``: the same seed gives the
same held-out groups whatever the row order, the languages loaded or the other groups present.

Example (LAReQA-style): train on 36 of XQuAD-R's 48 articles in nine languages, evaluate on the other
12 in all eleven::

    train, eval_ = split_by_group(corpus, n_eval_groups=12, seed=0,
                                  train_langs=["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"])
    held_out = eval_.meta["eval_groups"]          # -> XquadR.restrict_groups(held_out) for candidates
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from mlir.data.corpus import ParallelCorpus
from mlir.errors import ConfigError


def _rank(seed: int, group: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{group}".encode(), digest_size=16).digest()


def choose_eval_groups(
    groups: Iterable[str],
    eval_fraction: float | None = None,
    n_eval_groups: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Pick the held-out groups: the ``n`` with the smallest ``hash(seed, group)``; returned sorted.

    Exactly one of ``eval_fraction`` (0 < f < 1; ``round(f * n_groups)``, at least 1) and
    ``n_eval_groups`` (1 <= n < n_groups) must be given; at least one group always stays for training.
    """
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise ConfigError(f"need at least 2 groups to split, the corpus has {len(uniq)}", where="split")
    if (eval_fraction is None) == (n_eval_groups is None):
        raise ConfigError("give exactly one of eval_fraction and n_eval_groups", where="split")
    if eval_fraction is not None:
        if not 0.0 < float(eval_fraction) < 1.0:
            raise ConfigError(f"must be in (0, 1), got {eval_fraction}", where="split.eval_fraction")
        n = min(max(1, round(float(eval_fraction) * len(uniq))), len(uniq) - 1)
    else:
        n = int(n_eval_groups)
        if not 1 <= n < len(uniq):
            raise ConfigError(
                f"must be between 1 and {len(uniq) - 1} (the corpus has {len(uniq)} groups), got {n_eval_groups}",
                where="split.n_eval_groups",
            )
    ranked = sorted(uniq, key=lambda g: (_rank(seed, g), g))
    return sorted(ranked[:n])


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


def split_by_groups(
    corpus: ParallelCorpus,
    eval_groups: Iterable[str],
    train_langs: Sequence[str] | None = None,
    eval_langs: Sequence[str] | None = None,
) -> tuple[ParallelCorpus, ParallelCorpus]:
    """Split on an explicit held-out group list (e.g. one chosen on another corpus or read from a run)."""
    held = sorted(set(eval_groups))
    unknown = [g for g in held if g not in corpus.groups]
    if unknown:
        raise ConfigError(f"unknown group(s) {unknown[:5]} in {corpus.name}", where="split.eval_groups")
    held_set = set(held)
    held_idx = np.asarray([i for i, g in enumerate(corpus.groups) if g in held_set], dtype=np.int64)
    is_eval = np.isin(corpus.group_idx, held_idx)
    train_groups = sorted(set(corpus.groups) - set(held))
    parts = []
    for rows_mask, langs, part in ((~is_eval, train_langs, "train"), (is_eval, eval_langs, "eval")):
        rows = np.flatnonzero(rows_mask)
        if langs is not None:
            unknown_l = [lang for lang in langs if lang not in corpus.langs]
            if unknown_l:
                raise ConfigError(
                    f"language(s) {unknown_l} not in {corpus.name} (has {corpus.langs})",
                    where=f"split.{part}_langs",
                )
            rows = np.intersect1d(rows, corpus.rows_in_langs(langs))
        if not len(rows):
            raise ConfigError(f"the {part} split of {corpus.name} is empty", where=f"split.{part}_langs")
        sub = corpus.select(rows, name=f"{corpus.name}:{part}")
        sub.meta.update(corpus.meta)
        sub.meta.update(
            split=part,
            eval_groups=list(held),
            train_groups=train_groups,
            split_langs=list(langs or corpus.langs),
        )
        parts.append(sub)
    return parts[0], parts[1]


def split_by_group(
    corpus: ParallelCorpus,
    eval_fraction: float | None = None,
    n_eval_groups: int | None = None,
    seed: int = 0,
    *,
    train_langs: Sequence[str] | None = None,
    eval_langs: Sequence[str] | None = None,
) -> tuple[ParallelCorpus, ParallelCorpus]:
    """Deterministic ``(train, eval)`` split holding out whole groups, optionally filtered by language.

    Groups are chosen on the whole corpus before language filtering, so changing ``train_langs`` never
    changes which articles are held out. Both parts carry ``meta["eval_groups"]`` (sorted held-out
    group keys) and ``meta["train_groups"]``.
    """
    held = choose_eval_groups(corpus.groups, eval_fraction, n_eval_groups, seed)
    return split_by_groups(corpus, held, train_langs=train_langs, eval_langs=eval_langs)
