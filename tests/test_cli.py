"""The command line apart from training (mlir.cli): one-line user errors, one redaction function, and
``eval.py`` without the training pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mlir.cli import run_main, scrub_secrets, user_error
from mlir.core.errors import ConfigError, DataError
from mlir.core.logging import redact

ROOT = Path(__file__).resolve().parents[1]


def test_eval_does_not_import_the_training_pipeline():
    imported = {
        node.module
        for node in ast.walk(ast.parse((ROOT / "eval.py").read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert "mlir.training.pipeline" not in imported and "mlir.cli" in imported
    code = "import sys, mlir.cli, mlir.eval.app; sys.exit('mlir.training.pipeline' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_user_errors_are_found_in_the_chain():
    try:
        try:
            raise DataError("bad line", where="x.jsonl:3")
        except DataError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as e:
        assert user_error(e).where == "x.jsonl:3"
    assert user_error(FloatingPointError("loss is NaN")).where == "training"
    assert user_error(KeyError("a bug")) is None


def test_missing_mandatory_value_is_a_config_error(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"model": {"name": "???"}})
    with pytest.raises(Exception) as e:
        _ = cfg.model.name
    err = user_error(e.value)
    assert isinstance(err, ConfigError) and err.where == "model.name"


def test_run_main_prints_one_line_and_exits_2(capsys):
    def fail(cfg):
        raise ConfigError("must be in [0, 1], got 1.5", where="sampler.alpha")

    with pytest.raises(SystemExit) as e:
        run_main(fail, OmegaConf.create({}))
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: sampler.alpha: must be in [0, 1], got 1.5\n"


def test_one_redaction_for_configs_and_override_text(monkeypatch):
    cfg = {
        "logger": {"wandb": {"api_key": "abc", "settings": "{api_key:def,silent:true}"}},
        "overrides": ["logger.wandb.api_key=ghi", "model.token_budget=4096", "+secrets.db.password=jkl"],
    }
    out = redact(cfg)
    assert out["logger"]["wandb"] == {"api_key": "***", "settings": "{api_key:***,silent:true}"}
    assert out["overrides"] == [
        "logger.wandb.api_key=***",
        "model.token_budget=4096",
        "+secrets.db.password=***",
    ]
    monkeypatch.setattr(sys, "argv", ["train.py", "logger.wandb.api_key=ghi", "data.batch_size=8"])
    scrub_secrets()
    assert sys.argv == ["train.py", "logger.wandb.api_key=***", "data.batch_size=8"]


def test_training_module_has_no_redaction_of_its_own():
    import mlir.training.pipeline

    assert not [name for name in vars(mlir.training.pipeline) if "redact" in name and name != "redact"]
