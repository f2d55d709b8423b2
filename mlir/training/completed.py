"""Finished jobs: a sweep that is run again skips them, and re-runs the rest.

Why: the study is hours of CPU and dozens of SLURM jobs; a sweep stopped at job 7 (a laptop closed, a
time limit) must continue where it stopped when the same command is run again. A job is finished when
its ``done.json`` marker exists and names the same configuration: the marker is written last, after
``metrics.json`` and the per-query file, so a job killed while writing them is never taken as done.
The marker holds a fingerprint of the configuration (without ``hydra`` and ``paths``), so a
changed job (another alpha, more steps) in the same directory is run again, not skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlir.core.atomic import write_json

log = logging.getLogger(__name__)

MARKER = "done.json"
# keys that name where a job runs or how it is launched, not what it computes
_NOT_FINGERPRINTED = ("hydra", "paths", "ckpt_path", "skip_completed", "logger", "tags", "resume")
_NOT_FINGERPRINTED_NESTED = (("callbacks", "last_checkpoint", "signals"),)  # which signals save a checkpoint


def fingerprint(cfg: DictConfig) -> str:
    """A hash of what the job computes: its config values without paths and launch settings.

    Unresolved on purpose: interpolations point at values that are hashed themselves, and resolvers
    (``${now:...}``, the machine's precision) must not make a finished job look different.
    """
    data = OmegaConf.to_container(cfg, resolve=False)
    for key in _NOT_FINGERPRINTED:
        data.pop(key, None)
    for *parents, key in _NOT_FINGERPRINTED_NESTED:
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _outputs(cfg: DictConfig) -> list[Path]:
    files = [cfg.eval.get("output_file") or Path(cfg.paths.output_dir) / "metrics.json"]
    if cfg.get("test", True) and cfg.eval.get("per_query_file") and cfg.eval.get("benchmarks"):
        files.append(cfg.eval.per_query_file)
    return [Path(f) for f in files]


def finished_metrics(cfg: DictConfig) -> dict[str, float] | None:
    """The stored metrics if this job already finished with this config, else ``None``."""
    marker = Path(cfg.paths.output_dir) / MARKER
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
        metrics = json.loads(_outputs(cfg)[0].read_text())
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != fingerprint(cfg):
        kept = set_aside(marker.parent, str(done.get("fingerprint", "old"))[:12])
        log.warning(
            "%s: the configuration changed since this job finished; running it again from scratch "
            "(its done.json and checkpoints kept as %s)",
            marker,
            ", ".join(kept),
        )
        return None
    if not all(p.is_file() for p in _outputs(cfg)):
        return None
    return {k: float(v) for k, v in metrics.items()}


def set_aside(job_dir: Path, tag: str) -> list[str]:
    """Rename a finished job's ``done.json`` and ``checkpoints/`` to ``*.<tag>`` (its old fingerprint).

    Why: a job re-run with another configuration must start from scratch, not resume (``ckpt_path=last``)
    from a checkpoint of the old one, and nothing of the old run is deleted.
    """
    kept = []
    for name in (MARKER, "checkpoints"):
        path = job_dir / name
        if path.exists():
            target = job_dir / f"{path.stem}.{tag}{path.suffix}"
            path.rename(target)
            kept.append(target.name)
    return kept


def mark_finished(cfg: DictConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write the marker (last, after every output file of the job)."""
    marker = Path(cfg.paths.output_dir) / MARKER
    record = {"fingerprint": fingerprint(cfg), "outputs": [str(p) for p in _outputs(cfg)], **(extra or {})}
    return write_json(marker, record, allow_nan=True)
