"""Benchmark mlir's chunked rank counting + metrics against top-k-list evaluators.

Why: evaluation on a large multilingual pool (100k queries x 100k+ passages) must finish in minutes
with bounded memory, and report metrics over the *full* ranking (nDCG@10 with trec_eval's ideal, MAP,
rank distance), not over a truncated top-1000 list. This measures, on synthetic embeddings:

* mlir: ``relevant_ranks_flat`` (chunked GEMM + counting, no argsort, no Q x C matrix) followed by
  ``compute_metrics(..., rank_distance=True)`` -- nDCG@10, MAP, recall@{1,5,10,100}, MRR@10, rank
  distance -- for ``--queries`` queries, each in a fresh subprocess for several query counts, recording
  peak RSS (``ru_maxrss``) minus the RSS after the inputs exist, to show the working memory does not
  grow with the number of queries;
* baselines fed the top-1000 list per query (what a run file holds): (a) pytrec_eval, timing the run
  dicts' construction + ``evaluate`` for ``ndcg_cut_10`` and ``map``; (b) torchmetrics
  ``RetrievalNormalizedDCG``. The top-1000 search (``mlir.eval.search.topk``, torch backend) is timed
  too, since a run file has to come from somewhere. These run on the first ``--subsample`` queries
  and are extrapolated linearly to ``--queries`` (per-query costs are independent of each other);
  the JSON records which numbers are measured and which extrapolated.

Data: ``--docs`` passages = ``--langs`` "languages" x ``docs/langs`` parallel passages; passage p in
language l is ``normalize(base_p + noise)``; a query asks for passage p and is ``normalize(base_p +
noise)``; its relevant docs are p in 1..langs random languages (1-3 by default). Relevant ranks
then spread from 1 to tens of thousands, like a mediocre multilingual retriever.

Writes ``bench/results/metrics.json``. Usage:
``python bench/bench_metrics.py [--queries 100000 --docs 99999 --dim 384 --subsample 5000]``
(``--quick`` for a 20k x 20k smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import peak_rss_mib, rss_mib  # noqa: E402
from mlir.eval.metrics import FlatRanks, compute_metrics, mean_metrics  # noqa: E402
from mlir.eval.search import relevant_ranks_flat, topk  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process: fairer than wall time on a machine shared with others."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_data(n_q: int, n_docs: int, dim: int, n_langs: int, rel_max: int, seed: int, noise: float):
    """Embeddings and relevance, generated chunk-wise so generation itself needs little extra memory.

    The first queries are the same whatever ``n_q`` is (same seed, same order), so a subsample run
    and a full run share them.
    """
    per_lang = n_docs // n_langs
    n_docs = per_lang * n_langs
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(per_lang, dim, generator=gen)
    d = torch.empty(n_docs, dim)
    for lang in range(n_langs):
        blk = d[lang * per_lang : (lang + 1) * per_lang]
        torch.randn(per_lang, dim, generator=gen, out=blk)
        blk.mul_(noise).add_(base)
    d.div_(d.norm(dim=1, keepdim=True))
    rng = np.random.default_rng(seed)
    passage = rng.integers(0, per_lang, n_q)
    n_rel = rng.integers(1, rel_max + 1, n_q)
    q = torch.empty(n_q, dim)
    step = 8192
    for a in range(0, n_q, step):
        b = min(n_q, a + step)
        blk = q[a:b]
        torch.randn(b - a, dim, generator=gen, out=blk)
        blk.mul_(noise).add_(base[torch.from_numpy(passage[a:b])])
        blk.div_(blk.norm(dim=1, keepdim=True))
    offsets = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(n_rel, out=offsets[1:])
    # relevant: passage p in n_rel distinct random languages
    langs = np.argsort(rng.random((n_q, n_langs)), axis=1)
    mask = np.arange(n_langs)[None, :] < n_rel[:, None]
    rel_flat = (langs * per_lang + passage[:, None])[mask].astype(np.int64)
    del base
    return q, d, rel_flat, offsets


# ------------------------------------------------------------------------------------ child runs


def child_ranks(args: argparse.Namespace) -> dict:
    """mlir's path for ``args.queries`` queries, in its own process so ru_maxrss is this config's."""
    t0 = time.perf_counter()
    q, d, rel_flat, offsets = make_data(
        args.queries, args.docs, args.dim, args.langs, args.rel_max, args.seed, args.noise
    )
    gen_s = time.perf_counter() - t0
    rss_inputs = rss_mib()
    peak_before = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    ranks = relevant_ranks_flat(q, d, rel_flat, offsets, q_chunk=args.q_chunk, d_chunk=args.d_chunk)
    t_ranks = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_query = compute_metrics(FlatRanks(ranks, offsets), rank_distance=True)
    t_metrics = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    peak = peak_rss_mib()
    means = mean_metrics(per_query)
    return {
        "queries": args.queries,
        "docs": int(d.shape[0]),
        "relevant_pairs": int(offsets[-1]),
        "data_generation_seconds": round(gen_s, 2),
        "relevant_ranks_seconds": round(t_ranks, 2),
        "compute_metrics_seconds": round(t_metrics, 4),
        "total_seconds": round(t_ranks + t_metrics, 2),
        "total_cpu_seconds": round(cpu, 2),
        "queries_per_second": round(args.queries / (t_ranks + t_metrics), 1),
        "rss_after_inputs_mib": round(rss_inputs, 1),
        "peak_rss_before_run_mib": round(peak_before, 1),
        "peak_rss_mib": round(peak, 1),
        "working_memory_mib": round(peak - rss_inputs, 1),
        "input_embeddings_mib": round((q.numel() + d.numel()) * 4 / 2**20, 1),
        "mean_metrics": {k: round(v, 6) for k, v in means.items()},
        "median_relevant_rank": float(np.median(ranks)),
    }


def child_baselines(args: argparse.Namespace) -> dict:
    """Top-1000 search + pytrec_eval + torchmetrics on the first ``--subsample`` queries."""
    import pytrec_eval
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    n = args.subsample
    q, d, rel_flat, offsets = make_data(
        n, args.docs, args.dim, args.langs, args.rel_max, args.seed, args.noise
    )
    k = args.k
    out: dict = {"subsample_queries": n, "k": k}

    t0, c0 = time.perf_counter(), cpu_seconds()
    scores, idx = topk(q, d, k, q_chunk=args.q_chunk, d_chunk=args.d_chunk)
    out["topk_seconds"] = round(time.perf_counter() - t0, 2)
    out["topk_cpu_seconds"] = round(cpu_seconds() - c0, 2)

    # mlir on the same queries, for agreement and a same-process timing
    t0, c0 = time.perf_counter(), cpu_seconds()
    ranks = relevant_ranks_flat(q, d, rel_flat, offsets, q_chunk=args.q_chunk, d_chunk=args.d_chunk)
    per_query = compute_metrics(FlatRanks(ranks, offsets), rank_distance=True)
    out["mlir_seconds"] = round(time.perf_counter() - t0, 2)
    out["mlir_cpu_seconds"] = round(cpu_seconds() - c0, 2)

    # (a) pytrec_eval: docnos realise our tie rule (docno descending == index ascending)
    n_docs = d.shape[0]
    names = [f"{n_docs - 1 - j:07d}" for j in range(n_docs)]
    t0, c0 = time.perf_counter(), cpu_seconds()
    qrels = {str(i): {names[r]: 1 for r in rel_flat[offsets[i] : offsets[i + 1]]} for i in range(n)}
    run = {}
    for i in range(n):
        run[str(i)] = {names[j]: s for j, s in zip(idx[i].tolist(), scores[i].tolist())}
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map"}).evaluate(run)
    t_eval = time.perf_counter() - t0
    out["pytrec_eval_cpu_seconds"] = round(cpu_seconds() - c0, 2)
    out["pytrec_eval_build_seconds"] = round(t_build, 2)
    out["pytrec_eval_evaluate_seconds"] = round(t_eval, 2)
    trec_ndcg = np.array([res[str(i)]["ndcg_cut_10"] for i in range(n)])
    trec_map = np.array([res[str(i)]["map"] for i in range(n)])
    out["max_abs_diff_ndcg10_mlir_vs_pytrec_top1000"] = float(np.abs(per_query["ndcg@10"] - trec_ndcg).max())
    out["mean_map_mlir_full_ranking"] = round(float(per_query["map"].mean()), 6)
    out["mean_map_pytrec_top1000"] = round(float(trec_map.mean()), 6)
    del run, qrels, res

    # (b) torchmetrics on the same top-1000 lists
    rel_set = np.zeros((n, k), dtype=bool)
    qid = np.repeat(np.arange(n), np.diff(offsets))
    hit_q, hit_pos = np.nonzero(idx[qid] == rel_flat[:, None])
    rel_set[qid[hit_q], hit_pos] = True
    preds = torch.from_numpy(scores.reshape(-1).copy())
    target = torch.from_numpy(rel_set.reshape(-1))
    indexes = torch.arange(n).repeat_interleave(k)
    t0, c0 = time.perf_counter(), cpu_seconds()
    metric = RetrievalNormalizedDCG(top_k=10)
    tm_ndcg = float(metric(preds, target, indexes=indexes))
    out["torchmetrics_seconds"] = round(time.perf_counter() - t0, 2)
    out["torchmetrics_cpu_seconds"] = round(cpu_seconds() - c0, 2)
    out["mean_ndcg10_torchmetrics_top1000"] = round(tm_ndcg, 6)
    out["mean_ndcg10_mlir"] = round(float(per_query["ndcg@10"].mean()), 6)
    out["mean_ndcg10_pytrec_top1000"] = round(float(trec_ndcg.mean()), 6)
    return out


# ------------------------------------------------------------------------------------------ main


def run_child(kind: str, args: argparse.Namespace, **over) -> dict:
    """Run one configuration in a fresh interpreter and parse the JSON line it prints."""
    cli = dict(vars(args), **over)
    cmd = [sys.executable, __file__, "--child", kind]
    for key in (
        "queries",
        "docs",
        "dim",
        "langs",
        "rel_max",
        "seed",
        "noise",
        "subsample",
        "k",
        "q_chunk",
        "d_chunk",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(cli[key])]
    print(f"[bench] {kind} {over or ''}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def summarize(settings: dict, mlir_runs: dict[int, dict], base: dict) -> dict:
    """Derived numbers (extrapolations, ratios) from the measured child results."""
    n_q = settings["queries"]
    full = mlir_runs[n_q]
    scale = n_q / base["subsample_queries"]
    topk_full = base["topk_seconds"] * scale
    pytrec = base["pytrec_eval_build_seconds"] + base["pytrec_eval_evaluate_seconds"]
    pytrec_full = pytrec * scale
    tm_full = base["torchmetrics_seconds"] * scale
    cpu_topk_full = base["topk_cpu_seconds"] * scale
    cpu_pytrec_full = base["pytrec_eval_cpu_seconds"] * scale
    cpu_tm_full = base["torchmetrics_cpu_seconds"] * scale
    mlir_sub = base["mlir_seconds"]
    return {
        "settings": settings,
        "mlir_full_ranking": {
            "measured": True,
            "metrics": "ndcg@10, map, recall@1/5/10/100, mrr@10, rank_distance over the full ranking",
            **full,
        },
        "memory_vs_queries": {
            str(q): {
                "peak_rss_mib": r["peak_rss_mib"],
                "working_memory_mib": r["working_memory_mib"],
                "input_embeddings_mib": r["input_embeddings_mib"],
                "seconds": r["total_seconds"],
                "cpu_seconds": r["total_cpu_seconds"],
            }
            for q, r in sorted(mlir_runs.items())
        },
        "baselines_subsample_measured": base,
        "same_process_subsample_comparison": {
            "what": f"first {base['subsample_queries']} queries, all in one process back to back (same load)",
            "mlir_ranks_plus_metrics_seconds": mlir_sub,
            "pytrec_pipeline_seconds": round(base["topk_seconds"] + pytrec, 2),
            "torchmetrics_pipeline_seconds": round(base["topk_seconds"] + base["torchmetrics_seconds"], 2),
            "pytrec_pipeline_over_mlir": round((base["topk_seconds"] + pytrec) / mlir_sub, 2),
            "torchmetrics_pipeline_over_mlir": round(
                (base["topk_seconds"] + base["torchmetrics_seconds"]) / mlir_sub, 2
            ),
            "mlir_over_topk1000_search_alone": round(mlir_sub / base["topk_seconds"], 2),
            "cpu_pytrec_pipeline_over_mlir": round(
                (base["topk_cpu_seconds"] + base["pytrec_eval_cpu_seconds"]) / base["mlir_cpu_seconds"], 2
            ),
            "cpu_torchmetrics_pipeline_over_mlir": round(
                (base["topk_cpu_seconds"] + base["torchmetrics_cpu_seconds"]) / base["mlir_cpu_seconds"], 2
            ),
        },
        "baselines_extrapolated_to_queries": {
            "assumption": f"linear in queries: subsample x {scale:g} (each query's search and evaluation "
            "are independent); NOT measured at full size",
            "topk1000_search_seconds": round(topk_full, 1),
            "pytrec_eval_build_plus_evaluate_seconds": round(pytrec_full, 1),
            "torchmetrics_ndcg_seconds": round(tm_full, 1),
            "pytrec_eval_pipeline_seconds": round(topk_full + pytrec_full, 1),
            "torchmetrics_pipeline_seconds": round(topk_full + tm_full, 1),
            "pytrec_eval_pipeline_cpu_seconds": round(cpu_topk_full + cpu_pytrec_full, 1),
            "torchmetrics_pipeline_cpu_seconds": round(cpu_topk_full + cpu_tm_full, 1),
        },
        "ratios_full_size": {
            "caveat": "mlir measured at full size, baselines extrapolated from a run at another time; on a "
            "shared machine prefer same_process_subsample_comparison and the cpu_ ratios",
            "wall_pytrec_pipeline_over_mlir": round((topk_full + pytrec_full) / full["total_seconds"], 2),
            "wall_torchmetrics_pipeline_over_mlir": round((topk_full + tm_full) / full["total_seconds"], 2),
            "cpu_pytrec_pipeline_over_mlir": round(
                (cpu_topk_full + cpu_pytrec_full) / full["total_cpu_seconds"], 2
            ),
            "cpu_torchmetrics_pipeline_over_mlir": round(
                (cpu_topk_full + cpu_tm_full) / full["total_cpu_seconds"], 2
            ),
            "pytrec_evaluation_only_over_mlir_compute_metrics": round(
                pytrec_full / full["compute_metrics_seconds"], 1
            ),
            "torchmetrics_only_over_mlir_compute_metrics": round(
                tm_full / full["compute_metrics_seconds"], 1
            ),
        },
        "notes": [
            "mlir's time includes the GEMM over all query x doc pairs; the baselines need the same GEMM "
            "for their top-1000 search, timed separately (topk1000_search_seconds).",
            "pytrec_eval and torchmetrics see only the top-1000 list: their MAP is truncated (relevant docs "
            "below 1000 count as not retrieved) and torchmetrics' nDCG ideal ignores relevant docs outside "
            "the list (mean_ndcg10_torchmetrics_top1000 > mean_ndcg10_mlir); trec_eval's ndcg_cut_10 equals "
            "mlir's (max_abs_diff_ndcg10_mlir_vs_pytrec_top1000).",
            "working_memory_mib = peak RSS minus RSS once the inputs exist; it is governed by the "
            "q_chunk x d_chunk score block (4096 x 65536 float32 = 1 GiB) plus a 64 MiB comparison buffer, "
            "not by the number of queries.",
            "cpu_seconds = user + system time of the measuring process; on an oversubscribed machine OpenMP "
            "spinning inflates it somewhat, but much less than wall time, which other jobs dominate "
            "(see machine.load_average_*).",
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--docs", type=int, default=99_999, help="rounded down to a multiple of --langs")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--langs", type=int, default=3)
    ap.add_argument("--rel-max", type=int, default=3, help="relevant docs per query: 1..rel-max")
    ap.add_argument("--noise", type=float, default=2.0, help="std of per-language / per-query noise")
    ap.add_argument("--subsample", type=int, default=5000, help="queries for the top-1000 baselines")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--q-chunk", type=int, default=4096)
    ap.add_argument("--d-chunk", type=int, default=65536)
    ap.add_argument("--memory-queries", default="25000,50000", help="extra query counts for the memory curve")
    ap.add_argument("--quick", action="store_true", help="20k x 20k, subsample 2000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=["ranks", "baselines"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics.json")
    ap.add_argument(
        "--resummarize",
        action="store_true",
        help="recompute derived numbers of --out from its measured parts",
    )
    args = ap.parse_args()
    settings_keys = (
        "queries",
        "docs",
        "dim",
        "langs",
        "rel_max",
        "noise",
        "subsample",
        "k",
        "q_chunk",
        "d_chunk",
        "seed",
    )

    if args.child:
        res = child_ranks(args) if args.child == "ranks" else child_baselines(args)
        print(json.dumps(res))
        return
    if args.resummarize:
        old = json.loads(args.out.read_text())
        runs = {
            int(q): dict(r, total_seconds=r["seconds"], total_cpu_seconds=r["cpu_seconds"])
            for q, r in old["memory_vs_queries"].items()
        }
        n_q = old["settings"]["queries"]
        runs[n_q] = {k: v for k, v in old["mlir_full_ranking"].items() if k not in ("measured", "metrics")}
        result = summarize(old["settings"], runs, old["baselines_subsample_measured"])
        result["wall_seconds"], result["machine"] = old["wall_seconds"], old["machine"]
    else:
        if args.quick:
            args.queries, args.docs, args.subsample, args.memory_queries = 20_000, 19_998, 2000, "5000,10000"
        info = machine()
        t_start = time.perf_counter()
        mem_qs = sorted({int(x) for x in args.memory_queries.split(",") if x} | {args.queries})
        mlir_runs = {q: run_child("ranks", args, queries=q) for q in mem_qs}
        base = run_child("baselines", args)
        result = summarize({k: getattr(args, k) for k in settings_keys}, mlir_runs, base)
        result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        result["machine"] = info
        result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
