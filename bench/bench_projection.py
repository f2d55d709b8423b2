"""Scaling projection: the full MKQA evaluation (26 languages, mono + cross + multi) on one 80 GB GPU.

There is no GPU here, so this *projects* from rates measured on this CPU, and writes every assumption
next to every number in ``bench/results/projection.json``:

* **Sizes** (MKQA: 10,000 parallel questions x 26 languages): every question answerable in every
  language (260,000 queries; an upper bound, MKQA drops unanswerable / long-answer ones) and 10,000
  unique answer texts per language (260,000 in the multilingual pool). The bundled 6-record sample
  (``test_mkqa.jsonl.gz``) gives the mean token lengths of queries and answer documents (with the E5
  prefixes) and a (tiny-sample) answer-texts-per-question ratio.
* **Encoding**: FLOPs per text from the e5-small formula (``bench.encoder_flops``); rates (a) measured on
  this CPU (``encode.json`` / ``roofline.json``: useful GFLOP/s of ``DualEncoder.encode``), (b) GPU =
  CPU useful rate x (GPU bf16 dense peak / measured CPU fp32 matmul rate), i.e. the same fraction of
  peak as here, and (c) a conservative 10 % of the GPU's bf16 peak (short texts, a 33M-weight encoder:
  launch-bound) plus a per-sub-batch launch overhead.
* **Search** (``mlir.eval.search.relevant_ranks``: full ranking by counting, fp32 GEMM with TF32 off):
  per setting the GEMM FLOPs ``2 Q C D`` and the comparison passes (one per relevant-document column of a
  query chunk, ``J`` columns: 1 for mono/cross, up to 26 for multi, where every language's answer is
  relevant), each pass streaming ``12`` bytes per score (read scores, write 0/1, read to sum). CPU rates
  are measured on a ``q_chunk x d_chunk`` block with ``J = 1`` and ``J = --multi-j``; the GPU time is
  GEMM at ``gemm_efficiency`` of the fp32 peak + comparison bytes at ``bandwidth_efficiency`` of HBM.
* **Memory**: embeddings ``N x 384`` (fp32, as evaluation keeps them; bf16 shown too), the model, the
  score block ``q_chunk x d_chunk`` fp32, the 64 MiB comparison slab and per-chunk bookkeeping.

``--quick`` measures a smaller block.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402

GPUS = {
    "H100-SXM5-80GB": {
        "bf16_dense_tflops": 989.4,
        "fp32_tflops": 66.9,
        "hbm_tb_per_s": 3.35,
        "memory_gb": 80,
        "source": "NVIDIA H100 datasheet (SXM5): dense bf16 989.4 TFLOP/s, fp32 66.9 TFLOP/s, 3.35 TB/s",
    },
    "A100-SXM4-80GB": {
        "bf16_dense_tflops": 312.0,
        "fp32_tflops": 19.5,
        "hbm_tb_per_s": 2.039,
        "memory_gb": 80,
        "source": "NVIDIA A100 datasheet (SXM4 80GB): dense bf16 312 TFLOP/s, fp32 19.5 TFLOP/s, 2.04 TB/s",
    },
}
MKQA_QUESTIONS = 10_000
MKQA_LANGS = 26
DIM = 384


def mkqa_sample_stats() -> dict[str, Any]:
    """Token lengths and answers-per-question of the bundled MKQA sample (with E5 prefixes)."""
    from transformers import AutoTokenizer

    from mlir.eval.benchmarks import load_benchmark

    path = bench.data_dir() / "mkqa" / "test_mkqa.jsonl.gz"
    if not path.is_file():
        return {
            "available": False,
            "query_tokens_mean": 16.0,
            "doc_tokens_mean": 8.0,
            "note": "assumed (no sample)",
        }
    task = load_benchmark("mkqa", {"type": "mkqa", "path": str(path), "download": False}).task
    tok = AutoTokenizer.from_pretrained(str(bench.offline_model_dir()))
    qs = [t for x in task.langs for t in task.queries[x].texts]
    ds = [t for x in task.langs for t in task.docs[x]]
    qlen = [len(tok("query: " + t)["input_ids"]) for t in qs]
    dlen = [len(tok("passage: " + t)["input_ids"]) for t in ds]
    n_ex = task.meta.get("examples") or len(task.query_ids)
    return {
        "available": True,
        "source": str(path),
        "examples": n_ex,
        "langs": len(task.langs),
        "queries": len(qs),
        "docs": len(ds),
        "docs_per_example_per_lang": round(len(ds) / (n_ex * len(task.langs)), 3),
        "query_tokens_mean": round(sum(qlen) / len(qlen), 2),
        "doc_tokens_mean": round(sum(dlen) / len(dlen), 2),
        "query_tokens_max": max(qlen),
        "doc_tokens_max": max(dlen),
    }


def measure_search(q: int, c: int, j_multi: int, reps: int) -> dict[str, Any]:
    """CPU seconds of ``relevant_ranks_flat`` on one ``q x c`` block with J=1 and J=j_multi relevant docs."""
    import numpy as np
    import torch

    from mlir.eval.search import relevant_ranks_flat

    gen = torch.Generator().manual_seed(0)
    qe = torch.nn.functional.normalize(torch.randn(q, DIM, generator=gen), dim=-1)
    de = torch.nn.functional.normalize(torch.randn(c, DIM, generator=gen), dim=-1)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"q": q, "c": c, "dim": DIM}
    best_mm = float("inf")
    s = torch.empty(q, c)
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(qe, de.T, out=s)
        best_mm = min(best_mm, time.perf_counter() - t)
    del s
    out["gemm_seconds"] = round(best_mm, 4)
    out["gemm_gflops"] = round(2 * q * c * DIM / best_mm / 1e9, 1)
    for j in (1, j_multi):
        rel = np.stack([rng.choice(c, j, replace=False) for _ in range(q)]).reshape(-1)
        offsets = np.arange(q + 1, dtype=np.int64) * j
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            relevant_ranks_flat(qe, de, rel, offsets, q_chunk=q, d_chunk=c, device="cpu")
            best = min(best, time.perf_counter() - t)
        out[f"J{j}_seconds"] = round(best, 4)
    # decomposition: t(J) = gemm + J * pass  ->  per comparison pass over the block
    pass_s = max((out[f"J{j_multi}_seconds"] - out["J1_seconds"]) / (j_multi - 1), 1e-9)
    out["compare_pass_seconds"] = round(pass_s, 4)
    out["compare_pass_gb_per_s"] = round(12 * q * c / pass_s / 1e9, 2)
    out["J1_overhead_over_gemm"] = round(out["J1_seconds"] / best_mm, 2)
    return out


def load_json(name: str) -> dict[str, Any] | None:
    p = bench.RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q-chunk", type=int, default=4096, help="relevant_ranks default q_chunk")
    ap.add_argument("--d-chunk", type=int, default=65536, help="relevant_ranks default d_chunk")
    ap.add_argument("--measure-q", type=int, default=1024, help="queries in the measured CPU block")
    ap.add_argument("--measure-c", type=int, default=65536, help="docs in the measured CPU block")
    ap.add_argument("--multi-j", type=int, default=26, help="relevant docs per query in the multi pool")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument(
        "--gemm-efficiency", type=float, default=0.7, help="fraction of GPU fp32 peak in the search GEMM"
    )
    ap.add_argument(
        "--bandwidth-efficiency", type=float, default=0.7, help="fraction of HBM bandwidth in compare passes"
    )
    ap.add_argument("--conservative-mfu", type=float, default=0.10, help="GPU encode: fraction of bf16 peak")
    ap.add_argument(
        "--launch-ms", type=float, default=2.0, help="GPU encode: fixed cost per sub-batch (launches, sync)"
    )
    ap.add_argument(
        "--eval-batch-size",
        type=int,
        default=64,
        help="eval.batch_size of train.py (token budget = bs x max_len)",
    )
    ap.add_argument("--quick", action="store_true", help="measure a 512 x 16384 block")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.measure_q, args.measure_c, args.reps = 512, 16384, 1
    load_start = bench.loadavg()

    from transformers import AutoConfig

    coef = bench.encoder_flops(AutoConfig.from_pretrained(str(bench.offline_model_dir())))
    sample = mkqa_sample_stats()
    nq = MKQA_QUESTIONS * MKQA_LANGS
    nd_lang = MKQA_QUESTIONS  # upper bound: every answer text unique
    nd = nd_lang * MKQA_LANGS
    qt, dt = sample["query_tokens_mean"], sample["doc_tokens_mean"]

    def text_flops(n_tok: float) -> float:
        return n_tok * coef["per_token"] + n_tok * n_tok * coef["attn_per_token_ctx"]

    enc_flops = nq * text_flops(qt) + nd * text_flops(dt)
    n_subbatches = nq * qt / (args.eval_batch_size * 64) + nd * dt / (args.eval_batch_size * 256)

    # measured CPU rates
    roof = load_json("roofline") or {}
    encj = load_json("encode") or {}
    cpu_matmul = roof.get("matmul_gflops_best")
    cpu_useful = (encj.get("systems", {}).get("mlir", {}) or {}).get("useful_gflops_per_s") or roof.get(
        "encoder_useful_gflops_best"
    )
    measured_here = {}
    if cpu_matmul is None or cpu_useful is None:  # measure (small) when the other benchmarks did not run
        from bench.bench_roofline import mm_gflops

        cpu_matmul = cpu_matmul or round(mm_gflops(2048, 2048, 2048, 3), 1)
        measured_here["cpu_matmul_gflops"] = cpu_matmul
        if cpu_useful is None:
            cpu_useful = round(cpu_matmul * 0.5, 2)
            measured_here["cpu_useful_gflops"] = (
                "assumed 50% of matmul (run bench_encode/bench_roofline first)"
            )
    search_cpu = measure_search(args.measure_q, args.measure_c, args.multi_j, args.reps)

    settings = {
        "mono": {"pairs": MKQA_LANGS, "q": MKQA_QUESTIONS, "c": nd_lang, "J": 1},
        "cross": {"pairs": MKQA_LANGS * (MKQA_LANGS - 1), "q": MKQA_QUESTIONS, "c": nd_lang, "J": 1},
        "multi": {"pairs": MKQA_LANGS, "q": MKQA_QUESTIONS, "c": nd, "J": args.multi_j},
    }
    # CPU per-score costs from the measured block
    cpu_gemm_per_flop = search_cpu["gemm_seconds"] / (2 * search_cpu["q"] * search_cpu["c"] * DIM)
    cpu_pass_per_score = search_cpu["compare_pass_seconds"] / (search_cpu["q"] * search_cpu["c"])
    search = {}
    for name, s in settings.items():
        scores = s["pairs"] * s["q"] * s["c"]
        flops = 2 * scores * DIM
        search[name] = {
            **s,
            "scores": scores,
            "gemm_tflop": round(flops / 1e12, 2),
            "compare_passes_x_scores": scores * s["J"],
            "cpu_hours": round((flops * cpu_gemm_per_flop + scores * s["J"] * cpu_pass_per_score) / 3600, 2),
        }

    gpus = {}
    for gname, g in GPUS.items():
        scale = g["bf16_dense_tflops"] * 1e3 / cpu_matmul
        rate_scaled = cpu_useful * scale * 1e9
        rate_cons = g["bf16_dense_tflops"] * 1e12 * args.conservative_mfu
        launch_s = n_subbatches * args.launch_ms / 1e3
        enc_scaled = enc_flops / rate_scaled + launch_s
        enc_cons = enc_flops / rate_cons + launch_s
        srch = {}
        total_s = 0.0
        for name, s in search.items():
            gemm_s = s["gemm_tflop"] * 1e12 / (g["fp32_tflops"] * 1e12 * args.gemm_efficiency)
            cmp_s = 12 * s["compare_passes_x_scores"] / (g["hbm_tb_per_s"] * 1e12 * args.bandwidth_efficiency)
            srch[name] = {
                "gemm_seconds": round(gemm_s, 2),
                "compare_seconds": round(cmp_s, 2),
                "seconds": round(gemm_s + cmp_s, 2),
            }
            total_s += gemm_s + cmp_s
        gpus[gname] = {
            "encode_seconds_same_fraction_of_peak": round(enc_scaled, 1),
            "encode_seconds_conservative": round(enc_cons, 1),
            "encode_gpu_over_cpu_flop_ratio": round(scale, 1),
            "launch_overhead_seconds": round(launch_s, 1),
            "search_seconds": srch,
            "total_seconds_conservative": round(enc_cons + total_s, 1),
            "spec": g,
        }

    # memory (GPU): per search call the documents + one score block + slab + chunk bookkeeping
    emb_fp32 = (nq + nd) * DIM * 4
    j = args.multi_j
    block = args.q_chunk * args.d_chunk * 4
    slab = (1 << 24) * 4
    chunk_book = args.q_chunk * j * (8 + 8 + 4 + 4 + 4 + 4)  # R, counts, thr, thr_ge, own, t
    d_multi = nd * DIM * 4
    q_chunk_bytes = args.q_chunk * DIM * 4
    from transformers import AutoModel

    n_params = sum(p.numel() for p in AutoModel.from_pretrained(str(bench.offline_model_dir())).parameters())
    model_bytes = n_params * 4
    budget_tokens = args.eval_batch_size * 256
    act_bytes = budget_tokens * (4 * DIM + 1536) * 2 * 3  # bf16 activations, ~3 live layer tensors
    gib = 1 << 30
    search_ws = d_multi + q_chunk_bytes + block + slab + chunk_book
    encode_ws = model_bytes / 2 + act_bytes  # bf16 autocast copies of the weights + activations
    memory = {
        "gpu_search_multi_gib": round(search_ws / gib, 2),
        "gpu_encode_gib": round((model_bytes + encode_ws) / gib, 2),
        "gpu_peak_gib": round((model_bytes + max(search_ws, encode_ws)) / gib, 2),
        "host_embeddings_fp32_gib": round(emb_fp32 / gib, 2),
        "host_embeddings_bf16_gib": round(emb_fp32 / 2 / gib, 2),
        "parts": {
            "doc_embeddings_multi_pool_fp32_gib": round(d_multi / gib, 3),
            "score_block_q_chunk_x_d_chunk_fp32_gib": round(block / gib, 3),
            "compare_slab_gib": round(slab / gib, 3),
            "chunk_bookkeeping_mib": round(chunk_book / (1 << 20), 1),
            "model_fp32_gib": round(model_bytes / gib, 3),
            "encode_activations_gib": round(act_bytes / gib, 3),
        },
        "fits_in_80gb": (model_bytes + max(search_ws, encode_ws)) < 80e9,
        "headroom_note": "the working set is a few GiB: q_chunk x d_chunk could grow 16x (16 GiB block) to cut launches",
    }
    result = {
        "what": "projected time and memory of a full MKQA evaluation (26 langs; mono, cross, multi) on one 80 GB GPU",
        "sizes": {
            "queries": nq,
            "docs_per_lang": nd_lang,
            "multi_pool_docs": nd,
            "dim": DIM,
            "query_tokens_mean": qt,
            "doc_tokens_mean": dt,
            "encode_tflop": round(enc_flops / 1e12, 1),
            "encode_sub_batches": round(n_subbatches),
        },
        "mkqa_sample": sample,
        "cpu_rates": {
            "matmul_gflops": cpu_matmul,
            "encoder_useful_gflops": cpu_useful,
            "encode_hours_here": round(enc_flops / (cpu_useful * 1e9) / 3600, 2),
            "search_block": search_cpu,
            **measured_here,
        },
        "search": search,
        "gpu_projection": gpus,
        "memory": memory,
        "assumptions": [
            f"MKQA: {MKQA_QUESTIONS} questions x {MKQA_LANGS} languages, all answerable (upper bound: MKQA drops "
            "unanswerable/long-answer questions per language)",
            f"documents: {nd_lang} unique answer texts per language, {nd} in the multilingual pool (the brief's "
            "~260k; mkqa_task de-duplicates texts, questions can have several answer texts: see mkqa_sample; "
            "search time scales linearly with the pool size)",
            "token lengths: means over the bundled 6-record MKQA sample (26 languages), with 'query: '/'passage: ' prefixes",
            "encoder FLOPs: 2 x 21.2M non-embedding weights per token + 4 x 384 x 12 per (token, context token); no padding",
            "GPU encode (scaled): same fraction of peak as this CPU achieves of its measured fp32 matmul rate, "
            "with GPU peak = dense bf16 (eval runs under bf16 autocast on CUDA)",
            f"GPU encode (conservative): {args.conservative_mfu:.0%} of dense bf16 peak + {args.launch_ms} ms per sub-batch "
            f"(eval.batch_size={args.eval_batch_size}: budgets {args.eval_batch_size}x64 query / {args.eval_batch_size}x256 passage tokens)",
            f"search GEMM in fp32 with TF32 off (mlir.eval.search._exact_matmul) at {args.gemm_efficiency:.0%} of fp32 peak",
            f"comparison passes: 12 bytes per score per relevant column at {args.bandwidth_efficiency:.0%} of HBM bandwidth; "
            f"J = 1 (mono/cross), J = {args.multi_j} (multi: each language's answer is relevant)",
            "cross: all 650 ordered pairs (the default; restrict with cross.target on a CPU)",
            "rank-distance, metrics and host<->device copies are not modelled (seconds, not minutes)",
            "CPU per-score costs from one measured block: t(J) = gemm + J x pass, extrapolated linearly",
        ],
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "machine": {
            **bench.machine(),
            "load_average_at_start": load_start,
            "load_average_at_end": bench.loadavg(),
        },
    }
    p = bench.write_result("projection", result, args.out)
    h = gpus["H100-SXM5-80GB"]
    print(
        f"H100: encode {h['encode_seconds_conservative']} s (conservative), search "
        f"{sum(v['seconds'] for v in h['search_seconds'].values()):.1f} s, peak GPU memory {memory['gpu_peak_gib']} GiB; "
        f"this CPU: encode {result['cpu_rates']['encode_hours_here']} h\nwritten to {p}"
    )
    return result


if __name__ == "__main__":
    main()
