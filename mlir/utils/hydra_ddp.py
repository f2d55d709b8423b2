"""One Hydra output directory per job when Lightning's DDP launcher starts the other ranks.

Why: Lightning's ``_SubprocessScriptLauncher`` starts ranks 1..N-1 by re-running the script with the
original ``sys.argv`` plus ``hydra.run.dir=<hydra.run.dir>``. In a multirun that command still holds
``-m`` and the sweep lists (``sampler.alpha=0,1``), so every child starts a *whole new sweep*: ranks of
different jobs pair up, extra job directories appear, and runs hang or mix. Even in a single run it
passes the *pattern* ``hydra.run.dir`` rather than the directory the job actually uses.

:func:`ddp_child_command` rebuilds the child's command from the job itself: this job's own overrides
(``hydra.overrides.task``: ``sampler.alpha=0``, not ``0,1``), no ``-m``, ``hydra.mode=RUN``,
``hydra.run.dir=<this job's output dir>`` and ``hydra.output_subdir=null`` (the parent already wrote
``.hydra/``). The children therefore run exactly the parent's job config in the parent's directory.
Under SLURM (``srun`` starts every rank) Lightning launches nothing and this is not involved.

:class:`JobIsolation` (a Hydra callback, ``conf/hydra/default.yaml``) cleans up after each job of a
local multirun, which runs all jobs in one process: the DDP process group, the launcher's environment
variables and the active W&B run would otherwise leak into the next job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

#: Hydra overrides that only make sense for the launching process (sweep, launcher, run dir, mode).
_PARENT_ONLY = (
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.mode",
    "hydra.run",
    "hydra.job.name",
    "hydra.output_subdir",
    "hydra.multirun",
)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _quote(value: str) -> str:
    """A path as one Hydra override value (quoted: commas, spaces or ``=`` must not split it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """(command, cwd) that re-runs *this Hydra job* as DDP rank ``local_rank`` in the same directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hc = HydraConfig.get()
    if getattr(__main__, "__spec__", None) is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += config_flags(sys.argv[1:])
    command += child_overrides(
        list(hc.overrides.task), list(hc.overrides.hydra), hc.runtime.output_dir, local_rank
    )
    return command, get_original_cwd()


_VALUE_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def config_flags(argv: Sequence[str]) -> list[str]:
    """The primary-config flags of the command line (``--config-name X`` ...); overrides and ``-m`` go."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in _VALUE_FLAGS:
            out += [arg, next(it, "")]
        elif arg.startswith(tuple(f + "=" for f in _VALUE_FLAGS)):
            out.append(arg)
    return out


def child_overrides(task: Sequence[str], hydra: Sequence[str], output_dir: str, local_rank: int) -> list[str]:
    """The child's override list: the job's task overrides, harmless Hydra ones, and its run dir."""
    keep = [o for o in hydra if not _key(o).startswith(_PARENT_ONLY)]
    return [
        *task,
        *keep,
        "hydra.mode=RUN",
        f"hydra.run.dir={_quote(os.path.abspath(output_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_ddp_process_{local_rank}",
    ]


def install() -> None:
    """Make Lightning's subprocess launcher (fabric and pytorch) use :func:`ddp_child_command`. Idempotent."""
    import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher
    import lightning.pytorch.strategies.launchers.subprocess_script as pl_launcher

    for mod in (fabric_launcher, pl_launcher):
        if hasattr(mod, "_hydra_subprocess_cmd"):
            mod._hydra_subprocess_cmd = ddp_child_command


#: Variables Lightning's launcher sets in the *parent* process; left behind, the next job of a local
#: multirun would believe its ranks were started externally (``LOCAL_RANK`` set) and never start them.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra < 1.1
    _HydraCallback = object  # type: ignore[assignment,misc]


def finish_wandb() -> None:
    """Close the active W&B run, if any (never imports wandb; never raises)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception:  # noqa: BLE001 - logging must not fail a job
            pass


class JobIsolation(_HydraCallback):
    """Hydra callback: each job of a sequential (local) multirun starts from a clean process state.

    Why: a local multirun runs its jobs one after another in one process, and two things leak from
    one job into the next:

    * DDP: the default process group still points at the previous job's (exited) ranks and the
      launcher's environment variables are still set, so the next job would reuse a dead group
      ("connection closed by peer") or wait forever for ranks nobody starts;
    * W&B: the run stays active, and Lightning's ``WandbLogger`` *reuses* an active run, so every
      later job would log into the first job's run.

    At the end of every job this finishes the W&B run, destroys the process group and restores the
    environment variables.
    """

    def __init__(self) -> None:
        self._env: dict[str, str | None] = {}

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._env = {k: os.environ.get(k) for k in _DDP_ENV}

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        finish_wandb()
        if self._env.get("LOCAL_RANK") is not None:
            return  # a rank started by someone else (a DDP child, srun, torchrun): it exits after the job
        dist = sys.modules.get("torch.distributed")  # never import torch just to clean up
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


DDPJobIsolation = JobIsolation  # the earlier name
