"""mlir.study.stats alone: hand-computed examples, and calibration and power on simulated sweeps.

The simulated sweeps are what the study produces, reduced to per-question scores (a question's
translations already averaged): two arms (hybrid, baseline), F folds x S seeds per arm, and

* question difficulty ~ U(0.2, 0.9), shared by both arms;
* a per-run shift of all of a run's scores, SD ``SIGMA_RUN`` = 0.01, independent per run and arm;
* a question-level heterogeneity of the hybrid-baseline difference, SD ``TAU`` = 0.05, mean zero;
* per-(run, question) noise, SD ``SIGMA_Q`` = 0.25 (one question's nDCG/mAP flips between runs);
* scores clipped to [0, 1] like nDCG (calibration) or not (power: the effect must be exact).

Under "no effect" the two arms are exchangeable (flipping the sign of the symmetric heterogeneity
swaps them), so every test must reject at its nominal rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlir.study.stats import (
    CROSSED,
    NESTED,
    NOT_TESTABLE,
    PARTIAL,
    CrossedTest,
    comparison_mde,
    crossed_test,
    detect_design,
    holm,
    mde,
    paired_comparison,
    t_interval,
    unit_mean_test,
)

SIGMA_RUN, TAU, SIGMA_Q = 0.01, 0.05, 0.25
N_SIMS = 2000
LEVEL = 0.05
HOLM_16 = 0.05 / 16  # Holm's strictest step for the study's 16 primary comparisons
# 3 binomial SDs around the nominal rate at N_SIMS simulations: 0.05 +/- 0.0146, 0.80 +/- 0.0268
BOUND_05 = 3 * math.sqrt(0.05 * 0.95 / N_SIMS)
BOUND_80 = 3 * math.sqrt(0.80 * 0.20 / N_SIMS)


# ------------------------------------------------------------------------------- hand-computed


def test_holm_hand_computed():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06, monotone)
    got = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 capped at 1; 0.9 x 1 raised to it
    assert np.isnan(holm([math.nan])).all()


def test_t_interval_matches_scipy_and_is_nan_for_one_unit():
    got = t_interval([0.5, 0.6, 0.7])
    lo, hi = stats.t.interval(0.95, 2, loc=0.6, scale=stats.sem([0.5, 0.6, 0.7]))
    assert got["mean"] == pytest.approx(0.6) and got["ci95_low"] == pytest.approx(lo)
    assert got["ci95_high"] == pytest.approx(hi) and got["n_units"] == 3
    one = t_interval([0.5])
    assert one["n_units"] == 1 and one["mean"] == 0.5 and math.isnan(one["ci95_low"])


def test_unit_mean_test_is_the_one_sample_t_test():
    m = np.array([0.012, 0.020, 0.004, 0.015])
    res = unit_mean_test(m)
    ref = stats.ttest_1samp(m, 0.0)
    assert float(res.p) == pytest.approx(ref.pvalue) and float(res.df) == 3
    assert float(res.est) == pytest.approx(m.mean()) and float(res.se) == pytest.approx(stats.sem(m))
    lo, hi = stats.t.interval(0.95, 3, loc=m.mean(), scale=stats.sem(m))
    assert float(res.est - res.critical(0.05) * res.se) == pytest.approx(lo)
    assert math.isnan(float(unit_mean_test([0.1]).p))  # one unit: not testable


def test_crossed_test_mean_squares_hand_computed():
    """D = [[1, 2, 3], [3, 4, 8]]: row means 2, 5; column means 2, 3, 5.5; grand mean 3.5.

    MS_u = 3 * var(2, 5) = 13.5; MS_q = 2 * var(2, 3, 5.5) = 6.5; residuals +-0.5, +-0.5, -+1:
    MS_e = 3 / (1 * 2) = 1.5; V = 13.5 + (6.5 - 1.5) = 18.5; SE = sqrt(18.5 / 6);
    Satterthwaite df = 18.5^2 / (13.5^2/1 + 6.5^2/2 + 1.5^2/2) = 342.25 / 204.5.
    """
    res = crossed_test([[1, 2, 3], [3, 4, 8]])
    assert float(res.est) == 3.5
    assert (float(res.ms_u), float(res.ms_q), float(res.ms_e)) == pytest.approx((13.5, 6.5, 1.5))
    assert float(res.se) == pytest.approx(math.sqrt(18.5 / 6))
    assert float(res.satterthwaite_df) == pytest.approx(342.25 / 204.5)
    # [[1, 3, 2], [4, 2, 3]]: MS_u = 3 * var(2, 3) = 1.5, MS_q = 0 (all column means 2.5), residuals
    # -1, 1, 0 / 1, -1, 0: MS_e = 2. The question component 0 - 2 < 0 is truncated: V = MS_u = 1.5
    neg = crossed_test([[1, 3, 2], [4, 2, 3]])
    assert (float(neg.ms_u), float(neg.ms_q), float(neg.ms_e), float(neg.var)) == pytest.approx(
        (1.5, 0, 2, 1.5)
    )


@pytest.mark.parametrize("units", [2, 3, 4, 8])
def test_crossed_reference_is_t_when_questions_add_no_variance(units):
    """With no question variance (MS_q = MS_e = 0) the fiducial reference is exactly Student's t with
    U-1 df (p and df): the study's test then is the t-test on the unit means."""
    for t in (0.5, 2.0, 5.0, 12.0):
        res = CrossedTest(np.array(t), np.array(units * 40.0), np.array(0.0), np.array(0.0), units, 40)
        assert float(res.se) == pytest.approx(1.0)
        assert float(res.p) == pytest.approx(2 * stats.t.sf(t, units - 1), rel=1e-4)
    assert float(res.df_at(0.05)) == pytest.approx(units - 1, rel=1e-4)
    assert float(res.df_at(HOLM_16)) == pytest.approx(units - 1, rel=1e-4)


def test_detect_design_from_question_sets():
    assert detect_design([{"a", "b"}, {"c"}, {"d", "e"}]) == NESTED
    assert detect_design([{"a", "b"}, {"a", "b"}]) == CROSSED
    assert detect_design([{"a", "b"}]) == CROSSED  # one unit (one fold, several seeds)
    assert detect_design([{"a", "b"}, {"b", "c"}]) == PARTIAL


def test_mde_has_the_power_it_claims():
    # normal reference: the textbook (z_{1-a/2} + z_{power}) * SE (the opposite tail adds ~1e-6)
    assert mde(0.01, math.inf) == pytest.approx(
        (stats.norm.isf(0.025) + stats.norm.isf(0.2)) * 0.01, rel=1e-5
    )
    for df, level in ((3, 0.05), (3, HOLM_16), (2.4, 0.05), (40, 0.01)):
        d = mde(0.01, df, level)
        tc = stats.t.isf(level / 2, df)
        power = stats.nct.sf(tc, df, d / 0.01) + np.nan_to_num(stats.nct.cdf(-tc, df, d / 0.01))
        assert power == pytest.approx(0.8, abs=1e-6), (df, level)
    assert math.isnan(mde(0.0, 3)) and math.isnan(mde(math.nan, 3))


def test_paired_comparison_dispatches_on_the_design():
    q = np.array([f"q{i}" for i in range(6)])
    rng = np.random.default_rng(0)
    crossed = {u: (q, rng.normal(0.02, 0.05, 6)) for u in range(3)}
    row, test = paired_comparison(crossed, CROSSED)
    assert row["status"] == "ok" and row["design"].startswith("crossed") and isinstance(test, CrossedTest)
    assert row["n_units"] == 3 and row["n_questions"] == 6
    mat = np.stack([crossed[u][1] for u in range(3)])
    assert row["diff"] == pytest.approx(mat.mean()) and row["p_value"] == pytest.approx(
        float(crossed_test(mat).p)
    )
    # nested: each unit its own questions, the t-test on the unit means
    nested = {u: (np.array([f"u{u}q{i}" for i in range(5)]), rng.normal(0.02, 0.05, 5)) for u in range(4)}
    row, _ = paired_comparison(nested, NESTED)
    means = [nested[u][1].mean() for u in range(4)]
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(means, 0).pvalue) and row["df"] == 3
    assert row["n_questions"] == 20 and row["design"].startswith("nested")
    # crossed data with only one common question: unit means, and the design says so
    odd = {0: (q[:2], np.array([0.1, 0.2])), 1: (q[1:3], np.array([0.3, 0.1]))}
    assert paired_comparison(odd, CROSSED)[0]["design"].startswith("partial overlap")
    # one unit: not testable
    row, test = paired_comparison({0: crossed[0]}, CROSSED)
    assert row["status"] == NOT_TESTABLE and test is None and math.isnan(row["p_value"])


# ----------------------------------------------------------------------------- simulated sweeps


def simulate(rng, n, folds, seeds, n_q, nested, effect=0.0, clip=True):
    """Scores (hybrid, baseline), each (n, folds, seeds, n_q): see the module doc."""
    g = folds if nested else 1  # nested: every fold its own questions
    difficulty = rng.uniform(0.2, 0.9, (n, g, 1, n_q))
    het = rng.normal(0.0, TAU, (n, g, 1, n_q))
    arms = []
    for sign, shift in ((1, effect), (-1, 0.0)):
        x = (
            difficulty
            + sign * het / 2
            + shift
            + rng.normal(0.0, SIGMA_RUN, (n, folds, seeds, 1))
            + rng.normal(0.0, SIGMA_Q, (n, folds, seeds, n_q))
        )
        arms.append(np.clip(x, 0.0, 1.0) if clip else x)
    return arms


def new_p(h, b, nested):
    """The study's test: units = folds (seeds averaged within) or, with one fold, the runs."""
    d = h.mean(axis=2) - b.mean(axis=2) if h.shape[1] > 1 else h[:, 0] - b[:, 0]
    return unit_mean_test(d.mean(axis=-1)).p if nested else crossed_test(d).p


def old_p(h, b, nested):
    """The old report's test: each question averaged over seeds, then a paired test across questions
    (a t-test: the old sign-flip permutation test is equivalent at these sizes)."""
    if nested:
        d = (h.mean(axis=2) - b.mean(axis=2)).reshape(len(h), -1)
    else:
        d = h.mean(axis=(1, 2)) - b.mean(axis=(1, 2))
    t = d.mean(axis=-1) / (d.std(axis=-1, ddof=1) / math.sqrt(d.shape[-1]))
    return 2 * stats.t.sf(np.abs(t), d.shape[-1] - 1)


def rejection_rates(folds, seeds, n_q, nested, effect=0.0, clip=True, level=LEVEL, seed=0, chunk=250):
    rng = np.random.default_rng(seed)
    new, old = [], []
    for start in range(0, N_SIMS, chunk):
        h, b = simulate(rng, min(chunk, N_SIMS - start), folds, seeds, n_q, nested, effect, clip)
        new.append(new_p(h, b, nested))
        old.append(old_p(h, b, nested))
    return float((np.concatenate(new) < level).mean()), float((np.concatenate(old) < level).mean())


def population_test(folds, seeds, n_q, nested):
    """(SE, df at a level) of the design from the simulation's true variance components (unclipped)."""
    runs_per_unit = seeds if folds > 1 else 1
    units = folds if folds > 1 else seeds
    s2_run = 2 * SIGMA_RUN**2 / runs_per_unit  # unit effect of the paired difference
    s2_noise = 2 * SIGMA_Q**2 / runs_per_unit
    if nested:
        se = math.sqrt((s2_run + (TAU**2 + s2_noise) / n_q) / units)
        return se, lambda level: units - 1.0
    ms = CrossedTest(
        np.array(0.0),
        np.array(s2_noise + n_q * s2_run),  # E[MS_u]
        np.array(s2_noise + units * TAU**2),  # E[MS_q]
        np.array(s2_noise),  # E[MS_e]
        units,
        n_q,
    )
    return float(ms.se), lambda level: float(ms.df_at(level))


DESIGNS = {
    "nested 4 folds x 3 seeds x 300 questions/fold": (4, 3, 300, True),
    "crossed 4 folds x 3 seeds x 1000 questions": (4, 3, 1000, False),
    "crossed 1 fold x 3 seeds x 1000 questions": (1, 3, 1000, False),
}


@pytest.mark.parametrize("name", list(DESIGNS))
def test_calibration_under_no_effect(name):
    """N_SIMS=2000 sweeps with no true effect (clipped scores): the study's test rejects at 0.05 within
    3 binomial SDs (0.05 +/- 0.0146); the old test (seed-averaged, across questions) is far above it
    (> 0.08), so this test can fail."""
    new, old = rejection_rates(*DESIGNS[name])
    print(f"{name}: rejection at 0.05, study {new:.4f}, old {old:.4f} (N={N_SIMS}, bound +/- {BOUND_05:.4f})")
    assert abs(new - LEVEL) <= BOUND_05, new
    assert old > 0.08, old


@pytest.mark.parametrize(
    "name,level",
    [
        ("nested 4 folds x 3 seeds x 300 questions/fold", HOLM_16),
        ("crossed 4 folds x 3 seeds x 1000 questions", LEVEL),
        ("crossed 4 folds x 3 seeds x 1000 questions", HOLM_16),
    ],
)
def test_power_at_the_minimum_detectable_effect(name, level):
    """A true effect equal to the MDE (from the design's true SE and df) is detected 80 % of the time
    (N_SIMS=2000, 3 binomial SDs: 0.80 +/- 0.027); the MDE a single simulated report states is close."""
    folds, seeds, n_q, nested = DESIGNS[name]
    se, df_at = population_test(folds, seeds, n_q, nested)
    effect = mde(se, df_at(level), level)
    power, _ = rejection_rates(folds, seeds, n_q, nested, effect=effect, clip=False, level=level, seed=1)
    print(f"{name}: MDE at level {level:.4g} = {effect:.4f}, detected in {power:.3f} of {N_SIMS}")
    assert abs(power - 0.80) <= BOUND_80, power
    h, b = simulate(np.random.default_rng(2), 1, folds, seeds, n_q, nested, clip=False)
    d = (h.mean(axis=2) - b.mean(axis=2) if folds > 1 else h[:, 0] - b[:, 0])[0]
    test = unit_mean_test(d.mean(axis=-1)) if nested else crossed_test(d)
    assert comparison_mde(test, level) == pytest.approx(effect, rel=0.6)


def test_realistic_mde_of_the_study_design():
    """What the 4 folds x 3 seeds study can see with this noise (printed; finite)."""
    for name, (folds, seeds, n_q, nested) in DESIGNS.items():
        se, df_at = population_test(folds, seeds, n_q, nested)
        m05, m16 = mde(se, df_at(LEVEL), LEVEL), mde(se, df_at(HOLM_16), HOLM_16)
        print(f"{name}: SE {se:.4f}, MDE {m05:.4f} at 0.05, {m16:.4f} at 0.05/16 (Holm, 16 tests)")
        assert math.isfinite(m05) and math.isfinite(m16) and 0 < m05 < m16
