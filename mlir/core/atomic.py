"""All-or-nothing file writes: the one helper every writer in mlir uses.

Why: a kill, a full disk or an exception halfway through a write must never leave a truncated
checkpoint, metrics file, run file or download where a reader (a resumed job, the study's report, a
skipped sweep job) would take it for a finished one. :func:`atomic_path` yields a hidden temp file in
the *destination's directory*; when the block ends without error the file is fsynced, given the mode
a plain ``open()`` would have given it (``0o666 & ~umask``: readable by the group under umask 002), and
``os.replace``-d over the destination (atomic on POSIX), then the directory is fsynced. On any error the
temp file is removed and the destination keeps its previous content. Readers see the old file or the
whole new one, never a mix.

:func:`atomic_dir` does the same for a directory of files (an exported model): it appears complete or
not at all, with every file and folder given the umask's mode (``safetensors`` writes 0600).

Temp files are named ``.{name}.{host}.{pid}.{random}.tmp``, so the next write of the same file removes
those a killed writer on this host left behind (checkpoints can be gigabytes), and never a live one's.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_HOST = socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(dest: Path) -> None:
    """Delete temp files of ``dest`` that a dead writer on this host left (see the module doc)."""
    prefix = f".{dest.name}.{_HOST}."
    for tmp in dest.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix) :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new, empty temp file next to ``dest``; on success it becomes ``dest`` (see the module doc).

    The block may write the path itself or hand it to a library (``pyarrow``, ``savefig``...).
    ``suffix`` ends the temp name, for libraries that pick a format by extension.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = _temp_name(dest, suffix)
    # O_EXCL: never follow or clobber anything; 0o666 & ~umask, the mode a plain open() gives
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        _fsync_path(tmp)
        os.chmod(tmp, mode)  # a library that re-created the file (or mkstemp-like code) may have used 0600
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # persist the rename; not supported everywhere, hence best effort
        _fsync_path(dest.parent)


def _temp_name(dest: Path, suffix: str = ".tmp") -> Path:
    return dest.parent / f".{dest.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty directory next to ``dest``; on success it is renamed to ``dest``.

    ``dest`` must not exist or be an empty directory. On error the temp directory is removed. Files
    and folders written inside get ``0o666 & ~umask`` / ``0o777 & ~umask`` before the rename.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest)
    os.mkdir(tmp, 0o777)
    dir_mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), dir_mode)
            for name in files:
                _fsync_path(Path(root, name))
                os.chmod(os.path.join(root, name), dir_mode & 0o666)
        os.replace(tmp, dest)  # over an empty directory too (POSIX rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        _fsync_path(dest.parent)


@contextlib.contextmanager
def open_atomic(dest: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(dest, mode, **kwargs)`` through :func:`atomic_path`; text mode defaults to UTF-8, ``\\n``."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "\n")
    with atomic_path(dest) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with open_atomic(dest, "wb") as f:
        f.write(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with open_atomic(dest) as f:
        f.write(text)
    return Path(dest)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy scalars and arrays, tensors
        return x.tolist()
    return str(x)


def write_json(dest: str | os.PathLike, obj: Any, *, indent: int | None = 2, allow_nan: bool = False) -> Path:
    """``obj`` as JSON (sorted keys, NaN refused unless ``allow_nan``; numpy values as lists), atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=allow_nan, default=_jsonable)
    return write_text(dest, text + "\n")
