"""Pre-emption: on SIGTERM save ``last.ckpt`` after the current batch and exit cleanly.

Schedulers stop jobs with SIGTERM (SLURM pre-emption, ``scancel``, Kubernetes, submitit). Lightning
already turns SIGTERM into "finish this batch, then raise ``SIGTERMException``", but saves nothing.
:class:`PreemptionCheckpoint` saves ``<checkpoint dir>/last.ckpt`` at that point (atomically, with the
sampler and RNG states), so the requeued job continues exactly with
``python train.py ckpt_path=last hydra.run.dir=<same run dir>``; ``train`` then exits with
:data:`PREEMPTED_EXIT_CODE` without evaluating or writing ``metrics.json``.

Other signals (e.g. submitit's timeout signal ``SIGUSR2``) can be treated the same way with
``callbacks.preemption.signals=[SIGTERM,SIGUSR2]``; this replaces submitit's own handler for it.
A SIGTERM before training starts (reading data) or after it ends (evaluation) keeps the default
behaviour: nothing new would be saved.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: Exit status of a run stopped by SIGTERM after saving ``last.ckpt`` (Lightning's own choice too).
PREEMPTED_EXIT_CODE = 0


def _signum(name: str | int) -> signal.Signals:
    if isinstance(name, int):
        return signal.Signals(name)
    try:
        return signal.Signals[
            str(name).upper() if str(name).upper().startswith("SIG") else f"SIG{str(name).upper()}"
        ]
    except KeyError:
        from mlir.errors import ConfigError

        raise ConfigError(f"unknown signal {name!r}", where="callbacks.preemption.signals") from None


class PreemptionCheckpoint(L.Callback):
    """Save ``last.ckpt`` when Lightning stops the fit because of SIGTERM (or a listed signal).

    Args:
        signals: signals that pre-empt; SIGTERM is Lightning's, others are forwarded to it as SIGTERM.
        dirpath: where ``last.ckpt`` goes; default the ModelCheckpoint's directory, else
            ``<default_root_dir>/checkpoints``.
    """

    def __init__(self, signals: Sequence[str | int] = ("SIGTERM",), dirpath: str | None = None):
        self.signals = [_signum(s) for s in signals]
        self.dirpath = dirpath
        self.saved_path: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    # -- extra signals: re-sent as SIGTERM so that Lightning's handler (all ranks, DDP-aware) runs
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for sig in self.signals:
            if sig != signal.SIGTERM and sig not in self._previous:
                self._previous[sig] = signal.signal(sig, lambda *_: os.kill(os.getpid(), signal.SIGTERM))

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def last_path(self, trainer: L.Trainer) -> str:
        ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if self.dirpath:
            return str(Path(self.dirpath) / "last.ckpt")
        if ckpt_cb is not None and ckpt_cb.dirpath:
            return str(Path(ckpt_cb.dirpath) / f"{ckpt_cb.CHECKPOINT_NAME_LAST}{ckpt_cb.FILE_EXTENSION}")
        return str(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        path = self.last_path(trainer)
        for cb in trainer.callbacks:  # ModelCheckpoint: this is its last.ckpt now (no last-v1.ckpt on resume)
            if (
                isinstance(cb, ModelCheckpoint)
                and cb.save_last
                and Path(str(cb.dirpath)) == Path(path).parent
            ):
                cb.last_model_path = path
        trainer.save_checkpoint(path)
        self.saved_path = path
        log.warning("pre-empted by SIGTERM at global step %d: saved %s", trainer.global_step, path)
