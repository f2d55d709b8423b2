"""OmegaConf resolvers used by ``conf/`` (registered on import; idempotent)."""

from __future__ import annotations

import os

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
