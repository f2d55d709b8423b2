"""mlir.study.power: the variance split into folds and seeds, and the MDE projected to more seeds.

The projection is checked against what it predicts: simulated studies with known variance
components, run with the projected number of seeds and a true difference equal to the projected MDE,
must be detected by the report's own tests (stats.unit_mean_test, stats.crossed_test) at the Holm
level about 80 % of the time (nested: exactly in expectation; crossed: at least, its df is kept).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from _study_data import make_sweep

from mlir.report import build_report, main
from mlir.study import stats
from mlir.study.power import SeedSplit, pooled_within_variance, projected_mdes, seed_split

U, S = 4, 3  # folds, seeds per fold and arm (the study's design)
TAU2, SIGMA2 = 0.0004, 0.0009  # folds' own variance of the difference; one run's seed variance per arm
LEVEL = 0.05 / 16  # Holm's strictest level over the 16 primary comparisons
N_SIM = 4000


def _fold_differences(rng, n_sim: int, seeds: float, delta: float) -> np.ndarray:
    """[n_sim, U] fold mean differences of a nested study with ``seeds`` seeds per fold and arm."""
    noise = 0.0 if math.isinf(seeds) else 2 * SIGMA2 / seeds
    return delta + rng.normal(0, math.sqrt(TAU2), (n_sim, U)) + rng.normal(0, math.sqrt(noise), (n_sim, U))


def _true_split(question_part: float = 0.0) -> SeedSplit:
    return SeedSplit(U, S, TAU2 + 2 * SIGMA2 / S, 2 * SIGMA2, 2 * U * (S - 1), question_part)


def test_pooled_within_variance_ignores_group_means():
    v, df = pooled_within_variance([[1.0, 3.0], [10.0, 12.0, 14.0], [7.0]])
    assert df == 1 + 2 and v == pytest.approx((2 + 8) / 3)
    assert math.isnan(pooled_within_variance([[1.0], [2.0]])[0])


def test_the_split_recovers_fold_and_seed_variance_on_average():
    rng = np.random.default_rng(0)
    seed_vars, fold_moments = [], []
    for _ in range(N_SIM // 2):
        fold = rng.normal(0, math.sqrt(TAU2), U)
        hyb = {u: list(fold[u] + rng.normal(0, math.sqrt(SIGMA2), S)) for u in range(U)}
        base = {u: list(rng.normal(0, math.sqrt(SIGMA2), S)) for u in range(U)}
        d = [np.mean(hyb[u]) - np.mean(base[u]) for u in range(U)]
        split = seed_split(hyb, base, d)
        seed_vars.append(split.seed_var)
        fold_moments.append(split.unit_var - split.seed_var / split.seeds)  # before truncation
    assert np.mean(seed_vars) == pytest.approx(2 * SIGMA2, rel=0.03)
    se = np.std(fold_moments) / math.sqrt(len(fold_moments))
    assert abs(np.mean(fold_moments) - TAU2) < 3 * se


def test_every_fold_needs_two_seeds_to_split():
    assert seed_split({0: [0.1], 1: [0.2]}, {0: [0.0], 1: [0.1]}, [0.1, 0.1]) is None
    assert seed_split({0: [0.1, 0.2], 1: [0.2]}, {0: [0.0, 0.1], 1: [0.1, 0.0]}, [0.1, 0.15]) is None
    split = seed_split({0: [0.1, 0.2], 1: [0.2, 0.4]}, {0: [0.0, 0.1], 1: [0.1, 0.0]}, [0.1, 0.25])
    assert split.seeds == 2 and split.seed_df == 4 and split.seed_var == pytest.approx(0.025 / 2 + 0.01 / 2)


@pytest.mark.parametrize("seeds", [S, 10, math.inf])
def test_nested_projection_has_80_percent_power(seeds):
    delta = projected_mdes(_true_split(), U - 1, LEVEL, [seeds])[0]
    assert delta > 0
    rng = np.random.default_rng(1)
    p = stats.unit_mean_test(_fold_differences(rng, N_SIM, seeds, delta)).p
    power = float(np.mean(p < LEVEL))
    assert power == pytest.approx(0.80, abs=3 * math.sqrt(0.16 / N_SIM))


def test_more_seeds_never_raise_the_mde_and_stop_at_the_folds_floor():
    split = _true_split()
    mdes = projected_mdes(split, U - 1, LEVEL, [1, S, 10, 100, math.inf])
    assert mdes == sorted(mdes, reverse=True)
    assert mdes[-1] == pytest.approx(stats.mde(math.sqrt(TAU2 / U), U - 1, LEVEL))
    no_folds = SeedSplit(U, S, 2 * SIGMA2 / S, 2 * SIGMA2, 16)
    assert projected_mdes(no_folds, U - 1, LEVEL, [math.inf]) == [0.0]


def test_crossed_projection_is_conservative():
    """Every fold answers the same Q questions: d_uq = delta + a_u + b_q + e_uq. The projection keeps the
    question part and the df of the study as run (3 seeds), so with 10 seeds it detects its MDE with
    at least 80 % power."""
    q, s2_b, s2_e = 40, 0.0002 * 40, 0.004
    split = _true_split(question_part=s2_b / q)
    run_var = TAU2 + 2 * SIGMA2 / S  # what MS_u / Q estimates, besides e
    as_run = stats.CrossedTest(
        np.float64(0), np.float64(q * run_var + s2_e), np.float64(U * s2_b + s2_e), np.float64(s2_e), U, q
    )
    delta = projected_mdes(split, float(as_run.df_at(LEVEL)), LEVEL, [10])[0]
    rng = np.random.default_rng(2)
    n = 2000
    a = rng.normal(0, math.sqrt(TAU2 + 2 * SIGMA2 / 10), (n, U, 1))
    b = rng.normal(0, math.sqrt(s2_b), (n, 1, q))
    d = delta + a + b + rng.normal(0, math.sqrt(s2_e), (n, U, q))
    power = float(np.mean(stats.crossed_test(d).p < LEVEL))
    assert 0.80 - 3 * math.sqrt(0.16 / n) <= power <= 0.95


def test_the_report_projects_every_primary_comparison(tmp_path):
    sweep = make_sweep(tmp_path / "s")
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    rows = [
        r for r in csv.DictReader(open(tmp_path / "out" / "significance.csv")) if r["family"] == "primary"
    ]
    assert len(rows) == 16
    for r in rows:
        as_run, ten, inf = (float(r[c]) for c in ("mde_projected_as_run", "mde_seeds_10", "mde_seeds_inf"))
        assert float(r["seeds_per_fold"]) == 3 and inf <= ten <= as_run
        if float(r["seed_share"]) < 1:  # the split is not truncated: it reproduces the measured MDE
            assert as_run == pytest.approx(float(r["mde"]), rel=1e-9)
    assert (
        "## What more seeds would buy (projection, not a test)"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_a_one_seed_study_has_no_projection(tmp_path):
    rep = build_report(make_sweep(tmp_path / "s", seeds=(1,), untrained=False))
    assert all("mde_seeds_inf" not in r for r in rep.significance)
