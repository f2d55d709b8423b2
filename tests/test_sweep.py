"""Hydra multiruns end to end: a 3-point alpha sweep + the report, and a DDP multirun's directories."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

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
        "data.split.n_folds=3",
        "data.split.n_dev_groups=1",
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
    from mlir.core.logging import read_wandb_run
    from mlir.report import build_report, main

    sweep = tmp_path / "logs" / "multiruns" / "toy_sweep"
    _run(
        [
            "-m",
            *_toy_overrides(toy_data, tmp_path),
            "+benchmark@eval.benchmarks.xquad_r_mkqa=xquad_r_mkqa_test",
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

    rep = build_report(sweep)
    assert rep.alphas == [0.0, 0.5, 1.0] and rep.hybrid_alpha == 0.5 and rep.missing_alphas == []
    assert set(rep.benchmarks) == {"xquad_r", "xquad_r_mkqa"}
    # one run per arm: the run-to-run variance is unknown, so nothing is tested (and nothing claimed)
    assert rep.significance and all(math.isnan(r["p_value"]) for r in rep.significance)
    assert all(r["status"].startswith("not tested") for r in rep.significance)
    assert main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    for name in ("report.csv", "significance.csv", "alpha_curves.png", "lang_heatmap.png"):
        assert (sweep / name).stat().st_size > 0
    assert "**xquad_r**" in md and "**xquad_r_mkqa**" in md
    assert "better" not in md.split("## Answer")[-1].lower()


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


def _study_overrides(data: Path, tmp: Path) -> list[str]:
    return [
        "experiment=hybrid_study",
        *[o for o in _toy_overrides(data, tmp) if not o.startswith("data.split")],
        "data.split.n_folds=3",
        "data.split.n_dev_groups=1",
        "eval.benchmarks.mlqa_r.download=false",
        "trainer.val_check_interval=2",
        "data.split.fold=0,1",
        "sampler.alpha=0",
        "seed=1",
    ]


def test_study_sweep_continues_where_it_stopped(tmp_path, toy_data):
    """Re-running the study's multirun skips finished jobs (done.json) and re-runs only the unfinished
    one (as after a kill or a SLURM time limit); a changed configuration is never taken as finished."""
    import shutil

    shutil.copytree(toy_data / "xquad-r", tmp_path / "data" / "mlqa-r")  # a stand-in zero-shot set
    shutil.copytree(toy_data / "xquad-r", tmp_path / "data" / "xquad-r")
    data = tmp_path / "data"
    sweep = tmp_path / "logs" / "hybrid_study"
    _run(["-m", *_study_overrides(data, tmp_path)], tmp_path)
    jobs = {p.name: p for p in sweep.iterdir() if p.is_dir()}
    assert set(jobs) == {"fold0_alpha0_seed1", "fold1_alpha0_seed1"}
    for job in jobs.values():
        assert {"done.json", "metrics.json", "per_query.npz"} <= {p.name for p in job.iterdir()}
    mtimes = {n: (j / "metrics.json").stat().st_mtime_ns for n, j in jobs.items()}
    (jobs["fold1_alpha0_seed1"] / "done.json").unlink()  # killed after training, before finishing

    from mlir.study.collect import collect  # what results/ holds: the records, never checkpoints

    copied, unfinished = collect(sweep, tmp_path / "results")
    assert [p.name for p in copied] == ["fold0_alpha0_seed1"] and [p.name for p in unfinished] == [
        "fold1_alpha0_seed1"
    ]
    kept = {
        str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*") if p.is_file()
    }
    assert {"multirun.yaml", "fold0_alpha0_seed1/metrics.json", "fold0_alpha0_seed1/per_query.npz"} <= kept
    assert "fold0_alpha0_seed1/.hydra/config.yaml" in kept and not any("ckpt" in k for k in kept)

    res = _run(["-m", *_study_overrides(data, tmp_path)], tmp_path)
    log = res.stdout + res.stderr
    assert "skipping" in log and str(jobs["fold0_alpha0_seed1"]) in log
    assert (jobs["fold0_alpha0_seed1"] / "metrics.json").stat().st_mtime_ns == mtimes["fold0_alpha0_seed1"]
    assert (jobs["fold1_alpha0_seed1"] / "metrics.json").stat().st_mtime_ns != mtimes["fold1_alpha0_seed1"]
    assert (jobs["fold1_alpha0_seed1"] / "done.json").is_file()
    assert "Restoring states from the checkpoint" in log  # it continued from its own last.ckpt

    res = _run(["-m", *_study_overrides(data, tmp_path), "model.optimizer.lr=1e-4"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "configuration changed" in res.stdout + res.stderr
    for j in jobs.values():  # re-run from scratch; the old run's marker and checkpoints kept aside
        assert len(list(j.glob("done.*.json"))) == 1 and len(list(j.glob("checkpoints.*"))) == 1
    for n, j in jobs.items():
        assert (j / "metrics.json").stat().st_mtime_ns != mtimes[n] or n == "fold1_alpha0_seed1"


def test_show_split_prints_what_the_run_saw(tmp_path, toy_data):
    import json

    env = dict(os.environ, MLIR_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    overrides = [o for o in _toy_overrides(toy_data, tmp_path) if o.startswith(("paths.", "data."))]
    records = []
    for fold in range(3):
        res = subprocess.run(
            [sys.executable, "-m", "mlir.show_split", *overrides, f"data.split.fold={fold}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        records.append(json.loads(res.stdout))
    for fold, rec in enumerate(records):
        assert rec["fold"] == fold and set(rec) == {"fold", "train", "dev", "test"}
        parts = [set(rec[p]["groups"]) for p in ("train", "dev", "test")]
        assert sum(map(len, parts)) == 6 and len(set.union(*parts)) == 6
        ids = [set(rec[p]["ids"]) for p in ("train", "dev", "test")]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and all(ids)
    assert sorted(g for r in records for g in r["test"]["groups"]) == sorted(
        g for p in ("train", "dev", "test") for g in records[0][p]["groups"]
    )
    bad = subprocess.run(
        [sys.executable, "-m", "mlir.show_split", *overrides, "data.split.fold=7"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "data.split.fold" in bad.stderr


@pytest.mark.slow
def test_study_sweep_with_untrained_reference_and_its_report(tmp_path, toy_data):
    """A real (tiny-model) study: 3 folds x alpha {0, 0.5, 1} + the untrained jobs, then the report: the
    in-domain benchmark is nested in folds, the zero-shot one crossed, the untrained arm is a row."""
    import csv
    import shutil

    from mlir.report import build_report, main

    shutil.copytree(toy_data / "xquad-r", tmp_path / "data" / "mlqa-r")
    shutil.copytree(toy_data / "xquad-r", tmp_path / "data" / "xquad-r")
    data = tmp_path / "data"
    sweep = tmp_path / "logs" / "hybrid_study"
    study = [
        o
        for o in _study_overrides(data, tmp_path)
        if not o.startswith(("data.split.fold=", "sampler.alpha="))
    ]
    _run(["-m", *study, "data.split.fold=0,1,2", "sampler.alpha=0,0.5,1"], tmp_path)
    untrained = [o if o != "experiment=hybrid_study" else "experiment=hybrid_study_untrained" for o in study]
    _run(["-m", *[o for o in untrained if o != "seed=1"], "data.split.fold=0,1,2"], tmp_path)
    assert sorted(p.name for p in (sweep / "untrained").iterdir() if p.is_dir()) == [
        "fold0",
        "fold1",
        "fold2",
    ]

    rep = build_report(sweep)
    assert rep.by_fold and rep.designs == {"mlqa_r": "crossed", "xquad_r": "nested"}
    assert rep.alphas == [0.0, 0.5, 1.0] and rep.hybrid_alpha == 0.5
    assert all(r["status"] == "ok" and r["n_units"] == 3 for r in rep.significance), rep.significance
    assert main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert "untrained" in md and "## Answer" in md and "minimum detectable effect" in md
    with open(sweep / "significance.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["family"] for r in rows} == {"primary", "secondary", "descriptive"}
    for r in rows:
        if r["family"] != "descriptive":
            assert float(r["p_holm"]) >= float(r["p_value"])
    assert {r["baseline"] for r in rows if r["family"] == "descriptive"} == {"untrained"}
