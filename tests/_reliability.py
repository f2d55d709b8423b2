"""Helpers for the reliability tests: a small parallel JSONL corpus and ``python train.py`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "train.py"
LANGS = ("en", "de", "fr")
_WORDS = [
    "alpha",
    "river",
    "stone",
    "light",
    "north",
    "green",
    "seven",
    "cloud",
    "tower",
    "maple",
    "ocean",
    "paper",
]


def write_corpus(path: Path, n_ids: int = 48, langs: tuple[str, ...] = LANGS, n_groups: int = 16) -> Path:
    """``n_ids`` parallel ids in every language of ``langs``, ``n_groups`` groups (for the held-out split)."""
    lines = []
    for i in range(n_ids):
        a, b, c = _WORDS[i % 12], _WORDS[(i * 5 + 1) % 12], _WORDS[(i * 7 + 3) % 12]
        for lang in langs:
            lines.append(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "lang": lang,
                        "query": f"{lang} which {a} {b} number {i}?",
                        "positive": f"{lang} the {a} {b} {c} is number {i}.",
                        "group": f"g{i % n_groups}",
                    }
                )
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def train_overrides(corpus: Path, model_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """A tiny, deterministic training job on ``corpus`` (no evaluation; CSV logger)."""
    return [
        "model=tiny_random",
        f"model.encoder.name_or_path={model_dir}",
        "data=jsonl",
        f"data.corpus.path={corpus}",
        "~data.split.test_fraction",
        "~data.split.dev_fraction",
        "+data.split.n_test_groups=1",  # 3 of 48 ids (test=false here)
        "+data.split.n_dev_groups=3",  # 9 dev ids: one validation batch of 8; 36 train ids = 4 steps/epoch
        "data.batch_size=8",
        "data.val_batches=1",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=-1",  # the tests set trainer.max_steps
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "test=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def make_cfg(tmp_path: Path, corpus: Path, model_dir: Path, *extra: str):
    """The composed ``train`` config of :func:`train_overrides` (CSV logger) for in-process ``train(cfg)``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import mlir.core.config  # noqa: F401  (resolvers)

    run = tmp_path / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*train_overrides(corpus, model_dir, run, *extra), "logger=csv"],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in the app: the task sees the job config only
        cfg.paths.output_dir = str(run)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def env(tmp: Path, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        MLIR_CACHE_DIR=str(tmp / "cache"),
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HYDRA_FULL_ERROR="0",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    e.update(extra)
    return e


def train_cmd(overrides: list[str], script: Path = TRAIN_PY) -> list[str]:
    return [sys.executable, str(script), *overrides]


def popen(overrides: list[str], tmp: Path, script: Path = TRAIN_PY, **env_extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        train_cmd(overrides, script),
        cwd=tmp,
        env=env(tmp, **env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


PAUSE_WRAPPER = '''\
"""train.py, but the process waits at the start of the batch after global step $MLIR_TEST_PAUSE_AT, after
writing $MLIR_TEST_PAUSE_MARKER, until SIGTERM (then it finishes that batch) or SIGKILL: the test kills it
at a known point."""
import os
import runpy
import sys
import time
from pathlib import Path

import mlir.training.resume

_at = int(os.environ["MLIR_TEST_PAUSE_AT"])
_orig = mlir.training.resume.RNGStateCallback.on_train_batch_start


def _pause(self, trainer, pl_module, batch, batch_idx):
    if trainer.global_step == _at and not getattr(self, "_paused", False):
        self._paused = True
        Path(os.environ["MLIR_TEST_PAUSE_MARKER"]).write_text(str(trainer.global_step))
        deadline = time.monotonic() + 3600
        while not trainer.received_sigterm and time.monotonic() < deadline:  # SIGKILL or SIGTERM ends it
            time.sleep(0.05)
    return _orig(self, trainer, pl_module, batch, batch_idx)


mlir.training.resume.RNGStateCallback.on_train_batch_start = _pause
sys.argv = [{train!r}] + sys.argv[1:]
runpy.run_path({train!r}, run_name="__main__")
'''


def pause_wrapper(tmp: Path) -> Path:
    """A script that runs train.py and sleeps when global step MLIR_TEST_PAUSE_AT starts (see above)."""
    p = tmp / "train_pausing.py"
    p.write_text(PAUSE_WRAPPER.replace("{train!r}", repr(str(TRAIN_PY))))
    return p


def wait_for_pause(proc: subprocess.Popen, marker: Path, timeout: float) -> None:
    """Wait until a :func:`pause_wrapper` run reaches its pause point (``marker`` exists)."""
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended before the pause ({proc.returncode}):\n{proc.stderr.read()[-4000:]}")
        assert time.monotonic() < deadline, "the run never reached the pause point"
        time.sleep(0.5)


def two_language_sampler():
    """A HybridBatchSampler over 40 ids in en and de, batch 8, seed 1 (the sampler-level resume tests)."""
    import torch

    from mlir.sampling.hybrid import HybridBatchSampler

    corpus = {
        "pid": torch.arange(40).repeat_interleave(2).numpy(),
        "lang_idx": torch.tensor([0, 1] * 40).numpy(),
        "passage_idx": torch.arange(80).numpy(),
        "langs": ["en", "de"],
    }
    return HybridBatchSampler(corpus, batch_size=8, seed=1)
