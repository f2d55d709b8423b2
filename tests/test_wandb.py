"""W&B offline: a real train() run leaves a run file with config, curves, heatmap; sweep naming/grouping."""

from __future__ import annotations

from pathlib import Path

import pytest
from _eval_data import make_xquad_dir
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.core.logging import metric_history, read_wandb_run, redact, sampler_kind, wandb_run_identity
from mlir.utils.hydra_ddp import finish_wandb

ROOT = Path(__file__).resolve().parents[1]


def test_identity_groups_by_sweep_and_tags_the_sampler():
    job = {"multirun": True, "sweep_dir": "/x/logs/xquad_proxy/multiruns/2026-01-02_03-04-05", "job_num": 7}
    ident = wandb_run_identity("xquad_proxy", None, 0.25, "constant", 2, ["xquad_proxy"], job=job)
    assert ident["group"] == "xquad_proxy-2026-01-02_03-04-05"
    assert ident["name"] == "alpha=0.25 seed=2 job=7"
    assert ident["tags"] == ["xquad_proxy", "sampler:hybrid", "alpha=0.25", "sweep"]
    assert wandb_run_identity("t", "my_sweep", 1.0, job=job)["group"] == "my_sweep"
    single = wandb_run_identity("train", None, 0.0, job={"multirun": False})
    assert single["group"] == "train" and "sampler:xy" in single["tags"] and "sweep" not in single["tags"]
    assert sampler_kind(1.0) == "xx_mono" and sampler_kind(0.5, "linear") == "hybrid_linear"


def test_redact_hides_credentials_but_not_token_budgets():
    cfg = {
        "wandb": {"api_key": "abc", "entity": "me"},
        "hf_token": "t",
        "model": {"token_budget": 4096, "tokenizer": "x"},
    }
    out = redact(cfg)
    assert out["wandb"] == {"api_key": "***", "entity": "me"} and out["hf_token"] == "***"
    assert out["model"] == {"token_budget": 4096, "tokenizer": "x"}


@pytest.mark.slow
def test_offline_run_has_config_curves_heatmap_and_sweep_group(tmp_path, tiny_model_dir, monkeypatch):
    """train() as job 3 of a multirun with logger=wandb: read the offline run file back."""
    from mlir.training.pipeline import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "")  # never online from a test
    make_xquad_dir(tmp_path / "data" / "xquad-r", langs=("en", "de", "zh"), n_articles=6, questions=3)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "debug=fast",
                "logger=wandb",
                "callbacks=[default,retrieval_eval]",
                "callbacks.retrieval_eval.every_n_steps=2",
                f"paths.data_dir={tmp_path / 'data'}",
                "data.corpus.download=false",
                "data.train_langs=[en,de]",
                "data.eval_langs=[en,de,zh]",
                "data.split.n_folds=3",
                "data.split.n_dev_groups=1",
                "data.batch_size=4",
                "eval.benchmarks.xquad_r.download=false",
                f"model.encoder.name_or_path={tiny_model_dir}",
                "trainer.enable_progress_bar=false",
                "sampler.alpha=0.5",
                "seed=7",
                "+secret_token=hunter2",
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.eval.output_file = str(tmp_path / "run" / "metrics.json")
        cfg.eval.per_query_file = str(tmp_path / "run" / "per_query.npz")
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(tmp_path / "logs" / "multiruns" / "2026-01-02_03-04-05")
        cfg.hydra.job.num = 3
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()  # what the JobIsolation Hydra callback does at the end of every job
    assert "eval/xquad_r/multi/rank_distance" in metrics

    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted(p.name for p in (tmp_path / "run").iterdir())
    run = read_wandb_run(runs[0], wait_s=120)
    assert run["finished"]
    assert run["group"] == "train-2026-01-02_03-04-05"
    assert run["name"] == "alpha=0.5 seed=7 job=3"
    assert {"sampler:hybrid", "alpha=0.5", "sweep"} <= set(run["tags"])
    # the full resolved config, credentials redacted
    assert run["config"]["sampler"]["alpha"] == 0.5 and run["config"]["seed"] == 7
    assert run["config"]["secret_token"] == "***"
    assert run["config"]["model"]["encoder"]["token_budget"] == 2048
    # curves: loss, in-batch accuracy, periodic eval metrics, language bias over steps
    assert len(metric_history(run, "train/loss_step")) >= 2
    assert len(metric_history(run, "train/accuracy_step")) >= 2
    bias = metric_history(run, "dev/xquad_r_dev/multi/rank_distance")  # curves: the dev articles
    assert len({step for step, _ in bias}) >= 2, bias  # periodic (steps 2, 4)
    assert all(v >= 0 for _, v in bias)
    assert metric_history(run, "eval/xquad_r/multi/rank_distance")  # the final test evaluation
    assert metric_history(run, "eval/xquad_r/mono/ndcg@10/zh")
    # the callback's per-language table and language x setting heatmap (it sees a real WandbLogger)
    media = run["media"]
    assert any(m.startswith("media/images/dev/xquad_r_dev/heatmap") and m.endswith(".png") for m in media)
    assert any(m.startswith("media/table/dev/xquad_r_dev/per_language") for m in media)
    assert run["summary"]["eval/xquad_r/avg/ndcg@10"] == pytest.approx(metrics["eval/xquad_r/avg/ndcg@10"])
