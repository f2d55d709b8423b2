"""Several weighted corpora: how much of each epoch's id stream each corpus fills.

Without weights (one corpus, or several with every ``weight`` null) an epoch's id stream is passes of
one shuffled order of the usable ids (:func:`mlir.sampling.cursor.epoch_order`), so each corpus is
drawn in proportion to its size. That path is unchanged by this module.

With weights ``w_c`` (``data.corpus.corpora[*].weight``, :mod:`mlir.data.corpora`) every pass of the
stream still holds ``N`` ids (``N`` = all usable ids), of which corpus ``c`` fills ``N * w_c / sum(w)``:
rounded down, plus one more for some corpora chosen by systematic sampling so that the expected count
is exact. Which positions of the pass each corpus fills is shuffled; corpus ``c`` fills its positions
in the order of its own stream, passes of a shuffled order of its usable ids. The put-back queues and
the in-batch deduplication read this stream exactly as they read the unweighted one, so a batch never
holds an id (a cluster) twice.

What an epoch is with weights: ``steps_per_epoch`` is unchanged (usable ids // batch size by default),
so an epoch reads about one pass. An up-weighted corpus repeats its ids within the epoch (it is drawn
again, in a new order, once all its ids were drawn: with replacement across its own passes); a
down-weighted one contributes a random subset, a different one each epoch. The weights hold for the
stream; a batch's share can differ from them where the rule restricts what fits (an X-X-mono batch in
language L takes ids of corpora that have L only; the others wait in the put-back queues for a later
batch), so they hold in expectation over an epoch.

Everything is a pure function of ``(seed, epoch, pass)``, like the rest of the sampler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlir.core.errors import DataError
from mlir.sampling.index import CorpusIndex
from mlir.sampling.rule import CORPUS_STREAM, epoch_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusMix:
    """The weighted corpora with usable ids: names, stream keys, id pools and normalised weights."""

    names: tuple[str, ...]
    keys: tuple[int, ...]  # per corpus, its index in the corpus's ``corpora`` (its random stream)
    pools: tuple[np.ndarray, ...]
    share: np.ndarray  # weights / sum(weights)
    size: int  # ids per pass: all usable ids

    def quota(self, rng: np.random.Generator) -> np.ndarray:
        """Ids per corpus in one pass: ``size * share`` rounded by systematic sampling (exact mean)."""
        expected = self.size * self.share
        base = np.floor(expected).astype(np.int64)
        k = self.size - int(base.sum())
        u = rng.random()
        if k > 0:  # k points u, u+1, ... over the fractional parts: corpus c gets one with P = frac_c
            hit = np.searchsorted(np.cumsum(expected - base), u + np.arange(k), side="right")
            base += np.bincount(np.minimum(hit, len(base) - 1), minlength=len(base))
        return base

    def order(self, seed: int, epoch: int, pass_no: int) -> np.ndarray:
        """Pass ``pass_no`` of ``epoch``'s id stream: shuffled slots, each corpus's from its own stream.

        The slots are shuffled, not the ids, so each corpus's ids keep the order of its stream: no id
        comes a (k+1)-th time before every id of its corpus came k times.
        """
        rngs = [epoch_rng(seed, epoch, CORPUS_STREAM, 0, p) for p in range(pass_no + 1)]
        quotas = np.stack([self.quota(r) for r in rngs])
        start = quotas[:-1].sum(axis=0)
        slots = rngs[-1].permutation(np.repeat(np.arange(len(self.pools)), quotas[-1]))
        out = np.empty(len(slots), dtype=np.int64)
        for c, q in enumerate(quotas[-1]):  # corpus c's slots take its stream in order
            out[slots == c] = self._ids(seed, epoch, c, int(start[c]), int(q))
        return out

    def _ids(self, seed: int, epoch: int, c: int, start: int, n: int) -> np.ndarray:
        """Positions ``[start, start + n)`` of corpus ``c``'s stream (passes of its shuffled ids)."""
        pool = self.pools[c]
        if n == 0:
            return pool[:0]
        m = len(pool)
        first, last = start // m, (start + n - 1) // m
        perms = [
            epoch_rng(seed, epoch, CORPUS_STREAM, 1 + self.keys[c], j).permutation(pool)
            for j in range(first, last + 1)
        ]
        off = start - first * m
        return np.concatenate(perms)[off : off + n]

    def ids_per_lang(self, index: CorpusIndex) -> np.ndarray:
        """Ids per language in one pass of the weighted stream: corpus ``c`` fills ``size * share_c``
        slots with its ids, a fraction of which have language L (``lang_sampling="size"`` reads this;
        without weights it is ``index.ids_per_lang``)."""
        out = np.zeros(index.has.shape[1])
        for pool, share in zip(self.pools, self.share):
            if len(pool):
                out += self.size * share * index.has[pool].mean(axis=0)
        return out

    def fingerprint(self) -> tuple:
        """What of the mix decides the batches (for the sampler's resume fingerprint)."""
        return (self.names, [round(float(s), 12) for s in self.share], [len(p) for p in self.pools])


def _get(corpus: Any, key: str) -> Any:
    return corpus.get(key) if isinstance(corpus, Mapping) else getattr(corpus, key, None)


def id_corpora(corpus_idx: np.ndarray, index: CorpusIndex) -> np.ndarray:
    """Per usable id (``index.pool``), its corpus; a DataError if an id has rows in two corpora.

    One language column at a time, so the memory is one column of the id table, not all of it.
    """
    of_id = np.full(len(index.pool), -1, dtype=np.int64)
    for j in range(index.row_of.shape[1]):
        rows = index.row_of[index.pool, j]
        c = np.where(rows >= 0, corpus_idx[np.maximum(rows, 0)], -1)
        clash = np.flatnonzero((of_id >= 0) & (c >= 0) & (c != of_id))
        if len(clash):
            bad = int(index.pool[clash[0]])
            raise DataError(
                f"parallel id #{bad} has rows in two corpora (ids must be namespaced)", where="corpus"
            )
        of_id = np.where(of_id < 0, c, of_id)
    return of_id


def corpus_mix(corpus: Any, index: CorpusIndex, batch_size: int) -> CorpusMix | None:
    """The weighted mix of ``corpus`` (its ``corpora``, ``corpus_idx``, ``corpus_weights``), or ``None``
    when the stream needs none: no weights, or fewer than two corpora with usable ids."""
    weights, names, corpus_idx = (_get(corpus, k) for k in ("corpus_weights", "corpora", "corpus_idx"))
    if not weights or corpus_idx is None or not names:
        return None
    names = [str(n) for n in names]
    unweighted = [n for n in names if n not in weights]
    if unweighted:
        raise DataError(f"corpora {unweighted} have no weight (weights: {dict(weights)})", where="corpus")
    of_id = id_corpora(np.asarray(corpus_idx, dtype=np.int64), index)
    keys = [c for c in range(len(names)) if (of_id == c).any()]
    unused = [n for n in weights if n not in [names[c] for c in keys]]
    if unused:
        log.warning(
            "corpora %s have no usable ids in these rows and languages: their weights are unused", unused
        )
    if len(keys) < 2:
        return None
    share = np.array([float(weights[names[c]]) for c in keys])
    share /= share.sum()
    mix = CorpusMix(
        names=tuple(names[c] for c in keys),
        keys=tuple(keys),
        pools=tuple(index.pool[of_id == c] for c in keys),
        share=share,
        size=len(index.pool),
    )
    _warn_overweight(mix, index, batch_size)
    return mix


def _warn_overweight(mix: CorpusMix, index: CorpusIndex, batch_size: int) -> None:
    """A corpus whose share of a batch exceeds its distinct ids cannot get it: say so once."""
    for name, pool, share in zip(mix.names, mix.pools, mix.share):
        mask = np.zeros(index.num_ids, dtype=bool)
        mask[pool] = True
        distinct = index.distinct_clusters(mask)
        if share * batch_size > distinct:
            log.warning(
                "corpus '%s': its weight asks for %.1f pairs per batch of %d but it has only %d distinct "
                "ids; batches hold at most that many and its share stays below its weight",
                name,
                share * batch_size,
                batch_size,
                distinct,
            )
