"""A ``last.ckpt`` that is really the last: written when the fit ends and when SIGTERM (pre-emption) or
SIGUSR2 (submitit's time-limit signal, then handed on to submitit to requeue) stops the run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mlir.core.errors import ConfigError

log = logging.getLogger(__name__)

#: Exit status of a run stopped by SIGTERM after saving ``last.ckpt`` (Lightning's own choice too).
PREEMPTED_EXIT_CODE = 0


def _signum(name: str | int) -> signal.Signals:
    try:
        if isinstance(name, int):
            return signal.Signals(name)
        upper = str(name).upper()
        return signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"]
    except (KeyError, ValueError):
        raise ConfigError(f"unknown signal {name!r}", where="callbacks.last_checkpoint.signals") from None


class LastCheckpoint(L.Callback):
    """Keep ``last.ckpt`` the latest training state: write it when the fit ends and on pre-emption.

    * **End of fit.** ModelCheckpoint's ``save_last`` skips the final state when it saved earlier in
      the run (e.g. ``max_steps`` mid-epoch), so ``last.ckpt`` could lag behind the returned model.
    * **SIGTERM** (SLURM pre-emption, ``scancel``, Kubernetes, submitit): Lightning finishes the batch
      and raises ``SIGTERMException`` but saves nothing; this saves ``last.ckpt`` (with sampler and RNG
      states, atomically) and ``mlir.training.pipeline`` exits with :data:`PREEMPTED_EXIT_CODE`. The requeued job
      continues exactly with ``python train.py <same overrides> ckpt_path=last hydra.run.dir=<run dir>``.
    * **Other listed signals** (default: submitit's time-limit signal ``SIGUSR2``) are re-sent as SIGTERM,
      so Lightning's DDP-aware handling applies and ``last.ckpt`` is saved at the next batch boundary;
      then the handler that was installed for the signal before the fit (submitit's: requeue the job
      and exit rank 0) is called with it. Why chain: submitit alone requeues mid-batch without saving,
      so the requeued job would redo everything since the last periodic checkpoint.
    * A signal before the fit (reading data) or after it (evaluation) has its previous effect: there is
      nothing new to save.

    Args:
        signals: signals that pre-empt.
        dirpath: where ``last.ckpt`` goes; default the first ModelCheckpoint's directory, else
            ``<default_root_dir>/checkpoints``.
    """

    def __init__(self, signals: Sequence[str | int] = ("SIGTERM", "SIGUSR2"), dirpath: str | None = None):
        self.signals = [_signum(s) for s in signals]
        self.dirpath = dirpath
        self.saved_path: str | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._received: dict[signal.Signals, FrameType | None] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may install handlers (Lightning skips its SIGTERM one too)
        for sig in self.signals:
            if sig != signal.SIGTERM and sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._forward)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        """Remember the signal for :meth:`_chain`; let Lightning's SIGTERM path stop at the batch end."""
        self._received[signal.Signals(signum)] = frame
        os.kill(os.getpid(), signal.SIGTERM)

    def _restore_handlers(self) -> dict[signal.Signals, Any]:
        previous = dict(self._previous)
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        return previous

    def _chain(self, trainer: L.Trainer, previous: dict[signal.Signals, Any]) -> None:
        """Give each forwarded signal to its previous handler (submitit: requeue; may ``sys.exit``).

        Called after ``last.ckpt`` is saved. Loggers are finalized first: submitit's handler exits rank
        0 inside Lightning's exception handling, which would skip flushing the CSV/W&B logs.
        """
        received, self._received = self._received, {}
        handlers = [(s, f, previous.get(s)) for s, f in received.items() if callable(previous.get(s))]
        if not handlers:
            return
        for logger in trainer.loggers:
            logger.finalize("failed")
        for sig, frame, handler in handlers:
            log.warning("passing %s on to the handler installed before the fit", sig.name)
            handler(int(sig), frame)

    def last_path(self, trainer: L.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath) / "last.ckpt"
        cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
        if cb is not None:
            return Path(str(cb.dirpath)) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def _save(self, trainer: L.Trainer) -> Path:
        path = self.last_path(trainer)
        for cb in trainer.callbacks:  # it is their last.ckpt too: no last-v1.ckpt after a resume
            if (
                isinstance(cb, ModelCheckpoint)
                and cb.save_last
                and cb.dirpath
                and Path(str(cb.dirpath)) == path.parent
            ):
                cb.last_model_path = str(path)
        trainer.save_checkpoint(path, weights_only=False)  # the full training state
        self.saved_path = str(path)
        return path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self._restore_handlers()
        if not trainer.fast_dev_run and not self._already_saved(trainer):
            self._save(trainer)
        self._chain(trainer, previous)  # a signal during the last batch or validation: still requeue

    def _already_saved(self, trainer: L.Trainer) -> bool:
        path = str(self.last_path(trainer))
        return any(  # ModelCheckpoint already wrote this very state
            isinstance(cb, ModelCheckpoint)
            and path in (cb.last_model_path, cb.best_model_path)
            and getattr(cb, "_last_global_step_saved", None) == trainer.global_step
            for cb in trainer.callbacks
        )

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        previous = self._restore_handlers()
        if isinstance(exception, SIGTERMException) and not (trainer.sanity_checking or trainer.fast_dev_run):
            path = self._save(trainer)
            log.warning("stopped by SIGTERM at global step %d: saved %s", trainer.global_step, path)
        self._chain(trainer, previous)  # never drop a signal the previous handler (submitit) expects
