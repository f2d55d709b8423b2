"""Loading checkpoints safely (``weights_only=True``) into a module or an encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mlir.errors import MlirError


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: a checkpoint cannot execute code when loaded."""
    p = Path(path)
    if not p.exists():
        raise MlirError("checkpoint does not exist", where=str(p))
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MlirError(f"cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})", where=str(p)) from None


def load_module_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load a Lightning checkpoint's ``state_dict``; a mismatch names the offending keys in one line."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} with another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise MlirError(
            "checkpoint does not fit the configured model: " + ", ".join(parts) + "; use the model config it was trained with",
            where=str(path),
        )
    module.load_state_dict(state)
