"""Run benchmarks on an encoder and return FLAT metric keys.

Keys (``{benchmark}`` is the configured name, e.g. ``xquad_r``, ``mkqa``, ``xquad_r_mkqa``):

* ``{benchmark}/{setting}/{metric}/{lang}``: mean over the queries asked in ``lang`` (the *query*
  language). For ``cross`` it is the mean over that query language's target languages of the per-pair
  means; with ``cross.pair_keys: true`` the pairs are also reported as ``{benchmark}/cross/{metric}/{x}-{y}``.
* ``{benchmark}/{setting}/{metric}``: the macro average over query languages.
* ``{benchmark}/avg/{metric}``: the mean of the settings' macro averages (mono, cross, multi as run) for
  every metric they share; ``{benchmark}/avg/ndcg@10`` is the default checkpoint/early-stopping monitor.
* ``{benchmark}/multi/rank_distance[/{lang}]``: language bias in the multilingual pool (see
  :func:`mlir.eval.tasks.language_rank_distance`), averaged over a language's queries with at least two
  languages' relevant documents, then over languages. ``{benchmark}/multi/rank_distance_queries`` and
  ``.../rank_distance_undefined`` count the multi queries with a distance and those left out (their
  relevant documents are in fewer than two languages of the pool; MLQA-R questions exist in 2 to 4).

* ``{benchmark}/multi/mrc@10[/{lang}]`` and ``{benchmark}/multi/peer@10[/{lang}]``: the language-fairness
  measures of :mod:`mlir.eval.fairness` (``fairness_k``, 10 by default; ``None`` leaves them out). MRC@k:
  Spearman correlation of the top-k lists of the same question asked in two languages, averaged over
  the other languages, then over a language's queries; PEER@k: the Kruskal-Wallis p-value of equal
  expected rank of a query's relevant documents across their languages (undefined, like the rank
  distance, for relevant documents in fewer than two languages). Neither enters ``avg``.

``metric`` is one of the names :func:`mlir.eval.metrics.compute_metrics` returns (``ndcg@10``, ``map``,
``recall@1/5/10/100``, ``mrr@10``). All of them come from the rank of *every* relevant document in the
full ranking (:func:`mlir.eval.search.relevant_ranks`, by counting), never from a truncated top-k list.
Undefined values (a language without evaluable queries; rank distance with a single language) are left
out rather than reported as NaN. With ``runs``, every view is also written as a TREC run and qrels
(:mod:`mlir.eval.trec`; definitions and file layout in ``docs/evaluation.md``). With ``on_disk``
(``eval.embeddings_dir``), each benchmark's candidates are encoded into a ``.npy`` file and every search
reads them from there a shard at a time (:mod:`mlir.eval.embedding_store`): corpora larger than memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks import Benchmark, load_benchmarks
from mlir.eval.embedding_store import Docs, OnDiskCorpus, check_shard_size, row_range, take_rows
from mlir.eval.encode import DistInfo, EmbeddingCache, encode_texts, encode_to_store
from mlir.eval.progress import AUTO, bar, console_above_bars, enabled
from mlir.eval.tasks import SETTINGS, RetrievalTask, SettingQueries, language_rank_distance
from mlir.eval.trec import DEPTH, RunFiles

log = logging.getLogger(__name__)


def _slices(sizes: Sequence[int]) -> list[slice]:
    out, start = [], 0
    for n in sizes:
        out.append(slice(start, start + n))
        start += n
    return out


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


#: Queries per ``relevant_ranks`` call when views sharing a document set are ranked together.
MAX_QUERIES_PER_CALL = 65536
#: Cutoff of the multi setting's fairness measures (MRC@k, PEER@k; :mod:`mlir.eval.fairness`).
FAIRNESS_K = 10
#: Metrics of the multi setting only (language bias / fairness): never averaged into ``avg``.
_MULTI_ONLY = ("rank_distance", "mrc@", "peer@")


def _multi_only(metric: str) -> bool:
    return metric == _MULTI_ONLY[0] or metric.startswith(_MULTI_ONLY[1:])


def _rank_jobs(
    jobs: list[tuple[SettingQueries, torch.Tensor, Docs]],
    device: Any,
    on_progress: Callable[[int], None] | None = None,
) -> list[list[np.ndarray]]:
    """Relevant ranks of several views searching the SAME documents, in few ``relevant_ranks`` calls.

    Each job is (view, that view's query-language embeddings, the searched document embeddings). Stacking
    the views' queries (e.g. the 10 source languages of one cross target, plus its mono queries) gives
    the same ranks as one call per view, without paying the per-call setup 110 times on XQuAD-R.
    """
    from mlir.eval.search import relevant_ranks

    out: list[list[np.ndarray]] = [[] for _ in jobs]
    i = 0
    while i < len(jobs):
        j, n = i, 0
        while j < len(jobs) and (j == i or n + len(jobs[j][0].rows) <= MAX_QUERIES_PER_CALL):
            n += len(jobs[j][0].rows)
            j += 1
        batch = [k for k in range(i, j) if len(jobs[k][0].rows)]
        if batch:
            q = torch.cat([jobs[k][1][torch.from_numpy(jobs[k][0].rows)] for k in batch])
            rel = [r for k in batch for r in jobs[k][0].rel]
            ranks = relevant_ranks(q, jobs[batch[0]][2], rel, device=device, on_progress=on_progress)
            start = 0
            for k in batch:
                m = len(jobs[k][0].rows)
                out[k] = ranks[start : start + m]
                start += m
        i = j
    return out


def _view_metrics(
    view: SettingQueries,
    ranks: list[np.ndarray],
    q_emb: torch.Tensor,
    d_emb: Docs,
    ks: Sequence[int],
    multi: bool,
    fairness_k: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-query metric arrays of one view from its relevant ranks; a multi view adds the rank
    distance and, with ``fairness_k``, PEER@k (MRC@k needs every language: :func:`_add_mrc`)."""
    from mlir.eval.fairness import peer_at_k
    from mlir.eval.metrics import compute_metrics

    if not len(view.rows):
        return {}
    per_query = dict(compute_metrics(ranks, ks=tuple(ks), gains=view.gains))  # None: binary
    if multi:
        q = q_emb[torch.from_numpy(view.rows)]
        scores = _relevant_scores(q, d_emb, view.rel)
        per_query["rank_distance"] = language_rank_distance(ranks, view.rel_lang, scores)
        if fairness_k:
            per_query[f"peer@{fairness_k}"] = peer_at_k(ranks, view.rel_lang, fairness_k, scores)
    return per_query


def _add_mrc(
    views: list[View],
    per_query: list[dict[str, np.ndarray]],
    queries_of: Callable[[str], torch.Tensor],
    pool: Docs,
    k: int,
    device: Any,
) -> None:
    """MRC@k of every multi view's queries (same question, other languages, same pool), in place."""
    from mlir.eval.fairness import mrc_at_k
    from mlir.eval.search import topk

    tops = {}
    for (setting, _, v, _), pq in zip(views, per_query):
        if setting == "multi" and pq:
            _, idx = topk(queries_of(v.q_lang)[torch.from_numpy(v.rows)], pool, k, device=device)
            tops[v.q_lang] = (v.qids, idx)
    mrc = mrc_at_k(tops)
    for (setting, _, v, _), pq in zip(views, per_query):
        if setting == "multi" and pq:
            pq[f"mrc@{k}"] = mrc[v.q_lang]


def _relevant_scores(q: torch.Tensor, d: Docs, rel: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Inner products of each query with its relevant documents, one row-wise reduction per pair.

    Element-wise product then a sum over the last dimension reduces every pair the same way, so equal
    vectors give bit-identical scores (what :func:`language_rank_distance` needs to detect ties). An
    on-disk ``d`` is read a chunk of pairs at a time.
    """
    lens = [len(r) for r in rel]
    if not sum(lens):
        return [np.zeros(0) for _ in rel]
    qi = torch.repeat_interleave(torch.arange(len(rel)), torch.as_tensor(lens))
    di = torch.from_numpy(np.concatenate([np.asarray(r, dtype=np.int64) for r in rel]))
    s = np.empty(len(qi), dtype=np.float32)
    step = 1 << 16  # pairs per chunk: memory stays O(step * D) for MKQA's 10k x 26 pairs
    for a in range(0, len(qi), step):
        d_rows = take_rows(d, di[a : a + step])
        s[a : a + step] = (q[qi[a : a + step]].float() * d_rows.float()).sum(-1).numpy()
    return np.split(s, np.cumsum(lens)[:-1])


View = tuple[str, str, SettingQueries, str]  # (setting, key, view, searched: a language or "*")


def _task_views(
    task: RetrievalTask, settings: Sequence[str], pairs: Sequence[tuple[str, str]] | None
) -> list[View]:
    """Every view of the task to score, with the documents it searches (one language, or the pool)."""
    views: list[View] = []
    if "mono" in settings:
        views += [("mono", x, task.view(x, [x]), x) for x in task.langs]
    if "cross" in settings:
        pairs = list(pairs) if pairs is not None else task.cross_pairs()
        views += [("cross", f"{x}-{y}", task.view(x, [y]), y) for x, y in pairs]
    if "multi" in settings:
        views += [("multi", x, task.view(x, task.langs), "*") for x in task.langs]
    return views


def _rank_views(
    views: list[View],
    queries_of: Callable[[str], torch.Tensor],
    docs_of: Callable[[str], Docs],
    device: Any,
    pbar: Any = None,
) -> dict[int, list[np.ndarray]]:
    """Relevant ranks of every view (by position), views searching the same documents ranked together;
    ``pbar`` (a progress bar) counts the queries searched."""
    ranks: dict[int, list[np.ndarray]] = {}
    for searched in dict.fromkeys(v[3] for v in views):
        idx = [i for i, v in enumerate(views) if v[3] == searched]
        d = docs_of(searched)
        jobs = [(views[i][2], queries_of(views[i][2].q_lang), d) for i in idx]
        for i, r in zip(idx, _rank_jobs(jobs, device, pbar.update if pbar is not None else None)):
            ranks[i] = r
    return ranks


def _per_query_entry(
    task: RetrievalTask, setting: str, key: str, view: SettingQueries, per_query: dict[str, np.ndarray]
) -> dict[str, Any]:
    """One view's per-query metrics with its query ids and languages (see :mod:`mlir.eval.per_query`)."""
    d_lang = key.split("-", 1)[1] if setting == "cross" else ("*" if setting == "multi" else key)
    return {
        "benchmark": task.name,
        "setting": setting,
        "q_lang": view.q_lang,
        "d_lang": d_lang,
        "qid": [str(task.query_ids[i]) for i in view.qids],
        "metrics": per_query,
    }


def _view_counts(view: SettingQueries, per_query: dict[str, np.ndarray]) -> dict[str, int]:
    """A view's query counts; with a rank distance, how many queries have none (relevant documents in
    fewer than two languages)."""
    out = {"queries": len(view.rows), "dropped": view.dropped, "merged": view.merged}
    if "rank_distance" in per_query:
        out["rank_distance_undefined"] = int(np.isnan(per_query["rank_distance"]).sum())
    return out


def _setting_keys(name: str, per_lang: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Per-language keys, each setting's macro average over languages, and their mean (``avg``)."""
    out: dict[str, float] = {}
    macro: dict[str, dict[str, float]] = {}
    for setting, res in per_lang.items():
        metrics = sorted({m for r in res.values() for m in r})
        for metric in metrics:
            for lang, r in res.items():
                out[f"{name}/{setting}/{metric}/{lang}"] = r[metric]
            macro.setdefault(setting, {})[metric] = out[f"{name}/{setting}/{metric}"] = _mean(
                np.array([r[metric] for r in res.values() if metric in r])
            )
    shared = set.intersection(*(set(m) for m in macro.values())) if macro else set()
    for metric in sorted(m for m in shared if not _multi_only(m)):
        out[f"{name}/avg/{metric}"] = _mean(np.array([macro[s][metric] for s in macro]))
    return out


def _flat_keys(
    name: str, settings: Sequence[str], scored: list[tuple[str, str, str, dict[str, float]]], pair_keys: bool
) -> dict[str, float]:
    """The flat keys of the scored views (setting, key, query language, metric means); cross results
    are first averaged over each query language's target languages."""
    out: dict[str, float] = {}
    per_lang: dict[str, dict[str, dict[str, float]]] = {s_: {} for s_ in SETTINGS if s_ in settings}
    by_src: dict[str, list[dict[str, float]]] = {}
    for setting, key, q_lang, m in scored:
        if setting == "cross":
            by_src.setdefault(q_lang, []).append(m)
            if pair_keys:
                for metric, val in m.items():
                    out[f"{name}/cross/{metric}/{key}"] = val
        else:
            per_lang[setting][key] = m
    if "cross" in per_lang:
        per_lang["cross"] = {
            x: {metric: _mean(np.array([m[metric] for m in ms])) for metric in ms[0]}
            for x, ms in by_src.items()
        }
    out.update(_setting_keys(name, per_lang))
    return out


def _bias_counts(name: str, counts: dict[str, dict[str, dict[str, int]]]) -> dict[str, float]:
    """How many multi queries have a rank distance, and how many have none (their relevant documents
    are in fewer than two languages); no keys when no view measured it."""
    views = [c for cs in counts.values() for c in cs.values() if "rank_distance_undefined" in c]
    n = sum(c["queries"] for c in views)
    undefined = sum(c["rank_distance_undefined"] for c in views)
    if not n:
        return {}
    return {
        f"{name}/multi/rank_distance_queries": float(n - undefined),
        f"{name}/multi/rank_distance_undefined": float(undefined),
    }


def _score_views(
    views: list[View],
    ranks: dict[int, list[np.ndarray]],
    queries_of: Callable[[str], torch.Tensor],
    docs_of: Callable[[str], Docs],
    ks: Sequence[int],
    fairness_k: int | None,
    pbar: Any,
) -> list[dict[str, np.ndarray]]:
    """Per-query metrics of every view, in order (``pbar``, a progress bar, counts the views)."""
    pqs = []
    for i, (setting, _, v, searched) in enumerate(views):
        pqs.append(
            _view_metrics(
                v, ranks[i], queries_of(v.q_lang), docs_of(searched), ks, setting == "multi", fairness_k
            )
        )
        pbar.update(1)
    return pqs


def _collect_views(
    task: RetrievalTask,
    views: list[View],
    pqs: list[dict[str, np.ndarray]],
    per_query: list[dict[str, Any]] | None,
) -> tuple[dict[str, dict[str, dict[str, int]]], list[tuple[str, str, str, dict[str, float]]]]:
    """(query counts per view, (setting, key, query language, metric means) per scored view); views
    without queries are left out. ``per_query`` receives each scored view's per-query entry."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    scored: list[tuple[str, str, str, dict[str, float]]] = []
    for (setting, key, v, _), pq in zip(views, pqs):
        if not pq:
            continue
        counts.setdefault(setting, {})[key] = _view_counts(v, pq)
        if per_query is not None:
            per_query.append(_per_query_entry(task, setting, key, v, pq))
        scored.append((setting, key, v.q_lang, {metric: _mean(x) for metric, x in pq.items()}))
    return counts, scored


def score_task(
    task: RetrievalTask,
    q_emb: torch.Tensor,
    d_emb: Docs,
    *,
    settings: Sequence[str] = SETTINGS,
    pairs: Sequence[tuple[str, str]] | None = None,
    ks: Sequence[int] = (1, 5, 10, 100),
    device: Any = None,
    pair_keys: bool = False,
    per_query: list[dict[str, Any]] | None = None,
    fairness_k: int | None = FAIRNESS_K,
    runs: RunFiles | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of one task from its embeddings.

    ``q_emb`` rows follow ``task.queries[lang].texts`` for ``lang`` in ``task.langs``, concatenated;
    ``d_emb`` rows follow ``task.docs[lang]`` likewise (a tensor, or an on-disk
    :class:`~mlir.eval.embedding_store.EmbeddingStore` searched a shard at a time). Returns (flat
    metrics, query counts per view).
    ``per_query``, if given, receives one entry per view with every query's metrics (paired
    significance tests need them; see :mod:`mlir.eval.per_query`). ``fairness_k``: the cutoff of the
    multi setting's MRC@k and PEER@k (``None``: not computed). ``runs``: write the TREC run and qrels
    of every view of ``runs.settings`` (:mod:`mlir.eval.trec`). ``progress``: bars of the searched
    queries, the scored views and the written runs (:mod:`mlir.eval.progress`).
    """
    q_sl = dict(zip(task.langs, _slices([len(task.queries[x].texts) for x in task.langs])))
    d_sl = dict(zip(task.langs, _slices([len(task.docs[x]) for x in task.langs])))

    def queries_of(lang: str) -> torch.Tensor:
        return q_emb[q_sl[lang]]

    def searched_docs(searched: str) -> Docs:
        return d_emb if searched == "*" else row_range(d_emb, d_sl[searched])

    views = _task_views(task, settings, pairs)
    with bar(progress, sum(len(v[2].rows) for v in views), f"searching {task.name}", "queries") as pbar:
        ranks = _rank_views(views, queries_of, searched_docs, device, pbar)
    with bar(progress, len(views), f"scoring {task.name}", "views") as pbar:
        pqs = _score_views(views, ranks, queries_of, searched_docs, ks, fairness_k, pbar)
        if fairness_k and "multi" in settings:
            _add_mrc(views, pqs, queries_of, d_emb, fairness_k, device)
    counts, scored = _collect_views(task, views, pqs, per_query)
    out = _flat_keys(task.name, settings, scored, pair_keys)
    out.update(_bias_counts(task.name, counts))
    if runs is not None:
        _write_runs(runs, task, views, queries_of, searched_docs, device, progress)
    return {k: v for k, v in out.items() if not np.isnan(v)}, counts


def _write_runs(
    runs: RunFiles,
    task: RetrievalTask,
    views: list[View],
    queries_of: Callable[[str], torch.Tensor],
    docs_of: Callable[[str], Docs],
    device: Any,
    progress: bool = False,
) -> None:
    """A TREC run and qrels per view with queries (:func:`mlir.eval.trec.write_view`), and the
    documents and queries behind them (:func:`mlir.eval.trec.write_collection`)."""
    from mlir.eval.trec import write_collection, write_view

    t0 = time.perf_counter()
    write_collection(runs.dir, task)
    todo = [(s, k, v, d) for s, k, v, d in views if len(v.rows) and s in runs.settings]
    with bar(progress, len(todo), f"writing runs of {task.name}", "views") as pbar:
        for setting, key, v, searched in todo:
            write_view(
                runs.dir,
                task,
                setting,
                key,
                v,
                queries_of(v.q_lang),
                docs_of(searched),
                depth=runs.depth,
                device=device,
            )
            pbar.update(1)
    log.info(
        "%s: %d TREC runs and qrels written to %s in %.1fs",
        task.name,
        len(todo),
        Path(runs.dir) / task.name,
        time.perf_counter() - t0,
    )


def _concat_texts(task: RetrievalTask) -> tuple[list[str], list[str]]:
    q = [t for x in task.langs for t in task.queries[x].texts]
    d = [t for x in task.langs for t in task.docs[x]]
    return q, d


def _encode_task(
    encoder: Any,
    task: RetrievalTask,
    batch_size: int | None,
    dist: DistInfo,
    cache: EmbeddingCache | None,
    progress: bool,
    on_disk: OnDiskCorpus | None = None,
) -> tuple[torch.Tensor, Docs | None, dict[str, int]]:
    """(query embeddings, document embeddings, text counts) of a task, in :func:`score_task`'s row order.

    With ``on_disk`` the documents go to ``on_disk.path(task.name)`` (no cache: they never sit in
    memory) and are returned as an :class:`~mlir.eval.embedding_store.EmbeddingStore` (``None`` on
    ranks other than 0, which do not score)."""
    q_texts, d_texts = _concat_texts(task)
    kw = {"batch_size": batch_size, "dist": dist, "progress": progress}
    q_emb = encode_texts(encoder, q_texts, "query", cache=cache, **kw)
    if on_disk is None:
        d_emb = encode_texts(encoder, d_texts, "passage", cache=cache, **kw)
    else:
        path, shard = on_disk.path(task.name), on_disk.shard_size
        d_emb = encode_to_store(encoder, d_texts, "passage", path, shard_size=shard, **kw)
    return q_emb, d_emb, {"queries": len(q_texts), "docs": len(d_texts)}


def _score_benchmark(
    bench: Benchmark, q_emb: torch.Tensor, d_emb: Docs, **kwargs: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`score_task` with the benchmark's settings, cross pairs, cutoffs and ``cross.pair_keys``."""
    c = bench.config
    return score_task(
        bench.task,
        q_emb,
        d_emb,
        settings=c.settings,
        pairs=bench.cross_pairs() if "cross" in c.settings else None,
        ks=c.ks,
        pair_keys=bool(c.cross.get("pair_keys", False)),
        **kwargs,
    )


def _benchmark_info(
    task: RetrievalTask, counts: dict[str, Any], t_enc: float, t_all: float, texts: dict[str, int], runs: Any
) -> dict[str, Any]:
    """The ``details`` entry of one benchmark: task summary, query counts, timings, text counts, runs."""
    info = {
        "task": task.summary(),
        "counts": counts,
        "seconds": {"encode": round(t_enc, 3), "total": round(t_all, 3)},
        "texts": texts,
    }
    if runs is not None:
        info["runs"] = str(Path(runs.dir) / task.name)
    return info


def _log_benchmark(name: str, metrics: dict[str, float], t_all: float, t_enc: float) -> None:
    """One line: the benchmark's macro @10 metrics and how long it took."""
    log.info(
        "%s: %s in %.1fs (encoding %.1fs)",
        name,
        ", ".join(
            f"{k.split('/', 1)[1]}={v:.4f}" for k, v in metrics.items() if k.count("/") == 2 and "@10" in k
        ),
        t_all,
        t_enc,
    )


def evaluate_benchmark(
    encoder: Any,
    bench: Benchmark,
    *,
    batch_size: int | None = None,
    device: Any = None,
    dist: DistInfo | None = None,
    per_query: list[dict[str, Any]] | None = None,
    cache: EmbeddingCache | None = None,
    fairness_k: int | None = FAIRNESS_K,
    runs: RunFiles | None = None,
    progress: bool = False,
    on_disk: OnDiskCorpus | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Encode (sharded, deduplicated) and score one benchmark; every rank gets the same metrics.

    ``per_query`` (rank 0 only) receives the per-query metrics of every view (see :func:`score_task`).
    ``cache`` holds embeddings of texts already encoded by earlier benchmarks of the same evaluation.
    ``fairness_k`` and ``runs``: see :func:`score_task` (rank 0 writes the runs). ``progress``: draw
    this rank's progress bars (:mod:`mlir.eval.progress`; :func:`evaluate` shows them on rank 0 only).
    ``on_disk``: encode the candidates to disk and search them from there (:func:`_encode_task`).
    """
    dist = dist or DistInfo()
    task = bench.task
    t0 = time.perf_counter()
    q_emb, d_emb, texts = _encode_task(encoder, task, batch_size, dist, cache, progress, on_disk)
    t_enc = time.perf_counter() - t0
    result = None
    if dist.rank == 0:
        metrics, counts = _score_benchmark(
            bench,
            q_emb,
            d_emb,
            device=device,
            per_query=per_query,
            fairness_k=fairness_k,
            runs=runs,
            progress=progress,
        )
        t_all = time.perf_counter() - t0
        result = (metrics, _benchmark_info(task, counts, t_enc, t_all, texts, runs))
        _log_benchmark(task.name, metrics, t_all, t_enc)
    result = dist.broadcast_object(result, 0)
    return result


def evaluate(
    encoder: Any,
    benchmarks: Mapping[str, Any] | Sequence[Benchmark],
    *,
    batch_size: int | None = None,
    device: Any = None,
    trainer: Any = None,
    dist: DistInfo | None = None,
    seed: int | None = None,
    max_queries_per_lang: int | None = None,
    details: dict[str, Any] | None = None,
    per_query: list[dict[str, Any]] | None = None,
    fairness_k: int | None = FAIRNESS_K,
    runs: RunFiles | None = None,
    progress: str | bool = AUTO,
    on_disk: OnDiskCorpus | None = None,
) -> dict[str, float]:
    """Evaluate ``encoder`` on ``benchmarks`` (``eval.benchmarks``: name -> config, or built Benchmarks).

    ``encoder`` has ``encode_queries``/``encode_passages`` (see ``docs/ARCHITECTURE.md``). Under DDP pass
    the ``trainer`` (or ``dist``): all ranks must call this; each encodes a shard, rank 0 scores and the
    metrics are broadcast, so every rank returns the same dict. ``seed`` is the default query-subsample
    seed of benchmarks that set none; ``max_queries_per_lang`` overrides the benchmarks' own subsample.
    ``details``, if given, receives per-benchmark counts and timings; ``per_query``, if given, the
    per-query metrics of every view on rank 0 (written by :func:`mlir.eval.per_query.write_per_query`).
    ``fairness_k``: cutoff of the multi setting's MRC@k / PEER@k (``None``: off); ``runs``: where and
    how to write a TREC run and qrels of every view (``eval.run_dir``; :mod:`mlir.eval.trec`).
    ``progress``: ``"auto"`` (bars when stderr is a terminal), ``True`` or ``False`` (``eval.progress``;
    :mod:`mlir.eval.progress`); rank 0 draws them. ``on_disk`` (``eval.embeddings_dir``): each
    benchmark's candidate embeddings are written to a file there and searched a shard at a time, so a
    corpus larger than memory can be evaluated (``docs/evaluation.md``); the metrics do not change.
    """
    dist = dist or DistInfo.from_trainer(trainer)
    if device is None and trainer is not None:
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    out: dict[str, float] = {}
    cache = EmbeddingCache()  # the model is fixed during this call: shared texts are encoded once
    show = dist.rank == 0 and enabled(progress)
    for bench in load_benchmarks(benchmarks, seed=seed):
        bench = bench.with_max_queries(max_queries_per_lang)
        with console_above_bars(show):
            metrics, info = evaluate_benchmark(
                encoder,
                bench,
                batch_size=batch_size,
                device=device,
                dist=dist,
                per_query=per_query,
                cache=cache,
                fairness_k=fairness_k,
                runs=runs,
                progress=show,
                on_disk=on_disk,
            )
        out.update(metrics)
        if details is not None:
            details[bench.name] = info
    return out


def evaluate_options(cfg: Any) -> dict[str, Any]:
    """:func:`evaluate`'s ``fairness_k``, ``runs`` and ``on_disk`` from ``eval.fairness_k``,
    ``eval.run_dir`` / ``run_depth`` / ``run_settings`` and ``eval.embeddings_dir`` / ``shard_size``
    of a config; absent keys take the defaults (train.py's ``eval`` has none). ``eval.py`` and the
    final evaluation of ``train.py`` call it before any model loads.

    ``fairness_k``: cutoff of the multi setting's MRC@k and PEER@k (null: off). ``run_dir``: write a
    TREC run and qrels of every view there (null: off; docs/evaluation.md); ``run_depth``: documents
    per query (1000); ``run_settings``: the settings whose views are written (null: all).
    ``embeddings_dir``: encode candidates to files there and search them from disk, ``shard_size``
    rows at a time (null: in memory); the ``on_disk`` key is returned only when it is set.
    """
    ev = cfg.get("eval") or {}
    k, depth = ev.get("fairness_k", FAIRNESS_K), ev.get("run_depth", DEPTH)
    for key, value, nullable in (("fairness_k", k, True), ("run_depth", depth, False)):
        if (value is None and not nullable) or (
            value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            raise ConfigError(
                f"must be a positive integer{' or null' if nullable else ''}, got {value!r}",
                where=f"eval.{key}",
            )
    settings = ev.get("run_settings") or list(SETTINGS)
    settings = [settings] if isinstance(settings, str) else [str(x) for x in settings]
    bad = [x for x in settings if x not in SETTINGS]
    if bad:
        raise ConfigError(f"unknown setting(s) {bad}; use {list(SETTINGS)}", where="eval.run_settings")
    run_dir = ev.get("run_dir")
    runs = RunFiles(str(run_dir), int(depth), tuple(settings)) if run_dir else None
    on_disk = _on_disk_option(ev)
    return {"fairness_k": k, "runs": runs, **({"on_disk": on_disk} if on_disk else {})}


def _on_disk_option(ev: Any) -> OnDiskCorpus | None:
    """``eval.embeddings_dir`` (null or a non-empty path) and ``eval.shard_size`` (checked either way)."""
    shard = check_shard_size(ev.get("shard_size", OnDiskCorpus.shard_size), "eval.shard_size")
    where = "eval.embeddings_dir"
    directory = ev.get("embeddings_dir")
    if directory is None:
        return None
    if not isinstance(directory, str) or not directory.strip():
        raise ConfigError(f"must be a directory path or null, got {directory!r}", where=where)
    if Path(directory).exists() and not Path(directory).is_dir():
        raise ConfigError(f"{directory} exists and is not a directory", where=where)
    return OnDiskCorpus(directory, shard)
