"""``train(cfg)``: build everything from the Hydra config, fit, evaluate the best checkpoint.

Returns the metrics dict so that sweepers (and :mod:`mlir.report`) can optimise and aggregate it.
The thin ``train.py`` at the repository root is the Hydra entry point; its command-line handling
(one-line errors, console, secret scrubbing) is :mod:`mlir.cli`.

Reliability (docs/reliability.md): cheap config checks run before Lightning is even imported, and the
data and a resume checkpoint are checked before any logger, trainer or tokeniser starts, so a user's
mistake is one line within seconds and leaves no output behind. Checkpoints are written atomically
(:mod:`mlir.training.checkpoint_io`), carry the sampler and RNG states (:mod:`mlir.training.resume`) and load with
``weights_only=True``; SIGTERM saves ``last.ckpt`` and exits cleanly (:class:`mlir.training.last_checkpoint.LastCheckpoint`).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

import mlir.core.config  # noqa: F401  (registers resolvers)
from mlir.core.errors import ConfigError
from mlir.core.logging import redact, warn_once

if TYPE_CHECKING:  # lightning is imported lazily: config errors must not wait ~10 s for it
    import lightning as L

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    """Callbacks from config: every entry with a ``_target_``."""
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
            warn_once(
                f"logger-{name}",
                f"logger '{name}' unavailable ({type(e).__name__}: {e}); continuing without it",
            )
    return loggers


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from, or ``None``.

    ``ckpt_path=last`` is this run's ``checkpoints/last.ckpt`` (pass ``hydra.run.dir=<run dir>`` to
    continue a run in place; a requeued job with no checkpoint yet starts from scratch, with a warning).
    A run directory means its ``checkpoints/last.ckpt``; anything else must be a checkpoint file.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null"):
        return None
    if str(ckpt) == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        hint = _latest_run_checkpoint(cfg, exclude=last)
        log.warning(
            "ckpt_path=last: %s does not exist, training from scratch%s",
            last,
            f" (to resume {hint.parent.parent}, add hydra.run.dir={hint.parent.parent})" if hint else "",
        )
        return None
    path = Path(str(ckpt)).expanduser()
    if path.is_dir():
        for cand in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if cand.is_file():
                return str(cand)
        raise ConfigError(f"no last.ckpt in '{path}' or its checkpoints/", where="ckpt_path")
    if not path.is_file():
        raise ConfigError(f"checkpoint '{ckpt}' does not exist", where="ckpt_path")
    return str(path)


def _latest_run_checkpoint(cfg: DictConfig, exclude: Path) -> Path | None:
    """The newest ``<log_dir>/<task>/runs/*/checkpoints/last.ckpt`` (a hint for a forgotten run dir)."""
    try:
        runs = Path(cfg.paths.log_dir) / str(cfg.get("task_name", "train")) / "runs"
        found = [p for p in runs.glob("*/checkpoints/last.ckpt") if p != exclude]
    except Exception:  # noqa: BLE001 - only a hint
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_data(datamodule: Any, cfg: DictConfig) -> None:
    """Read the corpus and build the training sampler, now; training later uses this same sampler.

    Unknown languages, a batch larger than a language's distinct ids, or an impossible alpha then fail
    in one line before any logger, trainer or tokeniser starts.
    """
    if hasattr(datamodule, "train_sampler"):
        datamodule.train_sampler(cfg.trainer)


def build(cfg: DictConfig, ckpt_path: str | None = None) -> tuple[Any, Any, Any]:
    """Instantiate (module, datamodule, trainer) — also used by tests and bench/.

    The data (:func:`check_data`) and ``ckpt_path`` (must fit the model, and have been written with this
    run's batch, sampler and optimisation settings: :func:`mlir.training.resume_guard.check_resume_config`) are
    checked before the callbacks, loggers and trainer exist, so that bad input leaves no files behind.
    """
    import lightning as L

    from mlir.training.checkpoint import check_fits
    from mlir.training.resume_guard import ResumeConfig, check_resume_config, resume_config
    from mlir.utils.hydra_ddp import install as install_hydra_ddp

    install_hydra_ddp()  # DDP ranks re-run *this* job in *its* directory, also in a multirun
    from mlir.training.checkpoint_io import AtomicCheckpointIO

    module = hydra.utils.instantiate(cfg.model)
    sampler = hydra.utils.instantiate(cfg.sampler)
    datamodule = hydra.utils.instantiate(cfg.data, sampler=sampler, encoder=module.encoder, seed=cfg.seed)
    check_data(datamodule, cfg)
    if ckpt_path:
        check_fits(module, ckpt_path)
        # exact or refused: another batch size, sampler, seed, corpus, optimiser... (+resume.allow_config_change)
        check_resume_config(cfg, ckpt_path, getattr(datamodule, "_train_sampler", None))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks.append(ResumeConfig(resume_config(cfg)))  # what check_resume_config compares on resume
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    # GradCache (manual optimisation): the module clips itself, the trainer must not (see trainer_overrides)
    overrides = module.trainer_overrides(cfg.trainer) if hasattr(module, "trainer_overrides") else {}
    if not cfg.trainer.get("plugins"):  # atomic, fsynced checkpoint files (mlir.training.checkpoint_io)
        overrides.setdefault("plugins", [AtomicCheckpointIO()])
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)
    return module, datamodule, trainer


def evaluate_module(cfg: DictConfig, module: Any, trainer: Any | None = None) -> dict[str, float]:
    """Run ``eval.benchmarks`` on the module's encoder (sharded across ranks under DDP)."""
    from mlir.eval.runner import evaluate, evaluate_options

    benchmarks = cfg.get("eval", {}).get("benchmarks")
    if not benchmarks:
        return {}
    per_query_file = cfg.eval.get("per_query_file")  # per-query scores for mlir.report's paired tests
    per_query: list[dict[str, Any]] | None = [] if per_query_file else None
    metrics = evaluate(
        module.encoder,
        benchmarks,
        batch_size=cfg.eval.get("batch_size", 64),
        trainer=trainer,
        seed=cfg.seed,
        per_query=per_query,
        **evaluate_options(cfg),  # fairness cutoff, TREC run files (eval.run_dir)
    )
    if per_query and (trainer is None or trainer.is_global_zero):
        from mlir.eval.per_query import write_per_query

        write_per_query(per_query_file, per_query)
    return {f"eval/{k}": float(v) for k, v in metrics.items()}


def preflight(cfg: DictConfig) -> str | None:
    """Checks that need no data, model or Lightning: they answer in about a second.

    Returns the resolved resume checkpoint (see :func:`resolve_ckpt_path`).
    """
    mlir.core.config.validate(cfg)
    name = OmegaConf.select(cfg, "model.encoder.name_or_path", default=None)
    if isinstance(name, str) and name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(f"model directory '{name}' does not exist", where="model.encoder.name_or_path")
    if cfg.get("test", True):  # a benchmark config mistake found now, not after the training
        from mlir.eval.benchmarks import check_benchmarks
        from mlir.eval.runner import evaluate_options

        check_benchmarks(OmegaConf.select(cfg, "eval.benchmarks", default=None), seed=cfg.get("seed"))
        evaluate_options(cfg)
    mlir.core.config.check_output_dir(OmegaConf.select(cfg, "paths.output_dir", default=None))
    return resolve_ckpt_path(cfg) if cfg.get("train", True) else None


def _fit_kwargs(trainer: Any) -> dict[str, Any]:
    """``weights_only=True`` for resuming where this Lightning supports it (2.6+): no code runs on load."""
    import inspect

    return {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}


def dev_selection(trainer: Any) -> dict[str, float]:
    """What checkpoint selection saw: the best dev validation loss and its step (``dev/`` keys)."""
    cb = trainer.checkpoint_callback
    score = getattr(cb, "best_model_score", None) if cb is not None else None
    if score is None:
        return {}
    out = {"dev/val_loss_best": float(score)}
    step = re.search(r"step_(\d+)", Path(getattr(cb, "best_model_path", "") or "").name)
    if step:
        out["dev/best_step"] = float(step.group(1))
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (unless ``train=false``), then evaluate the best checkpoint (unless ``test=false``).

    With ``skip_completed=true`` a job that already finished with the same config (its ``done.json``,
    :mod:`mlir.training.completed`) returns its stored metrics at once: re-running a sweep continues it.
    """
    import time

    from mlir.training.completed import finished_metrics, mark_finished

    if cfg.get("skip_completed") and (done := finished_metrics(cfg)) is not None:
        log.info("skipping %s: finished with this configuration (done.json)", cfg.paths.output_dir)
        return done
    t_start = time.perf_counter()
    ckpt_path = preflight(cfg)
    import lightning as L

    from mlir.cli import route_lightning_logs

    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule, trainer = build(cfg, ckpt_path=ckpt_path)
    for lg in trainer.loggers:
        lg.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))

    metrics: dict[str, float] = {}
    t_fit = time.perf_counter()
    if cfg.get("train", True):
        metrics.update(fit(cfg, module, datamodule, trainer, ckpt_path))
    t_eval = time.perf_counter()
    if cfg.get("test", True):
        metrics.update(evaluate_best(cfg, module, trainer))
    t_end = time.perf_counter()
    if trainer.is_global_zero:
        write_metrics(cfg, metrics)
        wall = {
            "setup": t_fit - t_start,
            "fit": t_eval - t_fit,
            "eval": t_end - t_eval,
            "total": t_end - t_start,
        }
        mark_finished(cfg, {"wall_s": {k: round(v, 2) for k, v in wall.items()}})
    return metrics


def fit(
    cfg: DictConfig, module: Any, datamodule: Any, trainer: Any, ckpt_path: str | None
) -> dict[str, float]:
    """``trainer.fit``; returns the logged scalars and the dev selection. SIGTERM exits for a requeue."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from mlir.training.last_checkpoint import PREEMPTED_EXIT_CODE

    try:
        with warnings.catch_warnings():
            # Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself has a
            # state_dict; ours is exact: the sampler position travels in RetrievalDataModule.state_dict
            warnings.filterwarnings(
                "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
            )
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **_fit_kwargs(trainer))
    except (
        SIGTERMException
    ):  # mlir.training.last_checkpoint.LastCheckpoint saved last.ckpt; no eval, no metrics.json
        log.warning(
            "stopped by SIGTERM at step %d; continue with: python train.py <same overrides> ckpt_path=last "
            "hydra.run.dir=%s",
            trainer.global_step,
            cfg.paths.output_dir,
        )
        sys.exit(PREEMPTED_EXIT_CODE)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return {**metrics, **dev_selection(trainer)}


def evaluate_best(cfg: DictConfig, module: Any, trainer: Any) -> dict[str, float]:
    """Load the best checkpoint (when there is one), evaluate it and log the ``eval/`` metrics."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    if best and Path(best).exists():
        from mlir.training.checkpoint import load_module_weights

        load_module_weights(module, best)
        log.info("evaluating best checkpoint %s", best)
    metrics = evaluate_module(cfg, module, trainer)
    if metrics and trainer.is_global_zero:
        for lg in trainer.loggers:
            lg.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith("eval/")}, step=trainer.global_step
            )
    return metrics


def write_metrics(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """``metrics.json`` (``eval.output_file``), written atomically."""
    out = Path(cfg.eval.get("output_file") or Path(cfg.paths.output_dir) / "metrics.json")
    from mlir.core.atomic import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, metrics, allow_nan=True)
    log.info("metrics written to %s", out)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The metric a sweeper optimises (``optimized_metric``), or ``None`` when it is unset or missing."""
    key = cfg.get("optimized_metric")
    if not key:
        return None
    if key not in metrics:
        log.warning("optimized_metric '%s' not among the metrics (%s...)", key, sorted(metrics)[:5])
        return None
    return metrics[key]
