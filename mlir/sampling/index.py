"""The training corpus as the sampler sees it: parallel ids x training languages, and clusters.

A *row* of the corpus is a (parallel id, language) pair; ``row_of[id, l]`` is that row (-1 when the
id lacks language column ``l``). Ids are linked when they share a positive text (``passage_idx``) in
any language; a *cluster* is a connected component of that graph. A global batch holds at most one
id per cluster, which implies at most one row per id and per passage text, and also keeps out the
*translation* of a passage that is another in-batch query's positive: no false in-batch negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlir.core.errors import ConfigError, DataError

PROPAGATION_ROUNDS = 6


def corpus_arrays(corpus: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(pid, lang_idx, passage_idx, langs) from a ParallelCorpus-like object or a mapping of arrays."""
    if isinstance(corpus, Mapping):
        get = corpus.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(corpus, key, default)

    arrays = []
    for key in ("pid", "lang_idx", "passage_idx"):
        a = get(key)
        if a is None:
            raise TypeError(f"corpus must provide '{key}' (a ParallelCorpus or a mapping of arrays)")
        arrays.append(np.asarray(a, dtype=np.int64))
    pid, lang, pas = arrays
    if not (pid.ndim == lang.ndim == pas.ndim == 1) or not (len(pid) == len(lang) == len(pas)):
        raise DataError("pid, lang_idx and passage_idx must be 1-D arrays of equal length", where="corpus")
    if len(pid) == 0:
        raise DataError("the training corpus is empty", where="corpus")
    if min(pid.min(), lang.min(), pas.min()) < 0:
        raise DataError("pid, lang_idx and passage_idx must be non-negative", where="corpus")
    langs = get("langs")
    langs = [str(x) for x in langs] if langs is not None else [str(i) for i in range(int(lang.max()) + 1)]
    if int(lang.max()) >= len(langs):
        raise DataError(f"lang_idx {int(lang.max())} has no entry in langs {langs}", where="corpus")
    return pid, lang, pas, langs


def training_langs(
    requested: Sequence[str] | str | None, corpus_langs: list[str], lang: np.ndarray
) -> list[str]:
    """``sampler.langs`` (a list or ``"de,fr"``; ``None`` = all), each checked to have rows."""
    if requested is None:
        return list(corpus_langs)
    if isinstance(requested, str):
        sel = [s.strip() for s in requested.split(",")]
    else:
        sel = [str(x) for x in requested]
    sel = list(dict.fromkeys(s for s in sel if s))
    present = np.bincount(lang, minlength=len(corpus_langs)) > 0
    unknown = [x for x in sel if x not in corpus_langs or not present[corpus_langs.index(x)]]
    if unknown:
        raise ConfigError(
            f"language(s) {unknown} not in the training data (available: {corpus_langs})",
            where="sampler.langs",
        )
    if not sel:
        raise ConfigError("no training language selected", where="sampler.langs")
    return sel


def clusters(pid: np.ndarray, pas: np.ndarray, n_ids: int) -> np.ndarray:
    """Per id, the smallest id of its component in the id–passage graph (ids linked by a shared text).

    Only passages used by two or more rows can link ids, so the work is on those rows alone; in the
    common case (no shared texts) this is ``arange(n_ids)`` after one bincount. Components are found
    by min-label propagation with pointer jumping (a handful of vectorised rounds), falling back to
    scipy's linear-time connected components for long chains.
    """
    labels = np.arange(n_ids, dtype=np.int64)
    multi = np.bincount(pas) > 1
    if not multi.any():
        return labels
    shared = multi[pas]
    sp, spas = pid[shared], pas[shared]
    ids, sp = np.unique(sp, return_inverse=True)  # compact: only ids touching a shared text
    _, sq = np.unique(spas, return_inverse=True)
    lab = np.arange(len(ids), dtype=np.int64)
    for _ in range(PROPAGATION_ROUNDS):
        pmin = np.full(int(sq.max()) + 1, len(ids), dtype=np.int64)
        np.minimum.at(pmin, sq, lab[sp])
        new = lab.copy()
        np.minimum.at(new, sp, pmin[sq])
        new = new[new]  # pointer jumping: a label's label is in the same component and not larger
        if np.array_equal(new, lab):
            break
        lab = new
    else:  # long chains of shared texts: fall back to a linear-time graph search
        lab = _components(sp, sq, len(ids))
    labels[ids] = ids[lab]
    return labels


def _components(sp: np.ndarray, sq: np.ndarray, n_ids: int) -> np.ndarray:
    """Per compact id, the smallest compact id of its component (scipy; ids and passages as nodes)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = n_ids + int(sq.max()) + 1
    graph = coo_matrix((np.ones(len(sp), dtype=np.int8), (sp, n_ids + sq)), shape=(n, n))
    _, comp = connected_components(graph.tocsr(), directed=False)
    comp = comp[:n_ids]
    first = np.full(int(comp.max()) + 1, n_ids, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n_ids))
    return first[comp]


@dataclass(frozen=True)
class CorpusIndex:
    """Dense id x language tables of the training rows, clusters and the ids an epoch draws from.

    ``pool`` holds the *usable* ids: in >= 1 training language when X-X-mono batches can occur, else in
    >= 2. ``single_lang[id]`` is the language column of an id with exactly one language, else -1.
    """

    corpus_langs: list[str]
    langs: list[str]
    lang_cols: np.ndarray  # per training language, its index in corpus_langs
    row_of: np.ndarray
    has: np.ndarray
    n_avail: np.ndarray
    cluster: np.ndarray
    single_lang: np.ndarray
    pool: np.ndarray
    num_duplicate_rows: int

    @property
    def num_ids(self) -> int:
        return len(self.row_of)

    @property
    def num_clusters(self) -> int:
        """Connected components (one root per component)."""
        return int(np.count_nonzero(self.cluster == np.arange(self.num_ids)))

    @property
    def ids_per_lang(self) -> np.ndarray:
        """Usable ids per training language."""
        return self.has[self.pool].sum(axis=0).astype(np.int64)

    def fits(self, ids: np.ndarray, mono_lang: int | None) -> np.ndarray:
        """Which ids can join a batch: they have the X-X-mono language, or >= 2 languages for X-Y."""
        return self.has[ids, mono_lang] if mono_lang is not None else self.n_avail[ids] >= 2

    def distinct_clusters(self, mask: np.ndarray) -> int:
        """Clusters among the ids in ``mask``: the largest batch those ids can fill."""
        seen = np.zeros(int(self.cluster.max()) + 1, dtype=bool)
        seen[self.cluster[mask]] = True
        return int(np.count_nonzero(seen))


def build_index(corpus: Any, langs: Sequence[str] | str | None, min_langs: int) -> CorpusIndex:
    """The index of ``corpus`` restricted to the training languages ``langs`` (see :class:`CorpusIndex`)."""
    pid, lang, pas, corpus_langs = corpus_arrays(corpus)
    sel = training_langs(langs, corpus_langs, lang)
    lang_cols = np.array([corpus_langs.index(x) for x in sel], dtype=np.int64)
    n_sel = len(sel)
    colmap = np.full(len(corpus_langs), -1, dtype=np.int64)
    colmap[lang_cols] = np.arange(n_sel)
    if np.array_equal(colmap, np.arange(len(colmap))):  # all languages, in corpus order
        col = lang
        rows = np.arange(len(pid), dtype=np.int64)
    else:
        col = colmap[lang]
        rows = np.flatnonzero(col >= 0)
        pid, col, pas = pid[rows], col[rows], pas[rows]
    n_ids = int(pid.max()) + 1
    dtype = np.int32 if rows[-1] < 2**31 - 1 else np.int64
    row_of = np.full((n_ids, n_sel), -1, dtype=dtype)
    row_of[pid, col] = rows
    has = row_of >= 0
    duplicates = len(rows) - int(np.count_nonzero(has))
    if duplicates:  # several rows for one (id, lang): keep the first, deterministically
        uniq, first = np.unique(pid * n_sel + col, return_index=True)
        row_of.reshape(-1)[uniq] = rows[first]
    n_avail = has.sum(axis=1).astype(np.int16)
    return CorpusIndex(
        corpus_langs=corpus_langs,
        langs=sel,
        lang_cols=lang_cols,
        row_of=row_of,
        has=has,
        n_avail=n_avail,
        cluster=clusters(pid, pas, n_ids),
        single_lang=np.where(n_avail == 1, has.argmax(axis=1), -1).astype(np.int64),
        pool=np.flatnonzero(n_avail >= min_langs).astype(np.int64),
        num_duplicate_rows=duplicates,
    )


def check_batch_fits(
    index: CorpusIndex, batch_size: int, lang_probs: np.ndarray, mono: bool, cross: bool
) -> None:
    """Every batch the schedule can draw has ``batch_size`` distinct clusters to choose from."""
    B = batch_size
    if cross:
        multi = index.n_avail >= 2
        if not multi.any():
            raise ConfigError(
                "X-Y batches need parallel ids in at least two languages and the training data has none "
                "(use sampler.alpha=1 for X-X-mono only)",
                where="sampler.alpha",
            )
        k = index.distinct_clusters(multi)
        if k < B:
            raise ConfigError(
                f"batch size {B} exceeds the {k} distinct parallel ids/passages usable for X-Y batches "
                f"(ids in >= 2 of {index.langs})",
                where="data.batch_size",
            )
    if mono:
        for j, code in enumerate(index.langs):
            if lang_probs[j] <= 0:
                continue
            k = index.distinct_clusters(index.has[:, j])
            if k < B:
                raise ConfigError(
                    f"batch size {B} exceeds the {k} distinct parallel ids/passages available for "
                    f"X-X-mono batches in language '{code}'",
                    where="data.batch_size",
                )
