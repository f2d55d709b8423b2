"""Training throughput: mlir's Lightning step vs sentence-transformers' ``SentenceTransformerTrainer``.

Same machine, data, backbone and batches, in one process:

* **mlir**: ``mlir.training.pipeline.build`` on the composed ``conf/train.yaml`` (what ``python train.py`` runs:
  offline e5-small, hybrid sampler alpha=0.5, global batch 32, InfoNCE t=0.05, AdamW 3e-5 / wd 0.01,
  linear warmup, gradient clipping 1.0, fp32 on CPU, length-sorted sub-batches under the 4096-token
  budget), with ``model.encoder.freeze_embeddings`` true (the shipped config) and false. Validation,
  checkpointing and loggers are off; a callback times the steps.
* **sentence-transformers** (v5+ trainer API): ``SentenceTransformer([Transformer(dir, query_length=64,
  document_length=256), Pooling(mean), Normalize()])``, ``MultipleNegativesRankingLoss(scale=20)``
  (= 1 / 0.05), batch 32, the same lr / weight decay / warmup / clipping, ``prompts`` "query: " /
  "passage: " and ``router_mapping`` anchor->query, positive->document (so queries are cut at 64 and
  passages at 256 tokens, like mlir). Its data set is *exactly* the sequence of (question, answer
  sentence) pairs mlir's sampler draws, fed in order (sequential batch sampler), so both sides see the
  same batches. ``st_frozen`` also freezes ST's word embeddings (like-for-like with mlir's default).

Each system runs ``warmup + steps`` optimiser steps; throughput counts the last ``steps`` (wall time
between the end of step ``warmup`` and the end of the last step, data loading included). Padding is
counted by one forward pre-hook on the backbone for both (padded vs attention-mask tokens). With
``--rounds R`` the systems run R times in alternation (A B C A B C ...) and the median round is kept,
which evens out a machine shared with other jobs; CPU seconds are recorded as well.

Writes ``bench/results/train.json``. ``--quick``: 1 warm-up + 3 measured steps, one round.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402

SYSTEMS = ("mlir_frozen", "mlir_unfrozen", "st", "st_frozen")


# ----------------------------------------------------------------------------------------------- mlir
def compose_train_cfg(max_steps: int, freeze: bool, out_dir: str, seed: int, batch_size: int):
    from hydra import compose, initialize_config_dir

    import mlir.core.config  # noqa: F401  (resolvers)

    overrides = [
        "trainer=cpu",
        "logger=none",
        "callbacks=none",
        "test=false",
        f"seed={seed}",
        f"paths.output_dir={out_dir}",
        f"paths.work_dir={out_dir}",
        f"trainer.max_steps={max_steps}",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false",
        "data.val_batches=0",
        "data.corpus.download=false",
        f"data.batch_size={batch_size}",
        f"model.encoder.freeze_embeddings={str(freeze).lower()}",
    ]
    with initialize_config_dir(str(bench.ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


class StepTimer:
    """Wall/CPU time stamps at the end of every optimiser step (Lightning or HF callbacks call ``tick``)."""

    def __init__(self, counter: bench.TokenCounter) -> None:
        self.counter = counter
        self.marks: list[tuple[float, float, dict[str, int]]] = []

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), bench.cpu_seconds(), self.counter.snapshot()))

    def window(self, warmup: int, pairs_per_step: int, coef: dict[str, float]) -> dict[str, Any]:
        """Throughput over the steps after the ``warmup``-th one."""
        if warmup < 1 or len(self.marks) < warmup + 1:
            raise RuntimeError(
                f"{len(self.marks)} steps timed with warmup {warmup}; need warmup >= 1 and a timed step"
            )
        marks = self.marks[warmup - 1 :]
        (w0, c0, n0), (w1, c1, n1) = marks[0], marks[-1]
        steps = len(marks) - 1
        counts = bench.diff(n1, n0)
        wall, cpu = w1 - w0, c1 - c0
        step_times = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
        # training = forward + backward (~2x forward) = 3x the forward FLOPs
        flops = 3 * bench.forward_flops(counts, coef)
        return {
            "steps": steps,
            "pairs": steps * pairs_per_step,
            "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "pairs_per_s": round(steps * pairs_per_step / wall, 3),
            "real_tokens_per_s": round(counts["real"] / wall, 1),
            "padded_tokens_per_s": round(counts["padded"] / wall, 1),
            "padding_fraction": bench.padding_fraction(counts),
            "forward_calls_per_step": round(counts["calls"] / steps, 2),
            "step_seconds_median": round(statistics.median(step_times), 3),
            "useful_train_gflop_per_s": round(flops / wall / 1e9, 2),
            "tokens": counts,
        }


def run_mlir(
    args: argparse.Namespace, freeze: bool, budget: int | None = None, coef: dict[str, float] | None = None
) -> dict[str, Any]:
    import lightning as L
    import torch

    from mlir.training.pipeline import build

    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = compose_train_cfg(total, freeze, tmp, args.seed, args.batch_size)
        L.seed_everything(cfg.seed, workers=True)
        module, datamodule, trainer = build(cfg)
        enc = module.encoder
        if budget is not None:  # diagnostic variant: another model.encoder.token_budget
            enc.token_budget = int(budget)
        counter = bench.TokenCounter(enc.query_model)
        timer = StepTimer(counter)
        batches: list[tuple[list[int], list[int]]] = []

        class _Cb(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ARG002
                timer.tick()
                batches.append((batch["q_rows"].tolist(), batch["p_rows"].tolist()))

        trainer.callbacks.append(_Cb())
        losses: list[float] = []
        orig_step = module.training_step

        def step(batch, batch_idx):
            loss = orig_step(batch, batch_idx)
            if loss is not None:
                losses.append(float(loss.detach()))
            return loss

        module.training_step = step
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        trainer.fit(module, datamodule=datamodule)
        coef = coef or bench.encoder_flops(enc.query_model.config)
        res = timer.window(args.warmup, args.batch_size, coef)
        counter.remove()
        res.update(
            {
                "trainable_parameters": trainable,
                "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
                "token_budget": enc.token_budget,
                "torch_threads": torch.get_num_threads(),
            }
        )
        out = {"result": res, "batches": batches}
        del module, trainer, datamodule
        gc.collect()
        return out


# ----------------------------------------------------------------------------------- sentence-transformers
def run_st(args: argparse.Namespace, pairs: list[tuple[str, str]], freeze: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback

    total = args.warmup + args.steps
    path = str(bench.offline_model_dir())
    torch.manual_seed(args.seed)
    tr = Transformer(path, query_length=64, document_length=256, max_seq_length=256)
    model = SentenceTransformer(
        modules=[tr, Pooling(tr.get_embedding_dimension(), "mean"), Normalize()], device="cpu"
    )
    backbone = tr.auto_model if hasattr(tr, "auto_model") else tr.model
    if freeze:
        backbone.get_input_embeddings().weight.requires_grad_(False)
    counter = bench.TokenCounter(backbone)
    timer = StepTimer(counter)
    losses: list[float] = []

    class _Cb(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ARG002
            timer.tick()

        def on_log(self, a, state, control, logs=None, **kw):  # noqa: ARG002
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    def sequential(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return DefaultBatchSampler(
            SequentialSampler(dataset),
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )

    ds = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    with tempfile.TemporaryDirectory(prefix="bench-st-") as tmp:
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            max_steps=total,
            per_device_train_batch_size=args.batch_size,
            learning_rate=3e-5,
            weight_decay=0.01,
            warmup_steps=0.1,  # a float is a ratio in transformers v5 (warmup_ratio is deprecated)
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            dataloader_drop_last=True,
            dataloader_num_workers=0,
            use_cpu=True,
            disable_tqdm=True,
            prompts={"anchor": "query: ", "positive": "passage: "},
            router_mapping={"anchor": "query", "positive": "document"},
            batch_sampler=sequential,
        )
        loss = MultipleNegativesRankingLoss(model, scale=20.0)
        trainer = SentenceTransformerTrainer(
            model=model, args=targs, train_dataset=ds, loss=loss, callbacks=[_Cb()]
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trainer.train()
    coef = bench.encoder_flops(backbone.config)
    res = timer.window(args.warmup, args.batch_size, coef)
    counter.remove()
    res.update(
        {
            "trainable_parameters": trainable,
            "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
            "attn_implementation": getattr(backbone.config, "_attn_implementation", None),
            "torch_threads": torch.get_num_threads(),
        }
    )
    del trainer, model
    gc.collect()
    return {"result": res}


# ----------------------------------------------------------------------------------------------- main
def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median pairs/s (the whole record, so its fields stay consistent)."""
    order = sorted(rounds, key=lambda r: r["pairs_per_s"])
    return order[(len(order) - 1) // 2]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=3, help="steps not timed")
    ap.add_argument("--steps", type=int, default=30, help="timed steps after the warm-up")
    ap.add_argument("--rounds", type=int, default=1, help="alternating repetitions of all systems")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma list of {SYSTEMS}; 'mlir_frozen@1024' = mlir with model.encoder.token_budget=1024",
    )
    ap.add_argument("--quick", action="store_true", help="1 warm-up + 3 timed steps")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.rounds = 1, 3, 1
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted({x.split("@")[0] for x in systems} - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown systems {unknown}")
    load_start = bench.loadavg()
    t_all = time.perf_counter()

    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    rows, pairs = sampler_pairs(args)  # the batches mlir's data module yields, as texts for ST
    loads: list[list[float]] = []
    for _ in range(args.rounds):
        for s in systems:
            loads.append(bench.loadavg())
            if s.startswith("mlir"):
                base, _, budget = s.partition("@")
                out = run_mlir(args, freeze=(base == "mlir_frozen"), budget=int(budget) if budget else None)
                if out["batches"] != rows:
                    raise RuntimeError(
                        "mlir trained on other batches than the sampler replay; unfair comparison"
                    )
            else:
                out = run_st(args, pairs, freeze=(s == "st_frozen"))
            results[s].append(out["result"])
            r = out["result"]
            print(
                bench.summary_line(
                    s,
                    [
                        ("pairs/s", r["pairs_per_s"]),
                        ("tokens/s", r["real_tokens_per_s"]),
                        ("padding", r["padding_fraction"]),
                        ("cpu/wall", round(r["cpu_seconds"] / r["seconds"], 2)),
                        ("load", bench.loadavg()[0]),
                    ],
                ),
                flush=True,
            )

    best = {s: median_round(rs) for s, rs in results.items()}
    ratios: dict[str, float] = {}
    for a, b in (
        ("mlir_frozen", "st"),
        ("mlir_unfrozen", "st"),
        ("mlir_frozen", "st_frozen"),
        ("mlir_unfrozen", "st_frozen"),
    ):
        if a in best and b in best:
            ratios[f"{a}/{b}_pairs_per_s"] = round(best[a]["pairs_per_s"] / best[b]["pairs_per_s"], 3)
            ratios[f"{a}/{b}_cpu_seconds_per_pair"] = round(
                (best[b]["cpu_seconds"] / best[b]["pairs"]) / (best[a]["cpu_seconds"] / best[a]["pairs"]), 3
            )
    q_over = None
    if pairs is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(bench.offline_model_dir()))
        q_over = sum(len(tok("query: " + q)["input_ids"]) > 64 for q, _ in pairs)
    result = {
        "what": "training throughput, mlir (Lightning, train.py config) vs sentence-transformers trainer",
        "target": "mlir_frozen/st_pairs_per_s >= 1.3",
        "ratios": ratios,
        "systems": best,
        "rounds": {
            s: [{k: r[k] for k in ("pairs_per_s", "seconds", "cpu_seconds")} for r in rs]
            for s, rs in results.items()
        },
        "settings": {
            "batch_size": args.batch_size,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "rounds": args.rounds,
            "seed": args.seed,
            "query_max_length": 64,
            "passage_max_length": 256,
            "data": "XQuAD-R training split (36 articles, 9 languages), hybrid alpha=0.5 batches from mlir's sampler",
            "queries_over_64_tokens_in_timed_pairs": q_over,
            "flops_formula": "3 x forward; forward = 2 x non-embedding weights per real token + 4 x hidden x layers per (token, context token) pair",
            "quick": args.quick,
        },
        "machine": {
            **bench.machine(),
            "load_average_at_start": load_start,
            "load_average_per_run": loads,
            "load_average_at_end": bench.loadavg(),
        },
        "wall_seconds_total": round(time.perf_counter() - t_all, 1),
    }
    path = bench.write_result("train", result, args.out)
    print(f"ratios: {ratios}\nwritten to {path}")
    return result


def sampler_pairs(args: argparse.Namespace) -> tuple[list, list[tuple[str, str]]]:
    """Row ids per batch and (query, positive) texts of the first ``warmup + steps`` batches of mlir's
    data module (same config, seed and sampler as :func:`run_mlir`)."""
    import hydra

    total = args.warmup + args.steps
    cfg = compose_train_cfg(total, True, tempfile.gettempdir(), args.seed, args.batch_size)
    sampler = hydra.utils.instantiate(cfg.sampler)
    dm = hydra.utils.instantiate(cfg.data, sampler=sampler, encoder=None, seed=cfg.seed)
    dm.prepare_corpora()
    s = dm.make_sampler(dm.train_corpus, dm.seed, total_steps=total)
    rows = []
    for i in range(total):
        gb = s.global_batch(i // s.steps_per_epoch, i % s.steps_per_epoch)
        rows.append((gb.q_rows.tolist(), gb.p_rows.tolist()))
    corpus = dm.train_corpus
    q_rows = [r for b in rows for r in b[0]]
    p_rows = [r for b in rows for r in b[1]]
    return rows, list(zip(corpus.texts("query", q_rows), corpus.texts("positive", p_rows)))


if __name__ == "__main__":
    main()
