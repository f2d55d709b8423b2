"""Exact resume: a run killed (SIGKILL) or pre-empted (SIGTERM) mid-epoch and resumed with
``ckpt_path=last`` ends with the weights, optimiser, scheduler, sampler position and metrics of an
uninterrupted run with the same seed; checkpoint files are never half-written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _reliability import env, pause_wrapper, popen, train_cmd, train_overrides, wait_for_pause, write_corpus

# 36 training ids / batch 8 = 4 steps per epoch: step 10 is inside the third epoch, validation runs
# after steps 4 and 8; resume points every 3 steps (3, 6, 9) so the kill below lands mid-epoch.
COMMON = ("trainer.max_steps=10", "callbacks.resume_checkpoint.every_n_train_steps=3")
TIMEOUT = 900
#: checkpoint entries that must survive a resume unchanged
KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "RetrievalDataModule", "rng_states", "global_step")


def _finish(proc: subprocess.Popen, what: str) -> tuple[str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err[-4000:]}"
    return out, err


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model_dir):
    """The job's overrides, and an uninterrupted reference run started at once (it runs concurrently)."""
    d = tmp_path_factory.mktemp("resume")
    corpus = write_corpus(d / "corpus.jsonl")

    def overrides(run_dir: Path, *extra: str) -> list[str]:
        return train_overrides(corpus, tiny_model_dir, run_dir, *COMMON, *extra)

    ref = SimpleNamespace(dir=d / "reference", proc=None, done=False)
    ref.proc = popen(overrides(ref.dir), d)

    def reference() -> Path:
        if not ref.done:
            _finish(ref.proc, "reference run")
            ref.done = True
        return ref.dir

    yield SimpleNamespace(dir=d, overrides=overrides, reference=reference)
    if ref.proc.poll() is None:
        ref.proc.kill()


def _interrupted_run(job, name: str, pause_at: int) -> tuple[subprocess.Popen, Path, Path]:
    """Start a run that waits at the start of the batch after global step ``pause_at``."""
    run_dir, marker = job.dir / name, job.dir / f"{name}.paused"
    proc = popen(
        job.overrides(run_dir),
        job.dir,
        script=pause_wrapper(job.dir),
        MLIR_TEST_PAUSE_AT=str(pause_at),
        MLIR_TEST_PAUSE_MARKER=str(marker),
    )
    wait_for_pause(proc, marker, TIMEOUT)
    return proc, run_dir, marker


def _resume(job, run_dir: Path) -> str:
    res = subprocess.run(
        train_cmd(job.overrides(run_dir, "ckpt_path=last")),
        cwd=job.dir,
        env=env(job.dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # our checkpoints must allow this


def _per_step(run_dir: Path, key: str) -> dict[int, float]:
    """``key`` by step from every CSV logger version of the run (later versions win: a resume repeats)."""
    values: dict[int, float] = {}
    for f in sorted(
        (run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    ):
        for row in csv.DictReader(f.open()):
            if row.get(key):
                values[int(row["step"])] = float(row[key])
    return values


def _max_diff(a, b) -> float:
    """Largest absolute difference between two nested structures of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max([_max_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, list | tuple):
        assert len(a) == len(b)
        return max([_max_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if torch.is_tensor(a):
        assert a.shape == b.shape and a.dtype == b.dtype
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b)
    assert a == b
    return 0.0


def assert_same_as_reference(ref_dir: Path, run_dir: Path) -> float:
    """Final checkpoint and logged metrics equal the reference's; returns the largest parameter difference."""
    ref, got = _load(ref_dir / "checkpoints" / "last.ckpt"), _load(run_dir / "checkpoints" / "last.ckpt")
    assert ref["global_step"] == got["global_step"] == 10
    param_diff = _max_diff(ref["state_dict"], got["state_dict"])
    assert param_diff <= 1e-6
    for key in KEYS:
        assert _max_diff(ref[key], got[key]) <= 1e-6, key
    for key in ("train/loss_step", "train/accuracy_step", "val/loss", "lr-AdamW/pg1"):
        want, have = _per_step(ref_dir, key), _per_step(run_dir, key)
        assert want and want.keys() == have.keys(), (key, sorted(want), sorted(have))
        assert max(abs(want[s] - have[s]) for s in want) <= 1e-6, key
    want = json.loads((ref_dir / "metrics.json").read_text())
    have = json.loads((run_dir / "metrics.json").read_text())
    # the module's pair counter (train/mono_pair_fraction) is not part of its checkpoint yet
    for k in set(want) | set(have):
        if k != "train/mono_pair_fraction":
            assert have[k] == pytest.approx(want[k], abs=1e-6), k
    return param_diff


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(job):
    proc, run_dir, _ = _interrupted_run(job, "killed", pause_at=7)
    # last.ckpt is the step-6 resume point (written on train batch end, mid-epoch 1); batch 7 is in flight
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = _load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6
    assert ckpt["RetrievalDataModule"]["sampler"]["epoch"] == 1
    assert ckpt["RetrievalDataModule"]["sampler"]["step"] == 2
    assert {"torch", "numpy", "python"} <= set(ckpt["rng_states"])
    assert not (run_dir / "metrics.json").exists()

    _resume(job, run_dir)
    assert_same_as_reference(job.reference(), run_dir)


@pytest.mark.slow
def test_sigterm_saves_last_exits_cleanly_and_resumes_exactly(job):
    proc, run_dir, _ = _interrupted_run(job, "preempted", pause_at=4)
    proc.send_signal(signal.SIGTERM)  # the batch in flight (step 5, epoch 1) completes, then save + exit
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-4000:]
    assert "Traceback" not in err and not err.strip(), err[-4000:]
    assert "stopped by SIGTERM" in out and "ckpt_path=last" in out
    assert not (run_dir / "metrics.json").exists()  # no evaluation of a half-trained model
    ckpt = _load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 5
    sampler = ckpt["RetrievalDataModule"]["sampler"]
    assert (sampler["epoch"], sampler["step"]) == (1, 1)
    assert not list((run_dir / "checkpoints").glob("last-v*.ckpt"))

    _resume(job, run_dir)
    assert_same_as_reference(job.reference(), run_dir)


# --------------------------------------------------------------------------- fast, in-process


def test_rng_states_survive_weights_only_and_restore_exactly(tmp_path):
    import random

    import numpy as np

    from mlir.training.resume import collect_rng_states, restore_rng_states

    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    states = collect_rng_states()
    want = (torch.rand(4), np.random.standard_normal(3), random.random())
    torch.save({"rng_states": states}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng_states"]
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_rng_states(loaded)
    got = (torch.rand(4), np.random.standard_normal(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_atomic_save_killed_mid_write_keeps_previous_checkpoint(tmp_path):
    from mlir.training.checkpoint_io import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    pid = os.fork()
    if pid == 0:  # child: the process dies halfway through writing the next checkpoint
        try:
            import mlir.training.checkpoint_io as cio

            def dying_save(obj, f):
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            cio.torch.save = dying_save
            io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert path.read_bytes() == before and _load(path)["global_step"] == 1
    stale = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(stale) == 1  # the dead writer's temp file, never the checkpoint itself
    io.save_checkpoint({"global_step": 3, "w": torch.zeros(1000)}, path)
    assert _load(path)["global_step"] == 3
    assert not list(tmp_path.glob(".last.ckpt.*.tmp"))  # the next save cleans it up


def test_checkpoints_with_omegaconf_values_load_weights_only(tmp_path):
    from omegaconf import OmegaConf

    from mlir.training.checkpoint_io import AtomicCheckpointIO

    sd = torch.nn.Linear(2, 2).state_dict()
    ckpt = {"state_dict": sd, "hyper_parameters": {"grad_cache": OmegaConf.create({"chunk_size": None})}}
    AtomicCheckpointIO().save_checkpoint(ckpt, tmp_path / "c.ckpt")
    loaded = _load(tmp_path / "c.ckpt")
    assert loaded["hyper_parameters"] == {"grad_cache": {"chunk_size": None}}
    assert type(loaded["state_dict"]) is type(sd) and torch.equal(
        loaded["state_dict"]["weight"], sd["weight"]
    )


def _cfg(run_dir: Path, log_dir: Path, ckpt):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "ckpt_path": ckpt,
            "task_name": "train",
            "paths": {"output_dir": str(run_dir), "log_dir": str(log_dir)},
        }
    )


def test_ckpt_path_last_and_run_dirs(tmp_path, caplog):
    from mlir.core.errors import ConfigError
    from mlir.training.pipeline import resolve_ckpt_path

    logs = tmp_path / "logs"
    old = logs / "train" / "runs" / "2026-01-01_00-00-00"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "last.ckpt").write_bytes(b"x")
    new = logs / "train" / "runs" / "2026-01-02_00-00-00"

    assert resolve_ckpt_path(_cfg(new, logs, None)) is None
    # a run that has no checkpoint yet (e.g. requeued before its first save) starts from scratch,
    # and the warning names the run the user probably meant
    with caplog.at_level("WARNING"):
        assert resolve_ckpt_path(_cfg(new, logs, "last")) is None
    assert f"hydra.run.dir={old}" in caplog.text
    assert resolve_ckpt_path(_cfg(old, logs, "last")) == str(old / "checkpoints" / "last.ckpt")
    # a run directory stands for its checkpoints/last.ckpt
    assert resolve_ckpt_path(_cfg(new, logs, str(old))) == str(old / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match="no last.ckpt") as e:
        resolve_ckpt_path(_cfg(new, logs, str(tmp_path)))
    assert e.value.where == "ckpt_path"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_ckpt_path(_cfg(new, logs, str(tmp_path / "x.ckpt")))


def test_sampler_length_stays_the_epoch_length_after_a_mid_epoch_resume():
    """Lightning sizes every epoch by the length read once at fit start: it must be the full epoch."""
    from _reliability import two_language_sampler

    s = two_language_sampler()
    full = [list(b) for b in s]
    s.load_state_dict(s.state_at(0, 3))
    assert len(s) == s.steps_per_epoch == len(full)
    assert [list(b) for b in s] == full[3:]
