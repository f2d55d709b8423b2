"""Where data and caches live. ``MLIR_DATA_DIR`` wins; else ``../shared/data`` if present; else ``./data``."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir(cwd: str | os.PathLike | None = None) -> str:
    """Resolve the data directory the way the docs promise (also used by ``conf/paths``)."""
    env = os.environ.get("MLIR_DATA_DIR")
    if env:
        return str(Path(env).expanduser().resolve())
    base = Path(cwd) if cwd is not None else Path.cwd()
    shared = (base / ".." / "shared" / "data").resolve()
    if shared.is_dir():
        return str(shared)
    return str((base / "data").resolve())


def default_cache_dir() -> str:
    """Model cache (e.g. the dequantised offline e5-small). ``MLIR_CACHE_DIR`` or ``~/.cache/mlir``."""
    env = os.environ.get("MLIR_CACHE_DIR")
    if env:
        return str(Path(env).expanduser().resolve())
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlir")
