"""Answer the research question from a sweep: ``python -m mlir.report <sweep dir>``.

Why: the study (``conf/experiment/hybrid_study.yaml``) leaves one job directory per fold, alpha and seed,
plus the untrained backbone per fold; this module collects them (:mod:`mlir.study.runs`), tests the
hybrid alpha against X-X-mono (alpha=1) and X-Y (alpha=0) with the training run as the unit of
replication (:mod:`mlir.study.stats`, design in ``docs/statistics.md``), phrases the answer
(:mod:`mlir.study.answer`) and writes report.md, summary.md, report.csv, significance.csv and the
figures (:mod:`mlir.study.render`, :mod:`mlir.study.summary`).

The hybrid alpha is fixed in advance (``--hybrid-alpha``, default 0.5, the paper's value) or chosen
on the dev criterion (``--hybrid-alpha dev``: the lowest mean ``dev/val_loss_best``), never on a test
metric.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlir.core.errors import ConfigError, MlirError
from mlir.study import power, stats
from mlir.study.runs import (
    BASELINES,
    BIAS,
    SETTINGS,
    UNTRAINED,
    Arm,
    Run,
    Unit,
    akey,
    arm_label,
    arm_unit_scores,
    benchmarks,
    discover_runs,
    expected_alphas,
    fmt_alpha,
    paired_differences,
    qid_sets_by_fold,
    unit_values,
)

DEFAULT_HYBRID_ALPHA = 0.5  # the paper's value (Elmahdy, Lin, Ahmad 2024), fixed before the study
DEFAULT_METRIC = "map"  # the paper's headline metric for XQuAD-R / MLQA-R
LEVEL = 0.05
PRIMARY, SECONDARY, DESCRIPTIVE = "primary", "secondary", "descriptive"


def secondary_metric(metric: str) -> str:
    """nDCG@10 is the secondary family, unless it is the headline; then mAP is."""
    return "map" if metric == "ndcg@10" else "ndcg@10"


@dataclass
class SweepReport:
    """Everything :func:`build_report` found and computed (the written files are views of this)."""

    sweep_dir: Path
    runs: list[Run]
    metric: str
    secondary: str
    benchmarks: list[str]
    by_fold: bool  # units are folds (several folds) or runs (one fold)
    designs: dict[str, str]  # benchmark -> nested | crossed | partial
    questions: dict[str, int]  # benchmark -> question ids seen
    arms: dict[Arm, list[Run]]  # complete runs per arm: alphas ascending, then untrained
    expected: list[float] | None
    missing_alphas: list[float]
    hybrid_alpha: float | None
    hybrid_choice: str
    table: list[dict[str, Any]] = field(default_factory=list)
    significance: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)

    @property
    def alphas(self) -> list[float]:
        """The trained arms with a finished run."""
        return [a for a in self.arms if isinstance(a, float)]

    @property
    def unit(self) -> str:
        return "fold" if self.by_fold else "run"

    @property
    def complete_runs(self) -> list[Run]:
        return [r for rs in self.arms.values() for r in rs]

    def arm_runs(self, arm: Arm) -> list[Run]:
        """An arm's runs; in a one-fold sweep the untrained jobs of that fold only (its reference)."""
        runs = self.arms.get(arm, [])
        if arm == UNTRAINED and not self.by_fold:
            folds = {r.fold for a, rs in self.arms.items() if a != UNTRAINED for r in rs}
            runs = [r for r in runs if r.fold in folds] if folds else runs
        return runs

    def family_size(self, family: str) -> int:
        return sum(1 for r in self.significance if r["family"] == family and r["status"] == "ok")


def parse_hybrid_alpha(value: str | float) -> float | str:
    """``dev`` or a float strictly between 0 and 1 (else a ConfigError naming ``--hybrid-alpha``)."""
    if isinstance(value, str) and value.strip().lower() == "dev":
        return "dev"
    try:
        a = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"expected a number in (0, 1) or 'dev', got {value!r}", where="--hybrid-alpha"
        ) from None
    if not 0.0 < a < 1.0:
        raise ConfigError(f"must be strictly between 0 and 1 (or 'dev'), got {value}", where="--hybrid-alpha")
    return a


def choose_hybrid(arms: dict[Arm, list[Run]], spec: float | str) -> tuple[float | None, str]:
    """The hybrid arm and why: fixed in advance, or the lowest mean dev loss; never a test metric."""
    if not isinstance(spec, str):
        a = akey(spec)
        if a not in arms:
            return None, f"alpha={fmt_alpha(a)} (--hybrid-alpha, fixed in advance) has no finished run"
        why = "the paper's value, " if a == DEFAULT_HYBRID_ALPHA else ""
        return a, f"alpha={fmt_alpha(a)}, fixed in advance ({why}--hybrid-alpha)"
    inner = [a for a in arms if isinstance(a, float) and 0.0 < a < 1.0]
    losses: dict[float, float] = {}
    for a in inner:
        vals = [r.dev_loss for r in arms[a] if r.dev_loss is not None]
        if vals:
            losses[a] = float(np.mean(vals))
    if not losses:
        return None, (
            "--hybrid-alpha dev: no hybrid alpha (strictly between 0 and 1) has a finished run with "
            "dev/val_loss_best in metrics.json"
        )
    best = min(losses, key=lambda a: losses[a])
    listed = ", ".join(f"{fmt_alpha(a)}: {v:.4f}" for a, v in losses.items())
    return best, (
        f"alpha={fmt_alpha(best)}: the lowest mean dev validation loss (dev/val_loss_best, the "
        f"checkpoint-selection criterion; {listed}), chosen without looking at any test metric "
        "(--hybrid-alpha dev)"
    )


def _relpath(run: Run, root: Path) -> str:
    try:
        return str(run.path.relative_to(root)) or "."
    except ValueError:
        return str(run.path)


def _finished_runs(sweep_dir: Path, runs: list[Run], notes: list[str]) -> list[Run]:
    """The runs that can be reported: finished, with a fixed numeric alpha (or untrained); the others
    are named in ``notes``. Nothing finished is a :class:`MlirError`."""
    unfinished = [r for r in runs if not r.complete]
    if unfinished:
        notes.append(
            f"{len(unfinished)} job(s) unfinished or failed, left out: "
            + ", ".join(f"{_relpath(r, sweep_dir)} ({r.problem})" for r in unfinished)
        )
    done = [r for r in runs if r.complete]
    if not done:
        raise MlirError(
            f"no finished job (metrics.json with eval/ keys and a readable per_query.npz) among "
            f"{len(runs)} job directories",
            where=str(sweep_dir),
        )
    scheduled = [r for r in done if r.trained and r.alpha is not None and r.schedule != "constant"]
    if scheduled:
        notes.append(
            f"{len(scheduled)} job(s) with an alpha schedule ({scheduled[0].schedule}), not a fixed alpha: left out"
        )
    no_alpha = [r for r in done if r.trained and r.alpha is None]
    if no_alpha:
        notes.append(f"{len(no_alpha)} job(s) without a numeric sampler.alpha, left out")
    return [r for r in done if r.arm is not None]


def _group_arms(usable: list[Run], notes: list[str]) -> dict[Arm, list[Run]]:
    """Runs per arm: alphas ascending, then the untrained arm (its absence is noted)."""
    arms: dict[Arm, list[Run]] = {}
    for a in sorted({r.arm for r in usable if isinstance(r.arm, float)}):
        arms[a] = [r for r in usable if r.arm == a]
    if any(r.arm == UNTRAINED for r in usable):
        arms[UNTRAINED] = [r for r in usable if r.arm == UNTRAINED]
    else:
        notes.append("no untrained job (train: false): no untrained row, line or comparison")
    return arms


def _check_metric(usable: list[Run], metric: str) -> None:
    """A ConfigError naming ``--metric`` when no run has it."""
    if not any(k.split("/")[2:3] == [metric] for r in usable for k in r.metrics):
        found = sorted({k.split("/")[2] for r in usable for k in r.metrics if k.count("/") >= 2})
        raise ConfigError(f"no run has the metric {metric!r} (found: {', '.join(found)})", where="--metric")


def _designs(
    usable: list[Run], names: list[str], folds: list[int], by_fold: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """Per benchmark, the statistical design of its question sets and how many questions were seen."""
    designs, questions = {}, {}
    in_design = [r for r in usable if r.trained or r.fold in folds or not folds]  # untrained: its folds only
    for b in names:
        sets = qid_sets_by_fold(in_design, b)
        designs[b] = stats.detect_design(list(sets.values()) if by_fold else [set().union(*sets.values())])
        questions[b] = len(set().union(*sets.values())) if sets else 0
    return designs, questions


def build_report(
    sweep_dir: str | Path,
    hybrid_alpha: float | str = DEFAULT_HYBRID_ALPHA,
    metric: str = DEFAULT_METRIC,
) -> SweepReport:
    """Collect the sweep's runs, tabulate every arm and test hybrid against both baselines.

    Raises :class:`MlirError` when there is nothing to report (no directory, no job, no finished job,
    an unknown ``metric`` or ``hybrid_alpha``); gaps that still leave a report (missing alphas,
    unfinished jobs, a single run per arm) are stated in ``notes`` and in the rows' ``status``.
    """
    sweep_dir = Path(sweep_dir)
    spec = parse_hybrid_alpha(hybrid_alpha)
    if not sweep_dir.is_dir():
        raise MlirError("sweep directory does not exist", where=str(sweep_dir))
    runs = discover_runs(sweep_dir)
    if not runs:
        raise MlirError("no job directories (.hydra/config.yaml) found", where=str(sweep_dir))
    notes: list[str] = []
    usable = _finished_runs(sweep_dir, runs, notes)
    arms = _group_arms(usable, notes)
    names = benchmarks(usable)
    _check_metric(usable, metric)
    folds = sorted({r.fold for r in usable if r.trained})
    by_fold = len(folds) > 1
    expected = expected_alphas(sweep_dir)
    wanted = expected if expected is not None else sorted(set(BASELINES.values()))
    h_alpha, h_choice = choose_hybrid(arms, spec)
    designs, questions = _designs(usable, names, folds, by_fold)
    rep = SweepReport(
        sweep_dir=sweep_dir,
        runs=runs,
        metric=metric,
        secondary=secondary_metric(metric),
        benchmarks=names,
        by_fold=by_fold,
        designs=designs,
        questions=questions,
        arms=arms,
        expected=expected,
        missing_alphas=[a for a in wanted if a not in arms],
        hybrid_alpha=h_alpha,
        hybrid_choice=h_choice,
        notes=notes,
    )
    rep.table = _table(rep)
    if any(r["n_units"] == 1 for r in rep.table):
        notes.append(
            f"arms with a single {rep.unit} have no interval (NaN): a t-interval needs >= 2 {rep.unit}s"
        )
    if h_alpha is not None:
        rep.significance = _comparisons(rep)
    from mlir.study.answer import plain_answer

    rep.answer = plain_answer(rep)
    return rep


def table_metrics(rep: SweepReport) -> list[tuple[str, str]]:
    """(setting, metric) columns of the tables: headline, secondary, and the multi rank distance."""
    return [
        *[(s, rep.metric) for s in SETTINGS],
        *[(s, rep.secondary) for s in SETTINGS],
        ("multi", BIAS),
    ]


def _table(rep: SweepReport) -> list[dict[str, Any]]:
    rows = []
    for b in rep.benchmarks:
        for s, m in table_metrics(rep):
            for arm in rep.arms:
                rs = rep.arm_runs(arm)
                # the untrained arm's unit is always its fold: its seed is irrelevant (no training)
                vals = unit_values(rs, f"{b}/{s}/{m}", rep.by_fold or arm == UNTRAINED)
                if not vals:
                    continue
                used = [r for r in rs if f"{b}/{s}/{m}" in r.metrics]
                rows.append(
                    {
                        "benchmark": b,
                        "setting": s,
                        "metric": m,
                        "arm": arm_label(arm),
                        "alpha": "" if arm == UNTRAINED else arm,
                        "n_runs": len(used),
                        "unit": "fold" if arm == UNTRAINED else rep.unit,
                        "units": sorted(vals, key=str),
                        "seeds": sorted({r.seed for r in used if r.seed is not None}),
                    }
                    | stats.t_interval(list(vals.values()))
                )
    return rows


def _has_metric(rep: SweepReport, b: str, s: str, m: str) -> bool:
    return any(f"{b}/{s}/{m}" in r.metrics or (b, s, m) in r.scores for r in rep.complete_runs)


def _arm_scores(
    rep: SweepReport, arm: Arm, key: tuple[str, str, str], like: set[Unit]
) -> dict[Unit, tuple[np.ndarray, np.ndarray]]:
    """An arm's per-unit question scores; the untrained arm of a one-fold sweep (its unit is not a
    seed) is the same for every unit of the trained arm it is compared with."""
    runs = rep.arm_runs(arm)
    if arm == UNTRAINED and not rep.by_fold:
        merged = arm_unit_scores(runs, key, by_fold=True)  # one fold: its untrained job(s), one unit
        return dict.fromkeys(like, next(iter(merged.values()))) if merged else {}
    return arm_unit_scores(runs, key, rep.by_fold)


Test = tuple[str, str, str, str, str, Arm]  # (family, benchmark, setting, metric, baseline name, its arm)


def _test_plan(rep: SweepReport) -> list[Test]:
    """The primary and secondary families vs both baselines, then the descriptive untrained tests."""
    plan: list[Test] = []
    families = {
        PRIMARY: ((rep.metric, SETTINGS), (BIAS, ("multi",))),
        SECONDARY: ((rep.secondary, SETTINGS),),
    }
    for family, metrics in families.items():
        for b in rep.benchmarks:
            for m, settings in metrics:
                for s in settings:
                    if _has_metric(rep, b, s, m):
                        plan += [(family, b, s, m, name, a) for name, a in BASELINES.items()]
    for b in rep.benchmarks:
        if UNTRAINED in rep.arms:
            for s, m in [*[(s, rep.metric) for s in SETTINGS], ("multi", BIAS)]:
                if _has_metric(rep, b, s, m):
                    plan.append((DESCRIPTIVE, b, s, m, UNTRAINED, UNTRAINED))
    return plan


def _compare(rep: SweepReport, h: float, planned: Test) -> tuple[dict[str, Any], Any, Any]:
    """One planned test's row (without Holm and MDE), the test object (``None``: not tested) and its
    seed split (:mod:`mlir.study.power`; ``None``: not estimable)."""
    family, b, s, m, name, base = planned
    row: dict[str, Any] = {
        "family": family,
        "benchmark": b,
        "setting": s,
        "metric": m,
        "hybrid_alpha": h,
        "baseline": name,
        "baseline_alpha": "" if base == UNTRAINED else base,
    }
    if base not in rep.arms:
        row["status"] = f"not tested (missing alpha={fmt_alpha(float(base))})"
        return row, None, None
    hyb = _arm_scores(rep, h, (b, s, m), set())
    ref = _arm_scores(rep, base, (b, s, m), set(hyb))
    if not hyb or not ref:
        row["status"] = "not tested (no per-query scores for this metric)"
        return row, None, None
    diffs = paired_differences(hyb, ref)
    res, test = stats.paired_comparison(diffs, rep.designs[b])
    split = _seed_split(rep, (b, s, m), (h, base), diffs, test) if family != DESCRIPTIVE else None
    return row | res, test, split


def _seed_split(rep: SweepReport, key: tuple[str, str, str], arms: tuple[Arm, Arm], diffs, test) -> Any:
    """The comparison's variance split into folds and seeds, on exactly the questions its test used."""
    if test is None or not rep.by_fold:
        return None
    units = [u for u, v in diffs.items() if len(v[1])]
    if isinstance(test, stats.CrossedTest):
        qs = np.array(stats.common_questions(diffs, units))
        tested = dict.fromkeys(units, qs)
        idx = {u: np.isin(diffs[u][0], qs) for u in units}
        unit_means = [float(diffs[u][1][idx[u]].mean()) for u in units]
        q_part = max(float(test.ms_q - test.ms_e), 0.0) / (test.n_units * test.n_questions)
    else:
        tested = {u: diffs[u][0] for u in units}
        unit_means, q_part = [float(diffs[u][1].mean()) for u in units], 0.0
    means = [power.run_means(rep.arm_runs(a), key, tested) for a in arms]
    return power.seed_split(means[0], means[1], unit_means, q_part)


def _comparisons(rep: SweepReport) -> list[dict[str, Any]]:
    """Every test: the primary and secondary families vs both baselines, and the descriptive
    fine-tuning-vs-untrained comparisons; Holm within each family, then the MDEs."""
    h = rep.hybrid_alpha
    assert h is not None
    rows, tests, splits = [], [], []
    for planned in _test_plan(rep):
        row, test, split = _compare(rep, h, planned)
        rows.append(row)
        tests.append(test)
        splits.append(split)
    for family in (PRIMARY, SECONDARY):
        idx = [i for i, r in enumerate(rows) if r["family"] == family]
        adj = stats.holm([rows[i].get("p_value", math.nan) for i in idx])
        m_family = int(np.isfinite(adj).sum())
        for i, p in zip(idx, adj):
            rows[i]["p_holm"] = float(p)
            rows[i]["m_family"] = m_family
    for r, test, split in zip(rows, tests, splits):
        if r["family"] == DESCRIPTIVE:
            r["p_holm"], r["m_family"] = "", ""  # outside the Holm families: not applicable
        if test is None:
            continue
        level = LEVEL / r["m_family"] if r["family"] != DESCRIPTIVE else LEVEL
        r["mde_level"] = level
        r["mde"] = stats.comparison_mde(test, level)
        r["mde_unadjusted"] = stats.comparison_mde(test, LEVEL)
        if split is not None:
            r["seeds_per_fold"], r["seed_share"] = split.seeds, split.seed_share
            seeds = (split.seeds, *power.PROJECTED_SEEDS)
            projected = power.projected_mdes(split, float(test.df_at(level)), level, seeds)
            r["mde_projected_as_run"], r["mde_seeds_10"], r["mde_seeds_inf"] = projected
    from mlir.study.answer import row_verdict

    for r in rows:
        r["verdict"] = row_verdict(r)
    return rows


def write_report(rep: SweepReport, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, summary.md (a README's block), report.csv, significance.csv and the figures."""
    from mlir.study import render

    return render.write_all(rep, Path(out_dir) if out_dir else rep.sweep_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a user's mistake (bad directory, no finished job, bad option) is one line and
    exit code 2."""
    ap = argparse.ArgumentParser(
        prog="python -m mlir.report",
        description="Does hybrid batch training beat X-X-mono (alpha=1) and X-Y (alpha=0)? Tables, "
        "figures, tests (unit of replication: the training run) and a plain-language answer.",
    )
    ap.add_argument("sweep_dir", help="the sweep directory (holds <job>/.hydra/config.yaml at any depth)")
    ap.add_argument("--out", default=None, help="output directory (default: the sweep directory)")
    ap.add_argument(
        "--hybrid-alpha",
        default=str(DEFAULT_HYBRID_ALPHA),
        help="the hybrid arm: an alpha in (0, 1) fixed in advance (default 0.5, the paper's), or 'dev': "
        "the alpha with the lowest mean dev/val_loss_best (never a test metric)",
    )
    ap.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="headline metric of the primary (Holm) family with the multi rank distance (default map); "
        "nDCG@10 (mAP if the headline is nDCG@10) is the secondary family",
    )
    args = ap.parse_args(argv)
    try:
        rep = build_report(args.sweep_dir, args.hybrid_alpha, metric=args.metric)
        paths = write_report(rep, args.out)
    except MlirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(rep.answer))
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
