"""eval.py: Hydra app over conf/eval.yaml (HF model directory or train.py checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _eval_data import make_xquad_dir
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mlir.core.config  # noqa: F401  (resolvers)

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, data_dir: Path | None = None) -> dict:
    env = dict(os.environ, MLIR_CACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0", PYTHONPATH=str(ROOT))
    if data_dir is not None:
        env["MLIR_DATA_DIR"] = str(data_dir)
    return env


def test_eval_py_on_xquad_r_subset(tmp_path, tiny_model_dir, xquad_r_dir):
    """Real XQuAD-R files, 3 languages x 2 articles, tiny model: table on stdout, flat keys in metrics.json."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "eval.py"),
        "model=tiny_random",
        f"model.encoder.name_or_path={tiny_model_dir}",
        "eval.benchmarks.xquad_r.langs=[en,de,zh]",
        "eval.benchmarks.xquad_r.split={groups:[Normans,Warsaw]}",
        f"hydra.run.dir={out}",
    ]
    res = subprocess.run(
        cmd, cwd=tmp_path, env=_env(tmp_path, xquad_r_dir.parent), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for setting in ("mono", "cross", "multi"):
        for lang in ("en", "de", "zh"):
            assert f"xquad_r/{setting}/ndcg@10/{lang}" in metrics
            assert f"xquad_r/{setting}/map/{lang}" in metrics
        assert f"xquad_r/{setting}/recall@1" in metrics
    assert "xquad_r/multi/rank_distance" in metrics and "xquad_r/avg/ndcg@10" in metrics
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("lang "))
    assert "mono ndcg@10" in lines[header] and "multi rank_distance" in lines[header]
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines[header + 2 : header + 7]
        if line and line[0] != "-"
    }
    assert set(rows) == {"en", "de", "zh", "avg"}
    assert float(rows["avg"][0]) == pytest.approx(metrics["xquad_r/mono/ndcg@10"], abs=1e-4)
    details = json.loads((out / "metrics_details.json").read_text())
    # the two articles only: 2 articles of XQuAD-R hold far fewer than its 1190 questions
    assert 0 < details["benchmarks"]["xquad_r"]["task"]["queries"]["en"] < 200


def test_user_error_is_one_line_without_traceback(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "eval.py"),
        f"ckpt_path={tmp_path}/missing.ckpt",
        f"hydra.run.dir={tmp_path}/run",
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path:") and "missing.ckpt" in lines[0]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return make_xquad_dir(tmp_path_factory.mktemp("xq") / "xquad-r", langs=("en", "de"), n_articles=2)


def _bench_overrides(synth_dir: Path, out: Path) -> list[str]:
    return [
        f"eval.benchmarks.xquad_r.path={synth_dir}",
        "eval.benchmarks.xquad_r.download=false",
        f"eval.output_file={out / 'metrics.json'}",
        "eval.details_file=null",
        "eval.device=cpu",
    ]


def test_checkpoint_weights_are_evaluated(tmp_path, tiny_model_dir, synth_dir, capsys):
    """A train.py checkpoint: its run's model config is used and its (changed) weights are the ones scored."""
    from mlir.eval.app import evaluate_from_config
    from mlir.eval.runner import evaluate
    from mlir.models.dual_encoder import DualEncoder
    from mlir.models.module import RetrieverModule

    model_cfg = ["model=tiny_random", f"model.encoder.name_or_path={tiny_model_dir}"]
    run = tmp_path / "train_run"
    (run / ".hydra").mkdir(parents=True)
    train_cfg = _compose(model_cfg + _bench_overrides(synth_dir, tmp_path))
    OmegaConf.save(
        OmegaConf.create({"model": OmegaConf.to_container(train_cfg.model, resolve=True)}),
        run / ".hydra" / "config.yaml",
    )

    enc = DualEncoder(str(tiny_model_dir), query_max_length=32, passage_max_length=64, token_budget=2048)
    module = RetrieverModule(encoder=enc)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn_like(p))
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "step_000010.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 10}, ckpt)

    # eval.yaml's default model (offline e5) is NOT what was trained: the run's config must win
    cfg = _compose([f"ckpt_path={ckpt}", *_bench_overrides(synth_dir, tmp_path)])
    got = evaluate_from_config(cfg)
    # the perturbed weights are the ones scored (the pretrained tiny model would score differently)
    assert got == pytest.approx(evaluate(module.encoder, cfg.eval.benchmarks))
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(got)
    assert "avg" in capsys.readouterr().out

    # a checkpoint that does not fit the configured model is one readable error
    from mlir.core.errors import MlirError

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.something_else.weight": torch.zeros(2)}}, other)
    bad = _compose([f"ckpt_path={other}", *model_cfg, *_bench_overrides(synth_dir, tmp_path)])
    with pytest.raises(MlirError, match="does not fit"):
        evaluate_from_config(bad)


def test_compose_adds_and_configures_benchmarks(synth_dir, tmp_path):
    cfg = _compose(
        [
            "+benchmark@eval.benchmarks.xquad_r_mkqa=xquad_r_mkqa",
            "eval.max_queries_per_lang=3",
            "eval.benchmarks.xquad_r.cross.target=en",
            *_bench_overrides(synth_dir, tmp_path),
        ]
    )
    b = OmegaConf.to_container(cfg.eval.benchmarks, resolve=True)
    assert set(b) == {"xquad_r", "xquad_r_mkqa"}
    assert b["xquad_r"]["max_queries_per_lang"] == 3 and b["xquad_r_mkqa"]["type"] == "xquad_r_mkqa"
    assert b["xquad_r"]["cross"]["target"] == "en"
    # the test variant follows data.split when a data config is present, else XQuAD-R's default
    held = _compose(
        ["benchmark@eval.benchmarks.xquad_r=xquad_r_test", *_bench_overrides(synth_dir, tmp_path)]
    )
    resolved = OmegaConf.to_container(held.eval.benchmarks.xquad_r, resolve=True)
    assert resolved["split"] == {"n_folds": 4, "fold": 0, "n_dev_groups": 4, "seed": 0}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        train = compose(config_name="train", overrides=["data.split.seed=7"])
    resolved = OmegaConf.to_container(train, resolve=False)
    assert resolved["eval"]["benchmarks"]["xquad_r"]["split"].startswith("${oc.select:data.split")
    assert OmegaConf.select(train, "eval.benchmarks.xquad_r.split") == OmegaConf.select(train, "data.split")


def test_checkpoint_of_a_run_is_evaluated_on_that_runs_test_articles(tmp_path, tiny_model_dir, capsys):
    """eval.py ckpt_path=RUN/checkpoints/x.ckpt scores only the articles the run never saw (its data.split's
    test part), says so above the table, and an explicit split still wins."""
    from mlir.data.splits import plan_split
    from mlir.data.xquad_r import read_xquad_r
    from mlir.eval.app import evaluate_from_config
    from mlir.eval.runner import evaluate
    from mlir.models.dual_encoder import DualEncoder
    from mlir.models.module import RetrieverModule

    xq = make_xquad_dir(tmp_path / "data" / "xquad-r", langs=("en", "de"), n_articles=6)
    split = {"n_folds": 3, "fold": 1, "n_dev_groups": 1, "seed": 0}
    model_cfg = ["model=tiny_random", f"model.encoder.name_or_path={tiny_model_dir}"]
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    train_cfg = _compose(model_cfg + _bench_overrides(xq, tmp_path))
    OmegaConf.save(
        OmegaConf.create(
            {
                "model": OmegaConf.to_container(train_cfg.model, resolve=True),
                "data": {"corpus": {"_target_": "mlir.data.sources.xquad_r_corpus"}, "split": split},
            }
        ),
        run / ".hydra" / "config.yaml",
    )
    enc = DualEncoder(str(tiny_model_dir), query_max_length=32, passage_max_length=64, token_budget=2048)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "step_000002.ckpt"
    torch.save({"state_dict": RetrieverModule(encoder=enc).state_dict(), "global_step": 2}, ckpt)

    cfg = _compose([f"ckpt_path={ckpt}", *_bench_overrides(xq, tmp_path)])
    got = evaluate_from_config(cfg)
    assert (
        "Evaluated on xquad_r: the test articles of the checkpoint's run (fold 1)" in capsys.readouterr().out
    )
    test_groups = plan_split(read_xquad_r(xq).groups, **split).test
    bench = OmegaConf.to_container(cfg.eval.benchmarks.xquad_r, resolve=True)
    only_test = {"xquad_r": {**bench, "split": {"groups": test_groups}}}
    assert got == pytest.approx(evaluate(enc, only_test))  # exactly the test articles, no training article
    assert got != pytest.approx(evaluate(enc, {"xquad_r": {**bench, "split": None}}))
    # an explicit split wins
    explicit = _compose(
        [
            f"ckpt_path={ckpt}",
            *_bench_overrides(xq, tmp_path),
            "eval.benchmarks.xquad_r.split={groups:[Article_0]}",
        ]
    )
    evaluate_from_config(explicit)
    assert "the test articles of the checkpoint's run" not in capsys.readouterr().out
    assert OmegaConf.to_container(explicit.eval.benchmarks.xquad_r.split) == {"groups": ["Article_0"]}
