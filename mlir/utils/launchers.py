"""Make hydra-submitit-launcher's SLURM schema extendable by ``conf/hydra/launcher/submitit_slurm.yaml``.

Why: our file has the plugin's name (``hydra/launcher=submitit_slurm``) so that the usual command line
works, but a file shadows the plugin's structured config of the same name, and cannot list it in its
own defaults (that would be itself). The plugin's schema is therefore also stored as
``hydra/launcher/submitit_slurm_schema``, which our file extends: typed fields, the plugin's defaults.
Without the plugin installed an empty node stands in, so configs still compose (tests, ``--cfg``) and
launching fails with the plugin's import error. Hydra 1.3 additionally validates the file against the
plugin's schema of the same name ("automatic schema matching") and warns that this is deprecated; the
explicit extension above keeps working once it is gone, so that one warning is silenced.
"""

from __future__ import annotations

import warnings

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

SCHEMA_NAME = "submitit_slurm_schema"
GPUS_RESOLVER = "mlir_slurm_gpus"


def slurm_gpus_per_node(devices: object = 1) -> int:
    """GPUs (= SLURM tasks) per node for ``trainer.devices``.

    Why: Lightning's SLURMEnvironment refuses a job whose ``--ntasks-per-node`` differs from
    ``trainer.devices``, so the launcher must ask for exactly that many. A positive int is taken as
    is; ``-1``/``"auto"``/lists cannot be counted before the job starts, so they give 1 (override
    ``hydra.launcher.gpus_per_node`` then).
    """
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    return 1


def register_launcher_schemas() -> None:
    """Store the SLURM schema as :data:`SCHEMA_NAME`; register :data:`GPUS_RESOLVER` (idempotent)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

        # plain values: Hydra may load the plugin module a second time, and two copies of the
        # dataclass refuse to merge ("SlurmQueueConf is not a subclass of SlurmQueueConf")
        node: dict = OmegaConf.to_container(OmegaConf.structured(SlurmQueueConf))  # type: ignore[assignment]
    except ImportError:
        node = {}
    if not OmegaConf.has_resolver(GPUS_RESOLVER):
        OmegaConf.register_new_resolver(GPUS_RESOLVER, slurm_gpus_per_node)
    ConfigStore.instance().store(group="hydra/launcher", name=SCHEMA_NAME, node=node, provider="mlir")
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema"
    )
