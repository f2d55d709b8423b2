"""Loading checkpoints safely (``weights_only=True``) into a module or an encoder.

A file that does not load is one line of mlir's own (empty / truncated or corrupt / not a PyTorch
checkpoint / holds objects a safe load refuses), never torch's text: that is several lines, and for
an unknown file it suggests ``weights_only=False``, which would run whatever code the file contains.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mlir.core.errors import MlirError

# what ``torch.save(..., _use_new_zipfile_serialization=False)`` writes first: pickle of its magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_ZIP_MAGIC = b"PK\x03\x04"
_CANNOT = "cannot read checkpoint: "
_ADVICE = "re-copy it or use another checkpoint"
_EXPECTED = "expected a checkpoint written by train.py (torch.save)"


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: a checkpoint cannot execute code when loaded.

    ``mmap=True`` maps the tensors instead of reading them (cheap inspection of large checkpoints).
    Any failure is one :class:`MlirError` naming the file and what is wrong with it.
    """
    p = Path(path)
    if not p.exists():
        raise MlirError("checkpoint does not exist", where=str(p))
    if p.is_dir():
        raise MlirError("is a directory, expected a checkpoint file (.ckpt)", where=str(p))
    try:
        if p.stat().st_size == 0:
            raise MlirError(
                f"{_CANNOT}the file is empty (0 bytes), the save or copy did not finish; {_ADVICE}",
                where=str(p),
            )
        with warnings.catch_warnings():  # torch warns about the pickle protocol of non-checkpoints
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            try:
                ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                ckpt = torch.load(p, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except MlirError:
        raise
    except OSError as e:
        if not _is_zip(p) and not _is_legacy(p):  # e.g. permission denied: the file is not the problem
            raise MlirError(f"{_CANNOT}{e.strerror or e}", where=str(p)) from None
        raise MlirError(_diagnose(p, e), where=str(p)) from None
    except Exception as e:
        raise MlirError(_diagnose(p, e), where=str(p)) from None
    if not isinstance(ckpt, Mapping):
        raise MlirError(
            f"{_CANNOT}it holds a {type(ckpt).__name__}, not a dict with a 'state_dict' "
            "(what train.py writes)",
            where=str(p),
        )
    return ckpt  # type: ignore[return-value]


def _head(p: Path, n: int = 16) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_zip(p: Path) -> bool:
    return _head(p).startswith(_ZIP_MAGIC)


def _is_legacy(p: Path) -> bool:
    return _head(p).startswith(_LEGACY_MAGIC)


def _diagnose(p: Path, e: BaseException) -> str:
    """What is wrong with a checkpoint ``torch.load`` refused, judged from the file, not torch's text."""
    corrupt = f"{_CANNOT}truncated or corrupt (an interrupted save or an incomplete copy); {_ADVICE}"
    if _is_zip(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return corrupt
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return f"{_CANNOT}not a PyTorch checkpoint (a zip archive without data.pkl); {_EXPECTED}"
    elif not _is_legacy(p):
        return (
            f"{_CANNOT}not a PyTorch checkpoint (neither torch.save's zip nor its legacy format); {_EXPECTED}"
        )
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if refused:
        return (
            f"{_CANNOT}it holds Python objects that mlir will not load ({refused.group(1)}): mlir reads only "
            "tensors and plain containers, which is what train.py writes; loading other objects could run "
            "code from the file"
        )
    return corrupt


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
