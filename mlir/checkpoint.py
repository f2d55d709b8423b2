"""Loading checkpoints safely (``weights_only=True``) into a module or an encoder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mlir.errors import MlirError


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: a checkpoint cannot execute code when loaded.

    ``mmap=True`` maps the tensors instead of reading them (cheap inspection of large checkpoints).
    """
    p = Path(path)
    if not p.exists():
        raise MlirError("checkpoint does not exist", where=str(p))
    try:
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            return torch.load(p, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:
        raise MlirError(
            f"cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})", where=str(p)
        ) from None


def mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> str | None:
    """A one-line description of how ``state`` differs from ``own`` (keys and shapes), or ``None``."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shape):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shape:
        k = shape[0]
        parts.append(
            f"{len(shape)} with another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
        )
    return (
        "checkpoint does not fit the configured model: "
        + ", ".join(parts)
        + "; use the model config it was trained with"
    )


def check_fits(module: torch.nn.Module, path: str | Path) -> None:
    """Raise a one-line :class:`MlirError` if the checkpoint's weights do not fit ``module``.

    Resuming calls this before Lightning loads the file, whose strict ``load_state_dict`` would
    otherwise fail late (after tokenising) with a multi-line traceback.
    """
    ckpt = load_checkpoint(path, mmap=True)
    problem = mismatch(module.state_dict(), ckpt.get("state_dict", ckpt))
    if problem:
        raise MlirError(problem, where=str(path))


def load_module_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load a Lightning checkpoint's ``state_dict``; a mismatch names the offending keys in one line."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    problem = mismatch(module.state_dict(), state)
    if problem:
        raise MlirError(problem, where=str(path))
    module.load_state_dict(state)
