"""OmegaConf resolvers used by ``conf/`` (registered on import; idempotent), and config validation.

:func:`validate` checks, before any data is read or model loaded, every key it knows by calling that
key's one validator, the same function the component using the key calls: the sampler's
(:mod:`mlir.sampling.schedule`, :mod:`mlir.sampling.options`) and the ``check_*`` functions here for
the trainer, optimiser, loss and output keys (e.g. :class:`~mlir.models.loss.InfoNCELoss` calls
:func:`check_positive` for ``model.loss.temperature``), and :func:`mlir.data.corpora.check_corpora`
for ``data.corpus.corpora``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mlir.core.paths import default_cache_dir, default_data_dir


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


def _number(value: Any, key: str, hint: str = "") -> float:
    """``value`` as a float, or a ConfigError naming ``key`` (``float('abc')`` would be a traceback)."""
    from mlir.core.errors import ConfigError

    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number{hint}, got {value!r}", where=key) from None


def check_positive(value: Any, key: str) -> float:
    """A number > 0 (a learning rate, a temperature): 0 or less fails late, deep in torch."""
    from mlir.core.errors import ConfigError

    x = _number(value, key)
    if not x > 0:
        raise ConfigError(f"must be > 0, got {value}", where=key)
    return x


def check_non_negative(value: Any, key: str, hint: str = "") -> float:
    """A finite number >= 0 (weight decay, gradient clipping)."""
    from mlir.core.errors import ConfigError

    x = _number(value, key, hint)
    if not (x >= 0 and math.isfinite(x)):
        raise ConfigError(f"must be a finite number >= 0{hint}, got {value}", where=key)
    return x


def check_max_steps(value: Any, key: str = "trainer.max_steps") -> int:
    """-1 (no limit) or > 0: ``0`` would train nothing and still exit 0 with an empty metrics.json."""
    from mlir.core.errors import ConfigError

    ok = isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value > 0)
    if not ok:
        raise ConfigError(f"must be -1 (no limit) or > 0, got {value!r}", where=key)
    return int(value)


def check_output_dir(out: Any, key: str = "paths.output_dir") -> None:
    """The output directory must be a directory we can create and write, before any step is trained.

    Why: otherwise the first checkpoint save fails (``NotADirectoryError``) and the training is lost.
    """
    from mlir.core.errors import ConfigError

    if out in (None, ""):
        return
    path = Path(str(out)).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"'{p}' exists and is not a directory", where=key)
            if not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError(f"'{p}' is not writable", where=key)
            return


def validate(cfg: Any) -> None:
    """Cheap checks of values that would otherwise fail late (after reading data or loading a model).

    Each key is checked by the same function the component that uses it calls (one validator per key).
    """
    from mlir.sampling.options import positive_int
    from mlir.sampling.schedule import check_probability

    sampler = cfg.get("sampler") or {}
    for key in ("alpha", "alpha_start", "alpha_end"):
        if sampler.get(key) is not None:
            check_probability(sampler.get(key), f"sampler.{key}")
    data = cfg.get("data") or {}
    bs = data.get("batch_size")
    if bs is not None:
        positive_int(bs, "data.batch_size")
    corpus = data.get("corpus")
    if isinstance(corpus, Mapping) and "corpora" in corpus:  # data=corpora: names, readers, weights
        from mlir.data.corpora import check_corpora

        check_corpora(corpus.get("corpora"))
    trainer = cfg.get("trainer") or {}
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        check_non_negative(clip, "trainer.gradient_clip_val", " (0 or null = off)")
    if trainer.get("max_steps") is not None:
        check_max_steps(trainer.get("max_steps"))
    model = cfg.get("model") or {}
    temp = (model.get("loss") or {}).get("temperature")
    if temp is not None:
        check_positive(temp, "model.loss.temperature")
    opt = model.get("optimizer") or {}
    if opt.get("lr") is not None:
        check_positive(opt.get("lr"), "model.optimizer.lr")
    if opt.get("weight_decay") is not None:
        check_non_negative(opt.get("weight_decay"), "model.optimizer.weight_decay")
