"""The paper's rule on its own (mlir.sampling.rule): batch kinds follow alpha, X-Y pairs never repeat a
language, and both are pure functions of (seed, epoch, step)."""

from __future__ import annotations

import numpy as np
import pytest

from mlir.sampling.rule import epoch_rng, language_probs, pair_languages, plan_batches
from mlir.sampling.schedule import AlphaSchedule

UNIFORM = np.full(4, 0.25)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_plan_is_mono_with_probability_alpha(alpha):
    is_mono, lang = plan_batches(5, 0, 4000, AlphaSchedule("constant", alpha, alpha), UNIFORM)
    assert abs(is_mono.mean() - alpha) < 0.03
    if alpha > 0:  # mono languages are uniform
        assert (np.abs(np.bincount(lang, minlength=4) / 4000 - 0.25) < 0.03).all()


def test_plan_is_pure_in_seed_and_epoch():
    sched = AlphaSchedule("constant", 0.5, 0.5)
    a, b = plan_batches(1, 2, 50, sched, UNIFORM), plan_batches(1, 2, 50, sched, UNIFORM)
    assert all((x == y).all() for x, y in zip(a, b))
    assert (plan_batches(1, 3, 50, sched, UNIFORM)[0] != a[0]).any()


def test_linear_schedule_is_indexed_by_the_global_step():
    sched = AlphaSchedule("linear", 1.0, 0.0, total_steps=2)  # alpha 1 at global step 0, then 0
    assert plan_batches(0, 0, 10, sched, UNIFORM)[0].tolist() == [True] + [False] * 9
    assert not plan_batches(0, 1, 10, sched, UNIFORM)[0].any()  # epoch 1 starts at global step 10


def test_pairs_use_two_different_languages_of_the_id():
    rng = np.random.default_rng(0)
    has = rng.random((500, 4)) < 0.6
    has[:, :2] = True  # every id in >= 2 languages
    x, y = pair_languages(epoch_rng(0, 0, 1), has, UNIFORM)
    rows = np.arange(len(has))
    assert (x != y).all() and has[rows, x].all() and has[rows, y].all()


def test_size_weights_and_their_pairs():
    p = language_probs(np.array([900, 100, 0]), "size", 1.0)
    assert p == pytest.approx([0.9, 0.1, 0.0])
    assert language_probs(np.array([900, 100, 0]), "uniform", 1.0) == pytest.approx([0.5, 0.5, 0.0])
    has = np.ones((20000, 3), dtype=bool)
    has[:, 2] = False  # as in the sampler: a language of weight 0 has no usable id
    x, _ = pair_languages(epoch_rng(0, 0, 1), has, p)
    assert not (x == 2).any() and abs((x == 0).mean() - 0.9) < 0.01  # the query language follows p
