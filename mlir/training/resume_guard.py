"""Resume exactly or not at all: a checkpoint remembers the configuration that decides its batches and
optimisation, and a resume with other values is refused in one line (``+resume.allow_config_change=true``
continues anyway, with a warning naming the changes). The exactness itself is in :mod:`mlir.training.resume`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import lightning as L

from mlir.core.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_KEY = "mlir_resume_config"

#: What decides the batch sequence or the optimisation. A resumed run with other values would not
#: continue the run that wrote the checkpoint, so :func:`check_resume_config` refuses it.
RESUME_CONFIG = (
    "seed",
    "data",  # corpus, split, languages, batch size, negatives, validation batches
    "sampler",
    "model",  # encoder, loss, optimiser, schedule, NaN policy, GradCache
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.precision",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.gradient_clip_algorithm",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
)
#: Keys under those that change only the speed.
RESUME_CONFIG_IGNORED = ("data.num_workers",)
#: ``+resume.allow_config_change=true``: resume anyway, with a warning naming the changes.
ALLOW_KEY = "resume.allow_config_change"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def resume_config(cfg: Any) -> dict[str, Any]:
    """The :data:`RESUME_CONFIG` values of a run (resolved, flattened to dotted keys, plain values)."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}
    for key in RESUME_CONFIG:
        node = OmegaConf.select(cfg, key, default=None)
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        _flatten(key, value, out)
    return {
        k: v
        for k, v in out.items()
        if not any(k == i or k.startswith(i + ".") for i in RESUME_CONFIG_IGNORED)
    }


class ResumeConfig(L.Callback):
    """Stores the run's :func:`resume_config` in every checkpoint (``mlir.training.pipeline`` adds it)."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = json.loads(json.dumps(dict(values), default=str))  # plain: loads weights_only

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.values


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, old, new)`` for every key whose value differs (shown as text)."""
    new = json.loads(json.dumps(dict(new), default=str))  # compare as stored
    return [
        (k, _show(old.get(k, _ABSENT)), _show(new.get(k, _ABSENT)))
        for k in sorted(set(old) | set(new))
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    ]


def check_resume_config(cfg: Any, ckpt_path: str, sampler: Any = None) -> list[tuple[str, str, str]]:
    """Refuse to resume ``ckpt_path`` with another :data:`RESUME_CONFIG` or another training corpus.

    Raises a one-line :class:`ConfigError` naming each changed key with its old and new value, unless
    ``+resume.allow_config_change=true``: then prints that line as a warning on stderr and returns the
    changes. ``sampler``: the run's training sampler, whose fingerprint (corpus index, batch size,
    schedule, seed) is compared with the one in the checkpoint's sampler state.
    """
    from omegaconf import OmegaConf

    from mlir.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path, mmap=True)
    old = ckpt.get(CONFIG_KEY)
    changes = [] if old is None else config_changes(old, resume_config(cfg))
    if old is None:
        log.warning("%s records no configuration (written before mlir kept it): not compared", ckpt_path)
    state = (ckpt.get("RetrievalDataModule") or {}).get("sampler") or {}
    before, now = state.get("fingerprint"), getattr(sampler, "fingerprint", None)
    if (
        before
        and now
        and before != now
        and not any(k.split(".")[0] in ("data", "sampler", "seed") for k, *_ in changes)
    ):
        changes.append(("training data (sampler fingerprint)", str(before), str(now)))
    if not changes:
        return []
    shown = ", ".join(f"{k} {a} -> {b}" for k, a, b in changes[:12])
    if len(changes) > 12:
        shown += f" and {len(changes) - 12} more"
    if OmegaConf.select(cfg, ALLOW_KEY, default=False):
        from lightning.pytorch.utilities import rank_zero_only

        msg = (
            f"resuming {ckpt_path} with a changed configuration ({shown}); the run does not continue exactly"
        )
        log.warning(msg)
        if getattr(rank_zero_only, "rank", 0) == 0:
            print(f"warning: {msg}", file=sys.stderr)
        return changes
    raise ConfigError(
        f"{ckpt_path} was written with another configuration: {shown}; resuming would not continue the run "
        f"exactly (use the run's values, or add +{ALLOW_KEY}=true to continue anyway)",
        where="ckpt_path",
    )
