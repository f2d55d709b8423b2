"""In-batch deduplication and the put-back queues: which candidate ids fill the next batch.

Candidates are read in a fixed order: the put-back queues, then the epoch's shuffled stream. A batch
takes the first ``B`` candidates that fit it (have its X-X-mono language, or >= 2 languages for X-Y)
and whose cluster is not in the batch yet (:mod:`mlir.sampling.index`). A scanned candidate that was
not taken is *put back* at the head of a queue and used as soon as a later batch fits it, so an epoch
still draws its ids without replacement. Single-language ids wait in a queue of their language, so
X-Y batches (which cannot use them) never rescan them. A queue longer than ``cap`` drops its oldest
ids for the rest of the epoch: ids that almost never fit must not make every batch slower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct key, in increasing position order."""
    if len(keys) < 2 or (np.diff(np.sort(keys)) != 0).all():  # the usual case: all distinct
        return np.arange(len(keys))
    order = np.argsort(keys, kind="stable")  # equal keys keep their order: the first comes first
    ordered = keys[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[order[1:][ordered[1:] == ordered[:-1]]] = False
    return np.flatnonzero(keep)


def pick(
    segments: list[np.ndarray],
    width: int,
    fits: Callable[[np.ndarray], np.ndarray],
    cluster: np.ndarray,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scan the first ``width`` candidates of ``segments`` (in order); return them and the positions
    of the first ``batch_size`` that fit, one per cluster (``None`` when fewer than that fit)."""
    parts, need = [], width
    for x in segments:
        if need <= 0:
            break
        parts.append(x[:need])
        need -= len(parts[-1])
    cand = parts[0] if len(parts) == 1 else np.concatenate(parts)
    idx = np.flatnonzero(fits(cand))
    first = idx[first_occurrences(cluster[cand[idx]])]
    return cand, (first[:batch_size] if len(first) >= batch_size else None)


@dataclass
class PutBackQueues:
    """Ids scanned but not yet used: ``multi`` (ids in >= 2 languages), ``single[l]`` (ids only in l)."""

    cap: int
    multi: np.ndarray
    single: list[np.ndarray]
    dropped: int = 0

    @classmethod
    def empty(cls, n_langs: int, cap: int) -> PutBackQueues:
        empty = np.zeros(0, dtype=np.int64)
        return cls(cap, empty, [empty] * n_langs)

    def ahead_of(self, stream: np.ndarray, mono_lang: int | None) -> list[np.ndarray]:
        """The candidates of a batch in reading order: ``mono_lang``'s single-language queue (X-X-mono
        batches only), the multi-language queue, then the rest of the stream."""
        return ([self.single[mono_lang]] if mono_lang is not None else []) + [self.multi, stream]

    def put_back(
        self,
        segments: list[np.ndarray],
        cand: np.ndarray,
        taken: np.ndarray,
        single_lang: np.ndarray,
        mono_lang: int | None,
    ) -> int:
        """Requeue what the batch scanned but did not take; returns how many stream ids it consumed.

        ``segments`` and ``cand`` are those of :meth:`ahead_of` and :func:`pick`; ``taken`` are the
        positions in ``cand`` the batch took. The skipped ids keep their order, ahead of the unscanned.
        """
        last = int(taken[-1]) + 1
        skip = np.ones(last, dtype=bool)
        skip[taken] = False
        off = 0
        new = []
        for x in segments:  # per segment: the skipped part of its scanned prefix, then its unscanned rest
            n_scanned = min(max(last - off, 0), len(x))
            new.append((cand[off : off + n_scanned][skip[off : off + n_scanned]], x[n_scanned:], n_scanned))
            off += len(x)
        if mono_lang is not None:
            skipped, rest, _ = new.pop(0)
            self.single[mono_lang] = self._capped(np.concatenate([skipped, rest]))
        (m_skipped, m_rest, _), (s_skipped, _, s_scanned) = new
        their_lang = single_lang[s_skipped]
        is_single = their_lang >= 0
        self.multi = self._capped(np.concatenate([m_skipped, m_rest, s_skipped[~is_single]]))
        if is_single.any():
            singles, their_lang = s_skipped[is_single], their_lang[is_single]
            for lang in np.unique(their_lang).tolist():
                self.single[lang] = self._capped(
                    np.concatenate([self.single[lang], singles[their_lang == lang]])
                )
        return s_scanned

    def _capped(self, queue: np.ndarray) -> np.ndarray:
        """Bound a queue, dropping its oldest ids for the rest of the epoch."""
        if len(queue) > self.cap:
            self.dropped += len(queue) - self.cap
            return queue[-self.cap :]
        return queue
