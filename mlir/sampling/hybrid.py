"""Hybrid batch sampling: X-X-mono, X-Y and their mixture (Elmahdy, Lin, Ahmad 2024).

A *row* of the corpus is a (parallel id, language) pair; a *training pair* is ``(q_row, p_row)`` of
the same parallel id: the query text of ``q_row`` and the positive passage of ``p_row``.

* **X-X-mono** batch: one language ``L`` per batch (uniform, or ``p_L ∝ n_L^(1/T)``); every pair is
  ``(row(id, L), row(id, L))``.
* **X-Y** batch: every pair has its own ordered language pair ``X != Y``, drawn among the id's
  languages (weighted sampling without replacement using the same language weights, so uniform
  weights give a uniform ordered pair). Ids with a single language never appear in X-Y batches.
* **Hybrid**: each *global* batch is X-X-mono with probability ``alpha(step)``, else X-Y.

Design choices (tests in ``tests/test_sampler.py`` pin them down):

* **No false negatives.** Ids are linked when they share a positive text (``passage_idx``) in any
  language; a global batch holds at most one id per connected component ("cluster"). This implies at
  most one row per parallel id and per passage text, and also keeps out the *translation* of a
  passage that is another in-batch query's positive.
* **Epochs without replacement.** Each epoch draws a permutation of the usable ids (in >= 1 of the
  training languages when X-X-mono batches can occur, else in >= 2) and consumes it in order. An id
  that cannot go into the current batch (lacks the batch language, has one language in an X-Y batch,
  or its cluster is already in the batch) is put back into a queue that later batches read before
  the permutation (one queue for multi-language ids and one per language for single-language ids, so
  X-Y batches never rescan ids they cannot use); it is used as soon as it fits. With complete
  language coverage and no shared passages every usable id appears exactly once per
  ``steps_per_epoch * batch_size`` pairs. If the permutation runs out (language-skewed corpora, or
  many single-language ids with a small alpha) a fresh permutation of the same epoch is appended; if
  a put-back queue grows past ``max_deferred`` (ids that almost never fit) its oldest entries are
  dropped for the rest of the epoch, which bounds the work per batch.
* **Deterministic, DDP-consistent.** Batch kinds and mono languages are a pure function of
  ``(seed, epoch, step)``; the batch contents follow from replaying the epoch from step 0, which every
  rank does identically. Each rank yields its contiguous slice ``[r*B/W, (r+1)*B/W)`` of the global
  batch, and all ranks yield ``steps_per_epoch`` batches per epoch (default ``usable ids // B``).
* **Item format.** Iteration yields, for this rank, a ``list[tuple[int, int]]`` of
  ``(q_row, p_row)`` corpus row indices (``q_row == p_row`` in mono batches). Use the class as a
  DataLoader ``batch_sampler`` with Lightning's ``use_distributed_sampler=False``; Lightning's
  per-epoch ``set_epoch`` reaches it through ``batch_sampler.sampler``.
* **Resumable.** ``state_dict()`` is ``{"epoch", "step", ...}`` where ``step`` counts batches already
  yielded in the epoch; ``load_state_dict`` makes the next iteration continue with batch ``step``.
  With DataLoader prefetching the sampler runs ahead of training, so prefer
  ``state_at(epoch, trained_batches)`` when checkpointing.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from mlir.errors import ConfigError, DataError
from mlir.sampling.schedule import AlphaSchedule, alpha_endpoints

MONO = "mono"
CROSS = "cross"
LANG_SAMPLING = ("uniform", "size")
_STATE_VERSION = 1
_PROPAGATION_ROUNDS = 6


@dataclass(frozen=True)
class GlobalBatch:
    """One global batch (all ranks together), in the order ranks slice it.

    ``q_lang``/``p_lang`` index the *corpus* language list (``sampler.corpus_langs``).
    """

    epoch: int
    step: int
    kind: str
    lang: int | None
    pids: np.ndarray
    q_rows: np.ndarray
    p_rows: np.ndarray
    q_lang: np.ndarray
    p_lang: np.ndarray

    def __len__(self) -> int:
        return len(self.q_rows)

    def rank_slice(self, rank: int, world_size: int) -> slice:
        """The contiguous part of the batch that ``rank`` trains on."""
        n = len(self.q_rows)
        if world_size < 1 or n % world_size:
            raise ConfigError(
                f"global batch size {n} is not divisible by world size {world_size}", where="data.batch_size"
            )
        per = n // world_size
        return slice(rank * per, (rank + 1) * per)

    def items(self, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
        """``(q_row, p_row)`` pairs of one rank's slice, as plain ints (the DataLoader item format)."""
        sl = self.rank_slice(rank, world_size)
        return list(zip(self.q_rows[sl].tolist(), self.p_rows[sl].tolist()))


@dataclass(frozen=True)
class BatchInfo:
    """What to log for a step: the batch kind, its mono language, and every pair's languages."""

    epoch: int
    step: int
    kind: str
    lang: str | None
    pairs: list[tuple[str, str]]


def _positive_int(value: Any, key: str, hint: str = "") -> int:
    """An integer >= 1 from the config, or a ConfigError naming ``key``."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"must be a positive integer, got {value!r}{hint}", where=key)
    return int(value)


def _as_arrays(corpus: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
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


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct key, in increasing position order."""
    if len(keys) < 2 or (np.diff(np.sort(keys)) != 0).all():  # the usual case: all distinct
        return np.arange(len(keys))
    order = np.argsort(keys, kind="stable")  # equal keys keep their order: the first comes first
    ordered = keys[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[order[1:][ordered[1:] == ordered[:-1]]] = False
    return np.flatnonzero(keep)


def _clusters(pid: np.ndarray, pas: np.ndarray, n_ids: int) -> np.ndarray:
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
    for _ in range(_PROPAGATION_ROUNDS):
        pmin = np.full(int(sq.max()) + 1, len(ids), dtype=np.int64)
        np.minimum.at(pmin, sq, lab[sp])
        new = lab.copy()
        np.minimum.at(new, sp, pmin[sq])
        new = new[new]  # pointer jumping: a label's label is in the same component and not larger
        if np.array_equal(new, lab):
            break
        lab = new
    else:  # long chains of shared texts: fall back to a linear-time graph search
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = len(ids) + int(sq.max()) + 1
        graph = coo_matrix((np.ones(len(sp), dtype=np.int8), (sp, len(ids) + sq)), shape=(n, n))
        _, comp = connected_components(graph.tocsr(), directed=False)
        comp = comp[: len(ids)]
        first = np.full(int(comp.max()) + 1, len(ids), dtype=np.int64)
        np.minimum.at(first, comp, np.arange(len(ids)))
        lab = first[comp]
    labels[ids] = ids[lab]
    return labels


class _Cursor:
    """Where one replay of an epoch stands: next step, put-back queues, permutation stream, RNG.

    Put-back ids wait in ``multi_q`` (ids in >= 2 languages) or ``single_q[l]`` (ids only in language
    column ``l``), so single-language ids never get rescanned by X-Y batches that cannot use them.
    """

    __slots__ = ("epoch", "step", "multi_q", "single_q", "stream", "pos", "passes", "rng", "dropped")

    def __init__(self, sampler: HybridBatchSampler, epoch: int):
        empty = np.zeros(0, dtype=np.int64)
        self.epoch = epoch
        self.step = 0
        self.multi_q = empty
        self.single_q = [empty] * len(sampler.langs)
        self.passes = 0
        self.stream = sampler._permutation(epoch, 0)
        self.pos = 0
        self.rng = np.random.default_rng([sampler._seed, epoch, 1])
        self.dropped = 0


class _EpochHook:
    """Forwards ``set_epoch``: Lightning calls ``dataloader.batch_sampler.sampler.set_epoch(epoch)``
    (never ``batch_sampler.set_epoch``), so this object sits at ``HybridBatchSampler.sampler``."""

    def __init__(self, owner: HybridBatchSampler):
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class HybridBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler yielding this rank's ``(q_row, p_row)`` pairs of hybrid X-X-mono / X-Y batches.

    Args:
        corpus: a ``ParallelCorpus`` (its ``pid``, ``lang_idx``, ``passage_idx``, ``langs`` are used) or a
            mapping with those keys (``langs`` optional).
        batch_size: the *global* batch size B (all ranks together).
        alpha: probability that a global batch is X-X-mono (``schedule="constant"``).
        schedule: ``"constant"`` or ``"linear"`` (``alpha_start`` -> ``alpha_end`` over the training steps).
        alpha_start, alpha_end: endpoints of the linear schedule.
        total_steps: training steps for the linear schedule; default ``max_epochs * steps_per_epoch``.
        max_epochs: used only to derive ``total_steps``.
        lang_sampling: ``"uniform"`` or ``"size"`` (``p_L ∝ n_L^(1/temperature)``, ``n_L`` = usable ids in L).
        temperature: > 0; large values approach uniform.
        langs: restrict training to these language codes (default: all corpus languages).
        steps_per_epoch: batches per epoch (default: usable ids // B).
        seed: base seed; batches are a function of ``(seed, epoch, step)``.
        world_size, rank: DDP layout; B must be divisible by ``world_size``.
        max_deferred: cap on the put-back queue (default ``max(64 * B, 10_000)``).

    Raises:
        ConfigError: a bad value, naming its config key (``sampler.alpha``, ``data.batch_size``, ...).
    """

    def __init__(
        self,
        corpus: Any,
        batch_size: int,
        *,
        alpha: float = 0.5,
        schedule: str = "constant",
        alpha_start: float | None = None,
        alpha_end: float | None = None,
        total_steps: int | None = None,
        max_epochs: int | None = None,
        lang_sampling: str = "uniform",
        temperature: float = 1.0,
        langs: Sequence[str] | str | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        max_deferred: int | None = None,
    ):
        super().__init__()
        # --- cheap config checks first ---------------------------------------------------------
        self.batch_size = B = _positive_int(batch_size, "data.batch_size")
        self.world_size = _positive_int(world_size, "trainer.devices")
        self.rank = int(rank)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}", where="trainer.devices")
        if B % self.world_size:
            raise ConfigError(
                f"global batch size {B} is not divisible by world size {self.world_size}",
                where="data.batch_size",
            )
        amin, amax = sorted(alpha_endpoints(alpha, schedule, alpha_start, alpha_end))
        self.mono_possible, self.cross_possible = amax > 0.0, amin < 1.0
        if lang_sampling not in LANG_SAMPLING:
            raise ConfigError(
                f"unknown lang_sampling {lang_sampling!r}; choose one of {list(LANG_SAMPLING)}",
                where="sampler.lang_sampling",
            )
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            raise ConfigError(
                f"must be a positive number, got {temperature!r}", "sampler.temperature"
            ) from None
        if not temperature > 0 or not np.isfinite(temperature):
            raise ConfigError(f"must be a positive number, got {temperature!r}", "sampler.temperature")
        self.lang_sampling, self.temperature = lang_sampling, temperature
        self._seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
        self.seed = int(seed)

        # --- index -------------------------------------------------------------------------------
        pid, lang, pas, corpus_langs = _as_arrays(corpus)
        self.corpus_langs = corpus_langs
        if langs is None:
            sel = list(corpus_langs)
        else:
            sel = [s.strip() for s in langs.split(",")] if isinstance(langs, str) else [str(x) for x in langs]
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
        self.langs = sel
        self._lang_cols = np.array([corpus_langs.index(x) for x in sel], dtype=np.int64)
        self._build_index(pid, lang, pas)

        # --- epoch structure and schedule --------------------------------------------------------
        if steps_per_epoch is None:
            steps_per_epoch = len(self._pool) // B
        self.steps_per_epoch = _positive_int(
            steps_per_epoch, "sampler.steps_per_epoch", f" ({len(self._pool)} usable ids for batch size {B})"
        )
        if total_steps is None and max_epochs is not None:
            total_steps = int(max_epochs) * self.steps_per_epoch
        self.schedule = AlphaSchedule.from_config(alpha, schedule, alpha_start, alpha_end, total_steps)
        self.max_deferred = int(max_deferred) if max_deferred is not None else max(64 * B, 10_000)

        # --- mutable state ---------------------------------------------------------------------
        self.epoch = 0
        self._step = 0  # batches yielded in self.epoch
        self._start_step = 0  # where the next __iter__ starts (set by load_state_dict)
        self.last_batch_info: BatchInfo | None = None
        self.sampler = _EpochHook(self)  # where Lightning looks for set_epoch on a batch sampler
        self._fp: str | None = None
        self._query_cursor: _Cursor | None = None
        self._plans: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._batches: OrderedDict[tuple[int, int], GlobalBatch] = OrderedDict()
        self._infos: OrderedDict[tuple[int, int], tuple[str, int | None, np.ndarray, np.ndarray]] = (
            OrderedDict()
        )

    # ------------------------------------------------------------------ index construction
    def _build_index(self, pid: np.ndarray, lang: np.ndarray, pas: np.ndarray) -> None:
        """Dense ``row_of[id, lang]`` table, language masks, clusters, the usable pool, and checks."""
        n_sel, B = len(self.langs), self.batch_size
        colmap = np.full(len(self.corpus_langs), -1, dtype=np.int64)
        colmap[self._lang_cols] = np.arange(n_sel)
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
        self.num_duplicate_rows = len(rows) - int(np.count_nonzero(has))
        if self.num_duplicate_rows:  # several rows for one (id, lang): keep the first, deterministically
            uniq, first = np.unique(pid * n_sel + col, return_index=True)
            row_of.reshape(-1)[uniq] = rows[first]
        n_avail = has.sum(axis=1).astype(np.int16)
        cluster = _clusters(pid, pas, n_ids)
        self._row_of, self._has, self._n_avail, self._cluster = row_of, has, n_avail, cluster
        # for single-language ids, their language column (routes them to their put-back queue); else -1
        self._single_lang = np.where(n_avail == 1, has.argmax(axis=1), -1).astype(np.int64)
        self.num_ids = n_ids

        min_langs = 1 if self.mono_possible else 2
        self._pool = np.flatnonzero(n_avail >= min_langs).astype(np.int64)
        n_ids_per_lang = has[self._pool].sum(axis=0).astype(np.int64)
        self.ids_per_lang = dict(zip(self.langs, n_ids_per_lang.tolist()))
        if self.lang_sampling == "uniform":
            p = (n_ids_per_lang > 0).astype(np.float64)
        else:
            with np.errstate(divide="ignore"):
                logp = np.log(n_ids_per_lang.astype(np.float64)) / self.temperature
            p = np.exp(logp - logp[np.isfinite(logp)].max()) if np.isfinite(logp).any() else logp * 0
        self.lang_probs = p / p.sum() if p.sum() > 0 else p
        # X-Y language weights as 1/w (None: uniform). A weight-0 language has no id in the pool.
        w = self.lang_probs
        uniform = np.allclose(w[w > 0], w[w > 0][0]) if (w > 0).any() else True
        self._inv_w = None if uniform else np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 0.0)

        n_clusters = int(cluster.max()) + 1

        def distinct_clusters(mask: np.ndarray) -> int:
            seen = np.zeros(n_clusters, dtype=bool)
            seen[cluster[mask]] = True
            return int(np.count_nonzero(seen))

        if self.cross_possible:
            multi = n_avail >= 2
            if not multi.any():
                raise ConfigError(
                    "X-Y batches need parallel ids in at least two languages and the training data has none "
                    "(use sampler.alpha=1 for X-X-mono only)",
                    where="sampler.alpha",
                )
            k = distinct_clusters(multi)
            if k < B:
                raise ConfigError(
                    f"batch size {B} exceeds the {k} distinct parallel ids/passages usable for X-Y batches "
                    f"(ids in >= 2 of {self.langs})",
                    where="data.batch_size",
                )
        if self.mono_possible:
            for j, code in enumerate(self.langs):
                if self.lang_probs[j] <= 0:
                    continue
                k = distinct_clusters(has[:, j])
                if k < B:
                    raise ConfigError(
                        f"batch size {B} exceeds the {k} distinct parallel ids/passages available for "
                        f"X-X-mono batches in language '{code}'",
                        where="data.batch_size",
                    )
        self.num_clusters = int(np.count_nonzero(cluster == np.arange(n_ids)))  # one root per component

    # ------------------------------------------------------------------ deterministic pieces
    def _permutation(self, epoch: int, pass_no: int) -> np.ndarray:
        """The epoch's ``pass_no``-th shuffled order of the usable ids."""
        return np.random.default_rng([self._seed, epoch, 2, pass_no]).permutation(self._pool)

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Per step of ``epoch``: is the batch mono, and its mono language column (pure in seed/epoch)."""
        plan = self._plans.get(epoch)
        if plan is None:
            spe = self.steps_per_epoch
            rng = np.random.default_rng([self._seed, epoch, 0])
            u = rng.random(spe)
            lang = rng.choice(len(self.langs), size=spe, p=self.lang_probs) if self.mono_possible else None
            if lang is None:
                lang = np.zeros(spe, dtype=np.int64)
            alpha = self.schedule(epoch * spe + np.arange(spe))
            plan = (u < alpha, lang)
            self._plans[epoch] = plan
            while len(self._plans) > 4:
                self._plans.popitem(last=False)
        return plan

    def alpha_at(self, epoch: int, step: int) -> float:
        """The mono probability used for ``(epoch, step)``."""
        return float(self.schedule(epoch * self.steps_per_epoch + step))

    def _select(
        self, cur: _Cursor, is_mono: bool, L: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """The first B candidates (in queue-then-stream order) that fit the batch, one per cluster.

        Candidates are read in order from: the single-language queue of ``L`` (mono only), the
        multi-language queue, then the epoch's permutation stream. The window grows 4x until the
        batch fills; if the whole stream cannot fill it, another pass of the epoch is appended.
        """
        B = self.batch_size
        has, cluster = self._has, self._cluster
        w = 2 * B
        guard_pass = cur.passes + 3
        while True:
            segs = ([cur.single_q[L]] if is_mono else []) + [cur.multi_q, cur.stream[cur.pos :]]
            avail = sum(len(x) for x in segs)
            parts, need = [], w
            for x in segs:
                if need <= 0:
                    break
                parts.append(x[:need])
                need -= len(parts[-1])
            cand = parts[0] if len(parts) == 1 else np.concatenate(parts)
            elig = has[cand, L] if is_mono else self._n_avail[cand] >= 2
            idx = np.flatnonzero(elig)
            first = idx[_first_occurrences(cluster[cand[idx]])]
            if len(first) >= B:
                acc = first[:B]
                return cand[acc], acc, cand, segs
            if len(cand) >= avail:  # the whole stream is not enough: append another pass of this epoch
                cur.passes += 1
                if cur.passes > guard_pass:  # pragma: no cover - excluded by the constructor's checks
                    raise RuntimeError("sampler could not fill a batch; this is a bug")
                cur.stream = np.concatenate([cur.stream[cur.pos :], self._permutation(cur.epoch, cur.passes)])
                cur.pos = 0
            else:
                w *= 4

    def _put_back(
        self, cur: _Cursor, is_mono: bool, L: int, cand: np.ndarray, acc: np.ndarray, segs: list[np.ndarray]
    ) -> None:
        """Advance past the scanned candidates; the scanned-but-unused ones go back to the queues' heads."""
        last = int(acc[-1]) + 1
        skip = np.ones(last, dtype=bool)
        skip[acc] = False
        off = 0
        new = []
        for x in segs:  # per segment: the skipped part of its scanned prefix, then its unscanned rest
            n_scanned = min(max(last - off, 0), len(x))
            new.append((cand[off : off + n_scanned][skip[off : off + n_scanned]], x[n_scanned:], n_scanned))
            off += len(x)
        if is_mono:
            skipped, rest, _ = new.pop(0)
            cur.single_q[L] = self._cap(cur, np.concatenate([skipped, rest]))
        (m_skipped, m_rest, _), (s_skipped, _, s_scanned) = new
        cur.pos += s_scanned
        single_lang = self._single_lang[s_skipped]
        is_single = single_lang >= 0
        cur.multi_q = self._cap(cur, np.concatenate([m_skipped, m_rest, s_skipped[~is_single]]))
        if is_single.any():
            singles, their_lang = s_skipped[is_single], single_lang[is_single]
            for lang in np.unique(their_lang).tolist():
                cur.single_q[lang] = self._cap(
                    cur, np.concatenate([cur.single_q[lang], singles[their_lang == lang]])
                )

    def _cap(self, cur: _Cursor, queue: np.ndarray) -> np.ndarray:
        """Bound a put-back queue, dropping its oldest ids for the rest of the epoch."""
        if len(queue) > self.max_deferred:
            cur.dropped += len(queue) - self.max_deferred
            return queue[-self.max_deferred :]
        return queue

    def _advance(self, cur: _Cursor) -> GlobalBatch:
        """Draw batch ``cur.step`` of ``cur.epoch`` and move the cursor past it."""
        B = self.batch_size
        mono_plan, lang_plan = self._plan(cur.epoch)
        step = cur.step
        is_mono = bool(mono_plan[step])
        L = int(lang_plan[step])
        has = self._has
        ids, acc_pos, cand, segs = self._select(cur, is_mono, L)
        self._put_back(cur, is_mono, L, cand, acc_pos, segs)

        if is_mono:
            rows = self._row_of[ids, L].astype(np.int64)
            q_rows = p_rows = rows
            q_lang = p_lang = np.full(B, self._lang_cols[L], dtype=np.int16)
        else:
            # weighted sampling without replacement (Efraimidis-Spirakis): top-2 of log(u) / w
            keys = cur.rng.random(size=(B, len(self.langs)))
            if self._inv_w is not None:
                keys = np.log(keys) * self._inv_w
            keys[~has[ids]] = -np.inf
            ar = np.arange(B)
            x = keys.argmax(axis=1)
            keys[ar, x] = -np.inf
            y = keys.argmax(axis=1)
            q_rows = self._row_of[ids, x].astype(np.int64)
            p_rows = self._row_of[ids, y].astype(np.int64)
            q_lang = self._lang_cols[x].astype(np.int16)
            p_lang = self._lang_cols[y].astype(np.int16)
        gb = GlobalBatch(
            epoch=cur.epoch,
            step=step,
            kind=MONO if is_mono else CROSS,
            lang=int(self._lang_cols[L]) if is_mono else None,
            pids=ids,
            q_rows=q_rows,
            p_rows=p_rows,
            q_lang=q_lang,
            p_lang=p_lang,
        )
        cur.step += 1
        self._remember(gb)
        return gb

    def _remember(self, gb: GlobalBatch) -> None:
        """Keep recent batches whole and a longer history of their languages (for batch_info)."""
        key = (gb.epoch, gb.step)
        self._batches[key] = gb
        while len(self._batches) > 64:
            self._batches.popitem(last=False)
        self._infos[key] = (gb.kind, gb.lang, gb.q_lang, gb.p_lang)
        self._infos.move_to_end(key)
        while len(self._infos) > max(4096, 2 * self.steps_per_epoch):
            self._infos.popitem(last=False)

    # ------------------------------------------------------------------ public API
    def global_batch(self, epoch: int, step: int) -> GlobalBatch:
        """The full global batch for ``(epoch, step)``; identical on every rank and across runs."""
        if not 0 <= step < self.steps_per_epoch or epoch < 0:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch}) or negative epoch {epoch}")
        gb = self._batches.get((epoch, step))
        if gb is not None:
            return gb
        cur = self._query_cursor
        if cur is None or cur.epoch != epoch or cur.step > step:
            cur = _Cursor(self, epoch)
        while cur.step <= step:
            gb = self._advance(cur)
        self._query_cursor = cur
        return gb  # type: ignore[return-value]

    def batch_info(self, epoch: int, step: int) -> BatchInfo:
        """Kind, mono language and per-pair ``(q_lang, p_lang)`` language codes of a step, for logging.

        Served from a history of recent steps (two epochs), else recomputed by replaying the epoch.
        With DataLoader prefetching, ask for the trainer's step rather than reading ``last_batch_info``.
        """
        info = self._infos.get((epoch, step))
        if info is None:
            gb = self.global_batch(epoch, step)
            info = (gb.kind, gb.lang, gb.q_lang, gb.p_lang)
        kind, lang, q_lang, p_lang = info
        codes = self.corpus_langs
        return BatchInfo(
            epoch=epoch,
            step=step,
            kind=kind,
            lang=codes[lang] if lang is not None else None,
            pairs=[(codes[a], codes[b]) for a, b in zip(q_lang.tolist(), p_lang.tolist())],
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration draws (Lightning calls this; a resumed epoch keeps its step)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._start_step = 0
            self._step = 0

    def __len__(self) -> int:
        """``steps_per_epoch``, also right after a mid-epoch resume (the next ``iter()`` then yields fewer).

        Lightning sizes *every* epoch by the length it reads once at the start of fit and counts the
        restored batches itself; a shorter length here would cut all later epochs short.
        """
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self._start_step
        self._start_step = 0
        self._step = start
        cur = _Cursor(self, epoch)
        return self._iterate(cur, start)

    def _iterate(self, cur: _Cursor, start: int) -> Iterator[list[tuple[int, int]]]:
        while cur.step < start:  # replay up to a resumed position
            self._advance(cur)
        for step in range(start, self.steps_per_epoch):
            gb = self._advance(cur)
            self.last_batch_info = self.batch_info(gb.epoch, step)
            if self.epoch == cur.epoch:
                self._step = step + 1
            yield gb.items(self.rank, self.world_size)

    def _fingerprint(self) -> str:
        """A short digest of what determines the batch sequence (to warn on mismatched resumes)."""
        if self._fp is not None:
            return self._fp
        parts = (
            self.num_ids,
            len(self._pool),
            self.num_clusters,
            int(self._row_of.sum(dtype=np.int64)),
            self.langs,
            self.batch_size,
            self.steps_per_epoch,
            self.seed,
            self.schedule,
            self.lang_sampling,
            self.temperature,
            self.max_deferred,
        )
        self._fp = hashlib.sha1(repr(parts).encode()).hexdigest()[:16]
        return self._fp

    def state_at(self, epoch: int, step: int) -> dict[str, Any]:
        """A state dict for "``step`` batches of ``epoch`` done" (use the trainer's count when prefetching)."""
        return {
            "version": _STATE_VERSION,
            "epoch": int(epoch),
            "step": int(step),
            "seed": self.seed,
            "fingerprint": self._fingerprint(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches yielded so far in it; with ``load_state_dict`` the sequence continues exactly."""
        return self.state_at(self.epoch, self._step)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields batch ``state["step"]`` of ``state["epoch"]``."""
        epoch, step = int(state["epoch"]), int(state["step"])
        if state.get("fingerprint") not in (None, self._fingerprint()):
            warnings.warn(
                "sampler state comes from a different corpus or sampler config; batches after resume will "
                "not continue the original sequence",
                stacklevel=2,
            )
        if not 0 <= step <= self.steps_per_epoch:
            warnings.warn(
                f"sampler state step {step} is outside this epoch's {self.steps_per_epoch} steps; clamping",
                stacklevel=2,
            )
            step = min(max(step, 0), self.steps_per_epoch)
        self.epoch = epoch
        self._step = self._start_step = step

    def describe(self) -> dict[str, Any]:
        """Sizes and settings for logs and reports."""
        return {
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            "langs": list(self.langs),
            "lang_probs": dict(zip(self.langs, np.round(self.lang_probs, 6).tolist())),
            "ids_per_lang": dict(self.ids_per_lang),
            "num_ids": self.num_ids,
            "usable_ids": int(len(self._pool)),
            "num_clusters": self.num_clusters,
            "duplicate_rows": self.num_duplicate_rows,
            "schedule": {
                "kind": self.schedule.kind,
                "start": self.schedule.start,
                "end": self.schedule.end,
                "total_steps": self.schedule.total_steps,
            },
            "lang_sampling": self.lang_sampling,
            "temperature": self.temperature,
            "seed": self.seed,
        }


def preview_records(
    sampler: HybridBatchSampler, corpus: Any, n_batches: int, world_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """The first ``n_batches`` global batches from the sampler's current epoch, as JSON-ready dicts.

    Each record is ``{"step": i, "kind": "mono"|"cross", "pairs": [{"id", "q_lang", "p_lang", "rank"}]}``;
    ``rank`` is the DDP rank whose slice holds the pair under ``world_size`` (default: the sampler's).
    Parallel id strings come from ``corpus.texts("id", rows)`` when available, else the integer pid.
    """
    ws = int(world_size) if world_size is not None else sampler.world_size
    if ws < 1 or sampler.batch_size % ws:
        raise ConfigError(
            f"global batch size {sampler.batch_size} is not divisible by world size {ws}",
            where="data.batch_size",
        )
    per = sampler.batch_size // ws
    codes = sampler.corpus_langs
    texts = getattr(corpus, "texts", None)
    spe = sampler.steps_per_epoch
    for i in range(int(n_batches)):
        gb = sampler.global_batch(sampler.epoch + i // spe, i % spe)
        ids = texts("id", gb.q_rows) if texts is not None else [str(x) for x in gb.pids.tolist()]
        pairs = [
            {"id": str(pid), "q_lang": codes[q], "p_lang": codes[p], "rank": j // per}
            for j, (pid, q, p) in enumerate(zip(ids, gb.q_lang.tolist(), gb.p_lang.tolist()))
        ]
        yield {"step": i, "kind": gb.kind, "pairs": pairs}
