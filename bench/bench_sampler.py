"""Benchmark the hybrid batch sampler on a 10M-pair synthetic index.

Why: the sampler sits on the training hot path and is rebuilt at every launch; on a 40M-pair corpus
both the index build and batch drawing must stay in seconds. This measures, for 1.25M parallel ids x
8 languages (10M rows, with a few passages shared between ids so the cluster path is exercised):

* index build seconds (``HybridBatchSampler(...)``),
* global batches/s through ``global_batch`` (the pure API) and through iteration (this rank's
  ``(q_row, p_row)`` lists, what a DataLoader consumes),
* the cost of resuming mid-epoch (``load_state_dict`` + first batch, which replays the epoch).

Wall-clock and process CPU seconds are both reported: on a shared machine the CPU figures are the
load-independent ones.

Writes ``bench/results/sampler.json`` (with the load average: other jobs on a shared machine skew it). Usage: ``python bench/bench_sampler.py [--ids N --langs L ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlir.sampling import HybridBatchSampler  # noqa: E402


def synthetic_index(n_ids: int, n_langs: int, shared_frac: float, missing_frac: float, seed: int) -> dict:
    """Integer arrays of a parallel corpus: rows (id, lang), unique passages except a shared few."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_ids, dtype=np.int64), n_langs)
    lang = np.tile(np.arange(n_langs, dtype=np.int64), n_ids)
    if missing_frac > 0:
        keep = rng.random(len(pid)) >= missing_frac
        pid, lang = pid[keep], lang[keep]
    pas = np.arange(len(pid), dtype=np.int64)
    k = int(shared_frac * len(pid))
    if k:
        pas[rng.choice(len(pid), k, replace=False)] = rng.integers(0, len(pid), k)
    langs = [f"l{i}" for i in range(n_langs)]
    return {"pid": pid, "lang_idx": lang, "passage_idx": pas, "langs": langs}


def machine() -> dict:
    """Where the numbers came from."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=1_250_000)
    ap.add_argument("--langs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--batches", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--world-size", type=int, default=1)
    ap.add_argument(
        "--shared-frac", type=float, default=0.001, help="fraction of rows reusing another's text"
    )
    ap.add_argument("--missing-frac", type=float, default=0.0, help="fraction of (id, lang) rows dropped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampler.json")
    args = ap.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    data = synthetic_index(args.ids, args.langs, args.shared_frac, args.missing_frac, args.seed)
    gen_s = time.perf_counter() - t

    t, c = time.perf_counter(), time.process_time()
    s = HybridBatchSampler(
        data, args.batch_size, alpha=args.alpha, seed=args.seed, world_size=args.world_size, rank=0
    )
    build_s, build_cpu = time.perf_counter() - t, time.process_time() - c
    n = min(args.batches, s.steps_per_epoch)

    t, c = time.perf_counter(), time.process_time()
    kinds = [s.global_batch(0, i).kind for i in range(n)]
    global_s, global_cpu = time.perf_counter() - t, time.process_time() - c

    t = time.perf_counter()
    it = iter(s)
    pairs = sum(len(next(it)) for _ in range(n))
    iter_s = time.perf_counter() - t

    resume = HybridBatchSampler(
        data, args.batch_size, alpha=args.alpha, seed=args.seed, world_size=args.world_size, rank=0
    )
    resume.load_state_dict(s.state_dict())
    t = time.perf_counter()
    next(iter(resume), None)
    resume_s = time.perf_counter() - t

    result = {
        "settings": {
            "rows": int(len(data["pid"])),
            "ids": args.ids,
            "langs": args.langs,
            "batch_size": args.batch_size,
            "batches": n,
            "alpha": args.alpha,
            "world_size": args.world_size,
            "shared_frac": args.shared_frac,
            "missing_frac": args.missing_frac,
            "seed": args.seed,
            "steps_per_epoch": s.steps_per_epoch,
            "clusters": s.num_clusters,
        },
        "synthetic_data_seconds": round(gen_s, 3),
        "index_build_seconds": round(build_s, 3),
        "index_build_cpu_seconds": round(build_cpu, 3),
        "global_batch_seconds": round(global_s, 3),
        "global_batches_per_s": round(n / global_s, 1),
        "global_batch_cpu_seconds": round(global_cpu, 3),
        "global_batches_per_cpu_s": round(n / global_cpu, 1),
        "iterate_seconds": round(iter_s, 3),
        "iterate_batches_per_s": round(n / iter_s, 1),
        "iterate_pairs_this_rank": pairs,
        "resume_at_step": n,
        "resume_first_batch_seconds": round(resume_s, 3),
        "mono_fraction": round(kinds.count("mono") / n, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {**machine(), "load_average_at_start": load_before},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
