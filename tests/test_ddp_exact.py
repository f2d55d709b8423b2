"""Exact DDP: 2 gloo processes with B/2 pairs each train the same weights as 1 process with B pairs.

The runs go through the real path: ``python train.py ... trainer=ddp_sim`` (Lightning's DDPStrategy,
popen launcher, HybridBatchSampler slices, InfoNCE with cross-device negatives, AdamW, clipping, the LR
schedule) on a tiny synthetic JSONL corpus with dropout off. :class:`ExactnessProbe` (a callback added
on the command line) saves each rank's final weights and counts DDP's gradient all-reduces.

Also here: the multi-GPU trainer configs compose and build their strategy without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3
BATCH = 8


class ExactnessProbe(L.Callback):
    """Saves ``rank{r}.pt`` (final weights, global step, DDP all-reduce count) at the end of training."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.allreduce_calls = 0
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        def counting_hook(state, bucket):
            self.allreduce_calls += 1
            return default_hooks.allreduce_hook(state, bucket)

        if isinstance(trainer.strategy.model, DistributedDataParallel):
            trainer.strategy.model.register_comm_hook(state=None, hook=counting_hook)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(
            {
                "state_dict": state,
                "initial": self.initial,
                "global_step": trainer.global_step,
                "allreduce_calls": self.allreduce_calls,
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )


def _write_corpus(path: Path, n_ids: int = 24) -> None:
    """3 languages x n_ids parallel rows, distinct texts of varied length (dynamic padding matters)."""
    words = "the panthers were founded in by who when where which how many of and is was die los".split()
    with path.open("w") as f:
        for i in range(n_ids):
            q = " ".join(words[(i * 7 + k) % len(words)] for k in range(2 + i % 5))
            p = " ".join(words[(i * 3 + k) % len(words)] for k in range(4 + (i * 5) % 11))
            for lang in ("en", "de", "es"):
                row = {"id": f"q{i}", "lang": lang, "query": f"{lang} {q} {i}", "positive": f"{p} {lang} {i}"}
                f.write(json.dumps(row) + "\n")


def _start(tmp: Path, name: str, trainer: str, *extra: str) -> subprocess.Popen:
    """Start ``python train.py`` for one run (output and probe files under ``tmp/name``)."""
    out = tmp / name
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "model=tiny_random",
        "model.encoder.dropout=0.0",
        "data=jsonl",
        f"data.corpus.path={tmp / 'train.jsonl'}",
        "data.split=null",
        "data.val_batches=0",
        "data.num_workers=0",
        f"data.batch_size={BATCH}",
        f"trainer={trainer}",
        f"trainer.max_steps={STEPS}",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "logger=none",
        "callbacks=none",
        "+callbacks.probe._target_=tests.test_ddp_exact.ExactnessProbe",
        f"+callbacks.probe.out_dir={out / 'probe'}",
        "test=false",
        "seed=0",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={out}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = (tmp / f"{name}.log").open("w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _finish(tmp: Path, name: str, proc: subprocess.Popen) -> dict:
    try:
        rc = proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, f"{name} failed:\n{(tmp / f'{name}.log').read_text()[-4000:]}"
    return {p.stem: torch.load(p, weights_only=True) for p in sorted((tmp / name / "probe").glob("rank*.pt"))}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs, started together: each DDP run is a serial chain (rank 0 starts rank 1)."""
    tmp = tmp_path_factory.mktemp("ddp_exact")
    _write_corpus(tmp / "train.jsonl")
    from mlir.models.tiny import build_tiny_model

    build_tiny_model(tmp / "cache" / "tiny-random-bert")  # once, before the runs race for it
    t0 = time.perf_counter()
    procs = {
        "single": _start(tmp, "single", "cpu"),
        "ddp": _start(tmp, "ddp", "ddp_sim"),
        "ddp_gc": _start(tmp, "ddp_gc", "ddp_sim", "model.grad_cache.chunk_size=2"),
    }
    out = {name: _finish(tmp, name, p) for name, p in procs.items()}
    print(f"\n3 training runs (1 + 2 + 2 processes) in {time.perf_counter() - t0:.0f} s")
    return out


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert set(single) == {"rank0"} and set(ddp) == {"rank0", "rank1"}
    ref = single["rank0"]
    assert ref["global_step"] == ddp["rank0"]["global_step"] == STEPS
    assert _max_diff(ref["state_dict"], ref["initial"]) > 1e-3  # training moved the weights
    assert _max_diff(ddp["rank0"]["initial"], ref["initial"]) == 0.0  # same start
    # DDP keeps the replicas identical, and they equal the single-process weights
    assert _max_diff(ddp["rank0"]["state_dict"], ddp["rank1"]["state_dict"]) == 0.0
    diff = _max_diff(ddp["rank0"]["state_dict"], ref["state_dict"])
    print(f"\nDDP(2 x {BATCH // 2}) vs 1 x {BATCH}: max |dparam| = {diff:.3g}")
    assert diff <= 1e-5
    assert ddp["rank0"]["allreduce_calls"] >= STEPS


@pytest.mark.slow
def test_grad_cache_ddp_equals_one_process_without_grad_cache(runs):
    single, ddp, gc = runs["single"], runs["ddp"], runs["ddp_gc"]
    assert gc["rank0"]["global_step"] == STEPS
    assert _max_diff(gc["rank0"]["state_dict"], gc["rank1"]["state_dict"]) == 0.0
    diff = _max_diff(gc["rank0"]["state_dict"], single["rank0"]["state_dict"])
    print(f"\nGradCache(chunk 2) + DDP(2 x {BATCH // 2}) vs 1 x {BATCH}: max |dparam| = {diff:.3g}")
    assert diff <= 1e-5
    # 2 chunks per rank, yet no more all-reduces than the plain DDP run: no_sync holds back the first
    assert gc["rank0"]["allreduce_calls"] == ddp["rank0"]["allreduce_calls"]


# ------------------------------------------------------------------ trainer configs


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    import mlir.core.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


def test_ddp_config_composes_and_builds_its_strategy():
    import hydra
    from lightning.pytorch.strategies import DDPStrategy

    cfg = _compose("trainer=ddp")
    t = cfg.trainer
    assert t.accelerator == "gpu" and t.devices == -1 and t.num_nodes == 1
    assert t.strategy.process_group_backend == "nccl" and t.use_distributed_sampler is False
    strategy = hydra.utils.instantiate(t.strategy)
    assert isinstance(strategy, DDPStrategy) and strategy.process_group_backend == "nccl"
    assert strategy._ddp_kwargs["gradient_as_bucket_view"] is True
    assert strategy._ddp_kwargs["find_unused_parameters"] is False


def test_ddp_multinode_config_matches_a_slurm_layout(monkeypatch):
    """nodes x GPUs from the config; Lightning's SLURM environment gives ranks from srun's variables."""
    import hydra
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    cfg = _compose("trainer=ddp_multinode", "trainer.num_nodes=2", "trainer.devices=4")
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 4
    assert cfg.trainer.strategy.process_group_backend == "nccl"
    # srun --nodes=2 --ntasks-per-node=4: this task is global rank 5 = node 1, local rank 1
    env = {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_JOB_NAME": "mlir-train",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_NODELIST": "gpu[01-02]",
        "SLURM_NNODES": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # CPU stands in for the GPUs: the layout logic is the same, and no process group is started
    kwargs = {
        "accelerator": "cpu",
        "precision": "32-true",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
    }
    strategy = hydra.utils.instantiate(cfg.trainer.strategy, process_group_backend="gloo")
    trainer = L.Trainer(
        devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes, strategy=strategy, **kwargs
    )
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank, trainer.local_rank) == (8, 5, 1, 1)
    env_ = trainer.strategy.cluster_environment
    env_.validate_settings(
        num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes
    )  # what fit() checks
    # a launcher layout that does not match (one task per node, all GPUs to it) is refused
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    with pytest.raises(ValueError, match="ntasks-per-node"):
        env_.validate_settings(num_devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes)


def test_ddp_sim_config_composes():
    cfg = _compose("trainer=ddp_sim")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 2
    assert (
        cfg.trainer.strategy.process_group_backend == "gloo" and cfg.trainer.strategy.start_method == "popen"
    )
