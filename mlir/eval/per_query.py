"""Per-query metrics next to ``metrics.json``: what paired significance tests between runs need.

Why a separate file: ``metrics.json`` holds means, and the study's tests (:mod:`mlir.study.stats`)
pair runs *per question* (hybrid minus baseline on the same question) from every query's own score. XQuAD-R held
out is ~35k (query, view) rows per benchmark with the cross pairs, so the file is a compressed,
columnar ``.npz`` (no pickle: loads with ``allow_pickle=False``).

Columns (one row per query and view; a view is a setting and a query/document language pair):

* ``benchmark``, ``setting`` (mono/cross/multi), ``q_lang``, ``d_lang`` (the searched language; ``*``
  for multi), ``qid`` (the parallel query id of the source data: the same question in every language)
* one float column per metric: ``ndcg@10``, ``map``, ``recall@k``, ``mrr@10``, and the multi setting's
  language-bias measures ``rank_distance``, ``mrc@10`` and ``peer@10`` (:mod:`mlir.eval.fairness`; NaN
  in the other settings and where undefined).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlir.core.atomic import open_atomic

KEYS = ("benchmark", "setting", "q_lang", "d_lang", "qid")


def to_columns(views: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Flatten :func:`mlir.eval.runner.evaluate`'s ``per_query`` entries into equal-length columns."""
    metrics = sorted({m for v in views for m in v["metrics"]})
    cols: dict[str, list] = {k: [] for k in (*KEYS, *metrics)}
    for v in views:
        n = len(v["qid"])
        for k in KEYS[:-1]:
            cols[k].extend([str(v[k])] * n)
        cols["qid"].extend(str(q) for q in v["qid"])
        for m in metrics:
            vals = v["metrics"].get(m)
            cols[m].extend(np.full(n, np.nan) if vals is None else np.asarray(vals, dtype=np.float64))
    out = {k: np.asarray(cols[k], dtype=str) for k in KEYS}
    out.update({m: np.asarray(cols[m], dtype=np.float64) for m in metrics})
    return out


def write_per_query(path: str | os.PathLike, views: Sequence[dict[str, Any]]) -> Path:
    """Write ``views`` as a compressed ``.npz`` atomically (a crash never leaves half a file)."""
    cols = to_columns(views)
    with open_atomic(path, "wb") as f:  # a file object: np.savez would append .npz to a temp path
        np.savez_compressed(f, **cols)
    return Path(path)


def read_per_query(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a per-query file (see the module doc)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
