"""Exact inner-product search and relevant-document ranks, chunked so memory never holds ``Q x C``.

Two entry points:

* :func:`relevant_ranks` -- for every query, the 1-based rank of each of its relevant documents in the
  ranking of the *whole* corpus. Ranks are found by counting, one ``q_chunk x d_chunk`` score block at
  a time, so peak memory is ``O(q_chunk * d_chunk + C * D + #relevant)`` whatever the number of
  queries, and no argsort of a score row ever happens. Every metric in :mod:`mlir.eval.metrics` is a
  function of these ranks, so nDCG/MAP/recall/MRR/rank distance are computed over the full ranking
  instead of a truncated top-k list.
* :func:`topk` -- the ``k`` best documents per query, with a torch backend (chunked matmul and a
  running top-k merge) and a FAISS ``IndexFlatIP`` backend (on GPU when the FAISS build has one).

**Ranking rule** (both functions, and the ranks the metrics assume): documents are ordered by score
descending; documents with *exactly* equal scores are ordered by document index ascending (the lower
index ranks first). trec_eval breaks ties by docno *descending*, so mapping document ``i`` to a
fixed-width docno whose descending order is ascending ``i`` (e.g. ``f"{C - 1 - i:07d}"``) makes
trec_eval / pytrec_eval rank exactly as we do.

**Scores** are the float32 results of one GEMM kernel (float64 if both inputs are float64), with
TF32/bf16 matmul shortcuts switched off for the duration of the call. Ranks are exact with respect to
the block scores: the threshold each relevant document is compared with is checked bit for bit against
the score the same block GEMM produced for it, and any query where the two disagree is recounted in
a two-pass mode that takes the threshold from the block itself. Two different GEMM shapes or
libraries can round the same dot product differently (by an ulp or so); scores that close are
"tied" only if they are bitwise equal in the block, as in any full-matrix argsort. (MKL's kernels for
tiny blocks, e.g. a last query chunk of < 8 rows, can even round identical document vectors
differently by column; large blocks did not in our tests.) Exactly representable scores -- e.g.
quantised embeddings -- are independent of all this, which is what the tests use.

**Corpora larger than memory**: ``d`` may be an :class:`~mlir.eval.embedding_store.EmbeddingStore`
(a ``.npy`` on disk). Its blocks of ``d_chunk`` rows (default: the store's ``shard_size``) are then read
into one reused buffer as the search reaches them, instead of slicing a matrix held in memory; the
blocks, GEMMs and merges are the same, so with equal ``d_chunk`` the results are bit-identical to the
in-memory search. Working set: one block (``d_chunk * D * 4`` bytes, plus its device copy off the CPU)
on top of the in-memory search's buffers minus the corpus. :func:`relevant_ranks` reads the corpus once
per chunk of ``q_chunk`` queries (twice for queries recounted in two-pass mode), :func:`topk` once per
query chunk.

``torch.set_float32_matmul_precision`` is process-global: it is set to ``"highest"`` during a call
and restored afterwards, so do not run these functions concurrently with TF32 work in other threads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch

from mlir.core.errors import ConfigError
from mlir.eval.embedding_store import SHARD_SIZE, EmbeddingStore

log = logging.getLogger(__name__)

#: GPU FAISS cannot return more than this many neighbours per query (``k`` and ``nprobe`` limit).
FAISS_GPU_MAX_K = 2048

# Elements of the reusable 0/1 comparison buffer (64 MiB of float32).
_COUNT_SLAB = 1 << 24
# Queries per GEMM when computing provisional relevant-document scores.
_THRESHOLD_SUB_CHUNK = 256
# If more than this fraction of a query chunk needs recounting, use the two-pass mode from then on.
_TWO_PASS_SWITCH = 0.25

ArrayLike = torch.Tensor | np.ndarray
#: Documents per score block when ``d_chunk`` is not given and ``d`` is in memory.
D_CHUNK = SHARD_SIZE


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a config value into a device: ``None``/``"auto"`` picks CUDA when available, else CPU.

    An explicitly requested CUDA device that does not exist is a configuration error rather than a
    silent fallback, so a GPU evaluation never quietly runs for hours on the CPU.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N", "device") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available; use auto or cpu", "device"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist",
                "device",
            )
    return dev


# --------------------------------------------------------------------------------------------------
# helpers


def _as_matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D floating tensor view of ``x`` (numpy arrays are wrapped without a copy when possible)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a [N, D] matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x.detach()


def _as_docs(d: ArrayLike | EmbeddingStore) -> torch.Tensor | EmbeddingStore:
    """An on-disk store as it is (read block by block), anything else as a matrix (:func:`_as_matrix`)."""
    return d if isinstance(d, EmbeddingStore) else _as_matrix(d, "d")


def _d_chunk(d: torch.Tensor | EmbeddingStore, d_chunk: int | None) -> int:
    """``d_chunk`` if given, else the store's ``shard_size`` or :data:`D_CHUNK`."""
    if d_chunk is not None:
        return int(d_chunk)
    return d.shard_size if isinstance(d, EmbeddingStore) else D_CHUNK


def _score_dtype(q: torch.Tensor, d: torch.Tensor | EmbeddingStore) -> torch.dtype:
    """float64 only when both sides are float64 (exact references in tests); float32 otherwise."""
    d64 = isinstance(d, torch.Tensor) and d.dtype == torch.float64
    return torch.float64 if q.dtype == torch.float64 and d64 else torch.float32


_NOT_FINITE = "embeddings contain NaN or inf (a diverged or overflowing encoder?)"
# Elements per isfinite() call: it allocates temporaries about twice its input (abs() and masks).
_FINITE_SLAB = 1 << 20


def _all_finite(x: torch.Tensor) -> bool:
    """``torch.isfinite(x).all()`` a slab of rows at a time, so its temporaries stay a few MiB
    instead of ~2x ``x`` (which, for a corpus in memory, was a transient copy of the corpus)."""
    rows = max(1, _FINITE_SLAB // max(1, x[0].numel() if x.shape[0] else 1))
    return all(bool(torch.isfinite(x[a:b]).all()) for a, b in _chunks(x.shape[0], rows))


def _check_inputs(q: torch.Tensor, d: torch.Tensor | EmbeddingStore, q_chunk: int, d_chunk: int) -> None:
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != document dim {d.shape[1]}")
    if q_chunk < 1 or d_chunk < 1:
        raise ValueError(f"q_chunk and d_chunk must be >= 1, got {q_chunk}, {d_chunk}")
    for name, x in (("q", q), ("d", d)):  # a store's blocks are checked as they are read (_Docs)
        if isinstance(x, torch.Tensor) and not _all_finite(x):
            raise ValueError(f"{name}: {_NOT_FINITE}")
    if d_chunk > 1 << 24:
        # counts are summed as float 0/1 values; exact only below 2**24 per row
        raise ValueError(f"d_chunk must be <= 2**24, got {d_chunk}")


@contextlib.contextmanager
def _exact_matmul() -> Iterator[None]:
    """Full-precision fp32 GEMM for the block: TF32 (CUDA) / bf16 (oneDNN) would create false ties.

    Lightning users commonly call ``torch.set_float32_matmul_precision("high")``; restore it after.
    """
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)


class _Docs:
    """The searched documents as score blocks of ``size`` rows on the scoring device.

    An in-memory matrix is moved to the device once and sliced; an :class:`EmbeddingStore` is read
    block by block into one reused host buffer (copied to the device when that is not the CPU). Both
    give each block the same rows in the same layout, hence the same GEMMs and bit-identical scores.
    A block is valid until the next one is produced.
    """

    def __init__(self, d: torch.Tensor | EmbeddingStore, dev: torch.device, dtype: torch.dtype, size: int):
        self.n, self.size, self.dev, self.dtype = d.shape[0], size, dev, dtype
        self.store = d if isinstance(d, EmbeddingStore) else None
        self.mat = None if self.store is not None else d.to(device=dev, dtype=dtype).contiguous()

    def blocks(
        self, want: Callable[[int, int], bool] | None = None
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, rows)`` of every block for which ``want(start, stop)`` (default: all)."""
        if self.mat is not None:
            for c, e in _chunks(self.n, self.size):
                if want is None or want(c, e):
                    yield c, e, self.mat[c:e]
            return
        check = not self.store.finite  # a store a StoreWriter did not check: once, on a full pass
        for c, e, rows in self.store.shards(self.size, want):
            blk = torch.from_numpy(rows).to(device=self.dev, dtype=self.dtype)
            if check and not _all_finite(blk):
                raise ValueError(f"d: {_NOT_FINITE} (rows {c}-{e - 1} of {self.store})")
            yield c, e, blk
        if check and want is None:
            self.store.finite = True

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (a device tensor) on the device."""
        if self.mat is not None:
            return self.mat.index_select(0, idx)
        rows = torch.from_numpy(self.store.gather(idx.cpu().numpy()))
        if not _all_finite(rows):
            raise ValueError(f"d: {_NOT_FINITE} ({self.store})")
        return rows.to(device=self.dev, dtype=self.dtype)


class _Scratch:
    """Reusable flat buffers so that every full-size block reuses the same memory."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, numel: int) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=self.dtype, device=self.device)
            self._bufs[name] = buf
        return buf[:numel]


def _block_scores(qc: torch.Tensor, dblk: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """``qc @ dblk.T`` written into the shared score buffer."""
    m, n = qc.shape[0], dblk.shape[0]
    out = scratch.get("scores", m * n).view(m, n)
    return torch.mm(qc, dblk.T, out=out)


def _count_cmp(
    s: torch.Tensor,
    t: torch.Tensor,
    scratch: _Scratch,
    rows: torch.Tensor | None = None,
    op=torch.gt,
) -> torch.Tensor:
    """``#{j : op(s[i, j], t[i])}`` per row (of ``s[rows]`` when given), as int64.

    The comparison is written as 0.0/1.0 into a reusable float buffer and summed: on CPU a float sum
    is ~10x faster than summing a bool tensor, and it is exact because rows are shorter than 2**24.
    """
    n_rows = s.shape[0] if rows is None else rows.numel()
    dc = s.shape[1]
    out = torch.empty(n_rows, dtype=torch.int64, device=s.device)
    per = max(1, _COUNT_SLAB // max(dc, 1))
    for a, b in _chunks(n_rows, per):
        buf = scratch.get("cmp", (b - a) * dc).view(b - a, dc)
        blk = s[a:b] if rows is None else s.index_select(0, rows[a:b])
        op(blk, t[a:b, None], out=buf)
        out[a:b] = buf.sum(1).to(torch.int64)
    return out


def _padded_rel(
    rel_flat: np.ndarray, offsets: np.ndarray, a: int, b: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relevant docs of queries ``[a, b)`` as an ``[m, max_rel]`` matrix padded with -1.

    Returns the matrix and, per flat pair, its (local query, position) so results can be scattered
    back into the flat order.
    """
    m = b - a
    n = np.diff(offsets[a : b + 1])
    p0 = offsets[a]
    qloc = np.repeat(np.arange(m), n)
    pos = np.arange(offsets[b] - p0) - (offsets[a:b] - p0)[qloc]
    R = np.full((m, int(n.max()) if m else 0), -1, dtype=np.int64)
    R[qloc, pos] = rel_flat[p0 : offsets[b]]
    return R, qloc, pos


def _provisional_scores(qc: torch.Tensor, d: _Docs, R: torch.Tensor) -> torch.Tensor:
    """Scores of each (query, relevant doc) pair, +inf at padding, via the same GEMM routine.

    BLAS GEMMs (MKL at least) produce each output element with the same arithmetic whatever M and N
    are, so a small GEMM against the gathered relevant documents usually reproduces the block scores
    bit for bit -- unlike ``(q * d).sum(-1)``, which differs in the last bit for most pairs. Callers
    verify the match and recount mismatching queries, so this is an optimisation, never an assumption.
    """
    thr = torch.full(R.shape, float("inf"), dtype=qc.dtype, device=qc.device)
    for a, b in _chunks(R.shape[0], _THRESHOLD_SUB_CHUNK):
        Rs = R[a:b]
        valid = Rs >= 0
        if not bool(valid.any()):
            continue
        uniq, inv = torch.unique(Rs[valid], return_inverse=True)
        s = torch.mm(qc[a:b], d.take(uniq).T)
        rows = valid.nonzero()[:, 0]
        sub = thr[a:b]
        sub[valid] = s[rows, inv]
    return thr


def _own_scores(qc: torch.Tensor, d: _Docs, R: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """Pass 1 of the two-pass mode: each relevant doc's score exactly as its score block computes it
    (blocks without relevant docs are not read)."""
    own = torch.full(R.shape, float("inf"), dtype=qc.dtype, device=qc.device)
    for c, e, blk in d.blocks(want=lambda c, e: bool(((R >= c) & (R < e)).any())):
        ii, jj = ((R >= c) & (R < e)).nonzero(as_tuple=True)
        S = _block_scores(qc, blk, scratch)
        own[ii, jj] = S[ii, R[ii, jj] - c]
    return own


def _own_block(
    S: torch.Tensor,
    R: torch.Tensor,
    thr: torch.Tensor,
    c: int,
    e: int,
    counts: torch.Tensor,
    own: torch.Tensor,
    scratch: _Scratch,
) -> None:
    """Correct ``counts`` for the pairs whose relevant doc ``r`` lies in block ``[c, e)`` (scores ``S``)
    and record the score the block gave ``r`` in ``own``.

    ``r`` never counts itself, and of the docs tied with it only those before ``r`` count. Exact ties
    are rare, so equal scores are first counted per row and located only in rows that have some
    besides ``r``.
    """
    m, J = R.shape
    inside = (R >= c) & (R < e)
    ii, jj = inside.nonzero(as_tuple=True)
    if ii.numel() == 0:
        return
    loc = R[ii, jj] - c
    self_score = S[ii, loc]
    t_ij = thr[ii, jj]
    own[ii, jj] = self_score
    counts[ii, jj] -= (self_score > t_ij).to(torch.int64)
    if ii.numel() > m:  # most rows have a pair here (small corpus): compare whole columns
        n_eq = torch.zeros_like(counts)
        nan = torch.full_like(thr, float("nan"))  # NaN thresholds count nothing
        t_eq = torch.where(inside, thr, nan)
        for j in range(J):
            n_eq[:, j] = _count_cmp(S, t_eq[:, j].contiguous(), scratch, op=torch.eq)
        n_eq = n_eq[ii, jj]
    else:
        n_eq = _count_cmp(S, t_ij, scratch, rows=ii, op=torch.eq)
    tie = (n_eq - (self_score == t_ij).to(torch.int64) > 0).nonzero()[:, 0]
    col = torch.arange(e - c, device=S.device)
    for a, b in _chunks(tie.numel(), max(1, _COUNT_SLAB // (e - c))):
        p = tie[a:b]
        rows = S.index_select(0, ii[p])
        before = ((rows == t_ij[p, None]) & (col[None, :] < loc[p, None])).sum(1)
        counts[ii[p], jj[p]] += before


def _count_ahead(
    qc: torch.Tensor, d: _Docs, R: torch.Tensor, thr: torch.Tensor, scratch: _Scratch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (query, relevant doc) pair, the number of documents ranked ahead of it, given thresholds.

    A document ``j`` is ahead of relevant document ``r`` with threshold ``t`` when ``s_j > t``, or
    ``s_j == t`` and ``j < r``. Per block that is ``s > nextafter(t, -inf)`` (i.e. ``>=``) for blocks
    wholly before ``r``, ``s > t`` for blocks wholly after it, and a split count for ``r``'s own block
    (where ``r`` itself is never counted). Also returns the score ``r``'s own block gave it, so the
    caller can check that it equals ``t``.
    """
    m, J = R.shape
    counts = torch.zeros((m, J), dtype=torch.int64, device=qc.device)
    own = torch.full((m, J), float("nan"), dtype=qc.dtype, device=qc.device)
    thr_ge = torch.nextafter(thr, torch.full_like(thr, float("-inf")))
    valid = R >= 0
    dense = valid.sum(0) * 4 >= m  # columns worth comparing against the whole block
    sparse_rows = [None if bool(dense[j]) else valid[:, j].nonzero()[:, 0] for j in range(J)]
    for c, e, blk in d.blocks():
        S = _block_scores(qc, blk, scratch)
        t = torch.where(R >= e, thr_ge, thr)  # padding (R = -1) keeps thr = +inf: counts nothing
        for j in range(J):
            rows = sparse_rows[j]
            if rows is None:
                counts[:, j] += _count_cmp(S, t[:, j].contiguous(), scratch)
            elif rows.numel():
                counts[rows, j] += _count_cmp(S, t[rows, j], scratch, rows)
        _own_block(S, R, thr, c, e, counts, own, scratch)
    return counts, own


def _flatten_rel(rel: Sequence[np.ndarray], n_queries: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-query relevant doc indices (int64) with offsets; validate range and duplicates."""
    if len(rel) != n_queries:
        raise ValueError(f"rel has {len(rel)} entries but there are {n_queries} queries")
    lens = np.fromiter((np.size(r) for r in rel), dtype=np.int64, count=n_queries)
    offsets = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    flat = np.concatenate([np.asarray(r).reshape(-1) for r in rel])
    if flat.dtype.kind not in "iu":
        if flat.dtype.kind == "f" and np.all(flat == np.round(flat)):
            flat = flat.astype(np.int64)
        else:
            raise ValueError(f"relevant document indices must be integers, got dtype {flat.dtype}")
    flat = flat.astype(np.int64, copy=False)
    bad = (flat < 0) | (flat >= n_docs)
    if bad.any():
        p = int(np.argmax(bad))
        qi = int(np.searchsorted(offsets, p, side="right") - 1)
        raise ValueError(f"query {qi}: relevant document index {int(flat[p])} outside [0, {n_docs})")
    qid = np.repeat(np.arange(n_queries, dtype=np.int64), lens)
    key = np.sort(qid * n_docs + flat)
    dup = np.nonzero(key[1:] == key[:-1])[0]
    if dup.size:
        k = int(key[dup[0]])
        raise ValueError(f"query {k // n_docs}: relevant document {k % n_docs} listed twice")
    return flat, offsets


# --------------------------------------------------------------------------------------------------
# relevant-document ranks


def relevant_ranks_flat(
    q: ArrayLike,
    d: ArrayLike | EmbeddingStore,
    rel_flat: np.ndarray,
    offsets: np.ndarray,
    *,
    q_chunk: int = 4096,
    d_chunk: int | None = None,
    device: str | torch.device | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """:func:`relevant_ranks` on flattened input: ``rel_flat[offsets[i]:offsets[i+1]]`` are query ``i``'s.

    Returns the int64 ranks in the same flat layout (no per-query Python objects; used by the
    benchmark and by :func:`mlir.eval.metrics.compute_metrics` via :class:`~mlir.eval.metrics.FlatRanks`).
    Inputs are not validated here beyond shapes; :func:`relevant_ranks` validates. ``on_progress(n)``
    is called after each chunk of ``n`` queries (a progress bar's ``update``).
    """
    qt, dt = _as_matrix(q, "q"), _as_docs(d)
    d_chunk = _d_chunk(dt, d_chunk)
    _check_inputs(qt, dt, q_chunk, d_chunk)
    dev = resolve_device(device)
    dtype = _score_dtype(qt, dt)
    Q = qt.shape[0]
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (Q + 1,):
        raise ValueError(f"offsets must have {Q + 1} entries, got {offsets.shape}")
    ranks = np.zeros(int(offsets[-1]), dtype=np.int64)
    if ranks.size == 0:
        return ranks
    scratch = _Scratch(dtype, dev)
    two_pass = False
    n_recounted = 0
    with _exact_matmul():
        dd = _Docs(dt, dev, dtype, d_chunk)
        for a, b in _chunks(Q, q_chunk):
            if offsets[a] == offsets[b]:  # no relevant documents in this chunk
                if on_progress is not None:
                    on_progress(b - a)
                continue
            R_np, qloc, pos = _padded_rel(rel_flat, offsets, a, b)
            R = torch.from_numpy(R_np).to(dev)
            qc = qt[a:b].to(device=dev, dtype=dtype).contiguous()
            if two_pass:
                counts = _count_two_pass(qc, dd, R, scratch)
            else:
                counts, n_redo, two_pass = _count_one_pass(qc, dd, R, scratch)
                n_recounted += n_redo
            ranks[offsets[a] : offsets[b]] = counts.cpu().numpy()[qloc, pos] + 1
            if on_progress is not None:
                on_progress(b - a)
    if n_recounted:
        log.debug("relevant_ranks: %d queries recounted in two-pass mode", n_recounted)
    return ranks


def _count_one_pass(
    qc: torch.Tensor, d: _Docs, R: torch.Tensor, scratch: _Scratch
) -> tuple[torch.Tensor, int, bool]:
    """Counts against provisional thresholds; the queries where a threshold differs from the block's
    own score are recounted with :func:`_count_two_pass`. Returns (counts, number of recounted
    queries, whether so many were that the next chunks should be counted in two passes directly)."""
    thr = _provisional_scores(qc, d, R)
    counts, own = _count_ahead(qc, d, R, thr, scratch)
    redo = ((own != thr) & (R >= 0)).any(1).nonzero()[:, 0]
    n = int(redo.numel())
    if n:
        counts[redo] = _count_two_pass(qc[redo].contiguous(), d, R[redo], scratch)
    switch = n > _TWO_PASS_SWITCH * qc.shape[0]
    if switch:
        log.info(
            "relevant_ranks: %d/%d thresholds differ from block scores on %s; switching to two-pass counting",
            n,
            qc.shape[0],
            qc.device,
        )
    return counts, n, switch


_warned_nondeterministic = False


def _count_two_pass(qc: torch.Tensor, d: _Docs, R: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """Counts with thresholds taken from the blocks themselves (exact; costs a second GEMM pass)."""
    global _warned_nondeterministic
    own = _own_scores(qc, d, R, scratch)
    counts, own2 = _count_ahead(qc, d, R, own, scratch)
    if bool(((own2 != own) & (R >= 0)).any()) and not _warned_nondeterministic:
        _warned_nondeterministic = True
        log.warning(
            "relevant_ranks: the GEMM on %s is not deterministic; documents whose score is within "
            "rounding of a relevant document's may be ordered either way",
            qc.device,
        )
    return counts


def relevant_ranks(
    q: ArrayLike,
    d: ArrayLike | EmbeddingStore,
    rel: Sequence[np.ndarray],
    *,
    q_chunk: int = 4096,
    d_chunk: int | None = None,
    device: str | torch.device | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """1-based rank of each relevant document of each query in the full ranking of all ``C`` docs.

    Args:
        q: ``[Q, D]`` query embeddings (tensor or array; scored in float32 unless both are float64).
        d: ``[C, D]`` document embeddings, or an :class:`EmbeddingStore` read from disk a block at a time.
        rel: per query, the indices (into ``d``) of its relevant documents; may be empty; no repeats.
        q_chunk, d_chunk: score block size; peak memory is about ``q_chunk * d_chunk`` scores plus a
            64 MiB comparison buffer plus ``d`` itself (copied to the device) -- or, for a store, one
            block of ``d_chunk`` rows -- independent of ``Q``. ``d_chunk`` defaults to 65536 rows
            (a store's ``shard_size``).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        on_progress: called with the number of queries of each chunk (e.g. a progress bar's ``update``).

    Returns:
        per query, an int64 array aligned with ``rel[i]``: ``rank = 1 + #{j : s_j > s_r} +
        #{j : s_j == s_r and j < r}`` -- score descending, exact ties broken by document index
        ascending (lower index ranks first; see the module docstring for the trec_eval mapping).
    """
    qt, dt = _as_matrix(q, "q"), _as_docs(d)
    flat, offsets = _flatten_rel(rel, qt.shape[0], dt.shape[0])
    ranks = relevant_ranks_flat(
        qt, dt, flat, offsets, q_chunk=q_chunk, d_chunk=d_chunk, device=device, on_progress=on_progress
    )
    return np.split(ranks, offsets[1:-1])


# --------------------------------------------------------------------------------------------------
# top-k search


def _sort_desc_index_asc(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by score descending, equal scores by index ascending (two stable sorts)."""
    i, o = torch.sort(i, dim=1, stable=True)
    v = v.gather(1, o)
    v, o = torch.sort(v, dim=1, descending=True, stable=True)
    return v, i.gather(1, o)


def _block_topk(S: torch.Tensor, kk: int, scratch: _Scratch) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``kk`` of each row of ``S`` under the ranking rule, sorted; ties at the cut by lowest index.

    ``torch.topk`` picks arbitrarily among values equal to the k-th; rows where that matters (more
    than ``kk`` values >= the k-th) are redone with a cumulative count over the equal values.
    """
    v, i = S.topk(kk, dim=1, sorted=True)
    vk = v[:, -1].contiguous()
    n_ge = _count_cmp(S, torch.nextafter(vk, torch.full_like(vk, float("-inf"))), scratch)
    amb = (n_ge > kk).nonzero()[:, 0]
    if amb.numel():
        per = max(1, _COUNT_SLAB // S.shape[1])
        for a, b in _chunks(amb.numel(), per):
            rows = amb[a:b]
            Sa = S.index_select(0, rows)
            vr = vk[rows, None]
            gt = Sa > vr
            eq = Sa == vr
            need = kk - gt.sum(1, keepdim=True)
            sel = gt | (eq & (eq.cumsum(1) <= need))
            cols = sel.nonzero()[:, 1].view(-1, kk)  # row-major: exactly kk per row, index ascending
            i[rows] = cols
            v[rows] = Sa.gather(1, cols)
    return _sort_desc_index_asc(v, i)


def _topk_torch(
    qt: torch.Tensor, dt: torch.Tensor | EmbeddingStore, k: int, q_chunk: int, d_chunk: int, dev: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    dtype = _score_dtype(qt, dt)
    Q = qt.shape[0]
    scores = np.empty((Q, k), dtype=np.float64 if dtype == torch.float64 else np.float32)
    indices = np.empty((Q, k), dtype=np.int64)
    scratch = _Scratch(dtype, dev)
    with _exact_matmul():
        dd = _Docs(dt, dev, dtype, d_chunk)
        for a, b in _chunks(Q, q_chunk):
            qc = qt[a:b].to(device=dev, dtype=dtype).contiguous()
            best_v = best_i = None
            for c, e, blk in dd.blocks():
                S = _block_scores(qc, blk, scratch)
                v, i = _block_topk(S, min(k, e - c), scratch)
                i += c
                if best_v is None:
                    best_v, best_i = v, i
                else:
                    # earlier blocks hold lower indices, so a stable sort keeps them first on ties
                    v = torch.cat([best_v, v], 1)
                    i = torch.cat([best_i, i], 1)
                    v, o = torch.sort(v, dim=1, descending=True, stable=True)
                    best_v, best_i = v[:, :k], i.gather(1, o[:, :k])
            scores[a:b] = best_v.cpu().numpy()
            indices[a:b] = best_i.cpu().numpy()
    return scores, indices


def _faiss_gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _topk_faiss(
    qt: torch.Tensor, dt: torch.Tensor, k: int, q_chunk: int, dev: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(dt.shape[1])
    index.add(np.ascontiguousarray(dt.cpu().numpy(), dtype=np.float32))
    if dev.type == "cuda" and _faiss_gpu_available():
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, dev.index or 0, index)
    elif dev.type == "cuda":
        log.info("topk: this FAISS build has no GPU support; searching on the CPU")
    Q = qt.shape[0]
    scores = np.empty((Q, k), dtype=np.float32)
    indices = np.empty((Q, k), dtype=np.int64)
    for a, b in _chunks(Q, q_chunk):
        qc = np.ascontiguousarray(qt[a:b].cpu().numpy(), dtype=np.float32)
        scores[a:b], indices[a:b] = index.search(qc, k)
    return scores, indices


def _topk_faiss_checked(
    qt: torch.Tensor, dt: torch.Tensor | EmbeddingStore, k: int, q_chunk: int, dev: torch.device
) -> tuple[np.ndarray, np.ndarray] | None:
    """The FAISS backend's result, or ``None`` when GPU FAISS cannot return ``k`` (torch then runs)."""
    if isinstance(dt, EmbeddingStore):
        raise ConfigError(
            "backend 'faiss' needs the documents in memory; search a store with 'torch'", "backend"
        )
    try:
        import faiss  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            'backend \'faiss\' needs FAISS: pip install -e ".[faiss]" (CPU) or ".[gpu]" (CUDA 12)',
            "backend",
        ) from e
    if dev.type == "cuda" and _faiss_gpu_available() and k > FAISS_GPU_MAX_K:
        log.warning(
            "topk: GPU FAISS supports k <= %d, got k=%d; using the torch backend on %s",
            FAISS_GPU_MAX_K,
            k,
            dev,
        )
        return None
    return _topk_faiss(qt, dt, k, q_chunk, dev)


def topk(
    q: ArrayLike,
    d: ArrayLike | EmbeddingStore,
    k: int,
    *,
    backend: Literal["torch", "faiss"] = "torch",
    q_chunk: int = 4096,
    d_chunk: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product search: the ``k`` best documents of every query.

    Args:
        q: ``[Q, D]`` query embeddings; d: ``[C, D]`` document embeddings, or an
            :class:`EmbeddingStore` read from disk a block of ``d_chunk`` rows at a time (torch backend).
        k: number of neighbours; **clamped to C** (the outputs then have ``C`` columns), so asking
            for the top 1000 of a 500-document pool returns the full ranking instead of padding.
        backend: ``"torch"`` -- chunked matmul with a running top-k merge (memory
            ``O(q_chunk * (d_chunk + k))``), ranking exactly as :func:`relevant_ranks` (score
            descending, ties by lower index, including which tied documents make the cut);
            ``"faiss"`` -- ``IndexFlatIP``, on GPU (``StandardGpuResources`` + ``index_cpu_to_gpu``)
            when ``device`` is CUDA and FAISS was built with GPU support, else on CPU. GPU FAISS
            returns at most 2048 neighbours, so larger ``k`` on GPU falls back to the torch backend
            with a warning. FAISS orders tied scores arbitrarily.
        q_chunk, d_chunk: block sizes (``q_chunk`` is also the FAISS query batch); ``d_chunk``
            defaults to 65536 rows (a store's ``shard_size``).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Returns:
        ``(scores, indices)`` numpy arrays ``[Q, min(k, C)]``: float32 scores (float64 from the torch
        backend when both inputs are float64) sorted descending, and int64 document indices.
    """
    qt, dt = _as_matrix(q, "q"), _as_docs(d)
    d_chunk = _d_chunk(dt, d_chunk)
    _check_inputs(qt, dt, q_chunk, d_chunk)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if backend not in ("torch", "faiss"):
        raise ConfigError(f"unknown search backend {backend!r}; expected 'torch' or 'faiss'", "backend")
    dev = resolve_device(device)
    k = min(int(k), dt.shape[0])
    if k == 0:  # empty corpus
        return np.zeros((qt.shape[0], 0), np.float32), np.zeros((qt.shape[0], 0), np.int64)
    if backend == "faiss":
        found = _topk_faiss_checked(qt, dt, k, q_chunk, dev)
        if found is not None:
            return found
    return _topk_torch(qt, dt, k, q_chunk, d_chunk, dev)
