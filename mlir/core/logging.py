"""Experiment loggers that never take training down with them.

W&B runs are organised for the alpha sweeps (docs/experiments.md): every job of one Hydra multirun
shares a W&B *group* (the sweep directory's name, or ``sweep_id``), is named after its alpha and seed,
and is tagged with the sampler kind (``sampler:hybrid``/``xx_mono``/``xy``) and ``alpha=<value>``, so
the W&B UI can group and filter by them. Offline runs can be read back with :func:`read_wandb_run`.
Credentials never reach a log, a report or a run file: :func:`redact` is the one redaction.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_warned: set[str] = set()

#: Config keys whose values are credentials: the key is, or ends in, one of these words. Matching whole
#: words keeps ``token_budget``/``tokenizer``/``max_tokens`` visible.
_SECRET_KEY = re.compile(
    r"(^|[_.\-])(api_?key|token|access_?key|secret(_?key)?|password|passwd|credentials?|auth)$", re.IGNORECASE
)


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def wandb_logged_in() -> bool:
    """True when credentials exist (env or ~/.netrc); we never read or print the key itself."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    try:
        with open(netrc) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


# ------------------------------------------------------------------------------------ sweep identity


def hydra_job() -> dict[str, Any]:
    """This Hydra job's mode, sweep directory and job number (``{}`` outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return {}
        hc = HydraConfig.get()
        multirun = str(hc.mode) in ("RunMode.MULTIRUN", "MULTIRUN")
        return {
            "multirun": multirun,
            "sweep_dir": str(hc.sweep.dir) if multirun else None,
            "job_num": int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
            "output_dir": str(hc.runtime.output_dir),
        }
    except Exception:  # noqa: BLE001 - naming only; never fail a run for it
        return {}


def sampler_kind(alpha: float | None, schedule: str | None = "constant") -> str | None:
    """``xx_mono`` (alpha=1), ``xy`` (alpha=0), ``hybrid`` (in between) or ``hybrid_<schedule>``."""
    if schedule not in (None, "constant"):
        return f"hybrid_{schedule}"
    if alpha is None:
        return None
    a = float(alpha)
    return "xx_mono" if a == 1.0 else "xy" if a == 0.0 else "hybrid"


def wandb_run_identity(
    task_name: str | None = None,
    sweep_id: str | None = None,
    alpha: float | None = None,
    schedule: str | None = "constant",
    seed: int | None = None,
    tags: Sequence[str] | None = None,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """W&B ``group``, ``name`` and ``tags`` of this run (see the module doc).

    The group is ``sweep_id`` when given, else ``<task>-<sweep dir name>`` in a multirun (all jobs of
    one sweep, and only them), else the task name. Returned values are plain types for ``wandb.init``.
    """
    job = hydra_job() if job is None else job
    task = task_name or "train"
    if sweep_id:
        group = str(sweep_id)
    elif job.get("multirun") and job.get("sweep_dir"):
        group = f"{task}-{Path(job['sweep_dir']).name}"
    else:
        group = task
    kind = sampler_kind(alpha, schedule)
    out_tags = [str(t) for t in (tags or [])]
    if kind:
        out_tags.append(f"sampler:{kind}")
    if alpha is not None and schedule in (None, "constant"):
        out_tags.append(f"alpha={float(alpha):g}")
    if job.get("multirun") or sweep_id:
        out_tags.append("sweep")
    parts = []
    if alpha is not None and schedule in (None, "constant"):
        parts.append(f"alpha={float(alpha):g}")
    elif kind:
        parts.append(kind)
    if seed is not None:
        parts.append(f"seed={seed}")
    if job.get("job_num") is not None:
        parts.append(f"job={job['job_num']}")
    return {"group": group, "name": " ".join(parts) or None, "tags": list(dict.fromkeys(out_tags))}


def make_wandb_logger(
    mode: str = "auto",
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] | None = None,
    task_name: str | None = None,
    sweep_id: str | None = None,
    alpha: float | None = None,
    schedule: str | None = "constant",
    seed: int | None = None,
    **kwargs: Any,
):
    """A ``WandbLogger`` whose mode is ``online`` only when logged in; ``None`` if W&B is unusable.

    ``mode=auto`` picks online with credentials, offline otherwise; an explicit ``WANDB_MODE`` wins.
    ``group``/``name`` default to the sweep identity of :func:`wandb_run_identity` (from ``task_name``,
    ``sweep_id``, the sampler's ``alpha``/``schedule`` and ``seed``), and its tags are added to ``tags``.
    Failure to import or start W&B is reported once and training continues without it.
    """
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    if mode == "disabled":
        return None
    ident = wandb_run_identity(task_name, sweep_id, alpha, schedule, seed, tags)
    try:
        from lightning.pytorch.loggers import WandbLogger

        save_dir = kwargs.get("save_dir")
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
        kwargs.setdefault("settings", None)
        settings = kwargs.pop("settings")
        if settings is None:
            import wandb

            settings = wandb.Settings(init_timeout=60, silent=True)
        return WandbLogger(
            mode=mode,
            settings=settings,
            group=group or ident["group"],
            name=name or ident["name"],
            tags=ident["tags"],
            **kwargs,
        )
    except Exception as e:  # W&B must never block training
        warn_once("wandb", f"W&B logger unavailable ({type(e).__name__}: {e}); continuing without it")
        return None


#: ``key=value`` / ``key: value`` inside text (Hydra overrides, ``{api_key:x}`` dict syntax, lists)
_KEY_VALUE = re.compile(r"(?P<key>[\w.\-+~@/]+)(?P<sep>\s*[=:]\s*)(?P<value>[^,{}\[\]\s]+)")


def redact_text(text: str) -> str:
    """Override text (``a.api_key=x``, ``a.settings={api_key:x}``, comma-joined lists) with the values of
    credential keys replaced by ``***``."""

    def sub(m: re.Match) -> str:
        secret = _SECRET_KEY.search(m["key"].lstrip("+~"))
        return f"{m['key']}{m['sep']}***" if secret else m[0]

    return _KEY_VALUE.sub(sub, text)


def redact(obj: Any) -> Any:
    """Copy of a (nested) config with credential values replaced, for logs, reports and run files.

    Values under credential keys become ``***``; strings are redacted as override text (Hydra's
    ``overrides.yaml`` is a list of ``key=value`` strings), so one function serves both.
    """
    if isinstance(obj, dict):
        return {k: ("***" if v and _SECRET_KEY.search(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return redact_text(obj) if isinstance(obj, str) else obj


# ------------------------------------------------------------------------------ offline run reading

_WANDB_MAGIC = b":W&B"
_BLOCK = 32768  # the LevelDB-log block size of the .wandb format
_HEADER = 7  # crc32 (4) + length (2) + type (1)


def _wandb_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Raw protobuf records of a ``run-*.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    data = Path(path).read_bytes()
    if data[:4] != _WANDB_MAGIC:
        raise ValueError(f"{path}: not a W&B run file")
    pos, buf = 7, b""  # magic (4) + 0xBEE1 (2) + version (1)
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            yield buf + chunk
            buf = b""


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_wandb_run(run_dir: str | os.PathLike, wait_s: float = 0.0) -> dict[str, Any]:
    """Group, tags, config, history rows, summary and media files of an (offline) W&B run directory.

    Why: offline runs (the default without credentials) have no ``wandb-summary.json``; everything is
    in ``run-<id>.wandb``. Used by the tests and handy before ``wandb sync``. W&B's service writes the
    file asynchronously, also after ``wandb.finish()`` returns: ``wait_s`` polls that long for the
    run's exit record (``finished`` in the result).
    """
    import time

    deadline = time.monotonic() + wait_s
    while True:
        out = _read_wandb_run(Path(run_dir))
        if out["finished"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.5)


def _read_wandb_run(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    runs = sorted(run_dir.glob("run-*.wandb"))
    if not runs:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    out: dict[str, Any] = {
        "group": None,
        "name": None,
        "tags": [],
        "config": {},
        "history": [],
        "summary": {},
        "finished": False,
    }
    for raw in _wandb_records(runs[0]):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a record still being written (the service is async)
            break
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(group=rec.run.run_group, name=rec.run.display_name, tags=list(rec.run.tags))
            for item in rec.run.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({_item_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][_item_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            out["finished"] = True
    files = run_dir / "files"
    out["media"] = sorted(str(p.relative_to(files)) for p in (files / "media").rglob("*") if p.is_file())
    return out


def metric_history(run: dict[str, Any], key: str) -> list[tuple[int, float]]:
    """(trainer step, value) of one logged metric, in logging order."""
    return [
        (int(r.get("trainer/global_step", r.get("_step", -1))), float(r[key]))
        for r in run["history"]
        if key in r
    ]
