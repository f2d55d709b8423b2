"""Services that fail: W&B unreachable or misconfigured (training goes on, one warning), a full disk
while checkpointing (one-line error, the previous checkpoint intact); credentials never reach the run
directory; remote code stays off unless asked for."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
import torch
from _reliability import env, train_cmd, train_overrides, write_corpus

from mlir.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError

FAKE_KEY = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeed"  # 40 hex characters, like a real W&B key


def _grep_run_dir(run_dir: Path, *secrets: str) -> list[str]:
    """Files under ``run_dir`` (binary ones too) that contain any of ``secrets``."""
    hits = []
    for f in run_dir.rglob("*"):
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            hits += [f"{f}: {s[:6]}..." for s in secrets if s.encode() in data]
    return hits


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("services") / "corpus.jsonl")


def _train(tmp_path: Path, overrides: list[str], **env_extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(overrides),
        cwd=tmp_path,
        env=env(tmp_path, **env_extra),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_unreachable_wandb_training_continues_with_one_warning(tmp_path, corpus, tiny_model_dir):
    run = tmp_path / "run"
    secret_cfg = "cfgsecret-0123456789-unreachable"
    overrides = train_overrides(
        corpus,
        tiny_model_dir,
        run,
        "trainer.max_steps=2",
        "logger=many",
        "logger.wandb.mode=online",
        "+logger.wandb.settings={init_timeout:10,silent:true}",
        f"+secrets.hf_token={secret_cfg}",
    )
    # a bogus server (nothing listens on port 9) and a well-formed but fake key
    res = _train(
        tmp_path, overrides, WANDB_MODE="online", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY=FAKE_KEY
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Traceback" not in res.stderr
    log = (run / "train.log").read_text()
    assert log.count("logger 'wandb' unavailable") == 1, log[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()
    assert list((run / "csv").glob("version_0/metrics.csv"))  # the other logger still logs
    assert not _grep_run_dir(run, FAKE_KEY, secret_cfg)


@pytest.mark.slow
def test_credentials_never_reach_the_run_directory(tmp_path, corpus, tiny_model_dir):
    """W&B offline (its files, config and argv record), CSV hparams, Hydra's .hydra/*.yaml, logs."""
    run = tmp_path / "run"
    secret_settings, secret_cfg = "cfgsecret-settings-api-key-42", "cfgsecret-password-77"
    overrides = train_overrides(
        corpus,
        tiny_model_dir,
        run,
        "trainer.max_steps=2",
        "logger=many",
        "logger.wandb.mode=offline",
        f"+logger.wandb.settings={{api_key:{secret_settings},silent:true}}",
        f"+secrets.db.password={secret_cfg}",
    )
    res = _train(tmp_path, overrides, WANDB_MODE="offline", WANDB_API_KEY=FAKE_KEY)
    assert res.returncode == 0, res.stderr[-4000:]
    assert list(run.glob("wandb/offline-run-*")), "W&B offline run was not written"
    assert not _grep_run_dir(run, FAKE_KEY, secret_settings, secret_cfg)
    overrides_file = (run / ".hydra" / "overrides.yaml").read_text()
    assert "secrets.db.password=***" in overrides_file and "api_key:***" in overrides_file
    assert "***" in next(run.glob("csv/version_0/hparams.yaml")).read_text()  # redacted, not dropped


# --------------------------------------------------------------------------- full disk


def _failing_save(after_bytes: int, err: int = errno.ENOSPC):
    def save(obj, f):
        f.write(b"\0" * after_bytes)
        raise OSError(err, "No space left on device")

    return save


def test_full_disk_keeps_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    import mlir.training.checkpoint_io as cio

    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(10)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(cio.torch, "save", _failing_save(4096))
    with pytest.raises(CheckpointWriteError) as e:
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(10)}, path)
    assert e.value.where == str(path)
    assert (
        "no space left on device" in e.value.message and "previous checkpoint is unchanged" in e.value.message
    )
    assert "\n" not in str(e.value)
    assert path.read_bytes() == before  # intact and still the old one
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left behind


def test_full_disk_during_training_is_one_line_exit_2(tmp_path, corpus, tiny_model_dir, monkeypatch, capsys):
    """Through the Trainer: the 2nd checkpoint write fails; the first stays loadable."""
    from _reliability import make_cfg

    import mlir.training.checkpoint_io as cio
    from mlir.cli import run_main
    from mlir.training.pipeline import train

    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    real_save, calls = cio.torch.save, {"n": 0}

    def save(obj, f):
        calls["n"] += 1
        return (_failing_save(1024) if calls["n"] == 2 else real_save)(obj, f)

    monkeypatch.setattr(cio.torch, "save", save)
    cfg = make_cfg(
        tmp_path,
        corpus,
        tiny_model_dir,
        "trainer.max_steps=6",
        "callbacks.resume_checkpoint.every_n_train_steps=2",
    )
    with pytest.raises(SystemExit) as e:
        run_main(train, cfg)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert len(lines) == 1 and lines[0].startswith(f"error: {last}: cannot write checkpoint: no space left")
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert not list(last.parent.glob(".*.tmp"))


def test_other_write_errors_are_reported_too(tmp_path, monkeypatch):
    import mlir.training.checkpoint_io as cio

    monkeypatch.setattr(cio.torch, "save", _failing_save(0, errno.EIO))
    with pytest.raises(CheckpointWriteError, match="cannot write checkpoint"):
        AtomicCheckpointIO().save_checkpoint({"x": 1}, tmp_path / "a.ckpt")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- security defaults


def test_remote_code_is_off_unless_asked_for(tiny_model_dir, monkeypatch):
    import inspect

    import transformers

    from mlir.models.dual_encoder import DualEncoder

    assert inspect.signature(DualEncoder).parameters["trust_remote_code"].default is False
    seen = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        orig = cls.from_pretrained.__func__

        def spy(klass, *a, _orig=orig, **kw):
            seen.append(kw.get("trust_remote_code"))
            return _orig(klass, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    DualEncoder(str(tiny_model_dir), query_max_length=32, passage_max_length=64, token_budget=2048)
    assert seen and all(v is False for v in seen)


def test_module_checkpoints_load_weights_only(tmp_path, tiny_model_dir):
    """mlir.training.checkpoint refuses pickled code: a checkpoint holding an arbitrary object is an MlirError."""
    from mlir.core.errors import MlirError
    from mlir.training.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(MlirError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")
