"""Retrieval metrics computed from the ranks of relevant documents (binary; graded for nDCG).

Because :func:`mlir.eval.search.relevant_ranks` ranks the *whole* corpus, every relevant document of
a query has a rank, and each metric below is a closed-form function of those ranks -- no run files,
no truncated top-k lists. Definitions follow trec_eval (as exposed by pytrec_eval):

* ``ndcg@k`` = trec_eval ``ndcg_cut_k``: gain 1 per relevant doc, discount ``1/log2(rank + 1)``; the
  ideal DCG places *all* of the query's relevant docs first (``min(n_rel, k)`` ideal positions), so a
  relevant doc that misses the top ``k`` lowers the score. torchmetrics' ``RetrievalNormalizedDCG``
  builds the ideal only from the documents it is given, so on top-k lists it overestimates. With
  graded relevance (``gains``: one positive grade per relevant doc, e.g. a BEIR qrels ``score``) the
  gain of a doc is its grade (trec_eval's default linear gains) and the ideal orders the query's
  grades descending; AP, recall and MRR still count every listed doc as relevant (grade > 0).
* ``map`` = trec_eval ``map`` over the full ranking: mean over relevant docs of precision at its rank
  (:func:`average_precision` with ``k``: of a run cut at depth ``k``, e.g. the TREC run files' 1000).
* ``recall@k`` = trec_eval ``recall_k``; ``mrr@k`` = trec_eval ``recip_rank`` cut at ``k``
  (``1 / first relevant rank`` if it is ``<= k``, else 0).
* ``rank_distance`` = max minus min rank among a query's relevant docs: with parallel relevant
  passages in several languages in one multilingual pool, how far apart the model ranks the same
  content in different languages (the "maximum rank distance" language-bias measure; 0 is unbiased).

Per-query values are float64 arrays. A query without relevant documents gets NaN for every metric,
and ``rank_distance`` is NaN for fewer than two relevant documents (a distance needs two); NaNs are
left out of the averages of :func:`mean_metrics` / :func:`macro_average`, and
:func:`defined_counts` says how many queries each average covers.

Everything is vectorised over one flat array of ranks plus offsets (``np.bincount`` over query ids),
so 100k queries cost milliseconds, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class FlatRanks(NamedTuple):
    """Ranks of all queries in one array: query ``i`` owns ``flat[offsets[i]:offsets[i + 1]]``."""

    flat: np.ndarray  # int64, 1-based ranks
    offsets: np.ndarray  # int64, length Q + 1, offsets[0] == 0

    @property
    def n_queries(self) -> int:
        return len(self.offsets) - 1


RanksLike = Sequence[np.ndarray] | FlatRanks


def flatten_ranks(ranks: RanksLike) -> FlatRanks:
    """Concatenate per-query rank arrays into a :class:`FlatRanks` (no-op for a FlatRanks)."""
    if isinstance(ranks, FlatRanks):
        return FlatRanks(np.asarray(ranks.flat, np.int64), np.asarray(ranks.offsets, np.int64))
    lens = np.fromiter((np.size(r) for r in ranks), dtype=np.int64, count=len(ranks))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = (
        np.concatenate([np.asarray(r).reshape(-1) for r in ranks]).astype(np.int64, copy=False)
        if offsets[-1]
        else np.zeros(0, np.int64)
    )
    return FlatRanks(flat, offsets)


@dataclass
class _Segments:
    """Flat ranks with per-query bookkeeping shared by all metrics (built once per call)."""

    flat: np.ndarray  # ranks in input order
    sorted: np.ndarray  # ranks sorted ascending within each query
    offsets: np.ndarray
    qid: np.ndarray  # query id of each flat entry
    n: np.ndarray  # relevant docs per query

    @property
    def n_queries(self) -> int:
        return len(self.n)


def _segments(ranks: RanksLike | _Segments) -> _Segments:
    if isinstance(ranks, _Segments):
        return ranks
    fr = flatten_ranks(ranks)
    n = np.diff(fr.offsets)
    qid = np.repeat(np.arange(len(n), dtype=np.int64), n)
    flat = fr.flat
    if flat.size and flat.min() < 1:
        raise ValueError(f"ranks are 1-based; got {int(flat.min())}")
    span = int(flat.max()) + 1 if flat.size else 1
    # one integer sort orders queries and, within each, ranks (qid is already non-decreasing)
    key = np.sort(qid * span + flat)
    return _Segments(flat, key - qid * span, fr.offsets, qid, n)


def _per_query_sum(seg: _Segments, values: np.ndarray) -> np.ndarray:
    return np.bincount(seg.qid, weights=values, minlength=seg.n_queries)


def _undefined_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    values[mask] = np.nan
    return values


def _check_k(k: int, name: str = "k") -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


GainsLike = Sequence[np.ndarray] | np.ndarray


def _flat_gains(gains: GainsLike, seg: _Segments) -> np.ndarray:
    """Per-query gain arrays (aligned with the ranks) as one float64 array in the flat order."""
    if isinstance(gains, np.ndarray) and gains.dtype != object and gains.ndim == 1:
        flat = gains.astype(np.float64, copy=False)
    else:
        if len(gains) != seg.n_queries:
            raise ValueError(f"gains has {len(gains)} entries but there are {seg.n_queries} queries")
        parts = [np.asarray(g, dtype=np.float64).reshape(-1) for g in gains]
        flat = np.concatenate(parts) if parts else np.zeros(0, np.float64)
    if flat.shape != seg.flat.shape:
        raise ValueError(f"gains has {flat.size} values but there are {seg.flat.size} relevant ranks")
    return flat


def ndcg_at_k(ranks: RanksLike, k: int = 10, gains: GainsLike | None = None) -> np.ndarray:
    """Per-query nDCG@k with trec_eval's ideal (all relevant docs), log2 discount; binary gains, or
    ``gains`` (the grade of every relevant doc, aligned with ``ranks``: trec_eval ``ndcg_cut``)."""
    seg = _segments(ranks)
    k = _check_k(k)
    f = seg.flat
    if gains is None:
        gains = np.where(f <= k, 1.0 / np.log2(f.astype(np.float64) + 1.0), 0.0)
        dcg = _per_query_sum(seg, gains)
        ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))])
        idcg = ideal[np.minimum(seg.n, k)]
    else:
        g = _flat_gains(gains, seg)
        dcg = _per_query_sum(seg, np.where(f <= k, g / np.log2(f.astype(np.float64) + 1.0), 0.0))
        # the ideal ranking: each query's grades descending, at positions 1..n_rel
        order = np.lexsort((-g, seg.qid))
        pos = np.arange(g.size, dtype=np.int64) - seg.offsets[seg.qid] + 1
        ideal_g = np.where(pos <= k, g[order] / np.log2(pos.astype(np.float64) + 1.0), 0.0)
        idcg = _per_query_sum(seg, ideal_g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _undefined_where(dcg / idcg, seg.n == 0)


def average_precision(ranks: RanksLike, k: int | None = None) -> np.ndarray:
    """Per-query average precision over the full ranking (trec_eval ``map`` with all docs retrieved).

    ``k``: AP of the top ``k`` only (trec_eval ``map`` of a run cut at depth ``k``, ir_measures
    ``AP@k``): relevant documents ranked below ``k`` add no precision but still count in the divisor.
    """
    seg = _segments(ranks)
    pos = np.arange(seg.sorted.size, dtype=np.float64) - seg.offsets[seg.qid] + 1.0  # 1..n_rel
    prec = pos / seg.sorted
    if k is not None:
        prec = np.where(seg.sorted <= _check_k(k), prec, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = _per_query_sum(seg, prec) / seg.n
    return _undefined_where(ap, seg.n == 0)


def recall_at_k(ranks: RanksLike, k: int) -> np.ndarray:
    """Per-query fraction of relevant docs ranked in the top ``k`` (trec_eval ``recall_k``)."""
    seg = _segments(ranks)
    k = _check_k(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = _per_query_sum(seg, (seg.flat <= k).astype(np.float64)) / seg.n
    return _undefined_where(r, seg.n == 0)


def _first_last(seg: _Segments) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest relevant rank per query (0 where a query has no relevant docs)."""
    has = seg.n > 0
    first = np.zeros(seg.n_queries, dtype=np.int64)
    last = np.zeros(seg.n_queries, dtype=np.int64)
    first[has] = seg.sorted[seg.offsets[:-1][has]]
    last[has] = seg.sorted[seg.offsets[1:][has] - 1]
    return first, last


def mrr_at_k(ranks: RanksLike, k: int | None = 10) -> np.ndarray:
    """Per-query reciprocal rank of the first relevant doc, 0 beyond rank ``k`` (``None``: no cut)."""
    seg = _segments(ranks)
    first, _ = _first_last(seg)
    with np.errstate(divide="ignore"):
        rr = 1.0 / first.astype(np.float64)
    if k is not None:
        rr = np.where(first <= _check_k(k), rr, 0.0)
    return _undefined_where(rr, seg.n == 0)


def rank_distance(ranks: RanksLike) -> np.ndarray:
    """Per-query max minus min rank among the relevant docs; NaN with fewer than 2 relevant docs."""
    seg = _segments(ranks)
    first, last = _first_last(seg)
    return _undefined_where((last - first).astype(np.float64), seg.n < 2)


_rank_distance = rank_distance  # compute_metrics' flag of the same name shadows the function


def compute_metrics(
    ranks: RanksLike,
    ks: Sequence[int] = (1, 5, 10, 100),
    rank_distance: bool = False,
    *,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    gains: GainsLike | None = None,
) -> dict[str, np.ndarray]:
    """All per-query metrics from relevant ranks, keyed ``ndcg@10``, ``map``, ``recall@{k}``, ``mrr@10``
    (and ``rank_distance`` when asked). The ranks are flattened and sorted once for all metrics.
    ``gains``: graded relevance of every relevant doc (aligned with ``ranks``; nDCG only), ``None``:
    binary (a view's :attr:`~mlir.eval.tasks.SettingQueries.gains`).
    """
    seg = _segments(ranks)
    out = {f"ndcg@{ndcg_k}": ndcg_at_k(seg, ndcg_k, gains), "map": average_precision(seg)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(seg, k)
    out[f"mrr@{mrr_k}"] = mrr_at_k(seg, mrr_k)
    if rank_distance:
        out["rank_distance"] = _rank_distance(seg)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def mean_metrics(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-query metric over the queries where it is defined (NaN if none is)."""
    return {name: _nanmean(v) for name, v in per_query.items()}


def defined_counts(per_query: Mapping[str, np.ndarray]) -> dict[str, int]:
    """How many queries each metric's mean covers (e.g. rank distance needs 2+ relevant docs)."""
    return {name: int((~np.isnan(np.asarray(v, dtype=np.float64))).sum()) for name, v in per_query.items()}


def macro_average(per_lang: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Average each metric per language (over defined queries), then over languages equally.

    Macro-averaging keeps a language with many queries from dominating a multilingual score. A
    language where a metric is undefined for every query (or absent) is left out of that metric's
    average; a metric undefined everywhere is NaN.
    """
    means = {lang: mean_metrics(m) for lang, m in per_lang.items()}
    names: list[str] = []
    for m in means.values():
        names += [n for n in m if n not in names]
    return {n: _nanmean(np.array([m.get(n, np.nan) for m in means.values()])) for n in names}
