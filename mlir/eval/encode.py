"""Encode each unique text once, sharded across ranks.

MKQA answers repeat across queries and languages ("2017", "yes", names written the same in 20 scripts
of Latin languages), and the multilingual pool reuses every language's candidates: encoding is the
expensive part of an evaluation, so texts are deduplicated first (queries and passages separately,
since they get different prefixes) and indexed back afterwards.

Under DDP every rank holds the same text list (tasks are built deterministically); each rank encodes
one contiguous slice of the unique texts and the slices are ``all_gather``-ed, padded to equal length
(gloo and NCCL need equal shapes). The result is the same ``[N, D]`` CPU tensor on every rank.

:func:`encode_to_store` writes the embeddings to a ``.npy`` on disk instead (corpora larger than memory,
``eval.embeddings_dir``): texts are encoded and written :data:`PROGRESS_CHUNK` at a time, so no process
ever holds more than one chunk per rank.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlir.eval.embedding_store import SHARD_SIZE, EmbeddingStore, StoreWriter
from mlir.eval.progress import bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a distributed job.

    ``broadcast(obj, src)`` sends a picklable object from ``src`` to every rank (defaults to
    ``torch.distributed.broadcast_object_list`` when a process group is up).
    """

    rank: int = 0
    world_size: int = 1
    broadcast: Callable[[object, int], object] | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_trainer(cls, trainer: object | None) -> DistInfo:
        """Rank/world size/broadcast of a Lightning ``Trainer`` (single process when ``None``)."""
        if trainer is None:
            return cls.from_process_group()
        world = int(getattr(trainer, "world_size", 1) or 1)
        if world <= 1:
            return cls()
        strategy = getattr(trainer, "strategy", None)
        bcast = getattr(strategy, "broadcast", None)
        return cls(int(trainer.global_rank), world, (lambda obj, src: bcast(obj, src=src)) if bcast else None)

    @classmethod
    def from_process_group(cls) -> DistInfo:
        """Rank/world size of an initialised ``torch.distributed`` group, else single process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    def broadcast_object(self, obj: object, src: int = 0) -> object:
        if not self.distributed:
            return obj
        if self.broadcast is not None:
            return self.broadcast(obj, src)
        box = [obj if self.rank == src else None]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts in first-seen order, and for each input text the index of its unique text."""
    index: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        j = index.get(t)
        if j is None:
            j = index[t] = len(index)
        inverse[i] = j
    return list(index), inverse


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous slice ``[start, end)`` of ``n`` items for ``rank``; sizes differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _collective_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo (and anything else) moves CPU tensors."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate each rank's ``[sizes[r], D]`` block in rank order (padded for the collective)."""
    world = len(sizes)
    width = max(sizes) if sizes else 0
    dev = _collective_device()
    pad = torch.zeros(width, local.shape[1], dtype=local.dtype, device=dev)
    pad[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(pad) for _ in range(world)]
    torch.distributed.all_gather(parts, pad)
    return torch.cat([p[:n].cpu() for p, n in zip(parts, sizes)])


#: Texts per encoder call: large enough for length-sorted batching, small enough for progress lines.
PROGRESS_CHUNK = 8192


def _call_chunks(
    fn: Callable, texts: list[str], batch_size: int | None, what: str = "", progress: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first text's position, float32 CPU embeddings)`` of each :data:`PROGRESS_CHUNK` texts."""
    t0 = time.perf_counter()
    with bar(progress, len(texts), f"encoding {what}".strip(), "texts") as pbar:
        for a in range(0, len(texts), PROGRESS_CHUNK):
            chunk = texts[a : a + PROGRESS_CHUNK]
            out = fn(chunk, batch_size=batch_size) if batch_size else fn(chunk)
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(np.asarray(out))
            yield a, out.detach().float().cpu()
            pbar.update(len(chunk))
            if len(texts) > PROGRESS_CHUNK:
                done = a + len(chunk)
                rate = done / max(time.perf_counter() - t0, 1e-9)
                log.info("encoding %s: %d/%d texts (%.0f/s)", what, done, len(texts), rate)


def _call(
    fn: Callable, texts: list[str], batch_size: int | None, what: str = "", progress: bool = False
) -> torch.Tensor:
    parts = [emb for _, emb in _call_chunks(fn, texts, batch_size, what, progress)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


class EmbeddingCache:
    """Embeddings already computed in one evaluation, by side and text.

    Why: benchmarks of one evaluation often share texts (``xquad_r`` and ``xquad_r_mkqa`` ask the same
    questions), and encoding is most of an evaluation's time. A cache lives for one
    :func:`mlir.eval.runner.evaluate` call only: the model changes between calls. Every rank of a
    sharded evaluation holds the same (all-gathered) rows, so all ranks agree on what is missing.
    """

    def __init__(self) -> None:
        self._row: dict[str, dict[str, int]] = {"query": {}, "passage": {}}
        self._emb: dict[str, torch.Tensor | None] = {"query": None, "passage": None}

    def missing(self, side: str, texts: Sequence[str]) -> list[str]:
        known = self._row[side]
        return [t for t in texts if t not in known]

    def add(self, side: str, texts: Sequence[str], emb: torch.Tensor) -> None:
        if not len(texts):
            return
        rows = self._row[side]
        base = len(rows)
        rows.update((t, base + i) for i, t in enumerate(texts))
        old = self._emb[side]
        self._emb[side] = emb if old is None else torch.cat([old, emb.to(old.dtype)])

    def rows(self, side: str, texts: Sequence[str]) -> torch.Tensor:
        index = torch.as_tensor([self._row[side][t] for t in texts], dtype=torch.long)
        return self._emb[side][index]


def encode_unique(
    encoder: object,
    texts: Sequence[str],
    side: str,
    *,
    batch_size: int | None = None,
    dist: DistInfo | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings of the *unique* texts ``[U, D]`` and, per input text, its row in them.

    ``side`` is ``"query"`` (``encoder.encode_queries``) or ``"passage"`` (``encoder.encode_passages``).
    With ``dist.world_size > 1`` every rank must call this with the same texts (it is a collective).
    Texts found in ``cache`` are not encoded again; the new ones are added to it. ``progress``: draw
    a bar of the texts this rank encodes (:mod:`mlir.eval.progress`).
    """
    if side not in ("query", "passage"):
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
    dist = dist or DistInfo()
    uniq, inverse = dedupe(texts)
    if not uniq:
        return torch.zeros(0, 0), inverse
    if cache is None:
        return _encode_all(encoder, uniq, side, batch_size, dist, len(texts), progress=progress), inverse
    new = cache.missing(side, uniq)
    if new:
        reused = len(uniq) - len(new)
        cache.add(side, new, _encode_all(encoder, new, side, batch_size, dist, len(texts), reused, progress))
    else:
        log.info("all %d unique %s texts (of %d) already encoded", len(uniq), side, len(texts))
    return cache.rows(side, uniq), inverse


def _encode_all(
    encoder: object,
    uniq: list[str],
    side: str,
    batch_size: int | None,
    dist: DistInfo,
    n_texts: int,
    reused: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Encode distinct texts, sharded over the ranks of ``dist`` (a collective when distributed)."""
    fn = encoder.encode_queries if side == "query" else encoder.encode_passages
    t0 = time.perf_counter()
    if not dist.distributed:
        emb = _call(fn, uniq, batch_size, side, progress)
    else:
        sizes = [
            b - a for a, b in (shard_bounds(len(uniq), r, dist.world_size) for r in range(dist.world_size))
        ]
        start, end = shard_bounds(len(uniq), dist.rank, dist.world_size)
        if end > start:
            local = _call(fn, uniq[start:end], batch_size, f"{side} (rank {dist.rank})", progress)
        else:  # more ranks than texts: this rank only needs the width for the collective
            local = _call(fn, uniq[:1], batch_size)[:0]
        emb = all_gather_rows(local, sizes)
    log.info(
        "encoded %d unique %s texts (of %d%s) in %.1fs%s",
        len(uniq),
        side,
        n_texts,
        f"; {reused} reused from this evaluation" if reused else "",
        time.perf_counter() - t0,
        f" on {dist.world_size} ranks" if dist.distributed else "",
    )
    return emb


def encode_texts(
    encoder: object,
    texts: Sequence[str],
    side: str,
    *,
    batch_size: int | None = None,
    dist: DistInfo | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """``[len(texts), D]`` embeddings, each distinct text encoded once (see :func:`encode_unique`)."""
    emb, inverse = encode_unique(
        encoder, texts, side, batch_size=batch_size, dist=dist, cache=cache, progress=progress
    )
    if emb.numel() == 0 and not len(texts):
        return emb
    return emb[torch.from_numpy(inverse)]


def _gathered_chunks(
    fn: Callable, uniq: list[str], batch_size: int | None, dist: DistInfo, what: str, progress: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first text's index, embeddings)`` of consecutive texts of ``uniq``, a chunk at a time.

    One process: :func:`_call_chunks`. Under DDP every rank encodes up to :data:`PROGRESS_CHUNK` texts
    of its :func:`shard_bounds` slice per round and the round's chunks are all-gathered (a collective),
    so every rank yields every rank's chunk and none holds more than one round.
    """
    if not dist.distributed:
        yield from _call_chunks(fn, uniq, batch_size, what, progress)
        return
    bounds = [shard_bounds(len(uniq), r, dist.world_size) for r in range(dist.world_size)]
    rounds = -(-max(e - s for s, e in bounds) // PROGRESS_CHUNK)
    empty = None  # a [0, D] tensor: a rank without texts in a round still sends the width
    with bar(progress, bounds[dist.rank][1] - bounds[dist.rank][0], f"encoding {what}", "texts") as pbar:
        for t in range(rounds):
            parts = [
                (min(s + t * PROGRESS_CHUNK, e), min(s + (t + 1) * PROGRESS_CHUNK, e)) for s, e in bounds
            ]
            a, b = parts[dist.rank]
            if b > a:
                local = _call(fn, uniq[a:b], batch_size)
            else:
                local = empty if empty is not None else _call(fn, uniq[:1], batch_size)[:0]
            empty = local[:0]
            pbar.update(b - a)
            rows = all_gather_rows(local, [b - a for a, b in parts])
            for (a, b), off in zip(parts, itertools.accumulate([0] + [b - a for a, b in parts])):
                if b > a:
                    yield a, rows[off : off + b - a]


def encode_to_store(
    encoder: object,
    texts: Sequence[str],
    side: str,
    path: str | os.PathLike,
    *,
    shard_size: int = SHARD_SIZE,
    batch_size: int | None = None,
    dist: DistInfo | None = None,
    progress: bool = False,
) -> EmbeddingStore | None:
    """:func:`encode_texts` into a ``[len(texts), D]`` float32 ``.npy`` at ``path`` instead of memory.

    Each distinct text is encoded once and written to the row where it first occurs, a chunk at a time;
    the rows of repeated texts are then copied on disk, ``shard_size`` rows at a time. Under DDP every
    rank must call this (each encodes a slice; a collective per chunk); rank 0 writes the file and
    returns it opened (:class:`EmbeddingStore` with ``shard_size``), the other ranks return ``None``.
    The file appears at ``path`` only when complete (:class:`StoreWriter`).
    """
    if side not in ("query", "passage"):
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
    dist = dist or DistInfo()
    fn = encoder.encode_queries if side == "query" else encoder.encode_passages
    uniq, inverse = dedupe(texts)
    t0 = time.perf_counter()
    chunks = _gathered_chunks(fn, uniq, batch_size, dist, side, progress)
    if dist.rank != 0:
        for _ in chunks:  # take part in the collectives
            pass
        return None
    first_chunk = next(chunks, None)
    dim = 0 if first_chunk is None else first_chunk[1].shape[1]
    _, first = np.unique(inverse, return_index=True)  # where each distinct text first occurs
    with StoreWriter(path, len(texts), dim, shard_size=shard_size) as writer:
        for a, emb in itertools.chain([first_chunk] if first_chunk else [], chunks):
            writer.write_rows(first[a : a + len(emb)], emb)
        repeated = np.flatnonzero(first[inverse] != np.arange(len(texts)))
        writer.copy_rows(repeated, first[inverse[repeated]])
    log.info(
        "encoded %d unique %s texts (of %d) into %s (%.1f MiB) in %.1fs",
        len(uniq),
        side,
        len(texts),
        Path(path),
        len(texts) * dim * 4 / 2**20,
        time.perf_counter() - t0,
    )
    return writer.store()
