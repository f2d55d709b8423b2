"""TREC run and qrels files of every evaluated view, for trec_eval, ir_measures, pytrec_eval and ranx.

With ``eval.run_dir`` set, each view of each benchmark (``docs/evaluation.md``) gets two files::

    {run_dir}/{benchmark}/{setting}/{key}.run.trec     qid Q0 docno rank score tag   (top ``depth``)
    {run_dir}/{benchmark}/{setting}/{key}.qrels.trec   qid 0 docno 1                  (its relevant documents)

and once per benchmark the documents and queries behind them (:func:`write_collection`)::

    {run_dir}/{benchmark}/docs.jsonl                   {"id": docno, "contents": text, "lang": lang}
    {run_dir}/{benchmark}/queries/{lang}.tsv           qid<TAB>text

``key`` is the query language for ``mono`` and ``multi`` and ``{query}-{document}`` for ``cross``;
``qid`` is the dataset's parallel query id (the ``qid`` column of ``per_query.npz``) and ``docno`` is
``{lang}:{id}`` with the task's stable document ids (:attr:`mlir.eval.tasks.RetrievalTask.doc_ids`),
so the same document has the same docno in every view, fold and subsample. Whitespace and ``%`` in
an id are percent-encoded (the format is whitespace-separated).

**Order and ties.** A run lists documents in mlir's ranking (:mod:`mlir.eval.search`: score
descending, exact ties by pool position) with ranks 1..depth. trec_eval (so pytrec_eval and
ir_measures) reads scores as float32 and orders equal ones by docno, ranx by its own sort; so that
every tool ranks exactly as mlir did, the written scores are made *strictly* decreasing float32
values: each is the model's score, or one float32 step below the score written above it when that is
higher (a document tied with the one above, and the few that follow closer than a step). A tied group
of n documents moves scores by at most n float32 steps (~1e-7 relative). Scores are written with 9
significant digits, which read back as the same float32. The qrels hold exactly the view's evaluated
queries, relevance 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlir.core.atomic import open_atomic
from mlir.eval.tasks import SETTINGS, RetrievalTask, SettingQueries

#: Documents per query in a run file (``eval.run_depth``); clamped to the searched documents.
DEPTH = 1000
#: Queries per top-k call while writing a run (bounds the ``[queries, depth]`` score arrays).
QUERY_CHUNK = 2048
_UNSAFE = re.compile(r"[\s%]")


@dataclass(frozen=True)
class RunFiles:
    """Where and what to write: ``eval.run_dir``, ``eval.run_depth``, ``eval.run_settings``."""

    dir: str
    depth: int = DEPTH
    settings: tuple[str, ...] = SETTINGS


def trec_id(value: Any) -> str:
    """A TREC-safe id: whitespace and ``%`` become ``%XX`` (UTF-8 bytes); anything else is kept."""
    s = str(value)
    if not s:
        return "%00"  # an empty id would shift the columns
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), s)


def docnos(task: RetrievalTask, doc_langs: Sequence[str]) -> list[str]:
    """The docnos of the concatenated documents of ``doc_langs`` (the order the view searches)."""
    assert task.doc_ids is not None
    return [f"{trec_id(x)}:{trec_id(i)}" for x in doc_langs for i in task.doc_ids[x]]


def view_qids(task: RetrievalTask, view: SettingQueries) -> list[str]:
    """The view's query ids; a repeated id (never in the shipped benchmarks) gets ``#2``, ``#3``..."""
    out, seen = [], {}
    for i in view.qids.tolist():
        q = trec_id(task.query_ids[i])
        n = seen[q] = seen.get(q, 0) + 1
        out.append(q if n == 1 else f"{q}#{n}")
    return out


def strictly_decreasing(scores: np.ndarray) -> np.ndarray:
    """float32 rows in ranking order made strictly decreasing: ``s'_r = min(s_r, prev(s'_{r-1}))``.

    ``prev`` is the next float32 below. In the order-preserving integer image of float32 this is one
    cumulative minimum: ``k'_r = min_{j <= r}(k_j + j) - r``.
    """
    s = np.asarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0 (they compare equal)
    bits = s.view(np.int32).astype(np.int64)
    key = np.where(bits >= 0, bits, -(bits + 2**31))  # increasing with the value; -0.0 never occurs
    r = np.arange(s.shape[-1], dtype=np.int64)
    key = np.minimum.accumulate(key + r, axis=-1) - r
    bits = np.where(key >= 0, key, -key - 2**31)
    return bits.astype(np.int32).view(np.float32)


def score_strings(scores: np.ndarray) -> list[list[str]]:
    """The run file's score column of rows in ranking order (see the module doc on ties): strictly
    decreasing float32 values, 9 significant digits (enough to read back every float32 exactly)."""
    return [[f"{x:.9g}" for x in row] for row in strictly_decreasing(scores).astype(np.float64).tolist()]


def write_qrels(
    path: str | Path,
    qids: Sequence[str],
    rel: Sequence[np.ndarray],
    names: Sequence[str],
    gains: Sequence[np.ndarray] | None = None,
) -> Path:
    """``qid 0 docno grade`` for every relevant document (``rel[i]`` index ``names``; the grade is
    ``gains[i]``, 1 for binary benchmarks), atomically."""
    path = Path(path)
    with open_atomic(path) as f:
        for i, (q, r) in enumerate(zip(qids, rel)):
            grades = [1] * len(r) if gains is None else np.asarray(gains[i]).tolist()
            f.writelines(f"{q} 0 {names[d]} {int(g)}\n" for d, g in zip(np.asarray(r).tolist(), grades))
    return path


def write_run(
    path: str | Path,
    qids: Sequence[str],
    q_emb: torch.Tensor,
    d_emb: torch.Tensor,
    names: Sequence[str],
    *,
    depth: int = DEPTH,
    tag: str = "mlir",
    device: Any = None,
) -> Path:
    """The top ``depth`` documents of every query (rows of ``q_emb``) as a TREC run, atomically.

    Ranked by :func:`mlir.eval.search.topk` (torch backend: mlir's ranking rule, ties included), in
    chunks of :data:`QUERY_CHUNK` queries so the file streams whatever the number of queries.
    """
    from mlir.eval.search import topk

    path = Path(path)
    tag = trec_id(tag)
    names_a = np.asarray(names, dtype=object)
    with open_atomic(path) as f:
        for a in range(0, q_emb.shape[0], QUERY_CHUNK):
            b = min(a + QUERY_CHUNK, q_emb.shape[0])
            scores, idx = topk(q_emb[a:b], d_emb, depth, device=device)
            ranks = [str(r) for r in range(1, idx.shape[1] + 1)]
            for q, row_s, row_i in zip(qids[a:b], score_strings(scores), idx):
                f.writelines(f"{q} Q0 {d} {r} {s} {tag}\n" for d, r, s in zip(names_a[row_i], ranks, row_s))
    return path


def write_collection(run_dir: str | Path, task: RetrievalTask) -> tuple[Path, list[Path]]:
    """The documents and queries behind the runs, to index with another system (BM25...) and fuse.

    ``{run_dir}/{benchmark}/docs.jsonl``: ``{"id": docno, "contents": text, "lang": lang}`` per
    candidate (Pyserini's JsonCollection format); ``queries/{lang}.tsv``: ``qid<TAB>text`` per query
    of that language (whitespace in a text collapsed to single spaces).
    """
    from mlir.data.io import write_jsonl

    base = Path(run_dir) / trec_id(task.name)
    docs = write_jsonl(
        base / "docs.jsonl",
        (
            {"id": name, "contents": text, "lang": x}
            for x in task.langs
            for name, text in zip(docnos(task, [x]), task.docs[x])
        ),
    )
    topics = []
    for x in task.langs:
        q = task.queries[x]
        path = base / "queries" / f"{trec_id(x)}.tsv"
        with open_atomic(path) as f:
            f.writelines(
                f"{trec_id(task.query_ids[i])}\t{' '.join(t.split())}\n"
                for i, t in zip(q.ids.tolist(), q.texts)
            )
        topics.append(path)
    return docs, topics


def view_paths(run_dir: str | Path, benchmark: str, setting: str, key: str) -> tuple[Path, Path]:
    """(run, qrels) paths of one view (see the module doc)."""
    base = Path(run_dir) / trec_id(benchmark) / setting
    return base / f"{trec_id(key)}.run.trec", base / f"{trec_id(key)}.qrels.trec"


def write_view(
    run_dir: str | Path,
    task: RetrievalTask,
    setting: str,
    key: str,
    view: SettingQueries,
    q_emb: torch.Tensor,
    d_emb: torch.Tensor,
    *,
    depth: int = DEPTH,
    device: Any = None,
) -> tuple[Path, Path]:
    """Run and qrels of one view: ``q_emb`` are the query language's embeddings (all its queries;
    the view's rows are taken), ``d_emb`` the searched documents (``view.doc_langs``, concatenated)."""
    run, qrels = view_paths(run_dir, task.name, setting, key)
    names = docnos(task, view.doc_langs)
    qids = view_qids(task, view)
    write_qrels(qrels, qids, view.rel, names, view.gains)
    write_run(run, qids, q_emb[torch.from_numpy(view.rows)], d_emb, names, depth=depth, device=device)
    return run, qrels
