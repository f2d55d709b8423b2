"""Safe readers and atomic writers shared by every data module.

Every failure caused by a bad input file becomes one :class:`~mlir.core.errors.DataError` whose ``where``
names the file and the line (``path:line``) or, for whole-file JSON, the line and column, so that a
user can open the file at the right place. Writers go through :func:`mlir.core.atomic.atomic_path`, so a
crash or an error never leaves a half-written output behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mlir.core.atomic import atomic_path
from mlir.core.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | os.PathLike) -> bool:
    """True if the file starts with the gzip magic bytes (the extension alone can lie)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _require_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        if p.is_dir():
            raise DataError("is a directory, expected a file", where=str(p))
        raise DataError("file not found" if not p.exists() else "not a regular file", where=str(p))
    return p


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(lineno, text)`` for a text or gzip file, 1-based, without the line terminator.

    Reads one line at a time (constant memory). Bytes that are not UTF-8 and a truncated or corrupt
    gzip stream raise :class:`DataError` naming ``path:line``. A UTF-8 byte-order mark is dropped.
    """
    p = _require_file(path)
    gz = is_gzip(p)
    lineno = 0
    pending: bytes | None = None  # one line of look-ahead: a truncated stream may end mid-line
    # an outer 1 MiB BufferedReader makes readline C-level for gzip too (GzipFile.readline is Python)
    f = io.BufferedReader(gzip.GzipFile(p, "rb"), 1 << 20) if gz else open(p, "rb", buffering=1 << 20)
    with f:
        it = iter(f)
        while True:
            try:
                raw = next(it)
            except StopIteration:
                break
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
                bad = lineno if pending is not None and not pending.endswith(b"\n") else lineno + 1
                if gz:  # buffered reads fail ahead of the line reached: find the exact first bad line
                    bad = _first_incomplete_gzip_line(p) or bad
                what = "truncated or corrupt gzip data" if gz else "read error"
                raise DataError(
                    f"{what} ({e}); the file is incomplete or damaged — re-download or re-create it",
                    where=f"{p}:{max(bad, 1)}",
                ) from None
            if pending is not None:
                yield lineno, _decode(pending, p, lineno)
            pending = raw
            lineno += 1
        if pending is not None:
            yield lineno, _decode(pending, p, lineno)


def _first_incomplete_gzip_line(path: Path) -> int | None:
    """1-based number of the first line that does not decompress completely (error path only)."""
    complete = 0
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                while chunk:
                    complete += d.decompress(chunk).count(b"\n")
                    chunk = b""
                    if d.eof and d.unused_data:  # concatenated gzip members
                        chunk = d.unused_data
                        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        complete += d.flush().count(b"\n")
    except zlib.error:
        pass
    except OSError:
        return None
    return complete + 1


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"line is not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {e.start + 1}); "
            "re-encode the file as UTF-8",
            where=f"{path}:{lineno}",
        ) from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text.rstrip("\r\n")


def iter_jsonl(path: str | os.PathLike, *, skip_blank: bool = True) -> Iterator[tuple[int, dict]]:
    """Yield ``(lineno, object)`` for each JSON-object line of a ``.jsonl`` / ``.jsonl.gz`` file.

    Blank lines are skipped (many tools write a trailing one). Malformed JSON or a line that is not a
    JSON object raises :class:`DataError` at ``path:line``, as do the encoding errors of
    :func:`iter_lines`.
    """
    for lineno, text in iter_lines(path):
        if skip_blank and not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", where=f"{path}:{lineno}") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object per line, got {type(obj).__name__}", where=f"{path}:{lineno}"
            )
        yield lineno, obj


def read_json_file(path: str | os.PathLike) -> Any:
    """Parse a whole JSON file (optionally gzip); errors name ``path:line:column``."""
    p = _require_file(path)
    try:
        with (gzip.open if is_gzip(p) else open)(p, "rb") as f:
            raw = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"truncated or corrupt gzip data ({e})", where=str(p)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-encode the file as UTF-8", where=f"{p}:{line}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg}", where=f"{p}:{e.lineno}:{e.colno}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, *, advice: str = "re-download it") -> None:
    """Raise :class:`DataError` naming the file if its sha256 is not ``expected`` (None: no check).

    ``advice`` ends the message: what the user should do depends on the caller (a download that was
    refused needs other advice than a file already on disk).
    """
    if not expected:
        return
    _require_file(path)
    actual = sha256_file(path)
    if actual.lower() != expected.strip().lower():
        raise DataError(
            f"sha256 mismatch: expected {expected.strip().lower()}, got {actual}; the file is corrupt, "
            f"incomplete or a different version — {advice}",
            where=str(path),
        )


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write records as JSON lines (gzip if the name ends in ``.gz``), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        raw = open(tmp, "wb")
        stream = gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) if path.suffix == ".gz" else raw
        with raw, stream, io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False))
                f.write("\n")
    return path
