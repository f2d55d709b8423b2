"""Hydra multiruns end to end: a 3-point alpha sweep + the report, and a DDP multirun's directories."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _eval_data import make_xquad_dir

ROOT = Path(__file__).resolve().parents[1]
JOB_FILES = {".hydra", "metrics.json", "per_query.npz", "train.log", "checkpoints"}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """LAReQA-format toy XQuAD-R: 6 articles x 3 languages (2 trained, zh never), 2 held out."""
    root = tmp_path_factory.mktemp("data")
    make_xquad_dir(root / "xquad-r", langs=("en", "de", "zh"), n_articles=6, questions=3)
    return root


def _toy_overrides(data: Path, tmp: Path) -> list[str]:
    return [
        "debug=fast",
        f"paths.data_dir={data}",
        f"paths.log_dir={tmp / 'logs'}",
        "data.corpus.download=false",
        "data.train_langs=[en,de]",
        "data.eval_langs=[en,de,zh]",
        "data.split.n_eval_groups=2",
        "data.batch_size=4",
        "eval.benchmarks.xquad_r.download=false",
        "trainer.enable_progress_bar=false",
    ]


def _run(args: list[str], tmp: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        MLIR_CACHE_DIR=str(tmp / "cache"),
        WANDB_MODE="offline",
        WANDB_API_KEY="",
        HYDRA_FULL_ERROR="1",
        PYTHONPATH=str(ROOT),
    )
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _all_dirs(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_dir()}


@pytest.mark.slow
def test_alpha_sweep_multirun_and_report(tmp_path, toy_data):
    """python train.py -m sampler.alpha=0,0.5,1 (W&B offline, two benchmarks), then mlir.report."""
    from mlir.logging import read_wandb_run
    from mlir.report import build_report, main

    sweep = tmp_path / "logs" / "multiruns" / "toy_sweep"
    _run(
        [
            "-m",
            *_toy_overrides(toy_data, tmp_path),
            "+benchmark@eval.benchmarks.xquad_r_mkqa=xquad_r_mkqa_heldout",
            "eval.benchmarks.xquad_r_mkqa.download=false",
            "logger=wandb",
            "sampler.alpha=0,0.5,1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    # one directory per job, nothing else under the log dir (no stray single-run directories)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    assert {p for p in (tmp_path / "logs").iterdir()} == {tmp_path / "logs" / "multiruns"}
    for job in jobs:
        assert JOB_FILES <= {p.name for p in job.iterdir()}, sorted(p.name for p in job.iterdir())

    # W&B: one offline run per job (not one run reused by all), all in the sweep's group
    runs = [read_wandb_run(next((j / "wandb").glob("offline-run-*")), wait_s=60) for j in jobs]
    assert {r["group"] for r in runs} == {"train-toy_sweep"}
    assert [r["name"] for r in runs] == [
        "alpha=0 seed=42 job=0",
        "alpha=0.5 seed=42 job=1",
        "alpha=1 seed=42 job=2",
    ]
    assert [r["config"]["sampler"]["alpha"] for r in runs] == [0.0, 0.5, 1.0]
    kinds = [[t for t in r["tags"] if t.startswith("sampler:")] for r in runs]
    assert kinds == [["sampler:xy"], ["sampler:hybrid"], ["sampler:xx_mono"]]

    rep = build_report(sweep, n_boot=500, n_perm=500)
    assert rep.alphas == [0.0, 0.5, 1.0] and rep.hybrid_alpha == 0.5 and rep.missing_alphas == []
    assert set(rep.benchmarks) == {"xquad_r", "xquad_r_mkqa"}
    assert all(r["n"] == 1 and math.isnan(r["ci95_low"]) for r in rep.table)  # one seed each: NaN interval
    assert len(rep.significance) == 2 * 2 * (2 + 2 + 3)  # benchmarks x baselines x (mono 2, cross 2, multi 3)
    for r in rep.significance:
        assert r["status"] == "ok" and r["n_queries"] > 0 and 0 < r["p_value"] <= 1, r
        assert np.isfinite(r["diff"]) and r["diff_ci95_low"] <= r["diff"] <= r["diff_ci95_high"]
    assert main([str(sweep), "--n-boot", "200", "--n-perm", "200"]) == 0
    md = (sweep / "report.md").read_text()
    for name in ("report.csv", "significance.csv", "alpha_curves.png", "lang_heatmap.png"):
        assert (sweep / name).stat().st_size > 0
    assert "## Answer" in md and "**xquad_r**" in md and "**xquad_r_mkqa**" in md
    assert "no interval (NaN)" in md


@pytest.mark.slow
def test_ddp_multirun_gives_one_directory_per_job(tmp_path, toy_data):
    """trainer=ddp_sim in a 2-job multirun: rank 1 re-runs *its* job in the job's directory."""
    sweep = tmp_path / "logs" / "multiruns" / "ddp"
    res = _run(
        [
            "-m",
            *_toy_overrides(toy_data, tmp_path),
            "trainer=ddp_sim",
            "sampler.alpha=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert res.stdout.count("Launching 2 jobs locally") + res.stderr.count("Launching 2 jobs locally") == 1
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    # nothing but the sweep: no run directories created by the DDP children
    assert _all_dirs(tmp_path / "logs") == {tmp_path / "logs" / "multiruns", sweep, *_all_dirs(sweep)}
    for job, alpha in zip(jobs, ("0", "1")):
        assert JOB_FILES <= {p.name for p in job.iterdir()}
        assert f"sampler.alpha={alpha}" in (job / ".hydra" / "overrides.yaml").read_text()
        log = (job / "train.log").read_text()
        assert "GLOBAL_RANK: 1" in log  # rank 1 logged into this job's directory
        assert not list(job.glob("**/.hydra/.hydra"))
