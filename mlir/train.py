"""``train(cfg)``: build everything from the Hydra config, fit, evaluate the best checkpoint.

Returns the metrics dict so that sweepers (and :mod:`mlir.report`) can optimise and aggregate it.
The thin ``train.py`` at the repository root is the Hydra entry point.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

import mlir.config  # noqa: F401  (registers resolvers)
from mlir.errors import ConfigError, MlirError, find_mlir_error
from mlir.logging import redact, warn_once

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None) -> list[Any]:
    """Loggers from config; a logger that fails to start is dropped with one warning."""
    loggers = []
    for name, c in (cfg or {}).items():
        if not isinstance(c, DictConfig) or "_target_" not in c:
            continue
        try:
            lg = hydra.utils.instantiate(c)
            if lg is not None and hasattr(lg, "experiment") and "wandb" in type(lg).__name__.lower():
                _ = lg.experiment  # start W&B now so a failure here cannot kill the fit later
            if lg is not None:
                loggers.append(lg)
        except Exception as e:
            warn_once(f"logger-{name}", f"logger '{name}' unavailable ({type(e).__name__}: {e}); continuing without it")
    return loggers


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last`` means this run's ``checkpoints/last.ckpt``; any other value is a path."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null"):
        return None
    if ckpt == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(ckpt).exists():
        raise ConfigError(f"checkpoint '{ckpt}' does not exist", where="ckpt_path")
    return str(ckpt)


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Instantiate (module, datamodule, trainer) — also used by tests and the batch preview."""
    module = hydra.utils.instantiate(cfg.model)
    sampler = hydra.utils.instantiate(cfg.sampler)
    datamodule = hydra.utils.instantiate(cfg.data, sampler=sampler, encoder=module.encoder, seed=cfg.seed)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return module, datamodule, trainer


def evaluate_module(cfg: DictConfig, module: Any, trainer: Any | None = None) -> dict[str, float]:
    """Run ``eval.benchmarks`` on the module's encoder (sharded across ranks under DDP)."""
    from mlir.eval.runner import evaluate

    benchmarks = cfg.get("eval", {}).get("benchmarks")
    if not benchmarks:
        return {}
    metrics = evaluate(
        module.encoder,
        benchmarks,
        batch_size=cfg.eval.get("batch_size", 64),
        trainer=trainer,
        seed=cfg.seed,
    )
    return {f"eval/{k}": float(v) for k, v in metrics.items()}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (unless ``train=false``), then evaluate the best checkpoint (unless ``test=false``)."""
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule, trainer = build(cfg)
    for lg in trainer.loggers:
        lg.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})

    if cfg.get("test", True):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        if best and Path(best).exists():
            from mlir.checkpoint import load_module_weights

            load_module_weights(module, best)
            log.info("evaluating best checkpoint %s", best)
        metrics.update(evaluate_module(cfg, module, trainer))
        if metrics and trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics({k: v for k, v in metrics.items() if k.startswith("eval/")}, step=trainer.global_step)

    if trainer.is_global_zero:
        out = Path(cfg.eval.get("output_file") or Path(cfg.paths.output_dir) / "metrics.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        os.replace(tmp, out)
        log.info("metrics written to %s", out)
    return metrics


def run_main(fn, cfg: DictConfig) -> Any:
    """Call ``fn(cfg)``; a user error becomes one line on stderr and exit code 2, never a traceback."""
    try:
        return fn(cfg)
    except Exception as e:  # noqa: BLE001 - we re-raise anything that is not the user's mistake
        user = find_mlir_error(e)
        if user is None and isinstance(e, FloatingPointError):
            user = MlirError(str(e), where="training")
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        sys.exit(2)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    key = cfg.get("optimized_metric")
    if not key:
        return None
    if key not in metrics:
        log.warning("optimized_metric '%s' not among the metrics (%s...)", key, sorted(metrics)[:5])
        return None
    return metrics[key]
