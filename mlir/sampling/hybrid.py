"""HybridBatchSampler: the paper's hybrid batches as a DataLoader batch sampler.

Read the pieces in this order: :mod:`mlir.sampling.rule` (the paper's rule: each global batch is
X-X-mono with probability ``alpha(step)``, else X-Y), :mod:`mlir.sampling.index` (ids x languages,
clusters of ids that share a text), :mod:`mlir.sampling.dedup` (which ids fill a batch; put-back
queues), :mod:`mlir.sampling.cursor` (replaying an epoch; the resumable position),
:mod:`mlir.sampling.mix` (several weighted corpora). This module only wires them together. A
*training pair* is ``(q_row, p_row)`` of one parallel id: the query text of ``q_row`` and the positive
passage of ``p_row``.

Guarantees (``tests/test_sampler.py``; the exact sequence is pinned by ``tests/test_sampler_sequence.py``):

* **No false negatives**: at most one id per cluster in a global batch.
* **Epochs without replacement**: each epoch draws a permutation of the usable ids (in >= 1 training
  language when X-X-mono batches can occur, else in >= 2). With complete language coverage and no
  shared passages every usable id appears exactly once per ``steps_per_epoch * batch_size`` pairs.
  Several corpora with weights (:mod:`mlir.data.corpora`) replace the permutation by a weighted
  stream, each corpus filling its share of every pass (:mod:`mlir.sampling.mix`).
* **Deterministic, DDP-consistent**: batches are a function of ``(seed, epoch, step)``; each rank
  yields its contiguous slice ``[r*B/W, (r+1)*B/W)`` of the global batch, and all ranks yield
  ``steps_per_epoch`` batches per epoch (default ``usable ids // B``).
* **Item format**: iteration yields, for this rank, a ``list[tuple[int, int]]`` of ``(q_row, p_row)``
  corpus row indices (``q_row == p_row`` in X-X-mono batches). Use it as a DataLoader
  ``batch_sampler`` with Lightning's ``use_distributed_sampler=False``; Lightning's per-epoch
  ``set_epoch`` reaches it through ``batch_sampler.sampler``.
* **Resumable**: ``state_dict()`` is ``{"epoch", "step", ...}`` where ``step`` counts batches already
  yielded in the epoch. With DataLoader prefetching the sampler runs ahead of training, so
  checkpoint ``state_at(epoch, trained_batches)`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from mlir.sampling import cursor
from mlir.sampling.cursor import EpochCursor, Position
from mlir.sampling.index import build_index, check_batch_fits
from mlir.sampling.mix import corpus_mix
from mlir.sampling.options import check_lang_sampling, check_temperature, check_world, per_rank, positive_int
from mlir.sampling.rule import CROSS, MONO, language_probs, pair_languages, plan_batches
from mlir.sampling.schedule import AlphaSchedule, alpha_endpoints, schedule_length

__all__ = ["CROSS", "MONO", "GlobalBatch", "HybridBatchSampler"]


@dataclass(frozen=True)
class GlobalBatch:
    """One global batch (all ranks together), in the order ranks slice it.

    ``lang``/``q_lang``/``p_lang`` index the *corpus* language list (``sampler.corpus_langs``).
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
        per = per_rank(len(self.q_rows), world_size)
        return slice(rank * per, (rank + 1) * per)

    def items(self, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
        """``(q_row, p_row)`` pairs of one rank's slice, as plain ints (the DataLoader item format)."""
        sl = self.rank_slice(rank, world_size)
        return list(zip(self.q_rows[sl].tolist(), self.p_rows[sl].tolist()))


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
        corpus: a ``ParallelCorpus`` (its ``pid``, ``lang_idx``, ``passage_idx``, ``langs`` are used,
            and ``corpora``, ``corpus_idx``, ``corpus_weights`` when several corpora are weighted) or a
            mapping with those keys (``langs`` and the corpus keys optional).
        batch_size: the *global* batch size B (all ranks together).
        alpha: probability that a global batch is X-X-mono (``schedule="constant"``).
        schedule: ``"constant"`` or ``"linear"`` (``alpha_start`` -> ``alpha_end`` over the training steps).
        alpha_start, alpha_end: endpoints of the linear schedule.
        total_steps, max_epochs: the linear schedule's length, configured (``sampler.*``).
        trainer_max_steps, trainer_max_epochs: the trainer's limits, set by the DataModule; used only
            when neither of the above is set (:func:`mlir.sampling.schedule.schedule_length`).
        lang_sampling: ``"uniform"`` or ``"size"`` (``p_L ∝ n_L^(1/temperature)``, ``n_L`` = usable ids in L;
            with corpus weights, ids in L per pass of the weighted stream).
        temperature: > 0; large values approach uniform.
        langs: restrict training to these language codes (default: all corpus languages).
        steps_per_epoch: batches per epoch (default: usable ids // B).
        seed: base seed; batches are a function of ``(seed, epoch, step)``.
        world_size, rank: DDP layout (:meth:`set_world`); B must be divisible by ``world_size``.
        max_deferred: cap on each put-back queue (default ``max(64 * B, 10_000)``).

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
        trainer_max_steps: int | None = None,
        trainer_max_epochs: int | None = None,
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
        # cheap config checks first, then the index (reads the corpus arrays), then the epoch structure
        self.batch_size = B = positive_int(batch_size, "data.batch_size")
        self.set_world(world_size, rank)
        endpoints = alpha_endpoints(alpha, schedule, alpha_start, alpha_end)
        self.lang_sampling = check_lang_sampling(lang_sampling)
        self.temperature = check_temperature(temperature)
        self.seed = int(seed)

        self.index = ix = build_index(corpus, langs, min_langs=1 if max(endpoints) > 0.0 else 2)
        self.corpus_langs, self.langs = ix.corpus_langs, ix.langs
        self.num_ids, self.num_clusters = ix.num_ids, ix.num_clusters  # sizes for logs and benchmarks
        self.mix = corpus_mix(corpus, ix, B)  # None: one corpus, or size-proportional corpora
        sizes = ix.ids_per_lang if self.mix is None else self.mix.ids_per_lang(ix)  # as the stream has them
        self.lang_probs = language_probs(sizes, self.lang_sampling, self.temperature)
        check_batch_fits(ix, B, self.lang_probs, mono=max(endpoints) > 0.0, cross=min(endpoints) < 1.0)

        usable = len(ix.pool)
        self.steps_per_epoch = positive_int(
            usable // B if steps_per_epoch is None else steps_per_epoch,
            "sampler.steps_per_epoch",
            f" ({usable} usable ids for batch size {B})",
        )
        length = schedule_length(
            self.steps_per_epoch, total_steps, max_epochs, trainer_max_steps, trainer_max_epochs
        )
        self.schedule = AlphaSchedule.from_endpoints(schedule, endpoints, length)
        self.max_deferred = int(max_deferred) if max_deferred is not None else max(64 * B, 10_000)

        self.position = Position()
        self.sampler = _EpochHook(self)  # where Lightning looks for set_epoch on a batch sampler
        self._query: EpochCursor | None = None  # the replay that serves global_batch

    def set_world(self, world_size: int, rank: int) -> None:
        """The DDP layout: which slice of each global batch this sampler yields (batches do not change)."""
        self.world_size, self.rank = check_world(self.batch_size, world_size, rank)

    # ------------------------------------------------------------------ drawing batches
    def _cursor(self, epoch: int) -> EpochCursor:
        """A replay of ``epoch`` from its first step."""
        plan = plan_batches(self.seed, epoch, self.steps_per_epoch, self.schedule, self.lang_probs)
        return EpochCursor(
            self.seed, epoch, plan, self.index.pool, len(self.langs), self.max_deferred, self.mix
        )

    def _draw(self, cur: EpochCursor) -> GlobalBatch:
        """Batch ``cur.step`` of ``cur.epoch``: the plan gives its kind, the queues its ids, the rule
        its languages; the cursor moves past it."""
        ix, lang = self.index, cur.batch_lang()
        ids = cur.take(self.batch_size, lambda c: ix.fits(c, lang), ix.cluster, ix.single_lang)
        if lang is not None:
            q_cols = p_cols = np.full(len(ids), lang)
        else:
            q_cols, p_cols = pair_languages(cur.rng, ix.has[ids], self.lang_probs)
        gb = GlobalBatch(
            epoch=cur.epoch,
            step=cur.step,
            kind=MONO if lang is not None else CROSS,
            lang=int(ix.lang_cols[lang]) if lang is not None else None,
            pids=ids,
            q_rows=ix.row_of[ids, q_cols].astype(np.int64),
            p_rows=ix.row_of[ids, p_cols].astype(np.int64),
            q_lang=ix.lang_cols[q_cols].astype(np.int16),
            p_lang=ix.lang_cols[p_cols].astype(np.int16),
        )
        cur.step += 1
        return gb

    def global_batch(self, epoch: int, step: int) -> GlobalBatch:
        """The full global batch for ``(epoch, step)``; identical on every rank and across runs."""
        if not 0 <= step < self.steps_per_epoch or epoch < 0:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch}) or negative epoch {epoch}")
        cur = self._query
        if cur is None or cur.epoch != epoch or cur.step > step:
            cur = self._cursor(epoch)
        while cur.step < step:
            self._draw(cur)
        self._query = cur
        return self._draw(cur)

    # ------------------------------------------------------------------ the batch sampler protocol
    @property
    def epoch(self) -> int:
        """The epoch the next iteration draws."""
        return self.position.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration draws (Lightning calls this; a resumed epoch keeps its step)."""
        self.position.set_epoch(epoch)

    def __len__(self) -> int:
        """``steps_per_epoch``, also right after a mid-epoch resume (the next ``iter()`` then yields fewer).

        Lightning sizes *every* epoch by the length it reads once at the start of fit and counts the
        restored batches itself; a shorter length here would cut all later epochs short.
        """
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.position.begin()
        return self._iterate(self._cursor(epoch), start)

    def _iterate(self, cur: EpochCursor, start: int) -> Iterator[list[tuple[int, int]]]:
        while cur.step < start:  # replay up to a resumed position
            self._draw(cur)
        for step in range(start, self.steps_per_epoch):
            gb = self._draw(cur)
            self.position.yielded(cur.epoch, step)
            yield gb.items(self.rank, self.world_size)

    # ------------------------------------------------------------------ resume
    @cached_property
    def _fingerprint(self) -> str:
        """What determines the batch sequence, hashed (computed on first use: it sums the index)."""
        ix = self.index
        return cursor.fingerprint(
            (
                ix.num_ids,
                len(ix.pool),
                ix.num_clusters,
                int(ix.row_of.sum(dtype=np.int64)),
                self.langs,
                self.batch_size,
                self.steps_per_epoch,
                self.seed,
                self.schedule,
                self.lang_sampling,
                self.temperature,
                self.max_deferred,
                *(() if self.mix is None else (self.mix.fingerprint(),)),
            )
        )

    @property
    def fingerprint(self) -> str:
        """The digest of what determines the batch sequence (stored with the sampler state)."""
        return self._fingerprint

    def state_at(self, epoch: int, step: int) -> dict[str, Any]:
        """A state dict for "``step`` batches of ``epoch`` done" (use the trainer's count when prefetching)."""
        return cursor.state_at(epoch, step, self.seed, self._fingerprint)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches yielded so far in it; with ``load_state_dict`` the sequence continues exactly."""
        return self.state_at(self.position.epoch, self.position.done)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields batch ``state["step"]`` of ``state["epoch"]``."""
        self.position.load(state, self._fingerprint, self.steps_per_epoch)
