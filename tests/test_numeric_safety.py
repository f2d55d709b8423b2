"""Numeric safety: a NaN loss is skipped (and counted) or stops the run with one line, keeping the last
good checkpoint; temperature and gradient clipping reject zero/negative/NaN values by config key."""

from __future__ import annotations

import math

import pytest
import torch
from _reliability import make_cfg, write_corpus

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.cli import run_main
from mlir.core.errors import ConfigError
from mlir.models.loss import InfoNCELoss
from mlir.training.pipeline import preflight, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("nan") / "corpus.jsonl")


@pytest.fixture
def nan_on_training_call(monkeypatch, tmp_path):
    """``set(n)``: the n-th training-time loss (1-based; validation excluded) becomes NaN."""
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    state = {"calls": 0, "bad": None}
    forward = InfoNCELoss.forward

    def faulty(self, q, p, negatives=None):
        loss, stats = forward(self, q, p, negatives)
        if torch.is_grad_enabled():
            state["calls"] += 1
            if state["calls"] == state["bad"]:
                loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(InfoNCELoss, "forward", faulty)
    return state


def _all_finite(ckpt: dict) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nan_loss_is_skipped_and_counted(tmp_path, corpus, tiny_model_dir, nan_on_training_call):
    nan_on_training_call["bad"] = 3
    cfg = make_cfg(tmp_path, corpus, tiny_model_dir, "trainer.max_steps=6", "model.nan_policy=skip")
    metrics = train(cfg)
    assert metrics["train/skipped_steps"] == 1.0
    assert math.isfinite(metrics["train/loss"])
    assert nan_on_training_call["calls"] == 6
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and _all_finite(ckpt)
    # the NaN batch updated nothing: AdamW stepped every parameter 5 times in 6 batches
    steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {5.0}


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path, corpus, tiny_model_dir, nan_on_training_call, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # run_main sets it when stderr is not a tty
    nan_on_training_call["bad"] = 6  # steps 1-5 fine; resume points after steps 2 and 4
    cfg = make_cfg(
        tmp_path,
        corpus,
        tiny_model_dir,
        "trainer.max_steps=8",
        "model.nan_policy=stop",
        "callbacks.resume_checkpoint.every_n_train_steps=2",
    )
    ckpts = tmp_path / "run" / "checkpoints"
    with pytest.raises(SystemExit) as e:
        run_main(train, cfg)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: training: non-finite training loss (nan) at global step 5"
    )
    assert "last good checkpoint is kept" in lines[0]
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and _all_finite(last)  # nothing was written for the bad step
    assert {p.name for p in ckpts.iterdir()} == {"last.ckpt", "step_000004.ckpt"}
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
        ("trainer.gradient_clip_val=-0.001", "trainer.gradient_clip_val"),
        ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val"),
        ("trainer.gradient_clip_val=inf", "trainer.gradient_clip_val"),
        ("model.loss.temperature=0", "model.loss.temperature"),
        ("model.loss.temperature=-0.05", "model.loss.temperature"),
        ("model.loss.temperature=nan", "model.loss.temperature"),
    ],
)
def test_bad_clip_and_temperature_are_config_errors(tmp_path, corpus, tiny_model_dir, override, key):
    cfg = make_cfg(tmp_path, corpus, tiny_model_dir, override)
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert e.value.where == key


@pytest.mark.parametrize("clip", ["0", "null", "0.5"])
def test_zero_or_null_clip_means_off_and_is_accepted(tmp_path, corpus, tiny_model_dir, clip):
    preflight(make_cfg(tmp_path, corpus, tiny_model_dir, f"trainer.gradient_clip_val={clip}"))


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_infonce_rejects_non_positive_temperature(t):
    with pytest.raises(ConfigError) as e:
        InfoNCELoss(temperature=t)
    assert e.value.where == "model.loss.temperature"
