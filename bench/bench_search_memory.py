"""Peak memory of exact search over an on-disk corpus versus corpus size (corpora larger than memory).

Why: a 10M-passage corpus at dimension 384 is 15 GB of float32; evaluation must search it exactly
(top-k and the full-ranking relevant ranks behind nDCG / MAP / rank distance) on a machine with less
RAM. With the corpus in an :class:`mlir.eval.embedding_store.EmbeddingStore` the search reads it a
shard at a time into one reused buffer, so its working set should not depend on the corpus size.

For each ``--sizes`` N: a synthetic corpus of N unit-norm float32 vectors (``--dim``) is written shard
by shard to a temp directory (``StoreWriter``; a child process, whose peak RSS is recorded too), then a
FRESH child process builds ``--queries`` queries (noisy copies of random corpus rows; relevant: the
source row and two random rows) and runs ``topk(k)`` and ``relevant_ranks`` over the store,
``--shard-sizes`` rows at a time. Each child reports ``ru_maxrss`` (its peak RSS), its RSS just before
the search (Python + torch + queries: the baseline), times and a digest of the results. At sizes up to
``--memory-max`` the same search runs with the corpus loaded into memory (``np.load``) for contrast,
and its digest must equal the on-disk one (identical ids, order, scores and ranks).

Reads are explicit ``pread`` calls, so the page cache holding the file is not part of any RSS here.
Everything runs single-threaded; on a shared machine the timings are contended (the load average is
recorded), the RSS figures are not. Writes ``bench/results/search_memory.json`` and ``.md``.
Usage: ``python bench/bench_search_memory.py [--sizes 100000,500000,2000000 --dim 384 --queries 32]``
(``--quick``: 20k, 50k, 100k).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402
from bench import peak_rss_mib, rss_mib  # noqa: E402
from mlir.core.atomic import write_text  # noqa: E402

MIB = 2**20
#: Rows generated per write block (fixed, so the corpus does not depend on the search shard size).
GEN_BLOCK = 16384


# ------------------------------------------------------------------------------------ child runs


def child_write(args: argparse.Namespace) -> dict[str, Any]:
    """Write the corpus: block b is seeded (seed, b), unit-norm rows; never more than a block in memory."""
    import numpy as np

    from mlir.eval.embedding_store import StoreWriter

    base, t0 = rss_mib(), time.perf_counter()
    with StoreWriter(args.path, args.docs, args.dim) as w:
        for b, a in enumerate(range(0, args.docs, GEN_BLOCK)):
            rng = np.random.default_rng([args.seed, b])
            x = rng.standard_normal((min(GEN_BLOCK, args.docs - a), args.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            w.write(a, x)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "rss_before_mib": round(base, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "file_bytes": os.path.getsize(args.path),
    }


def _queries(store: Any, n_q: int, seed: int) -> tuple[Any, list[Any]]:
    """Noisy copies of random corpus rows (unit norm); relevant: the source row + 2 random rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(store)
    src = rng.choice(n, n_q, replace=False)
    q = store.gather(src) + 0.1 * rng.standard_normal((n_q, store.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rel = [np.unique(np.r_[s, rng.choice(n, 2, replace=False)]) for s in src]
    return q.astype(np.float32), rel


def child_search(args: argparse.Namespace) -> dict[str, Any]:
    """topk + relevant_ranks over the store (``--mode disk``) or the corpus in memory (``memory``)."""
    import numpy as np
    import torch

    from mlir.eval.embedding_store import EmbeddingStore
    from mlir.eval.search import relevant_ranks, topk

    torch.set_num_threads(1)
    store = EmbeddingStore(args.path, shard_size=args.shard_size)
    q, rel = _queries(store, args.queries, args.seed)
    base = rss_mib()
    c0, t0 = bench.cpu_seconds(), time.perf_counter()
    d = store if args.mode == "disk" else torch.from_numpy(np.load(args.path))
    t_load = time.perf_counter() - t0
    scores, idx = topk(q, d, args.k, d_chunk=args.shard_size)
    t_topk = time.perf_counter() - t0 - t_load
    ranks = relevant_ranks(q, d, rel, d_chunk=args.shard_size)
    t_all = time.perf_counter() - t0
    digest = hashlib.sha256(scores.tobytes() + idx.tobytes() + np.concatenate(ranks).tobytes())
    peak = peak_rss_mib()
    return {
        "mode": args.mode,
        "docs": len(store),
        "shard_size": args.shard_size,
        "rss_before_search_mib": round(base, 1),
        "peak_rss_mib": round(peak, 1),
        "working_set_mib": round(peak - base, 1),
        "load_seconds": round(t_load, 2),
        "topk_seconds": round(t_topk, 2),
        "relevant_ranks_seconds": round(t_all - t_load - t_topk, 2),
        "cpu_seconds": round(bench.cpu_seconds() - c0, 2),
        "median_relevant_rank": float(np.median(np.concatenate(ranks))),
        "digest": digest.hexdigest(),
    }


# ------------------------------------------------------------------------------------------ parent


def run_child(kind: str, **kw: Any) -> dict[str, Any]:
    """One configuration in a fresh interpreter (its own ru_maxrss); the last stdout line is JSON."""
    cmd = [sys.executable, __file__, "--child", kind]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"[bench] {kind} {kw}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(f"[bench]   -> {out}", file=sys.stderr, flush=True)
    return out


def predicted_mib(shard: int, dim: int, n_q: int, q_chunk: int, k: int) -> float:
    """The bound's size-dependent terms: the shard buffer, the score block (``min(Q, q_chunk) x
    shard``), the 0/1 comparison buffer (as large, at most 2**24 elements), the top-k merge (``Q x 2k``
    scores + ids)."""
    block = min(n_q, q_chunk) * shard
    return (shard * dim * 4 + block * 4 + min(block, 1 << 24) * 4 + n_q * 2 * k * 12) / MIB


def measure_size(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Write a corpus of ``n`` rows, search it on disk (every shard size) and, if small, in memory."""
    path = tmp / f"corpus_{n}.npy"
    common = {"path": path, "dim": args.dim, "seed": args.seed}
    out: dict[str, Any] = {"docs": n, "corpus_bytes": n * args.dim * 4}
    out["write"] = run_child("write", docs=n, **common)
    search = {"queries": args.queries, "k": args.k, "path": path, "seed": args.seed}
    shards = args.shard_sizes if n == max(args.sizes) else args.shard_sizes[:1]
    out["disk"] = [run_child("search", mode="disk", shard_size=s, **search) for s in shards]
    if n <= args.memory_max:
        mem = run_child("search", mode="memory", shard_size=args.shard_sizes[0], **search)
        mem["identical_to_disk"] = mem["digest"] == out["disk"][0]["digest"]
        out["memory"] = mem
    path.unlink()
    return out


def _md_row(r: dict[str, Any], d: dict[str, Any]) -> str:
    mem = r.get("memory")
    mem_txt = f"{mem['peak_rss_mib']:.0f} / {mem['working_set_mib']:.0f}" if mem else "-"
    same = ("yes" if mem["identical_to_disk"] else "**NO**") if mem else "-"
    secs = d["load_seconds"] + d["topk_seconds"] + d["relevant_ranks_seconds"]
    return (
        f"| {r['docs']:,} | {r['corpus_bytes'] / MIB:,.0f} | {d['shard_size']:,} | {d['peak_rss_mib']:.0f} | "
        f"{d['working_set_mib']:.0f} | {d['predicted_mib']:.0f} | {mem_txt} | {same} | "
        f"{r['write']['peak_rss_mib']:.0f} | {secs:.1f} |"
    )


def write_markdown(result: dict[str, Any], path: Path) -> None:
    s = result["settings"]
    lines = [
        "# Exact search over an on-disk corpus: peak RSS vs corpus size",
        "",
        f"`python bench/bench_search_memory.py` ({time.strftime('%Y-%m-%d')}): synthetic unit-norm float32 "
        f"corpus, dim {s['dim']}, {s['queries']} queries, `topk(k={s['k']})` + `relevant_ranks` (3 relevant "
        "docs per query), one thread, each search in a fresh process. Peak RSS = `ru_maxrss`; working set "
        "= peak minus the RSS just before the search (Python, torch, queries). MiB throughout.",
        "",
        "| corpus rows | corpus MiB | shard rows | on-disk peak RSS | on-disk working set | bound's "
        "size-dependent terms | in-memory peak / working set | identical | writer peak RSS | search s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sizes"]:
        lines += [_md_row(r, d) for d in r["disk"]]
    lines += ["", result["bound"], "", result["timings_note"], ""]
    write_text(path, "\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,500000,2000000", help="corpus rows, comma separated")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shard-sizes", default="65536,16384,262144", help="first: all sizes; rest: largest")
    ap.add_argument("--memory-max", type=int, default=500_000, help="largest size also searched in memory")
    ap.add_argument("--tmp", default=None, help="where the corpora are written (default: the system temp)")
    ap.add_argument("--quick", action="store_true", help="sizes 20k, 50k, 100k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=bench.RESULTS / "search_memory.json")
    ap.add_argument("--child", choices=["write", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["disk", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--shard-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.memory_max = "20000,50000,100000", 50_000
    args.sizes = sorted(int(x) for x in str(args.sizes).split(",") if x)
    args.shard_sizes = [int(x) for x in str(args.shard_sizes).split(",") if x]
    return args


def summarize(args: argparse.Namespace, sizes: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    for r in sizes:
        for d in r["disk"]:
            d["predicted_mib"] = round(
                predicted_mib(d["shard_size"], args.dim, args.queries, 4096, args.k), 1
            )
    first = [r["disk"][0] for r in sizes]
    ws = [d["working_set_mib"] for d in first]
    shard = args.shard_sizes[0]
    largest = sizes[-1]
    same = len({d["digest"] for d in largest["disk"]}) == 1
    shard_list = ", ".join(f"{d['shard_size']:,}" for d in largest["disk"])
    bound = (
        f"Bound: working set ~ shard_size x dim x 4 B (the one read buffer) + min(Q, q_chunk) x "
        f"shard_size x 4 B (score block) + as much again, at most 64 MiB (0/1 comparison buffer) + "
        f"top-k buffers (Q x 2k x 12 B) + the "
        f"baseline (Python, torch, the queries; {first[0]['rss_before_search_mib']:.0f} MiB here), "
        f"independent of the corpus size. Measured at shard_size {shard:,}: working set "
        f"{min(ws):.0f}-{max(ws):.0f} MiB from {sizes[0]['docs']:,} to {sizes[-1]['docs']:,} rows "
        f"({sizes[0]['corpus_bytes'] / MIB:,.0f} to {sizes[-1]['corpus_bytes'] / MIB:,.0f} MiB of "
        f"embeddings); the in-memory search grows with the corpus. A 10M x 384 corpus needs 15 GB "
        f"(14,648 MiB) of disk, not RAM. At {largest['docs']:,} rows the shard sizes "
        f"{shard_list} gave "
        f"{'identical' if same else 'DIFFERENT'} results (ids, scores, ranks)."
    )
    return {
        "settings": {
            "sizes": args.sizes,
            "dim": args.dim,
            "queries": args.queries,
            "k": args.k,
            "shard_sizes": args.shard_sizes,
            "memory_max": args.memory_max,
            "seed": args.seed,
            "quick": args.quick,
        },
        "sizes": sizes,
        "identical_across_shard_sizes_at_largest": same,
        "bound": bound,
        "timings_note": "Timings are single-threaded under `nice -n 19` on a machine shared with other jobs "
        "(contended; see load_average per child): compare RSS, not seconds.",
        "wall_seconds": round(wall, 1),
        "machine": {**bench.machine(), "load_average_at_start": bench.loadavg()},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        res = child_write(args) if args.child == "write" else child_search(args)
        print(json.dumps(res))
        return
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mlir_search_memory_", dir=args.tmp))
    try:
        sizes = [measure_size(n, args, tmp) for n in args.sizes]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = summarize(args, sizes, time.perf_counter() - t0)
    result["machine"]["load_average_at_end"] = bench.loadavg()
    bench.write_result("search_memory", result, args.out)
    write_markdown(result, args.out.with_suffix(".md"))
    print(json.dumps({k: result[k] for k in ("bound", "wall_seconds")}, indent=2))


if __name__ == "__main__":
    main()
