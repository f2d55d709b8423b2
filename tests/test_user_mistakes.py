"""User mistakes caught outside the task function: override typos and a run dir that is a file (both
before Hydra composes), a run directory as eval.py's ``ckpt_path``, and a report on a ``test=false`` job.

Each mistake is one ``error: <where>: ...`` line on stderr and exit code 2 (see test_config_errors.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _reliability import ROOT, env

from mlir.core.errors import ConfigError

TYPOS = [
    ("group-option", ["sampler=hybird"], "sampler", "did you mean hybrid?"),
    ("key", ["data.batchsize=8"], "data.batchsize", "did you mean data.batch_size?"),
    ("top-level-key", ["smapler=hybrid"], "smapler", "did you mean sampler?"),
]


def _run(script: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=tmp,
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_line(res: subprocess.CompletedProcess, where: str, fragment: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith(f"error: {where}: "), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", TYPOS, ids=[c[0] for c in TYPOS])
def test_override_typo_is_one_line_with_closest_name(case, tmp_path):
    _, args, where, fragment = case
    run_dir = tmp_path / "run"
    res = _run("train.py", ["model=tiny_random", f"hydra.run.dir={run_dir}", *args], tmp_path)
    _assert_one_line(res, where, fragment)
    assert not run_dir.exists()  # refused before Hydra created anything


def test_eval_override_typo_is_one_line(tmp_path):
    res = _run("eval.py", ["eval.batchsize=8", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    _assert_one_line(res, "eval.batchsize", "did you mean eval.batch_size?")


def test_run_dir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    res = _run("train.py", ["model=tiny_random", f"hydra.run.dir={f}"], tmp_path)
    _assert_one_line(res, "hydra.run.dir", "not a directory")
    assert f.read_text() == "keep me"


def test_help_still_works(tmp_path):
    res = _run("train.py", ["--help"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr


def test_output_dir_check(tmp_path):
    from mlir.core.config import check_output_dir

    check_output_dir(tmp_path / "new" / "deeper")  # creatable
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="not a directory") as e:
        check_output_dir(tmp_path / "f" / "sub")
    assert e.value.where == "paths.output_dir"


def test_eval_accepts_a_run_directory(tmp_path):
    from mlir.eval.app import eval_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "last.ckpt").write_bytes(b"")
    assert eval_checkpoint(tmp_path / "run") == ck / "last.ckpt"
    (ck / "step_000004.ckpt").write_bytes(b"")
    assert eval_checkpoint(tmp_path / "run") == ck / "step_000004.ckpt"  # the best one ModelCheckpoint kept
    assert eval_checkpoint(ck / "last.ckpt") == ck / "last.ckpt"
    with pytest.raises(ConfigError, match="no step_") as e:
        eval_checkpoint(tmp_path)
    assert e.value.where == "ckpt_path"
    with pytest.raises(ConfigError, match="does not exist"):
        eval_checkpoint(tmp_path / "nope.ckpt")


def test_report_names_a_test_false_job(tmp_path):
    from mlir.study.runs import discover_runs

    for name, test in (("notest", "false"), ("tested", "true")):
        job = tmp_path / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(f"test: {test}\nsampler:\n  alpha: 0.5\nseed: 1\n")
        (job / "metrics.json").write_text(json.dumps({"dev/val_loss_best": 1.0}))
    problems = {r.path.name: r.problem for r in discover_runs(tmp_path)}
    assert problems == {
        "notest": "finished without test metrics (test=false)",
        "tested": "metrics.json without eval/ keys",
    }
