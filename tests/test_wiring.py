"""The training sampler is wired in one place: the DataModule builds it once (``check_data``, the batch
preview and ``train_dataloader`` share that object), and a configured ``sampler.total_steps`` wins over
the trainer's limits, which give the linear schedule its length only when it is null."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from mlir.data.corpus import ParallelCorpus
from mlir.data.datamodule import RetrievalDataModule
from mlir.sampling import HybridBatchSampler

REPO = Path(__file__).resolve().parents[1]
LANGS = ("de", "en", "fr")
LINEAR = dict(schedule="linear", alpha_start=1.0, alpha_end=0.0)


def _corpus() -> ParallelCorpus:
    rows = [
        {
            "id": f"q{i}",
            "lang": lang,
            "query": f"q{i} {lang}",
            "positive": f"p{i} {lang}",
            "group": f"g{i % 20}",
        }
        for i in range(40)
        for lang in LANGS
    ]
    return ParallelCorpus.from_rows(rows)


class _Encoder:
    """Tokenises a text to one id per character (enough for the DataModule's token columns)."""

    def tokenize(self, texts, side):
        return [[ord(c) for c in t] for t in texts]


class _CountingFactory:
    """A sampler factory that records every sampler it builds for the training corpus."""

    def __init__(self, **config):
        self.factory = partial(HybridBatchSampler, **config)
        self.built: list[HybridBatchSampler] = []

    def __call__(self, corpus, **kw):
        s = self.factory(corpus, **kw)
        self.built.append(s)
        return s


def _datamodule(factory, **kw) -> RetrievalDataModule:
    return RetrievalDataModule(
        corpus=_corpus, sampler=factory, encoder=_Encoder(), batch_size=4, seed=3, **kw
    )


def test_check_data_preview_and_loader_share_one_sampler():
    from mlir.training.pipeline import check_data

    factory = _CountingFactory(alpha=0.5)
    dm = _datamodule(factory)
    check_data(dm, OmegaConf.create({"trainer": {"max_steps": 7, "max_epochs": None}}))
    assert len(factory.built) == 1
    built = factory.built[0]
    assert dm.train_sampler() is built  # the batch preview's call
    dm.setup("fit")
    assert dm.train_dataloader().batch_sampler is built
    assert len(factory.built) == 1  # the corpus was indexed once


def test_loader_sets_the_ddp_layout_of_a_sampler_built_before_the_trainer():
    dm = _datamodule(partial(HybridBatchSampler, alpha=0.5))
    s = dm.train_sampler({"max_steps": 5})  # as check_data: no trainer yet, so world size 1
    assert (s.world_size, s.rank) == (1, 0)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, max_steps=5, max_epochs=None)
    loader = dm.train_dataloader()
    assert (s.world_size, s.rank) == (2, 1)
    assert next(iter(loader.batch_sampler)) == s.global_batch(0, 0).items(1, 2)  # rank 1: the second half
    assert len(next(iter(loader))["q_ids"]) == 2


@pytest.mark.parametrize(
    "configured, limits, expected",
    [
        ({"total_steps": 123}, {"max_steps": 10, "max_epochs": 2}, 123),  # configured wins
        ({"max_epochs": 3}, {"max_steps": 10}, "3 epochs"),  # sampler.max_epochs is configured too
        ({}, {"max_steps": 10, "max_epochs": 2}, 10),  # trainer.max_steps
        ({}, {"max_steps": -1, "max_epochs": 2}, "2 epochs"),  # trainer.max_epochs x steps_per_epoch
    ],
)
def test_linear_schedule_length(configured, limits, expected):
    dm = _datamodule(partial(HybridBatchSampler, **LINEAR, **configured))
    s = dm.train_sampler(OmegaConf.create(limits))
    if isinstance(expected, str):
        expected = int(expected.split()[0]) * s.steps_per_epoch
    assert s.schedule.total_steps == expected


def test_linear_schedule_without_any_length_is_a_config_error():
    from mlir.core.errors import ConfigError

    dm = _datamodule(partial(HybridBatchSampler, **LINEAR))
    with pytest.raises(ConfigError) as e:
        dm.train_sampler({"max_steps": -1, "max_epochs": None})
    assert e.value.where == "sampler.total_steps"


def test_total_steps_from_the_sampler_config_file_takes_effect(tmp_path):
    """conf/sampler/hybrid.yaml's total_steps used to be overridden by the DataModule's call."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    shutil.copytree(REPO / "conf" / "sampler", tmp_path / "sampler")
    (tmp_path / "top.yaml").write_text("defaults:\n  - sampler: hybrid\n  - _self_\n")
    overrides = [
        "sampler.schedule=linear",
        "sampler.alpha_start=1",
        "sampler.alpha_end=0",
        "sampler.total_steps=77",
    ]
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose(config_name="top", overrides=overrides)
    dm = _datamodule(instantiate(cfg.sampler))
    assert dm.train_sampler({"max_steps": 10, "max_epochs": 2}).schedule.total_steps == 77


def test_validation_batches_do_not_touch_the_training_sampler():
    factory = _CountingFactory(alpha=0.5)
    dm = _datamodule(factory, split={"n_folds": 4, "fold": 0, "n_dev_groups": 4, "seed": 0}, val_batches=2)
    train = dm.train_sampler()
    dm.val_sampler()
    assert dm.train_sampler() is train and all(s.schedule.kind == "constant" for s in factory.built[1:])
