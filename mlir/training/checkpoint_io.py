"""Crash-safe checkpoint files: a kill or a full disk during a save never leaves a broken checkpoint.

Lightning's ``TorchCheckpointIO`` serialises to memory and then moves an fsspec temp file from the
system temp dir into place (a copy across filesystems, no fsync), so a kill at the wrong moment can
leave a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes through :mod:`mlir.core.atomic`: a
hidden temp file *in the target directory*, fsynced, ``os.replace``-d over the target (atomic on POSIX),
then the directory fsynced. Readers see the old file or the new one, never a mix. OmegaConf values in
the checkpoint become plain containers, so it loads with ``weights_only=True``. A failed write
(``ENOSPC``...) removes the temp file, keeps the previous checkpoint and raises a one-line
:class:`CheckpointWriteError`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mlir.core.atomic import open_atomic
from mlir.core.errors import MlirError


class CheckpointWriteError(MlirError):
    """A checkpoint could not be written (disk full, permissions...); the previous one is intact."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temp file next to ``path`` for writing; on success it atomically becomes ``path``.

    :func:`mlir.core.atomic.open_atomic` (fsynced, stale temps of dead writers removed); on any error the
    temp file is removed and ``path`` keeps its previous content; an ``OSError`` is re-raised as
    :class:`CheckpointWriteError` naming the file.
    """
    try:
        with open_atomic(path, "wb") as f:
            yield f
    except OSError as e:
        reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise CheckpointWriteError(
            f"cannot write checkpoint: {reason}; the previous checkpoint is unchanged", where=str(Path(path))
        ) from e


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that is all-or-nothing (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def weights_only_safe(obj: Any) -> Any:
    """``obj`` with OmegaConf containers turned into plain dicts/lists, recursively.

    Hydra passes nested config values (e.g. ``model.grad_cache``) to constructors as ``DictConfig``;
    ``save_hyperparameters`` then stores them, and ``torch.load(weights_only=True)`` refuses such
    classes. Plain containers keep every checkpoint loadable without running code. Containers without
    OmegaConf values are returned as they are (state dicts keep their type and ``_metadata``).
    """
    from omegaconf import Container, OmegaConf

    if isinstance(obj, Container):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        items = {k: weights_only_safe(v) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        out = copy.copy(obj)  # same (ordered) dict type and attributes
        out.update(items)
        return out
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        vals = [weights_only_safe(v) for v in obj]
        if all(a is b for a, b in zip(vals, obj)):
            return obj
        return vals if isinstance(obj, list) else tuple(vals)
    return obj


def _is_local(path: str | os.PathLike) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and fsynced (remote URLs use Lightning's path)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        local = str(path).removeprefix("file://")
        atomic_torch_save(weights_only_safe(checkpoint), local)
