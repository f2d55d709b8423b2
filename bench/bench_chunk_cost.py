"""Cost of one encoder call vs its padded shape, and what the sub-batch plan buys.

Measures the offline e5-small's forward (inference) and forward+backward (training) time over a grid
of padded shapes (sequences x width), fits ``t = t0 + t1 * n * w * (1 + w / attention_width)`` and
reports ``call_overhead = t0 / t1`` in tokens: the value of ``model.encoder.call_overhead`` that
``mlir.models.bucketing.plan_sub_batches`` uses. Then times real work both ways, greedy fill-to-budget
against the optimal plan: training batches of 32 XQuAD-R (question, answer sentence) pairs and the
encoding of XQuAD-R sentences.

    python bench/bench_chunk_cost.py            # ~6 min on 2 idle cores
    python bench/bench_chunk_cost.py --quick
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402


def _greedy(lengths: list[int], budget: int) -> list[list[int]]:
    """The former plan: sorted, each sub-batch filled up to the padded-token budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > budget:
            groups.append(cur)
            cur = []
        cur.append(i)
    return groups + ([cur] if cur else [])


def _time(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from bench.bench_encode import build_mlir
    from mlir.models.bucketing import attention_width, padded_tokens, plan_sub_batches

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=1000, help="XQuAD-R sentences for the encoding check")
    ap.add_argument("--batches", type=int, default=6, help="training batches of 32 for the training check")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.sentences, args.batches = 1, 200, 2
    torch.manual_seed(0)
    enc = build_mlir()
    model = enc.query_model
    attn = attention_width(model.config)
    vocab = int(model.config.vocab_size)

    def call(n: int, w: int, train: bool) -> float:
        ids = torch.randint(5, vocab, (n, w))
        mask = torch.ones(n, w, dtype=torch.long)
        if train:
            enc.train()

            def fn():
                enc.zero_grad(set_to_none=True)
                enc.forward_padded(ids, mask, "passage").sum().backward()

        else:
            enc.eval()

            def fn():
                with torch.no_grad():
                    enc.forward_padded(ids, mask, "passage")

        fn()  # warm-up of this shape
        return _time(fn, args.reps)

    widths = [8, 16, 32, 64, 128] if not args.quick else [16, 64]
    totals = [64, 256, 1024, 2048] if not args.quick else [128, 1024]
    grid: dict[str, list[dict[str, float]]] = {"inference": [], "training": []}
    for mode in grid:
        for w in widths:
            for tot in totals:
                n = max(1, tot // w)
                t = call(n, w, mode == "training")
                grid[mode].append({"n": n, "w": w, "tokens": n * w, "seconds": t})
                print(f"[{mode}] n={n:4d} w={w:3d} {t * 1e3:8.1f} ms", flush=True)
    fits = {}
    for mode, rows in grid.items():
        x = np.array([r["n"] * r["w"] * (1 + r["w"] / attn) for r in rows])
        y = np.array([r["seconds"] for r in rows])
        a = np.stack([np.ones_like(x), x], 1)
        (t0, t1), *_ = np.linalg.lstsq(a, y, rcond=None)
        fits[mode] = {
            "t0_ms": round(float(t0) * 1e3, 3),
            "t1_us_per_token": round(float(t1) * 1e6, 3),
            "call_overhead_tokens": round(float(t0 / t1), 1),
            "max_rel_residual": round(float(np.max(np.abs(a @ [t0, t1] - y) / y)), 3),
        }
        print(mode, fits[mode], flush=True)

    # real work: training batches of 32 pairs (hybrid sampler order) and sentence encoding
    overhead = {m: max(0.0, f["call_overhead_tokens"]) for m, f in fits.items()}
    budget = enc.token_budget
    sents = bench.xquad_sentences(args.sentences)
    ids = enc.tokenize(sents, "passage")
    lens = [len(x) for x in ids]
    plans = {
        "greedy": _greedy(lens, budget),
        "optimal": plan_sub_batches(lens, budget, overhead["inference"], attn),
    }
    encoding: dict[str, Any] = {}
    enc.eval()
    for name, groups in plans.items():

        def run(groups=groups):
            with torch.no_grad():
                for g in groups:
                    enc.forward_padded(*enc.pad([ids[i] for i in g], torch.device("cpu")), "passage")

        encoding[name] = {
            "calls": len(groups),
            "padded_tokens": padded_tokens(lens, groups),
            "padding_fraction": round(1 - sum(lens) / padded_tokens(lens, groups), 4),
            "seconds": round(_time(run, max(1, args.reps - 1)), 3),
        }
        print("[encode]", name, encoding[name], flush=True)
    encoding["speedup"] = round(encoding["greedy"]["seconds"] / encoding["optimal"]["seconds"], 3)

    pairs = bench.xquad_pairs(32 * args.batches)
    training: dict[str, Any] = {}
    enc.train()
    batches = [pairs[b * 32 : (b + 1) * 32] for b in range(args.batches)]
    tok = [
        (enc.tokenize([q for q, _ in b], "query"), enc.tokenize([p for _, p in b], "passage"))
        for b in batches
    ]
    for name in ("greedy", "optimal"):

        def plan(lengths, name=name):
            if name == "greedy":
                return _greedy(lengths, budget)
            return plan_sub_batches(lengths, budget, overhead["training"], attn)

        def step(plan=plan):
            for q, p in tok:
                enc.zero_grad(set_to_none=True)
                loss = 0.0
                for side, seqs in (("query", q), ("passage", p)):
                    lengths = [len(s) for s in seqs]
                    for g in plan(lengths):
                        t, m = enc.pad([seqs[i] for i in g], torch.device("cpu"))
                        loss = loss + enc.forward_padded(t, m, side).sum()
                loss.backward()

        real = sum(len(s) for q, p in tok for s in (*q, *p))
        padded = sum(
            padded_tokens([len(s) for s in seqs], plan([len(s) for s in seqs]))
            for q, p in tok
            for seqs in (q, p)
        )
        training[name] = {
            "padded_tokens": padded,
            "padding_fraction": round(1 - real / padded, 4),
            "seconds_per_batch": round(_time(step, max(1, args.reps - 1)) / len(tok), 3),
        }
        print("[train]", name, training[name], flush=True)
    training["speedup"] = round(
        training["greedy"]["seconds_per_batch"] / training["optimal"]["seconds_per_batch"], 3
    )

    result = {
        "what": "encoder call cost vs padded shape (fit), and greedy vs optimal sub-batch plans on XQuAD-R",
        "attention_width": round(attn, 1),
        "token_budget": budget,
        "fit": fits,
        "grid": grid,
        "encoding": encoding,
        "training": training,
        "settings": {
            "reps": args.reps,
            "sentences": args.sentences,
            "batches": args.batches,
            "quick": args.quick,
        },
        "machine": bench.machine(),
    }
    path = bench.write_result("chunk_cost", result, args.out)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
