"""Exact resume: RNG states in the checkpoint, in a form ``torch.load(weights_only=True)`` accepts.

Lightning restores weights, optimiser, scheduler, loops and (through ``RetrievalDataModule.state_dict``)
the sampler position, but not the random generators, so dropout after a resume would differ from an
uninterrupted run. :class:`RNGStateCallback` stores the torch (CPU and CUDA), numpy and python states.

They are restored twice: when the checkpoint is loaded, and again just before the first training batch
after it. The second time matters: between loading and that batch Lightning creates the DataLoader
iterator, which draws a base seed from torch's generator; the uninterrupted run drew that seed long
before the checkpoint was written.

NumPy and python states are stored as plain ints/lists/tensors (no ``ndarray``), so checkpoints stay
loadable with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

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


class RNGStateCallback(L.Callback):
    """Save the RNG states with every checkpoint; restore them so a resumed run draws the same numbers."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get(STATE_KEY)
        if states:
            restore_rng_states(states)
            self._pending = states

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
