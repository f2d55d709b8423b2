"""OmegaConf resolvers used by ``conf/`` (registered on import; idempotent)."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from mlir.paths import default_cache_dir, default_data_dir


def auto_precision() -> str:
    """bf16 mixed precision on a GPU that supports it, fp32 elsewhere (CPU bf16 is slower than fp32)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    if torch.cuda.is_available():
        return "16-mixed"
    return "32-true"


def register_resolvers() -> None:
    resolvers = {
        "mlir_cwd": lambda: os.getcwd(),
        "mlir_data_dir": lambda: default_data_dir(),
        "mlir_cache_dir": lambda: default_cache_dir(),
        "mlir_precision": auto_precision,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


register_resolvers()

from mlir.utils.launchers import register_launcher_schemas  # noqa: E402

register_launcher_schemas()  # conf/hydra/launcher/submitit_slurm.yaml extends the plugin's schema


def validate(cfg: Any) -> None:
    """Cheap checks of values that would otherwise fail late (after reading data or loading a model).

    Each key is checked by the same function the component that uses it calls (one validator per key).
    """
    from mlir.errors import ConfigError
    from mlir.sampling.options import positive_int
    from mlir.sampling.schedule import check_probability

    sampler = cfg.get("sampler") or {}
    for key in ("alpha", "alpha_start", "alpha_end"):
        if sampler.get(key) is not None:
            check_probability(sampler.get(key), f"sampler.{key}")
    bs = cfg.get("data", {}).get("batch_size")
    if bs is not None:
        positive_int(bs, "data.batch_size")
    clip = cfg.get("trainer", {}).get("gradient_clip_val")
    if clip is not None and float(clip) < 0:
        raise ConfigError(f"must be >= 0 (0 or null = off), got {clip}", where="trainer.gradient_clip_val")
    temp = cfg.get("model", {}).get("loss", {}).get("temperature")
    if temp is not None and not float(temp) > 0:
        raise ConfigError(f"must be > 0, got {temp}", where="model.loss.temperature")
