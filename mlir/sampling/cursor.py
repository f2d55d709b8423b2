"""Where a replay of an epoch stands, and the sampler's resumable position.

A batch's ids depend on every batch before it in its epoch (skipped ids wait in put-back queues), so
an epoch is always replayed from step 0 and every rank replays it identically. :class:`EpochCursor`
is one such replay: the epoch's plan, its stream of shuffled ids, its queues and its X-Y language RNG.
:class:`Position` is what a checkpoint stores (the epoch and how many of its batches training
consumed) and what the next ``iter()`` starts from.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlir.sampling.dedup import PutBackQueues, pick
from mlir.sampling.rule import ORDER_STREAM, PAIR_STREAM, epoch_rng

if TYPE_CHECKING:
    from mlir.sampling.mix import CorpusMix

STATE_VERSION = 1


def epoch_order(
    seed: int, epoch: int, pass_no: int, pool: np.ndarray, mix: CorpusMix | None = None
) -> np.ndarray:
    """The ``pass_no``-th pass of ``epoch``'s id stream: a shuffled order of the usable ids, or with
    weighted corpora each corpus's share of them (:mod:`mlir.sampling.mix`)."""
    if mix is not None:
        return mix.order(seed, epoch, pass_no)
    return epoch_rng(seed, epoch, ORDER_STREAM, pass_no).permutation(pool)


class EpochCursor:
    """One replay of ``epoch``: the next step, its plan, the id stream and the put-back queues.

    Args:
        seed, epoch: what the stream and the X-Y language RNG derive from.
        plan: ``(is_mono, mono_lang)`` per step (:func:`mlir.sampling.rule.plan_batches`).
        pool: the usable ids (the stream is passes of their shuffled order).
        n_langs, max_deferred: number of training languages; cap on each put-back queue.
        mix: weighted corpora (:class:`mlir.sampling.mix.CorpusMix`), or ``None``: one shuffled pool.
    """

    def __init__(
        self,
        seed: int,
        epoch: int,
        plan: tuple[np.ndarray, np.ndarray],
        pool: np.ndarray,
        n_langs: int,
        max_deferred: int,
        mix: CorpusMix | None = None,
    ):
        self.epoch, self.step = epoch, 0
        self.is_mono, self.mono_lang = plan
        self.queues = PutBackQueues.empty(n_langs, max_deferred)
        self._seed, self._pool, self._mix = seed, pool, mix
        self.passes = 0
        self.stream = epoch_order(seed, epoch, 0, pool, mix)
        self.pos = 0
        self.rng = epoch_rng(seed, epoch, PAIR_STREAM)

    def batch_lang(self) -> int | None:
        """The X-X-mono language column of the current step, ``None`` for an X-Y batch."""
        return int(self.mono_lang[self.step]) if self.is_mono[self.step] else None

    def take(
        self,
        batch_size: int,
        fits: Callable[[np.ndarray], np.ndarray],
        cluster: np.ndarray,
        single_lang: np.ndarray,
    ) -> np.ndarray:
        """The ids of the current step's batch (queues first, then the stream); requeues the skipped.

        The scanned window grows 4x until the batch fills; when even the whole stream cannot fill it,
        another pass over the epoch's ids is appended (language-skewed corpora, small alpha with many
        single-language ids).
        """
        lang = self.batch_lang()
        width = 2 * batch_size
        guard_pass = self.passes + 3
        while True:
            segments = self.queues.ahead_of(self.stream[self.pos :], lang)
            cand, taken = pick(segments, width, fits, cluster, batch_size)
            if taken is not None:
                self.pos += self.queues.put_back(segments, cand, taken, single_lang, lang)
                return cand[taken]
            if len(cand) < sum(len(x) for x in segments):
                width *= 4
                continue
            self.passes += 1
            if self.passes > guard_pass:  # pragma: no cover - excluded by the sampler's checks
                raise RuntimeError("sampler could not fill a batch; this is a bug")
            self.stream = np.concatenate(
                [
                    self.stream[self.pos :],
                    epoch_order(self._seed, self.epoch, self.passes, self._pool, self._mix),
                ]
            )
            self.pos = 0


def fingerprint(parts: tuple) -> str:
    """A short digest of what determines the batch sequence (to warn on mismatched resumes)."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


@dataclass
class Position:
    """The epoch the next ``iter()`` draws, the step it starts at, and the batches yielded so far.

    Lightning calls ``set_epoch`` every epoch, also for the epoch a checkpoint resumes, so a resumed
    position survives a ``set_epoch`` to its own epoch. A resumed start holds until an iteration yields
    its first batch: a DataLoader with worker processes calls ``iter()`` on its batch sampler twice
    before reading from it (in its iterator's ``__init__`` and again in ``_reset``), and only the second
    iterator is read.
    """

    epoch: int = 0
    done: int = 0  # batches of `epoch` yielded so far
    start: int = 0  # where the next iteration starts (set by `load`)

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch, self.start, self.done = epoch, 0, 0

    def begin(self) -> tuple[int, int]:
        """(epoch, first step) of a new iteration (a resumed start until a batch is yielded from it)."""
        self.done = self.start
        return self.epoch, self.start

    def yielded(self, epoch: int, step: int) -> None:
        if epoch == self.epoch:
            self.done, self.start = step + 1, 0  # a resumed start has been used

    def load(self, state: Mapping[str, Any], expected_fingerprint: str, steps_per_epoch: int) -> None:
        """Continue from ``state``: the next iteration yields batch ``state["step"]`` of ``state["epoch"]``."""
        epoch, step = int(state["epoch"]), int(state["step"])
        if state.get("fingerprint") not in (None, expected_fingerprint):
            warnings.warn(
                "sampler state comes from a different corpus or sampler config; batches after resume will "
                "not continue the original sequence",
                stacklevel=3,
            )
        if not 0 <= step <= steps_per_epoch:
            warnings.warn(
                f"sampler state step {step} is outside this epoch's {steps_per_epoch} steps; clamping",
                stacklevel=3,
            )
            step = min(max(step, 0), steps_per_epoch)
        self.epoch, self.done, self.start = epoch, step, step


def state_at(epoch: int, step: int, seed: int, fingerprint: str) -> dict[str, Any]:
    """The state dict for "``step`` batches of ``epoch`` done"."""
    return {
        "version": STATE_VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "seed": seed,
        "fingerprint": fingerprint,
    }
