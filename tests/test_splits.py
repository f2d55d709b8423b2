"""Group splits: deterministic, order-independent, leak-free; language filters on either side."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mlir.data.corpus import ParallelCorpus
from mlir.data.splits import choose_eval_groups, filter_langs, split_by_group, split_by_groups
from mlir.errors import ConfigError

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


def _keys(corpus):
    t = corpus.table.with_format("arrow")[:]
    return set(zip(t.column("id").to_pylist(), t.column("lang").to_pylist(), t.column("group").to_pylist()))


def test_same_seed_same_split_regardless_of_row_order():
    a_train, a_eval = split_by_group(ParallelCorpus.from_rows(_rows()), n_eval_groups=3, seed=7)
    b_train, b_eval = split_by_group(ParallelCorpus.from_rows(_rows(seed=1)), n_eval_groups=3, seed=7)
    assert a_eval.meta["eval_groups"] == b_eval.meta["eval_groups"]
    assert _keys(a_eval) == _keys(b_eval) and _keys(a_train) == _keys(b_train)


def test_seed_changes_the_held_out_groups():
    groups = [f"article{g}" for g in range(12)]
    picks = {tuple(choose_eval_groups(groups, n_eval_groups=3, seed=s)) for s in range(8)}
    assert len(picks) > 1


def test_groups_never_leak_and_everything_is_used():
    corpus = ParallelCorpus.from_rows(_rows())
    train, eval_ = split_by_group(corpus, eval_fraction=0.25, seed=0)
    assert len(eval_.groups) == 3 and len(train.groups) == 9
    assert not set(train.groups) & set(eval_.groups)
    assert sorted(train.groups + eval_.groups) == sorted(corpus.groups)
    assert train.meta["eval_groups"] == eval_.meta["eval_groups"] == sorted(eval_.groups)
    assert train.meta["train_groups"] == sorted(train.groups)
    tk, ek = _keys(train), _keys(eval_)
    assert not {i for i, _, _ in tk} & {i for i, _, _ in ek}  # no parallel id on both sides
    assert tk | ek == _keys(corpus) and len(train) + len(eval_) == len(corpus)
    # the index arrays of each part describe that part (not the parent)
    assert train.num_ids == len({i for i, _, _ in tk})
    ids = train.texts("id", np.arange(len(train)))
    assert len(set(zip(ids, train.pid.tolist()))) == train.num_ids


def test_language_filters_do_not_move_the_held_out_groups():
    corpus = ParallelCorpus.from_rows(_rows())
    train, eval_ = split_by_group(corpus, n_eval_groups=4, seed=3, train_langs=["ar", "en"])
    assert train.langs == ["ar", "en"] and eval_.langs == sorted(LANGS)
    _, eval_all = split_by_group(corpus, n_eval_groups=4, seed=3)
    assert eval_.meta["eval_groups"] == eval_all.meta["eval_groups"]
    train2, eval2 = split_by_group(corpus, n_eval_groups=4, seed=3, eval_langs=["zh"])
    assert eval2.langs == ["zh"] and train2.langs == sorted(LANGS)
    assert filter_langs(corpus, ["de"]).langs == ["de"]
    assert len(filter_langs(corpus, ["de", "zh"])) == len(corpus) // 2


def test_explicit_group_list():
    corpus = ParallelCorpus.from_rows(_rows())
    train, eval_ = split_by_groups(corpus, ["article1", "article5"])
    assert eval_.groups == ["article1", "article5"] and "article1" not in train.groups


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"eval_fraction": 0.2, "n_eval_groups": 2},
        {"eval_fraction": 1.0},
        {"eval_fraction": 0.0},
        {"n_eval_groups": 12},
        {"n_eval_groups": 0},
        {"n_eval_groups": 2, "train_langs": ["xx"]},
    ],
)
def test_bad_split_requests_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        split_by_group(ParallelCorpus.from_rows(_rows()), **kwargs)


def test_single_group_cannot_be_split():
    rows = [dict(r, group="one") for r in _rows(n_groups=2)]
    with pytest.raises(ConfigError):
        split_by_group(ParallelCorpus.from_rows(rows), n_eval_groups=1)
    with pytest.raises(ConfigError):
        split_by_groups(ParallelCorpus.from_rows(_rows()), ["nope"])


@pytest.mark.data
def test_xquad_r_36_12_split_with_nine_training_languages(xquad_r_dir):
    from mlir.data.xquad_r import read_xquad_r_candidates

    xq = read_xquad_r_candidates(xquad_r_dir)
    corpus = xq.to_corpus()
    train_langs = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]
    train, eval_ = split_by_group(corpus, n_eval_groups=12, seed=0, train_langs=train_langs)
    held = eval_.meta["eval_groups"]
    assert len(held) == 12 and len(train.groups) == 36 and not set(held) & set(train.groups)
    assert train.langs == train_langs and len(eval_.langs) == 11
    n_eval_q = sum(g in held for g in xq["en"].groups)
    assert len(eval_) == 11 * n_eval_q and len(train) == 9 * (1190 - n_eval_q)
    # evaluation candidates restricted to the held-out articles
    cands = xq.restrict_groups(held)
    for lang in cands.langs:
        assert set(cands[lang].candidate_groups) == set(held)
        assert len(cands[lang]) == n_eval_q
