"""Train / dev / test splits: leak-free by article, deterministic, folds that partition the groups, and
validation batches that do not depend on the arm (alpha) being trained."""

from __future__ import annotations

import random
from functools import partial

import numpy as np
import pytest

from mlir.core.errors import ConfigError
from mlir.data.corpus import ParallelCorpus
from mlir.data.splits import PARTS, filter_langs, group_rows, plan_from_config, plan_split, split_corpus

LANGS = ("ar", "de", "en", "zh")


def _rows(n_groups=12, per_group=3, seed=None):
    rows = [
        {
            "id": f"g{g}-q{k}",
            "lang": lang,
            "query": f"{lang} q {g} {k}",
            "positive": f"{lang} passage {g} {k}",
            "group": f"article{g}",
        }
        for g in range(n_groups)
        for k in range(per_group)
        for lang in LANGS
    ]
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows


def _part_content(corpus: ParallelCorpus, groups, langs=None) -> tuple[set, set]:
    rows = group_rows(corpus, groups, langs)
    return set(corpus.texts("id", rows)), set(corpus.texts("positive", rows))


def test_folds_partition_the_groups_and_parts_are_disjoint():
    corpus = ParallelCorpus.from_rows(_rows())
    tests = []
    for fold in range(4):
        plan = plan_split(corpus.groups, n_folds=4, fold=fold, n_dev_groups=2, seed=5)
        assert (len(plan.train), len(plan.dev), len(plan.test)) == (7, 2, 3)
        assert sorted(plan.train + plan.dev + plan.test) == sorted(corpus.groups)
        content = {p: _part_content(corpus, plan.part(p)) for p in PARTS}
        for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
            assert not set(plan.part(a)) & set(plan.part(b))
            assert not content[a][0] & content[b][0]  # question ids
            assert not content[a][1] & content[b][1]  # passage texts
        tests += plan.test
    assert sorted(tests) == sorted(corpus.groups)  # every group is test exactly once


def test_same_seed_same_split_regardless_of_row_order_and_seed_matters():
    a = ParallelCorpus.from_rows(_rows())
    b = ParallelCorpus.from_rows(_rows(seed=1))
    kw = dict(n_folds=3, fold=1, n_dev_groups=2, seed=7)
    assert plan_split(a.groups, **kw) == plan_split(b.groups, **kw)
    assert plan_split(list(reversed(a.groups)), **kw) == plan_split(a.groups, **kw)
    tests = {tuple(plan_split(a.groups, **{**kw, "seed": s}).test) for s in range(8)}
    assert len(tests) > 1


def test_split_corpus_builds_train_and_dev_in_the_training_languages():
    corpus = ParallelCorpus.from_rows(_rows())
    plan = plan_split(corpus.groups, n_test_groups=3, n_dev_groups=2, seed=0)
    train, dev = split_corpus(corpus, plan, ["ar", "en"])
    assert train.langs == dev.langs == ["ar", "en"]
    assert sorted(train.groups) == plan.train and sorted(dev.groups) == plan.dev
    assert train.meta["test_groups"] == plan.test and train.meta["split"] == "train"
    assert len(train) == 2 * 3 * len(plan.train)
    # the index arrays of each part describe that part (not the parent)
    ids = train.texts("id", np.arange(len(train)))
    assert len(set(zip(ids, train.pid.tolist()))) == train.num_ids == 3 * len(plan.train)
    # without dev groups there is no dev corpus; language filters never move groups
    plan0 = plan_split(corpus.groups, n_test_groups=3, seed=0)
    assert plan0.test == plan.test and split_corpus(corpus, plan0)[1] is None
    assert filter_langs(corpus, ["de"]).langs == ["de"]


def test_fractions_and_explicit_counts():
    groups = [f"g{i}" for i in range(100)]
    plan = plan_split(groups, test_fraction=0.1, dev_fraction=0.05, seed=0)
    assert (len(plan.test), len(plan.dev), len(plan.train)) == (10, 4, 86)  # dev: 5 % of the 90 left
    assert plan.fold is None


@pytest.mark.parametrize(
    "split, key",
    [
        ({}, "data.split"),
        ({"n_eval_groups": 2}, "data.split.n_eval_groups"),
        ({"eval_fraction": 0.1}, "data.split.eval_fraction"),
        ({"n_test_groups": 2, "test_fraction": 0.2}, "data.split.n_test_groups"),
        ({"test_fraction": 1.0}, "data.split.test_fraction"),
        ({"n_test_groups": 12}, "data.split.n_test_groups"),
        ({"n_folds": 1}, "data.split.n_folds"),
        ({"n_folds": 4, "fold": 4}, "data.split.fold"),
        ({"n_folds": 4, "n_test_groups": 3}, "data.split"),
        ({"n_folds": 4, "n_dev_groups": 9}, "data.split.n_dev_groups"),
        ({"n_folds": 4, "colour": 1}, "data.split"),
    ],
)
def test_bad_split_configs_name_their_key(split, key):
    with pytest.raises(ConfigError) as e:
        plan_from_config([f"a{i}" for i in range(12)], split)
    assert e.value.where == key


def test_single_group_cannot_be_split():
    with pytest.raises(ConfigError):
        plan_split(["one"], n_test_groups=1)


# ------------------------------------------------------------------- validation batches are arm-free


def _datamodule(alpha: float, seed: int, schedule: str = "constant"):
    from mlir.data.datamodule import RetrievalDataModule
    from mlir.sampling.hybrid import HybridBatchSampler

    sampler = partial(HybridBatchSampler, alpha=alpha, schedule=schedule)
    if schedule == "linear":
        sampler = partial(
            HybridBatchSampler, schedule="linear", alpha_start=1.0, alpha_end=0.0, total_steps=10
        )
    dm = RetrievalDataModule(
        corpus=lambda: ParallelCorpus.from_rows(_rows(n_groups=20, per_group=4)),
        sampler=sampler,
        split={"n_folds": 4, "fold": 0, "n_dev_groups": 4, "seed": 0},
        batch_size=4,
        val_batches=6,
        seed=seed,
    )
    dm.prepare_corpora()
    return dm


def test_validation_batches_are_the_same_for_every_alpha_seed_and_schedule():
    ref = list(_datamodule(0.5, 1).val_sampler())
    assert len(ref) == 6
    for alpha, seed, schedule in (
        (0.0, 1, "constant"),
        (1.0, 1, "constant"),
        (0.5, 9, "constant"),
        (0.5, 1, "linear"),
    ):
        assert list(_datamodule(alpha, seed, schedule).val_sampler()) == ref
    # while the training batches do depend on alpha
    assert list(_datamodule(0.0, 1).make_sampler(_datamodule(0.0, 1).train_corpus, 1)) != list(
        _datamodule(1.0, 1).make_sampler(_datamodule(1.0, 1).train_corpus, 1)
    )


def test_validation_batches_come_from_dev_and_mix_both_kinds():
    dm = _datamodule(0.5, 1)
    batches = list(dm.val_sampler())
    val = dm.val_corpus
    dev_groups = set(dm.plan.dev)
    kinds = []
    for batch in batches:
        q, p = np.asarray(batch).T
        assert {val.groups[g] for g in val.group_idx[q]} <= dev_groups
        same = val.lang_idx[q] == val.lang_idx[p]
        assert same.all() or not same.any()
        kinds.append("mono" if same.all() else "cross")
    assert kinds.count("mono") == kinds.count("cross") == 3
    assert list(dm.val_sampler()) == batches  # the same every validation


# ------------------------------------------------------------------------------ the real XQuAD-R


@pytest.mark.data
def test_xquad_r_folds_are_leak_free(xquad_r_dir):
    """For every fold: train / dev / test share no article, question id or passage text, and the four
    test folds partition the 48 articles (12 each)."""
    from mlir.data.xquad_r import read_xquad_r

    corpus = read_xquad_r(xquad_r_dir)
    assert len(corpus.groups) == 48
    train_langs = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
    tests = []
    for fold in range(4):
        plan = plan_split(corpus.groups, n_folds=4, fold=fold, n_dev_groups=4, seed=0)
        assert (len(plan.train), len(plan.dev), len(plan.test)) == (32, 4, 12)
        content = {
            p: _part_content(corpus, plan.part(p), None if p == "test" else train_langs) for p in PARTS
        }
        for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
            assert not content[a][0] & content[b][0], (fold, a, b)
            assert not content[a][1] & content[b][1], (fold, a, b)
        tests += plan.test
    assert sorted(tests) == sorted(corpus.groups)
