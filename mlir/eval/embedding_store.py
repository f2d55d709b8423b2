"""Candidate embeddings on disk: a float32 ``.npy`` file written and read in row ranges.

Why: a 10M-passage corpus at dimension 384 is 15 GB of float32. Held in memory -- or memory-mapped,
since resident file-backed pages count in a process's RSS -- it needs that much RAM. Here every read
is an explicit ``pread`` into a caller's buffer (:meth:`EmbeddingStore.shards` reuses one buffer of
``shard_size`` rows), so the working set is one shard whatever the corpus size; caching is left to the
kernel's page cache, which is not part of RSS and is given back under memory pressure.

The file is a standard ``.npy`` (C order, little-endian float32, ``[N, D]``; ``np.load(path,
mmap_mode="r")`` reads it too). :class:`StoreWriter` creates it through :mod:`mlir.core.atomic`: the
file appears at its path only once every row has been written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlir.core.atomic import atomic_path
from mlir.core.errors import ConfigError, DataError

DTYPE = np.dtype("<f4")
#: Rows per shard (one read, one score block) unless configured (``eval.shard_size``): 96 MiB at dim 384.
SHARD_SIZE = 65536
#: Largest shard: search sums 0/1 comparison counts in float32, exact below 2**24 per row.
MAX_SHARD_SIZE = 1 << 24


@dataclass(frozen=True)
class OnDiskCorpus:
    """``eval.embeddings_dir`` / ``eval.shard_size``: each benchmark's candidates are encoded into
    ``{dir}/{benchmark}.passages.npy`` and searched from there, ``shard_size`` rows at a time."""

    dir: str
    shard_size: int = SHARD_SIZE

    def path(self, benchmark: str) -> Path:
        return Path(self.dir) / f"{benchmark}.passages.npy"


def _pread(fd: int, dst: np.ndarray, offset: int, path: Path) -> None:
    """Fill the C-contiguous ``dst`` from ``offset`` (a loop: one read returns at most ~2 GiB)."""
    mv = memoryview(dst).cast("B")
    done = 0
    while done < mv.nbytes:
        n = os.preadv(fd, [mv[done:]], offset + done)
        if n <= 0:
            raise DataError(
                f"file ends at byte {offset + done}, before the rows its header declares", str(path)
            )
        done += n


def _pwrite(fd: int, src: np.ndarray, offset: int) -> None:
    mv = memoryview(np.ascontiguousarray(src, dtype=DTYPE)).cast("B")
    done = 0
    while done < mv.nbytes:
        done += os.pwrite(fd, mv[done:], offset + done)


def _runs(sorted_idx: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` position ranges of ``sorted_idx`` (sorted, unique) whose values are consecutive."""
    cut = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
    bounds = [0, *cut.tolist(), len(sorted_idx)]
    return list(zip(bounds[:-1], bounds[1:]))


def _read_header(f: Any, path: Path) -> tuple[int, int, int]:
    """(rows, dim, byte offset of row 0) of a float32 C-order 2-D ``.npy``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise DataError(f"not a .npy file ({e})", str(path)) from e
    if dtype != DTYPE or fortran or len(shape) != 2:
        raise DataError(
            f"expected a C-order little-endian float32 [N, D] array, got {dtype} {shape}"
            f"{' (Fortran order)' if fortran else ''}",
            str(path),
        )
    return int(shape[0]), int(shape[1]), f.tell()


class EmbeddingStore:
    """A read-only ``[N, D]`` float32 matrix in a ``.npy`` file, or a contiguous row range of one.

    ``shard_size``: rows per block of :meth:`shards` (and the search's score block by default).
    ``finite``: the rows are known to hold no NaN/inf (a :class:`StoreWriter` checked them); the
    search checks the blocks of a store that is not, on its first full pass.
    """

    def __init__(self, path: str | os.PathLike, *, shard_size: int = SHARD_SIZE, finite: bool = False):
        self.path = Path(path)
        self._file = open(self.path, "rb", buffering=0)  # shared by slices; closed when collected
        rows, self.dim, self._offset = _read_header(self._file, self.path)
        self.start, self.stop = 0, rows
        self.shard_size = check_shard_size(shard_size)
        self.finite = finite

    @property
    def shape(self) -> tuple[int, int]:
        return (self.stop - self.start, self.dim)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * DTYPE.itemsize

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, rows [{self.start}, {self.stop}), dim {self.dim})"

    def slice(self, start: int, stop: int) -> EmbeddingStore:
        """Rows ``[start, stop)`` of this store as a store (no copy; the file is shared)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows [{start}, {stop}) outside [0, {len(self)})")
        view = copy.copy(self)
        view.start, view.stop = self.start + start, self.start + stop
        return view

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` into the first rows of ``out`` (C-contiguous float32) or a new array."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows [{start}, {stop}) outside [0, {len(self)})")
        dst = np.empty((stop - start, self.dim), DTYPE) if out is None else out[: stop - start]
        row = self.dim * DTYPE.itemsize
        _pread(self._file.fileno(), dst, self._offset + (self.start + start) * row, self.path)
        return dst

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) as a new ``[len(idx), D]`` array; each run of
        consecutive rows is one read."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row indices outside [0, {len(self)})")
        uniq, inverse = np.unique(idx, return_inverse=True)
        rows = np.empty((len(uniq), self.dim), DTYPE)
        for a, b in _runs(uniq):
            self.read(int(uniq[a]), int(uniq[a]) + b - a, rows[a:b])
        return rows if len(uniq) == len(idx) and np.array_equal(uniq, idx) else rows[inverse]

    def shards(
        self, size: int | None = None, want: Callable[[int, int], bool] | None = None
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, rows)`` of consecutive blocks of ``size`` rows (default ``shard_size``), all
        read into ONE buffer: a block is valid until the next one is read. ``want(start, stop)``
        returning False skips a block without reading it."""
        size = check_shard_size(self.shard_size if size is None else size)
        buf = np.empty((min(size, len(self)), self.dim), DTYPE)
        for a in range(0, len(self), size):
            b = min(a + size, len(self))
            if want is None or want(a, b):
                yield a, b, self.read(a, b, buf)


def check_shard_size(value: Any, where: str = "shard_size") -> int:
    """A positive integer of at most 2**24 rows, else a one-line :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARD_SIZE:
        raise ConfigError(
            f"must be an integer in [1, {MAX_SHARD_SIZE}] (rows per shard), got {value!r}", where
        )
    return value


class StoreWriter:
    """Creates ``path`` as a ``[rows, dim]`` float32 ``.npy``, filled block by block; a context manager.

    On a clean exit every row must have been written; the file is then fsynced and renamed onto
    ``path`` (:func:`mlir.core.atomic.atomic_path`) and :meth:`store` opens it. On an error the temp
    file is removed and ``path`` keeps what it held. Rows are checked for NaN/inf as they arrive.
    """

    def __init__(self, path: str | os.PathLike, rows: int, dim: int, *, shard_size: int = SHARD_SIZE):
        self.path, self.rows, self.dim = Path(path), int(rows), int(dim)
        self.shard_size = check_shard_size(shard_size)
        self._written = np.zeros(self.rows, dtype=bool)
        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_path(self.path, suffix=".npy"))
            self._file = self._stack.enter_context(open(tmp, "r+b", buffering=0))
            header = io.BytesIO()
            descr = np.lib.format.dtype_to_descr(DTYPE)
            np.lib.format.write_array_header_1_0(
                header, {"descr": descr, "fortran_order": False, "shape": (self.rows, self.dim)}
            )
            self._offset = len(header.getvalue())
            os.pwrite(self._file.fileno(), header.getvalue(), 0)
            self._file.truncate(self._offset + self.rows * self.dim * DTYPE.itemsize)  # sparse until written
        except BaseException:
            self._stack.__exit__(*sys.exc_info())  # removes the temp file
            raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None and not self._written.all():
            err = RuntimeError(
                f"{int((~self._written).sum())} of {self.rows} rows of {self.path} never written"
            )
            self._stack.__exit__(RuntimeError, err, None)  # removes the temp file
            raise err
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def write_rows(self, idx: np.ndarray, block: np.ndarray | torch.Tensor) -> None:
        """Write ``block[i]`` to row ``idx[i]`` (``idx`` increasing); consecutive rows in one write."""
        block = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if block.shape != (len(idx), self.dim):
            raise ValueError(f"block of shape {block.shape} for {len(idx)} rows of dim {self.dim}")
        if len(idx) > 1 and not (np.diff(idx) > 0).all():
            raise ValueError("row indices must be increasing")
        if not np.isfinite(block).all():
            raise ValueError("embeddings contain NaN or inf (a diverged or overflowing encoder?)")
        row = self.dim * DTYPE.itemsize
        for a, b in _runs(idx):
            _pwrite(self._file.fileno(), block[a:b], self._offset + int(idx[a]) * row)
        self._written[idx] = True

    def write(self, start: int, block: np.ndarray | torch.Tensor) -> None:
        """Write rows ``[start, start + len(block))``."""
        self.write_rows(np.arange(start, start + len(block)), block)

    def copy_rows(self, dst: np.ndarray, src: np.ndarray) -> None:
        """Row ``dst[i]`` := the already written row ``src[i]`` (``dst`` increasing), a shard at a time."""
        dst, src = np.asarray(dst, dtype=np.int64), np.asarray(src, dtype=np.int64)
        if len(src) and not self._written[src].all():
            raise ValueError("copy_rows: a source row has not been written yet")
        row = self.dim * DTYPE.itemsize
        for a in range(0, len(dst), self.shard_size):
            s = src[a : a + self.shard_size]
            uniq, inverse = np.unique(s, return_inverse=True)
            rows = np.empty((len(uniq), self.dim), DTYPE)
            for c, e in _runs(uniq):
                _pread(self._file.fileno(), rows[c:e], self._offset + int(uniq[c]) * row, self.path)
            self.write_rows(dst[a : a + self.shard_size], rows[inverse])

    def store(self) -> EmbeddingStore:
        """The finished file, opened for reading (after the ``with`` block)."""
        return EmbeddingStore(self.path, shard_size=self.shard_size, finite=True)


Docs = torch.Tensor | EmbeddingStore


def take_rows(d: Docs, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of an in-memory matrix or of a store (read from disk), as a CPU tensor."""
    if isinstance(d, EmbeddingStore):
        return torch.from_numpy(d.gather(idx.cpu().numpy()))
    return d[idx]


def row_range(d: Docs, rows: slice) -> Docs:
    """Rows ``rows`` (a step-1 slice with bounds) of a matrix (a view) or of a store (a sub-store)."""
    return d.slice(rows.start, rows.stop) if isinstance(d, EmbeddingStore) else d[rows]
