"""The sampler's settings, each checked by one function that names its config key.

Why one place: a bad value must read the same whether ``train.py``'s preflight, the DataModule, the
batch preview or a hand-built sampler finds it (``data.batch_size: ...`` everywhere). The alpha keys
are checked in :mod:`mlir.sampling.schedule`, which owns them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlir.core.errors import ConfigError

LANG_SAMPLING = ("uniform", "size")


def positive_int(value: Any, key: str, hint: str = "") -> int:
    """An integer >= 1 from the config (``8`` or ``8.0``, not ``True``), or a ConfigError naming ``key``."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"must be a positive integer, got {value!r}{hint}", where=key)
    return int(value)


def per_rank(batch_size: int, world_size: int) -> int:
    """Pairs per rank: the global batch must split evenly across the DDP ranks."""
    if world_size < 1 or batch_size % world_size:
        raise ConfigError(
            f"global batch size {batch_size} is not divisible by world size {world_size}",
            where="data.batch_size",
        )
    return batch_size // world_size


def check_world(batch_size: int, world_size: Any, rank: Any) -> tuple[int, int]:
    """``(world_size, rank)`` of a DDP layout that can slice a global batch of ``batch_size``."""
    world_size = positive_int(world_size, "trainer.devices")
    if not 0 <= int(rank) < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}", where="trainer.devices")
    per_rank(batch_size, world_size)
    return world_size, int(rank)


def check_lang_sampling(value: Any) -> str:
    """``uniform`` or ``size`` (``sampler.lang_sampling``)."""
    if value not in LANG_SAMPLING:
        raise ConfigError(
            f"unknown lang_sampling {value!r}; choose one of {list(LANG_SAMPLING)}",
            where="sampler.lang_sampling",
        )
    return str(value)


def check_temperature(value: Any) -> float:
    """A finite number > 0 (``sampler.temperature``)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a positive number, got {value!r}", "sampler.temperature") from None
    if not t > 0 or not np.isfinite(t):
        raise ConfigError(f"must be a positive number, got {value!r}", "sampler.temperature")
    return t
