"""Training throughput on the GPU path: pairs/s and the share of step time spent waiting for data.

Why: the GPU knobs (bf16 autocast, fused AdamW, torch.compile, DataLoader workers, GradCache) only pay
if the accelerator is kept busy. This runs ``mlir.training.pipeline.build`` on the composed ``conf/train.yaml``
(``trainer=default``: GPU with bf16-mixed when there is one, else CPU fp32) for a few variants and
times every step with a callback:

* ``compute`` = ``on_train_batch_start`` -> ``on_train_batch_end`` (forward, backward, optimiser;
  CUDA is synchronised at the end so queued kernels are counted);
* ``data wait`` = previous ``on_train_batch_end`` -> ``on_train_batch_start`` (the DataLoader fetch,
  host-to-device copy and loop overhead).

Throughput counts the steps after ``--warmup`` (compilation, allocator warm-up and worker start-up
excluded). Writes ``bench/results/train_gpu.json`` with the device, load average and every variant.
It runs on a CPU-only machine too (then fused AdamW and bf16 are off and the numbers are CPU numbers;
the JSON says so). Usage::

    python bench/bench_train_gpu.py                        # tiny random model, default variants
    python bench/bench_train_gpu.py --model me5_small_offline --batch-size 64 --steps 30
    python bench/bench_train_gpu.py --variants base,workers2,grad_cache,compile
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

#: variant name -> extra Hydra overrides (on top of the common ones)
VARIANTS: dict[str, list[str]] = {
    "base": ["data.num_workers=0"],
    "workers2": ["data.num_workers=2"],  # persistent workers slicing the pre-tokenised Arrow columns
    "grad_cache": ["data.num_workers=0", "model.grad_cache.chunk_size=8"],
    "compile": ["data.num_workers=0", "model.compile=true"],
}


class StepTimer:
    """Lightning callback: per-step compute and data-wait seconds (CUDA synchronised at batch end)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.last_end: float | None = None
        self.start = 0.0
        self.compute: list[float] = []
        self.wait: list[float] = []

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def callback(self) -> Any:
        import lightning as L

        timer = self

        class _Cb(L.Callback):
            def on_train_start(self, trainer, pl_module):  # noqa: ARG002
                timer.last_end = timer._now()  # the first wait includes the first fetch (and worker start)

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ARG002
                timer.start = timer._now()
                if timer.last_end is not None:
                    timer.wait.append(timer.start - timer.last_end)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ARG002
                timer.last_end = timer._now()
                timer.compute.append(timer.last_end - timer.start)

        return _Cb()

    def summary(self, warmup: int, pairs_per_step: int) -> dict[str, Any]:
        comp, wait = self.compute[warmup:], self.wait[warmup:]
        if not comp:
            raise RuntimeError(f"only {len(self.compute)} steps ran; need more than --warmup {warmup}")
        total = sum(comp) + sum(wait)
        return {
            "steps": len(comp),
            "pairs_per_s": round(len(comp) * pairs_per_step / total, 2),
            "step_ms_median": round(1000 * statistics.median(c + w for c, w in zip(comp, wait)), 2),
            "compute_ms_median": round(1000 * statistics.median(comp), 2),
            "data_wait_ms_median": round(1000 * statistics.median(wait), 3),
            "data_wait_share": round(sum(wait) / total, 4),
            "first_step_s": round(self.compute[0] + (self.wait[0] if self.wait else 0.0), 3),
        }


def compose(args: argparse.Namespace, out_dir: str, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import mlir.core.config  # noqa: F401  (resolvers)

    overrides = [
        f"model={args.model}",
        "trainer=default",
        "logger=none",
        "callbacks=none",
        "test=false",
        f"seed={args.seed}",
        f"paths.output_dir={out_dir}",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false",
        "data.val_batches=0",
        "data.corpus.download=false",
        f"data.batch_size={args.batch_size}",
        *extra,
    ]
    with initialize_config_dir(str(bench.ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def run_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import lightning as L
    import torch

    from mlir.training.pipeline import build

    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as tmp:
        cfg = compose(args, tmp, VARIANTS[name])
        L.seed_everything(cfg.seed, workers=True)
        module, datamodule, trainer = build(cfg)
        timer = StepTimer()
        trainer.callbacks.append(timer.callback())
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        wall = time.perf_counter() - t0
        opt = trainer.optimizers[0]
        res = {
            "overrides": VARIANTS[name],
            "device": str(module.device),
            "precision": str(trainer.precision),
            "optimizer": type(opt).__name__,
            "fused_adamw": bool(opt.defaults.get("fused")),
            "automatic_optimization": module.automatic_optimization,
            "fit_seconds": round(wall, 2),
            **timer.summary(args.warmup, args.batch_size),
        }
        if torch.cuda.is_available():
            res["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()
        del module, datamodule, trainer
        gc.collect()
        return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default="tiny_random", help="conf/model option (tiny_random, me5_small_offline, ...)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="global batch (pairs)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="timed steps after the warm-up")
    p.add_argument("--variants", default="base,workers2,grad_cache", help=f"comma list of {sorted(VARIANTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output JSON (default bench/results/train_gpu.json)")
    args = p.parse_args(argv)
    import torch

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {
        "benchmark": "train_gpu",
        "note": None if cuda else "no GPU available: CPU fp32 numbers (no bf16, no fused AdamW)",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "machine": bench.machine(),
        "loadavg_before": bench.loadavg(),
        "args": vars(args),
        "variants": {},
    }
    for name in names:
        res = run_variant(args, name)
        result["variants"][name] = res
        print(
            bench.summary_line(
                name, [(k, res[k]) for k in ("pairs_per_s", "step_ms_median", "data_wait_share")]
            )
        )
    result["loadavg_after"] = bench.loadavg()
    path = bench.write_result("train_gpu", result, Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
