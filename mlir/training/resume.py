"""Exact resume: RNG states and the loop position in every checkpoint, so a resumed run equals the uninterrupted one.

Lightning restores weights, optimiser, scheduler, loops and (through ``RetrievalDataModule.state_dict``)
the sampler position, but not the random generators, so dropout after a resume would differ from an
uninterrupted run. :class:`RNGStateCallback` stores the torch (CPU and CUDA), numpy and python states.
:class:`~mlir.training.last_checkpoint.LastCheckpoint` writes ``last.ckpt`` when the fit ends and on
pre-emption; :mod:`mlir.training.resume_guard` refuses a resume with another configuration.

**The resume point.** A resumed run continues *just before the next training batch* of the run that
wrote the checkpoint. Checkpoints are written at several moments of Lightning's loop (after a training
batch, after a validation, in the epoch-end hooks, after the epoch on SIGTERM); with each one
:class:`RNGStateCallback` stores where it was written and what the uninterrupted run still did before
its next training batch (:func:`resume_point`): a validation that was due, the end of the epoch, and
how many DataLoader iterators it created (each draws one seed from torch's global generator). On load,
:func:`normalize_loops` rewrites the loop counters into a state Lightning continues exactly:

* mid-epoch, after a training batch: Lightning's own restart (nothing to change);
* after a training batch that a validation follows: "validation started, no batch of it done", so
  the validation runs again (Lightning would skip it) and then the epoch goes on or ends;
* at an epoch boundary (the last batch of an epoch without validation, the epoch-end hooks, SIGTERM
  after the epoch): "epoch finished, the next not begun". Lightning (2.6) would otherwise replay the
  epoch end and count the finished epoch twice: ``set_epoch`` then gave the sampler the epoch after
  next, and the logged step moved by one;
* after a validation, or after a batch on SIGTERM: Lightning's restart, with the logged-step counter
  corrected when it would count the batch twice.

The RNG states are restored twice: when the checkpoint is loaded, and again just before the first
training batch after it, followed by the seed draws of the DataLoader iterators the uninterrupted run
created between the checkpoint and that batch. The second time matters: between loading and that batch
Lightning creates the DataLoader iterator (a draw the uninterrupted run made long before, or at the epoch
boundary, or not at all with persistent workers) and may replay a validation.

NumPy and python states are stored as plain ints/lists/tensors (no ``ndarray``), so checkpoints stay
loadable with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)

STATE_KEY = "rng_states"


def collect_rng_states() -> dict[str, Any]:
    """Every global RNG state, as tensors, ints, floats, strings and lists only."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(x) for x in py_state], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states` (missing parts are left alone)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "numpy" in states:
        n = states["numpy"]
        keys = np.asarray(
            n["keys"].cpu().numpy() if torch.is_tensor(n["keys"]) else n["keys"], dtype=np.uint32
        )
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "python" in states:
        p = states["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        cuda = list(states["cuda"])
        if len(cuda) == torch.cuda.device_count():  # another GPU layout: keep the fresh seeds
            torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------ where a checkpoint was written

POINT_KEY = "mlir_resume_point"

#: Moments of Lightning's fit loop at which checkpoints are written (:func:`resume_point`).
TRAIN_BATCH_END = "train_batch_end"  # in on_train_batch_end (ModelCheckpoint every_n_train_steps)
VALIDATION_END = "validation_end"  # in on_validation_end (ModelCheckpoint monitoring a val metric)
AFTER_BATCH = "after_batch"  # after a batch and its validation (SIGTERM mid-epoch)
EPOCH_END = "epoch_end"  # in on_train_epoch_end (ModelCheckpoint's default for val/loss)
AFTER_EPOCH = "after_epoch"  # after the epoch end (SIGTERM in the last batch or its validation; fit end)

#: How :func:`normalize_loops` continues a checkpoint.
NATIVE, VALIDATION_PENDING, NEXT_EPOCH = "native", "validation_pending", "next_epoch"

_LOOP_KEYS = (
    "epoch_progress",
    "epoch_loop.batch_progress",
    "epoch_loop.state_dict",
    "epoch_loop.val_loop.batch_progress",
)


def _loaders(combined: Any) -> list[Any]:
    from torch.utils.data import DataLoader

    flat = getattr(combined, "flattened", None) or []
    return [dl for dl in flat if isinstance(dl, DataLoader)]


def _persistent(dl: Any) -> bool:
    return bool(dl.persistent_workers) and dl.num_workers > 0


def _iterator_draws(combined: Any) -> int:
    """Seeds that ``iter()`` over these loaders draws from torch's global generator (one per new iterator;
    a persistent-worker loader makes its iterator once and only resets it later)."""
    return sum(
        1
        for dl in _loaders(combined)
        if dl.generator is None and not (_persistent(dl) and getattr(dl, "_iterator", None) is not None)
    )


def _validation_check(trainer: L.Trainer) -> bool:
    """Whether Lightning checks validation after the current training batch (it may find nothing to run)."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except Exception:  # noqa: BLE001 - another Lightning: the common case, validation at the epoch end
        return bool(loop.batch_progress.is_last_batch) and bool(trainer.enable_validation)


def resume_point(trainer: L.Trainer) -> dict[str, Any]:
    """Where in the fit loop a checkpoint is being written, and what the run does before its next batch.

    ``moment`` (one of the constants above), ``last_batch`` (the epoch's last batch has run),
    ``val_pending`` (a validation is due after this batch and has not run), ``val_checked`` (Lightning
    checked validation after this batch), ``loader_draws`` (global torch seeds that DataLoader iterators
    draw before the next training batch) and ``val_iterator`` (a persistent-worker validation loader
    has its iterator).
    """
    fit = trainer.fit_loop
    loop = fit.epoch_loop
    ep, batches = fit.epoch_progress.current, loop.batch_progress.current
    if ep.processed < ep.started:
        if batches.completed < batches.processed:
            moment = TRAIN_BATCH_END
        elif trainer.validating:
            moment = VALIDATION_END
        else:
            moment = AFTER_BATCH
    elif ep.completed < ep.processed:
        moment = EPOCH_END
    else:
        moment = AFTER_EPOCH
    last = bool(loop.batch_progress.is_last_batch)
    checked = moment in (TRAIN_BATCH_END, AFTER_BATCH) and _validation_check(trainer)
    pending = moment == TRAIN_BATCH_END and checked
    new_epoch = moment in (EPOCH_END, AFTER_EPOCH) or (last and moment in (TRAIN_BATCH_END, VALIDATION_END))
    val = loop.val_loop._combined_loader
    return {
        "moment": moment,
        "last_batch": last,
        "val_pending": pending,
        "val_checked": checked,
        "loader_draws": (_iterator_draws(val) if pending else 0)
        + (_iterator_draws(fit._combined_loader) if new_epoch else 0),
        "val_iterator": any(
            _persistent(dl) and getattr(dl, "_iterator", None) is not None for dl in _loaders(val)
        ),
    }


def _infer_point(loops: dict) -> dict[str, Any]:
    """The moment of a checkpoint written before :func:`resume_point` existed (as far as the counters tell)."""
    ep = loops["epoch_progress"]["current"]
    batches = loops["epoch_loop.batch_progress"]["current"]
    if ep["processed"] < ep["started"]:
        moment = TRAIN_BATCH_END if batches["completed"] < batches["processed"] else None
    else:
        moment = EPOCH_END if ep["completed"] < ep["processed"] else AFTER_EPOCH
    # a validation due after a training batch cannot be told from the counters: Lightning's restart
    return {"moment": moment, "last_batch": False, "val_pending": False, "val_checked": False}


def _set(tracker: dict, ready: int, started: int, processed: int, completed: int) -> None:
    tracker.update(ready=ready, started=started, processed=processed, completed=completed)


def normalize_loops(checkpoint: dict, point: dict[str, Any] | None = None) -> str:
    """Rewrite ``checkpoint["loops"]`` so that Lightning continues just before the next training batch.

    Returns how (``NATIVE``, ``VALIDATION_PENDING``, ``NEXT_EPOCH``); see the module docstring. Without
    ``point`` (an older checkpoint) the moment is inferred from the counters.
    """
    loops = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    if not all(k in loops for k in _LOOP_KEYS):  # another Lightning's layout: leave it to Lightning
        return NATIVE
    point = point or _infer_point(loops)
    moment = point.get("moment")
    batches = loops["epoch_loop.batch_progress"]
    counters = loops["epoch_loop.state_dict"]
    if moment == TRAIN_BATCH_END and point.get("val_pending"):
        # the batch is done; its validation "started" with no batch run: Lightning runs all of it again
        for part in ("total", "current"):
            t = batches[part]
            _set(t, t["processed"], t["processed"], t["processed"], t["processed"])
        val = loops["epoch_loop.val_loop.batch_progress"]
        done = val["total"]["completed"]
        _set(val["total"], done + 1, done + 1, done, done)
        _set(val["current"], 1, 1, 0, 0)
        val["is_last_batch"] = False
        return VALIDATION_PENDING
    if moment in (EPOCH_END, AFTER_EPOCH) or (moment == TRAIN_BATCH_END and point.get("last_batch")):
        # the epoch is over (its validation, if any, ran): the next one has not begun
        for part in ("total", "current"):
            t = loops["epoch_progress"][part]
            _set(t, t["started"], t["started"], t["started"], t["started"])
        t = batches["total"]
        _set(t, t["processed"], t["processed"], t["processed"], t["processed"])
        _set(batches["current"], 0, 0, 0, 0)
        batches["is_last_batch"] = False
        if moment == TRAIN_BATCH_END:  # the logged-step counter moves after on_train_batch_end
            counters["_batches_that_stepped"] = int(counters.get("_batches_that_stepped", 0)) + 1
        return NEXT_EPOCH
    if moment == AFTER_BATCH and point.get("val_checked"):
        # saved after the counter moved; Lightning's restart skips the validation and moves it again
        counters["_batches_that_stepped"] = int(counters.get("_batches_that_stepped", 0)) - 1
    return NATIVE


class RNGStateCallback(L.Callback):
    """Exact resume: saves the RNG states and the resume point with every checkpoint; on load, puts
    Lightning's loops at that point (:func:`normalize_loops`) and restores the RNG states so a resumed run
    draws the same numbers as an uninterrupted one."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._draws = 0
        self._form = NATIVE
        self._val_iterator = False
        self._final_validation: int | None = None  # max_steps to put back after the replayed validation

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # every rank saves (Lightning calls this on all of them; rank 0 writes the file)
        states = collect_rng_states()
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # each rank's own generators (they drift apart); the top level stays rank 0's
            ranks: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, states)
            states = {**states, "ranks": ranks}
        checkpoint[STATE_KEY] = states
        checkpoint[POINT_KEY] = resume_point(trainer)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # called before Lightning restores its loops from this same dict
        point = checkpoint.get(POINT_KEY)
        self._form = normalize_loops(checkpoint, point)
        self._draws = int((point or {}).get("loader_draws", 0))
        self._val_iterator = bool((point or {}).get("val_iterator", False))
        log.debug("resuming at %s (%s)", (point or {}).get("moment"), self._form)
        states = checkpoint.get(STATE_KEY)
        ranks = (states or {}).get("ranks")
        if ranks and len(ranks) == trainer.world_size:  # another layout: rank 0's states for all
            states = ranks[trainer.global_rank]
        if states:
            restore_rng_states(states)
            self._pending = states
        max_steps = int(trainer.max_steps)
        if self._form == VALIDATION_PENDING and 0 <= max_steps <= int(checkpoint.get("global_step", -1)):
            # killed during the validation after the last step: Lightning would see max_steps reached and
            # skip the fit; one more step allowed until that validation has run (after the optimisers exist:
            # the LR schedule's length reads max_steps)
            self._final_validation = max_steps
            if trainer.optimizers:  # strategies that restore after setting up (on_fit_start has run)
                self._allow_final_validation(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._allow_final_validation(trainer)

    def _allow_final_validation(self, trainer: L.Trainer) -> None:
        if self._final_validation is not None:
            trainer.fit_loop.epoch_loop.max_steps = self._final_validation + 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._final_validation is not None and not trainer.sanity_checking:
            trainer.fit_loop.epoch_loop.max_steps = self._final_validation
            self._final_validation = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Just before the loop runs: the resumed loops in place, the RNG as the checkpoint has it."""
        fit = trainer.fit_loop
        if self._form == NEXT_EPOCH:
            # between epochs there is nothing to restart: the next epoch starts as in a fresh run (with
            # the flags set, Lightning 2.6 takes the empty epoch for one that has ended and skips it)
            fit._restarting = False
            fit.epoch_loop.restarting = False
        if self._val_iterator:
            # the uninterrupted run's persistent validation loader already has its iterator: make ours
            # now (its seed draw is undone before the first batch) so later validations draw alike
            for dl in _loaders(fit.epoch_loop.val_loop._combined_loader):
                if _persistent(dl) and getattr(dl, "_iterator", None) is None:
                    iter(dl)
            self._val_iterator = False
        if self._pending is not None:
            # setting up the fit drew seeds the uninterrupted run did not; a validation replayed before
            # the first batch (or instead of any, after the last step) must start from the saved states
            restore_rng_states(self._pending)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._form == VALIDATION_PENDING:
            # the replayed validation has begun: its running total back to the uninterrupted run's
            trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.reset_on_restart()
            self._form = NATIVE

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            for _ in range(self._draws):  # what each DataLoader iterator's base seed took (torch.utils.data)
                torch.empty((), dtype=torch.int64).random_()
            self._pending = None


# ------------------------------------------------------------------ a resumed run keeps its configuration
