"""What more seeds would buy: a comparison's minimum detectable effect projected to more seeds per fold.

Why: with the fold as the unit of replication, the variance of a fold's paired difference ``D_u`` (the
mean of the hybrid arm's s seeds minus the mean of the baseline's) has two parts,

    Var(D_u) = tau2 + (v_h + v_b) / s,

the folds' own differences ``tau2`` (other test articles, other training articles: no number of seeds
removes it) and the seed noise of one run ``v_h``, ``v_b`` averaged over the s seeds. The spread of a
fold's runs of one arm measures ``v`` (pooled within folds, per arm); ``tau2`` is the rest of the
observed spread of the ``D_u`` (method of moments, truncated at 0). With ``s'`` seeds the comparison's
SE would be

    nested:  SE(s')^2 = (tau2 + (v_h + v_b) / s') / U
    crossed: SE(s')^2 = (tau2 + (v_h + v_b) / s') / U + max(MS_q - MS_e, 0) / (U Q)

(the crossed test's question part, :class:`~mlir.study.stats.CrossedTest`, is the fixed question
sample: seeds do not shrink it), and its MDE ``mde(SE(s'), df)``. The df is the observed test's:
exact for the nested test (``U - 1`` does not depend on seeds), conservative for the crossed one (with
less run variance its effective df can only grow). ``s' = inf`` is the floor that seeds alone can reach;
below it only more folds (more and other training and test data) help. A projection, not a test: it
is a planning figure with the uncertainty of the variances it is estimated from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlir.study import stats
from mlir.study.runs import Run, ScoreKey

PROJECTED_SEEDS = (10, math.inf)  # the seed counts the report projects to, besides the observed one


@dataclass(frozen=True)
class SeedSplit:
    """One comparison's unit variance split into the folds' own part and the seeds' part."""

    n_units: int
    seeds: float  # seeds per fold and arm (harmonic mean when they differ)
    unit_var: float  # observed variance of the units' mean differences, as the test sees them
    seed_var: float  # v_h + v_b: one run's seed variance, both arms, pooled within folds
    seed_df: int  # degrees of freedom of seed_var's pooled estimates (both arms)
    question_part: float = 0.0  # crossed: max(MS_q - MS_e, 0) / (U Q); nested: 0

    @property
    def fold_var(self) -> float:
        """``tau2``: the part of the units' variance that more seeds cannot remove (>= 0)."""
        return max(self.unit_var - self.seed_var / self.seeds, 0.0)

    @property
    def seed_share(self) -> float:
        """The share of the units' observed variance that is seed noise (0..1)."""
        if not self.unit_var > 0:
            return math.nan
        return min(self.seed_var / self.seeds / self.unit_var, 1.0)

    def se(self, seeds: float) -> float:
        """The comparison's expected SE with ``seeds`` seeds per fold and arm (``math.inf``: no seed
        noise). At the observed count it differs from the test's SE by the noise of the observed
        spread, which is estimated on U - 1 df while the seed variance has :attr:`seed_df`."""
        noise = 0.0 if math.isinf(seeds) else self.seed_var / seeds
        return math.sqrt((self.fold_var + noise) / self.n_units + self.question_part)


def pooled_within_variance(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """Variance of values around their own group's mean, pooled over groups, and its df."""
    ss, df = 0.0, 0
    for g in groups:
        x = np.asarray(g, dtype=np.float64)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (ss / df if df else math.nan), df


def seed_split(
    hybrid: Mapping[int, Sequence[float]],
    baseline: Mapping[int, Sequence[float]],
    unit_means: Sequence[float],
    question_part: float = 0.0,
) -> SeedSplit | None:
    """The split from each arm's run means per fold (``{fold: [mean of each seed's run]}``, on the
    questions the test used) and the units' mean differences; None unless every fold of both arms has
    two seeds or more (an interim sweep with some folds at one seed is not projected)."""
    if any(len(v) < 2 for arm in (hybrid, baseline) for v in arm.values()) or not (hybrid and baseline):
        return None
    v_h, df_h = pooled_within_variance(hybrid.values())
    v_b, df_b = pooled_within_variance(baseline.values())
    counts = [len(v) for arm in (hybrid, baseline) for v in arm.values()]
    seeds = len(counts) / sum(1.0 / c for c in counts)
    return SeedSplit(
        n_units=len(unit_means),
        seeds=seeds,
        unit_var=float(np.var(np.asarray(unit_means, dtype=np.float64), ddof=1)),
        seed_var=v_h + v_b,
        seed_df=df_h + df_b,
        question_part=question_part,
    )


def run_means(
    runs: Iterable[Run], key: ScoreKey, qids_by_fold: Mapping[int, np.ndarray]
) -> dict[int, list[float]]:
    """Per fold, each run's mean score on that fold's tested questions (those it has)."""
    out: dict[int, list[float]] = {}
    for r in runs:
        if key not in r.scores or r.fold not in qids_by_fold:
            continue
        q, v = r.scores[key]
        hit = np.isin(q, qids_by_fold[r.fold])
        if hit.any():
            out.setdefault(r.fold, []).append(float(v[hit].mean()))
    return out


def projected_mdes(
    split: SeedSplit, df: float, level: float, seeds: Sequence[float] = PROJECTED_SEEDS
) -> list[float]:
    """The MDE at ``level`` (80 % power) with each number of seeds per fold and arm (0: no variance
    left, any difference would be detected)."""
    return [stats.mde(se, df, level) if se > 0 else 0.0 for se in map(split.se, seeds)]
