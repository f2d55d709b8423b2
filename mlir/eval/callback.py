"""Periodic retrieval evaluation during training, as a Lightning callback.

Why a callback and not ``validation_step``: retrieval metrics need the *whole* candidate pool encoded
before any query can be scored, which does not fit Lightning's per-batch validation loop, and the
monitored metric (``dev/xquad_r_dev/avg/ndcg@10`` with ``conf/callbacks/retrieval_eval.yaml``) is what
checkpoints and early stopping can follow.

Under DDP every rank encodes a shard of the unique texts (``all_gather``), rank 0 scores, and the
metrics are broadcast, so every rank logs the *same* monitor value (no rank waits in a collective that
another skipped, and ModelCheckpoint/EarlyStopping decide identically everywhere). Scalars go to the
loggers once (global rank 0); with a ``WandbLogger`` also a per-language ``wandb.Table`` and a language
x setting heatmap. Each evaluation is written atomically to
``<output dir>/retrieval_eval/step_<global step>.json`` and ``latest.json``, where the output dir is
``output_dir`` when given, else ``trainer.log_dir``: with the CSV logger (the default)
``<run dir>/csv/version_<n>/`` (``version_0`` for a fresh run, the next number after each resume),
with no logger the run directory, with W&B alone its ``save_dir`` (the run directory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mlir.core.atomic import write_json
from mlir.core.errors import ConfigError
from mlir.eval.benchmarks import Benchmark, load_benchmarks
from mlir.eval.encode import DistInfo
from mlir.eval.metric_table import format_table, heatmap_figure, table_rows
from mlir.eval.runner import evaluate_benchmark

log = logging.getLogger(__name__)


class RetrievalEvalCallback(L.Callback):
    """Evaluate ``pl_module.encoder`` on retrieval benchmarks during ``fit``.

    Args:
        benchmarks: ``eval.benchmarks`` (name -> benchmark config) or built :class:`Benchmark` s. Built
            once per fit on every rank (deterministic, so all ranks hold the same texts).
        every_n_steps: also evaluate every N optimiser steps (``None``: only at epoch ends).
        on_epoch_end: evaluate at the end of each validation epoch (outside the sanity check) and, when
            no validation ran at that step, at the end of each training epoch.
        monitor_key: the logged key checkpoints/early stopping monitor; default
            ``{prefix}{first benchmark}/avg/ndcg@10``.
        output_dir: where ``retrieval_eval/*.json`` goes; default ``trainer.log_dir`` (the CSV logger's
            ``<run dir>/csv/version_<n>``; without a logger ``trainer.default_root_dir``, the run dir).
        batch_size: encoder batch size (``None``: the encoder's token budget decides).
        max_queries_per_lang: a cheaper, seeded query subsample for periodic evaluation (``None``: the
            benchmarks' own setting).
        prefix: prepended to every key sent to loggers (keys in the JSON files stay unprefixed).
        seed: default subsample seed of benchmarks that set none.
        log_tables: W&B table + heatmap per benchmark when a ``WandbLogger`` is attached.
        device: where scores are computed; default the module's device.
    """

    def __init__(
        self,
        benchmarks: Mapping[str, Any] | list[Benchmark],
        every_n_steps: int | None = None,
        on_epoch_end: bool = True,
        monitor_key: str | None = None,
        output_dir: str | None = None,
        batch_size: int | None = None,
        max_queries_per_lang: int | None = None,
        prefix: str = "eval/",
        seed: int | None = None,
        log_tables: bool = True,
        device: str | None = None,
    ):
        super().__init__()
        if every_n_steps is not None and int(every_n_steps) < 1:
            raise ConfigError(
                f"must be >= 1 or null, got {every_n_steps}", where="callbacks.retrieval_eval.every_n_steps"
            )
        if not benchmarks:
            raise ConfigError("no benchmarks configured", where="callbacks.retrieval_eval.benchmarks")
        self.benchmarks_cfg = benchmarks
        self.every_n_steps = int(every_n_steps) if every_n_steps is not None else None
        self.on_epoch_end = bool(on_epoch_end)
        self.monitor_key = monitor_key
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.max_queries_per_lang = max_queries_per_lang
        self.prefix = prefix or ""
        self.seed = seed
        self.log_tables = log_tables
        self.device = device
        self._benches: list[Benchmark] | None = None
        self._last_step: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._benches is not None:
            return
        if not hasattr(pl_module, "encoder"):
            raise ConfigError(
                f"{type(pl_module).__name__} has no `.encoder` to evaluate", where="callbacks.retrieval_eval"
            )
        benches = load_benchmarks(self.benchmarks_cfg, seed=self.seed)
        self._benches = [b.with_max_queries(self.max_queries_per_lang) for b in benches]
        if not self._benches:
            raise ConfigError("no benchmarks configured", where="callbacks.retrieval_eval.benchmarks")
        if self.monitor_key is None:
            self.monitor_key = (
                f"{self.prefix}{self._benches[0].name}/avg/{self._benches[0].config.main_metric}"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.run(trainer, pl_module, hook="step")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_epoch_end and not trainer.sanity_checking and trainer.global_step != self._last_step:
            self.run(trainer, pl_module, hook="validation_epoch_end")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_epoch_end and trainer.global_step != self._last_step:
            self.run(trainer, pl_module, hook="train_epoch_end")

    # ------------------------------------------------------------------ evaluation
    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, hook: str = "manual") -> dict[str, float]:
        """Evaluate now (all ranks must call this), log, write the JSON; returns the unprefixed metrics."""
        if self._benches is None:
            self.setup(trainer, pl_module, "fit")
        step = int(trainer.global_step)
        self._last_step = step
        dist = DistInfo.from_trainer(trainer)
        device = self.device if self.device is not None else pl_module.device
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        details: dict[str, Any] = {}
        try:
            with torch.no_grad():
                for bench in self._benches or []:
                    m, info = evaluate_benchmark(
                        pl_module.encoder, bench, batch_size=self.batch_size, device=device, dist=dist
                    )
                    metrics.update(m)
                    details[bench.name] = info
        finally:
            for m, training in modes.items():
                m.training = training
        seconds = time.perf_counter() - t0
        self.last_metrics = metrics
        self._log(trainer, pl_module, metrics, hook)
        out_dir = self._output_dir(trainer)  # a collective under DDP (trainer.log_dir broadcasts)
        if trainer.is_global_zero:
            record = {
                "step": step,
                "epoch": int(trainer.current_epoch),
                "hook": hook,
                "seconds": round(seconds, 3),
                "monitor_key": self.monitor_key,
                "metrics": metrics,
                "details": details,
            }
            self.history.append({"step": step, "epoch": record["epoch"], "metrics": metrics})
            write_json(out_dir / f"step_{step:07d}.json", record)
            write_json(out_dir / "latest.json", record)
            log.info(
                "retrieval evaluation at step %d (%s, %.1fs):\n%s", step, hook, seconds, format_table(metrics)
            )
        return metrics

    def _output_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir) / "retrieval_eval"
        base = trainer.log_dir or trainer.default_root_dir
        return Path(base or ".") / "retrieval_eval"

    def _log(
        self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float], hook: str
    ) -> None:
        prefixed = {f"{self.prefix}{k}": float(v) for k, v in metrics.items()}
        value = prefixed.get(self.monitor_key)
        if value is not None:
            # same broadcast value on every rank: no sync needed, and no rank can diverge
            pl_module.log(
                self.monitor_key,
                value,
                on_step=hook == "step",
                on_epoch=hook != "step",
                prog_bar=True,
                logger=False,
                sync_dist=False,
                batch_size=1,
            )
        elif metrics:
            log.warning(
                "monitor key %r not among the retrieval metrics (e.g. %s)",
                self.monitor_key,
                next(iter(prefixed)),
            )
        if not trainer.is_global_zero:
            return
        step = int(trainer.global_step)
        for lg in trainer.loggers:
            lg.log_metrics(prefixed, step=step)
            if self.log_tables and type(lg).__name__ == "WandbLogger":
                self._log_wandb(lg, metrics, step)

    def _log_wandb(self, lg: Any, metrics: dict[str, float], step: int) -> None:
        import matplotlib.pyplot as plt

        for bench in self._benches or []:
            try:
                cols, rows = table_rows(metrics, bench.name)
                if rows:
                    lg.log_table(
                        key=f"{self.prefix}{bench.name}/per_language", columns=cols, data=rows, step=step
                    )
                    fig = heatmap_figure(metrics, bench.name, bench.config.main_metric)
                    try:
                        lg.log_image(key=f"{self.prefix}{bench.name}/heatmap", images=[fig], step=step)
                    finally:
                        plt.close(fig)
            except Exception as e:  # a W&B hiccup must never stop training
                log.warning("W&B table/heatmap for %s not logged (%s: %s)", bench.name, type(e).__name__, e)
