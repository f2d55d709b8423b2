"""The statistics of the hybrid-batch study: paired tests whose unit of replication is the training run.

Why a module of its own: the question "does hybrid beat a baseline?" is about *training runs*, and a
rerun changes the seed, the fold and (for the in-domain benchmark) the questions. Every one of those
must be in the standard error, or a report of no effect comes out "significant" most of the time.
These functions are pure numpy/scipy (no files), vectorised over leading axes, so
``tests/test_study_stats.py`` can push thousands of simulated sweeps through exactly the code the
report uses. The design and its calibration are written down in ``docs/statistics.md``.

Inputs are paired differences ``D[u, q]`` (hybrid minus baseline) per top-level unit ``u`` (a fold, or
a run when the sweep has one fold) and question ``q`` (a question's translations averaged first):

* **nested** (each question in one unit, e.g. XQuAD-R test articles per fold):
  :func:`unit_mean_test`, a one-sample t-test on the unit means, ``df = U - 1`` (exact under normality);
* **crossed** (every question in every unit, e.g. zero-shot MLQA-R): :func:`crossed_test`, a two-way
  random-effects ANOVA without replication ``d_uq = mu + a_u + b_q + e_uq`` with the quasi-F variance
  ``(MS_u + MS_q - MS_e) / (U Q)`` (Clark 1973), the question component truncated at zero, and a
  Behrens-Fisher (fiducial) reference distribution: Satterthwaite's t was liberal with 3-4 units
  (6-8 % at the 5 % level in simulation; see the docs).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

NESTED, CROSSED, PARTIAL = "nested", "crossed", "partial"
DESIGN_LABELS = {
    NESTED: "nested (t-test on unit means)",
    CROSSED: "crossed (two-way random effects)",
    PARTIAL: "partial overlap (t-test on unit means)",
}
NOT_TESTABLE = "not tested (needs >= 2 runs/folds per arm)"


def _prob_grid(
    n_geo: int, n_uni: int, lo: float = 1e-8, split: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights on (0, 1) for an expectation over a chi-square's quantiles.

    Why this grid: a small chi-square is a large variance, so the far tail of the test (Holm's levels)
    lives near probability 0; cells shrink geometrically there, are uniform above ``split``, and each
    gets 3-point Gauss-Legendre (critical values within 1e-6 of Student's t where that is exact).
    """
    edges = np.concatenate([[0.0], np.geomspace(lo, split, n_geo), np.linspace(split, 1.0, n_uni + 1)[1:]])
    x, w = np.polynomial.legendre.leggauss(3)
    a, width = edges[:-1, None], np.diff(edges)[:, None]
    return (a + width * (x + 1) / 2).ravel(), (width * w / 2).ravel()


_P_U, _W_U = _prob_grid(40, 80)  # the run mean square: df U - 1, few
_P_Q, _W_Q = _prob_grid(3, 5)  # the question mean square: df Q - 1, many
_WEIGHTS = np.outer(_W_U, _W_Q).ravel()


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample SD and t-interval of the mean over units; fewer than 2 units: NaN interval."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(x)
    nan = math.nan
    if n == 0:
        return {"n_units": 0, "mean": nan, "sd": nan, "ci95_low": nan, "ci95_high": nan}
    mean = float(x.mean())
    if n < 2:
        return {"n_units": 1, "mean": mean, "sd": nan, "ci95_low": nan, "ci95_high": nan}
    sd = float(x.std(ddof=1))
    half = float(stats.t.isf((1 - level) / 2, n - 1) * sd / math.sqrt(n))
    return {"n_units": n, "mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}


def detect_design(qid_sets: Sequence[set[str]]) -> str:
    """``nested`` when the units' question sets are pairwise disjoint, ``crossed`` when they are all the
    same (or there is one unit), else ``partial``. Read from the data, never from a benchmark's name."""
    sets = [s for s in qid_sets if s]
    if len(sets) <= 1:
        return CROSSED
    if all(s == sets[0] for s in sets[1:]):
        return CROSSED
    if sum(len(s) for s in sets) == len(set().union(*sets)):
        return NESTED
    return PARTIAL


def _two_sided_p(t: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    return 2 * stats.t.sf(np.abs(t), df)


@dataclass(frozen=True)
class UnitMeanTest:
    """One-sample t-test on unit means (arrays over any leading axes)."""

    est: np.ndarray
    se: np.ndarray
    df: np.ndarray
    n_units: int

    @cached_property
    def p(self) -> np.ndarray:
        """Two-sided p-value; a zero SE gives 1 for a zero estimate and 0 otherwise."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.est / self.se
            p = _two_sided_p(t, self.df)
        zero_se = np.where(self.est == 0, 1.0, 0.0)
        return np.where(np.isnan(self.se), np.nan, np.where(self.se > 0, p, zero_se))

    def critical(self, level: float = 0.05) -> np.ndarray:
        """The |est|/se a two-sided test at ``level`` must exceed: half the interval width over se."""
        return stats.t.isf(level / 2, self.df)

    def df_at(self, level: float = 0.05) -> np.ndarray:
        """Degrees of freedom of the t reference (the same at every level)."""
        return np.asarray(self.df, dtype=np.float64)


def unit_mean_test(unit_means: ArrayLike) -> UnitMeanTest:
    """t-test of "mean paired difference = 0" over the last axis (the units), ``df = U - 1``.

    Why valid for a nested design: each unit mean carries its own questions, seeds and training data,
    so the unit means are independent and identically distributed; their spread holds every source of
    variance a rerun would change.
    """
    m = np.asarray(unit_means, dtype=np.float64)
    u = m.shape[-1]
    est = m.mean(axis=-1)
    if u < 2:
        nan = np.full_like(est, np.nan)
        return UnitMeanTest(est, nan, nan, u)
    se = m.std(axis=-1, ddof=1) / math.sqrt(u)
    return UnitMeanTest(est, se, np.full_like(est, u - 1.0), u)


@dataclass(frozen=True)
class CrossedTest:
    """Two-way random-effects test of the grand mean of a units x questions table (leading axes kept)."""

    est: np.ndarray
    ms_u: np.ndarray
    ms_q: np.ndarray
    ms_e: np.ndarray
    n_units: int
    n_questions: int
    _critical: dict[float, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def var(self) -> np.ndarray:
        """Quasi-F variance numerator ``MS_u + max(MS_q - MS_e, 0)``: never below ``MS_u``.

        ``E[MS_u + MS_q - MS_e] = Q s2_a + U s2_b + s2_e = U Q Var(grand mean)``; a negative estimate
        of the question component ``s2_b`` is set to zero, the run component is never dropped.
        """
        return self.ms_u + np.maximum(self.ms_q - self.ms_e, 0.0)

    @cached_property
    def se(self) -> np.ndarray:
        return np.sqrt(self.var / (self.n_units * self.n_questions))

    @cached_property
    def satterthwaite_df(self) -> np.ndarray:
        """Satterthwaite's df of :attr:`var` (reported for reference; not used for p, it is liberal)."""
        u, q = self.n_units, self.n_questions
        active = self.ms_q > self.ms_e
        den = self.ms_u**2 / (u - 1) + np.where(
            active, self.ms_q**2 / (q - 1) + self.ms_e**2 / ((u - 1) * (q - 1)), 0.0
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, self.var**2 / den, np.inf)

    @cached_property
    def _scale(self) -> np.ndarray:
        """``sqrt(V_f / V)`` on the quadrature grid (..., len(_P_U) * len(_P_Q)); weights ``_WEIGHTS``.

        ``V_f`` draws the run mean square from its fiducial distribution ``MS_u (U-1) / chi2_{U-1}``
        and the question mean square likewise (``chi2_{Q-1}``); ``MS_e`` (df (U-1)(Q-1)) is taken as
        known. ``est / sqrt(V_f / UQ)`` is then standard normal: the Behrens-Fisher solution for a
        variance that is a sum of components estimated with very different df.
        """
        nu_u, nu_q = self.n_units - 1, self.n_questions - 1
        xu = stats.chi2.ppf(_P_U, nu_u)
        xq = stats.chi2.ppf(_P_Q, nu_q)
        ms_u, ms_q, ms_e = (np.asarray(a)[..., None, None] for a in (self.ms_u, self.ms_q, self.ms_e))
        vf = ms_u * nu_u / xu[:, None] + np.maximum(ms_q * nu_q / xq[None, :] - ms_e, 0.0)
        v = np.asarray(self.var)[..., None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt(vf / v)
        return r.reshape(*r.shape[:-2], -1)

    def _tail(self, t: np.ndarray) -> np.ndarray:
        """P(|T| > t) under the fiducial mixture of normals (t in SE units, same leading shape)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * special.ndtr(-np.abs(np.asarray(t))[..., None] / self._scale) @ _WEIGHTS

    @cached_property
    def p(self) -> np.ndarray:
        """Two-sided p-value; a zero variance gives 1 for a zero estimate and 0 otherwise."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(self.var > 0, self.est / self.se, 0.0)
        p = self._tail(t)
        zero_var = np.where(self.est == 0, 1.0, 0.0)
        return np.where(np.isnan(self.var), np.nan, np.where(self.var > 0, p, zero_var))

    def critical(self, level: float = 0.05) -> np.ndarray:
        """The |est|/se the test at ``level`` must exceed (root of the fiducial tail, per element)."""
        if level in self._critical:
            return self._critical[level]
        scale = self._scale.reshape(-1, self._scale.shape[-1])
        out = np.empty(len(scale))
        for i, r in enumerate(scale):
            if not np.isfinite(r).all():
                out[i] = math.nan
                continue

            def f(c: float, r: np.ndarray = r) -> float:
                return float(2 * special.ndtr(-c / r) @ _WEIGHTS) - level

            hi = float(special.ndtri(1 - level / 2) * r.max()) + 1.0
            out[i] = optimize.brentq(f, 0.0, hi, xtol=1e-10)
        self._critical[level] = out.reshape(np.shape(self.est))
        return self._critical[level]

    def df_at(self, level: float = 0.05) -> np.ndarray:
        """Effective df: the t whose two-sided ``level`` critical value equals this test's (inf: normal)."""
        crit = np.atleast_1d(self.critical(level)).astype(np.float64)
        q = 1 - level / 2
        out = np.empty_like(crit)
        for i, c in enumerate(crit.ravel()):
            if math.isnan(c):
                out.flat[i] = math.nan
            elif special.stdtrit(1e7, q) >= c:
                out.flat[i] = math.inf
            else:
                out.flat[i] = optimize.brentq(lambda nu, c=c: special.stdtrit(nu, q) - c, 0.05, 1e7)
        return out.reshape(np.shape(self.est))


def crossed_test(d: ArrayLike) -> CrossedTest:
    """Test "grand mean of D = 0" for a complete units x questions table (last two axes).

    Why: when every unit answers the same questions, unit means share the question sample (its
    variance cancels between them) and question means share the runs; the grand mean's variance is
    ``s2_a / U + s2_b / Q + s2_e / (U Q)``, estimated from the three mean squares.
    """
    d = np.asarray(d, dtype=np.float64)
    u, q = d.shape[-2:]
    if u < 2 or q < 2:
        raise ValueError(f"a crossed test needs >= 2 units and >= 2 questions, got {u} x {q}")
    grand = d.mean(axis=(-2, -1))
    ms_u = q * d.mean(axis=-1).var(axis=-1, ddof=1)
    ms_q = u * d.mean(axis=-2).var(axis=-1, ddof=1)
    sst = ((d - grand[..., None, None]) ** 2).sum(axis=(-2, -1))
    ms_e = np.maximum(sst - (u - 1) * ms_u - (q - 1) * ms_q, 0.0) / ((u - 1) * (q - 1))
    return CrossedTest(grand, ms_u, ms_q, ms_e, u, q)


def mde(se: float, df: float, level: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect: the smallest true difference a two-sided t-test at ``level`` with this
    SE and df detects with probability ``power`` (noncentral t; df = inf: normal)."""
    if not (np.isfinite(se) and se > 0) or math.isnan(df):
        return math.nan
    if math.isinf(df) or df > 1e6:
        tc = special.ndtri(1 - level / 2)

        def pw(nc: float) -> float:
            return float(special.ndtr(nc - tc) + special.ndtr(-tc - nc))
    else:
        tc = special.stdtrit(df, 1 - level / 2)

        def pw(nc: float) -> float:
            # P(T' > tc) + P(T' < -tc), T' noncentral t; the second term is tiny and may come out NaN
            return float(1 - special.nctdtr(df, nc, tc) + np.nan_to_num(special.nctdtr(df, nc, -tc)))

    hi = tc + 4.0
    while pw(hi) < power:
        hi *= 2
    return float(optimize.brentq(lambda nc: pw(nc) - power, 0.0, hi, xtol=1e-10)) * float(se)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone); NaN (not tested) stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


Test = UnitMeanTest | CrossedTest


def paired_comparison(
    diffs: Mapping[Hashable, tuple[np.ndarray, ...]],
    design: str,
    level: float = 0.95,
) -> tuple[dict[str, float | int | str], Test | None]:
    """Test one comparison from per-unit paired differences ``{unit: (qids, d[, hybrid, baseline])}``.

    ``design`` is the benchmark's (:func:`detect_design`). Nested and partial designs test the unit
    means; crossed designs use the questions present in every unit (fewer than 2: unit means, and the
    design says so). Returns the row (estimate, SE, effective df, p, interval, unit and question counts,
    run-level standardised effect = estimate / SD of the unit means) and the test (None: not testable),
    which gives the minimum detectable effect once the family's size is known (:func:`comparison_mde`).
    """
    units = [k for k, v in diffs.items() if len(v[1])]
    row: dict[str, float | int | str] = {"n_units": len(units), "design": DESIGN_LABELS[design]}
    if len(units) < 2:
        n_q = sum(len(diffs[k][1]) for k in units)
        return row | {"status": NOT_TESTABLE, "n_questions": n_q, "p_value": math.nan}, None
    test: Test
    if design == CROSSED:
        qs = common_questions(diffs, units)
        if len(qs) >= 2:
            cols = [
                np.stack([_align(diffs[k], qs, j) for k in units]) for j in range(1, len(diffs[units[0]]))
            ]
            test, n_q = crossed_test(cols[0]), len(qs)
            row["df_satterthwaite"] = float(test.satterthwaite_df)
            unit_cols = [c.mean(axis=1) for c in cols]
        else:
            design = PARTIAL
    if design != CROSSED:
        unit_cols = [
            np.array([float(np.mean(diffs[k][j])) for k in units]) for j in range(1, len(diffs[units[0]]))
        ]
        test, n_q = unit_mean_test(unit_cols[0]), sum(len(diffs[k][1]) for k in units)
    unit_means = unit_cols[0]
    if len(unit_cols) == 3:  # (qids, d, hybrid, baseline): the arms' means on the tested questions
        row["mean_hybrid"], row["mean_baseline"] = float(unit_cols[1].mean()), float(unit_cols[2].mean())
        row["rel_diff"] = float(test.est) / row["mean_baseline"] if row["mean_baseline"] else math.nan
    est, se = float(test.est), float(test.se)
    crit = float(test.critical(1 - level))
    sd_units = float(np.std(unit_means, ddof=1))
    return row | {
        "status": "ok",
        "design": DESIGN_LABELS[design],
        "n_questions": n_q,
        "diff": est,
        "se": se,
        "df": float(test.df_at(1 - level)),
        "p_value": float(test.p),
        "diff_ci95_low": est - crit * se,
        "diff_ci95_high": est + crit * se,
        "effect_size": est / sd_units if sd_units > 0 else math.nan,
    }, test


def common_questions(diffs: Mapping[Hashable, tuple[np.ndarray, ...]], units: Sequence[Hashable]) -> list:
    """The question ids every unit has, sorted: what a crossed test uses."""
    return sorted(set.intersection(*(set(diffs[k][0].tolist()) for k in units)))


def _align(unit: tuple[np.ndarray, ...], qids: Sequence[str], col: int = 1) -> np.ndarray:
    index = {q: i for i, q in enumerate(unit[0].tolist())}
    return unit[col][[index[q] for q in qids]]


def comparison_mde(test: Test, level: float, power: float = 0.8) -> float:
    """:func:`mde` of one comparison at ``level``, with the df its test uses at that level."""
    return mde(float(test.se), float(test.df_at(level)), level, power)
