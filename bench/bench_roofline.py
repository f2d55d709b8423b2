"""Hardware roofline: fp32 matmul GFLOP/s of this machine vs the FLOP/s mlir's encoder achieves.

Measured in one process, interleaved (matmul, encoder, matmul, encoder, ...), best of each:

* **peak**: ``torch.mm`` of two ``--size`` x ``--size`` fp32 matrices (2 n^3 FLOPs), best of ``--mm-reps``;
  also the encoder's own GEMM shapes (``tokens x 384 @ 384 x 1536`` etc.), the roof for its layers.
* **encoder**: ``DualEncoder.encode_passages`` (the shipped config: sdpa attention, length-sorted
  sub-batches under the 4096-token budget) on ``--n`` XQuAD-R sentences. FLOPs = 2 x non-embedding
  weights per token (``L (4 H^2 + 2 H F)`` = 21.2M weights for e5-small) + ``4 H L`` per (token,
  context token) pair for ``QK^T`` and ``AV``; "useful" counts real tokens only, "executed" counts the
  padded blocks the kernels really ran.
* a ``torch.profiler`` breakdown of one encode call: where the time goes (GEMMs vs attention vs the rest).

Target: useful encoder FLOP/s >= 50 % of the square-matmul rate. Writes ``bench/results/roofline.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402


def mm_gflops(m: int, k: int, n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * k * n / best / 1e9


def theoretical_peak() -> dict[str, Any]:
    """cores x clock x 32 fp32 FLOP/cycle (two 256-bit FMA pipes) -- for AVX2+FMA x86 cores only."""
    import os

    mhz = None
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":")[1])
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    if mhz is None or " fma" not in flags or " avx2" not in flags:
        return {"gflops": None, "note": "unknown clock or no AVX2/FMA"}
    per_cycle = 64 if " avx512f" in flags else 32
    cores = os.cpu_count() or 1
    return {
        "gflops": round(cores * mhz / 1000 * per_cycle, 1),
        "formula": f"{cores} cores x {mhz:.0f} MHz (nominal, /proc/cpuinfo) x {per_cycle} fp32 FLOP/cycle",
    }


def profile_encode(enc: Any, texts: list[str]) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        enc.encode_passages(texts)
    rows = []
    total = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        rows.append((e.key, e.self_cpu_time_total, e.count))
    rows.sort(key=lambda r: -r[1])
    gemm = sum(
        r[1] for r in rows if r[0] in ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")
    )
    attn = sum(r[1] for r in rows if "attention" in r[0] or "softmax" in r[0] or r[0] == "aten::baddbmm")
    del torch
    return {
        "texts": len(texts),
        "self_cpu_ms_total": round(total / 1000, 1),
        "gemm_fraction": round(gemm / total, 3) if total else None,
        "attention_fraction": round(attn / total, 3) if total else None,
        "top_ops": [
            {"op": k, "self_ms": round(t / 1000, 1), "calls": c, "fraction": round(t / total, 3)}
            for k, t, c in rows[:12]
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from bench.bench_encode import build_mlir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="square matmul size")
    ap.add_argument("--mm-reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=500, help="XQuAD-R sentences per encoder run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved (matmul, encoder) rounds")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1024 matmul, 150 sentences, 2 rounds")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.n, args.rounds = 1024, 150, 2
    load_start = bench.loadavg()
    t_all = time.perf_counter()

    texts = bench.xquad_sentences(args.n, seed=1)
    enc = build_mlir()
    coef = bench.encoder_flops(enc.query_model.config)
    counter = bench.TokenCounter(enc.query_model)
    enc.encode_passages(texts[:32])  # warm-up
    h, f = enc.query_model.config.hidden_size, enc.query_model.config.intermediate_size

    mm, useful, executed, secs, loads = [], [], [], [], []
    layer_shapes: dict[str, list[float]] = {}
    for r in range(args.rounds):
        mm.append(mm_gflops(args.size, args.size, args.size, args.mm_reps))
        before = counter.snapshot()
        clock = bench.Clock()
        enc.encode_passages(texts)
        wall = clock.wall()
        c = bench.diff(counter.snapshot(), before)
        secs.append(wall)
        useful.append(bench.forward_flops(c, coef) / wall / 1e9)
        executed.append(bench.forward_flops(c, coef, padded=True) / wall / 1e9)
        tokens = 4096  # one sub-batch under the default token budget
        for name, (m, k, n) in {
            "qkv_or_out_4096x384x384": (tokens, h, h),
            "ffn_up_4096x384x1536": (tokens, h, f),
            "ffn_down_4096x1536x384": (tokens, f, h),
        }.items():
            layer_shapes.setdefault(name, []).append(mm_gflops(m, k, n, args.mm_reps))
        loads.append(bench.loadavg())
        print(
            bench.summary_line(
                f"round {r}",
                [
                    ("matmul_gflops", round(mm[-1], 1)),
                    ("encoder_useful_gflops", round(useful[-1], 1)),
                    ("load", loads[-1][0]),
                ],
            ),
            flush=True,
        )
    peak = max(mm)
    best_useful = max(useful)
    best_exec = max(executed)
    result = {
        "what": "fp32 matmul rate of this machine vs mlir encoder's achieved FLOP/s (DualEncoder.encode_passages)",
        "target": "encoder useful FLOP/s >= 50% of matmul GFLOP/s",
        "matmul_gflops_best": round(peak, 1),
        "matmul_gflops_all": [round(x, 1) for x in mm],
        "encoder_shape_gemm_gflops_best": {k: round(max(v), 1) for k, v in layer_shapes.items()},
        "encoder_useful_gflops_best": round(best_useful, 2),
        "encoder_executed_gflops_best": round(best_exec, 2),
        "encoder_useful_gflops_all": [round(x, 2) for x in useful],
        "encoder_seconds_all": [round(x, 3) for x in secs],
        "fraction_of_matmul_useful": round(best_useful / peak, 3),
        "fraction_of_matmul_executed": round(best_exec / peak, 3),
        "theoretical_peak": theoretical_peak(),
        "settings": {
            "matmul_size": args.size,
            "mm_reps": args.mm_reps,
            "texts": len(texts),
            "rounds": args.rounds,
            "token_budget": enc.token_budget,
            "attn_implementation": getattr(enc.query_model.config, "_attn_implementation", None),
            "torch_threads": torch.get_num_threads(),
            "flops_per_token": coef,
            "flops_formula": "forward FLOPs = n_tokens x 2 x L(4H^2 + 2HF) + sum over sequences of n^2 x 4HL "
            "(useful: real tokens; executed: padded block widths)",
            "quick": args.quick,
        },
    }
    if not args.no_profile:
        result["profile"] = profile_encode(enc, texts[: min(len(texts), 200)])
    result["machine"] = {
        **bench.machine(),
        "load_average_at_start": load_start,
        "load_average_per_round": loads,
    }
    result["wall_seconds_total"] = round(time.perf_counter() - t_all, 1)
    p = bench.write_result("roofline", result, args.out)
    print(
        f"matmul {peak:.1f} GFLOP/s, encoder {best_useful:.1f} useful / {best_exec:.1f} executed GFLOP/s "
        f"({best_useful / peak:.0%} of matmul)\nwritten to {p}"
    )
    return result


if __name__ == "__main__":
    main()
