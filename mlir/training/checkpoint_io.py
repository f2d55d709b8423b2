"""Crash-safe checkpoint files: a kill or a full disk during a save never leaves a broken checkpoint.

Lightning's ``TorchCheckpointIO`` serialises to memory and then moves an fsspec temp file from the
system temp dir into place (a copy across filesystems, no fsync), so a kill at the wrong moment can
leave a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes a hidden temp file *in the target
directory*, fsyncs it, ``os.replace``-s it over the target (atomic on POSIX) and fsyncs the directory.
Readers see the old file or the new one, never a mix. OmegaConf values in the checkpoint become plain
containers, so it loads with ``weights_only=True``. A failed write (``ENOSPC``...) removes the temp
file, keeps the previous checkpoint and raises a one-line :class:`CheckpointWriteError`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import glob
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mlir.core.errors import MlirError


class CheckpointWriteError(MlirError):
    """A checkpoint could not be written (disk full, permissions...); the previous one is intact."""


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry); not supported everywhere, hence best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_HOST = socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Delete temp files a killed writer on this host left for ``target`` (they can be gigabytes)."""
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.{_HOST}.*.tmp"):
        pid = tmp.name[len(f".{target.name}.{_HOST}.") :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temp file next to ``path`` for writing; on success it atomically becomes ``path``.

    On any error the temp file is removed and ``path`` keeps its previous content; an ``OSError`` is
    re-raised as :class:`CheckpointWriteError` naming the file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = target.parent / f".{target.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # O_EXCL: never follow or clobber anything; 0o666 & ~umask like a plain open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise CheckpointWriteError(
                f"cannot write checkpoint: {reason}; the previous checkpoint is unchanged", where=str(target)
            ) from e
        raise
    _fsync_dir(target.parent)


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
