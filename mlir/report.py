"""Answer the research question from an alpha sweep: ``python -m mlir.report <sweep dir>``.

Why: one sweep (``python train.py -m hparams_search=alpha_sweep ...``) leaves one directory per job
with ``.hydra/config.yaml`` (alpha, seed), ``metrics.json`` (means) and ``per_query.npz`` (every
query's scores, :mod:`mlir.eval.per_query`). This module turns them into

* ``report.csv``: for every benchmark, setting (mono/cross/multi), metric (nDCG@10, mAP; rank distance
  for multi) and alpha, the mean over seeds with a 95 % t-interval (n=1: no interval, NaN);
* ``significance.csv``: hybrid (the best alpha strictly between 0 and 1, or ``--hybrid-alpha``) vs
  X-X-mono (alpha=1) and vs X-Y (alpha=0), per benchmark, setting and metric: a paired test over
  *queries* (scores averaged over seeds; a query's rows — its language pairs — form one unit, so
  parallel translations of a question are not counted as independent): the mean difference, its 95 %
  paired-bootstrap interval, Cohen's d_z and a two-sided sign-flip permutation p-value;
* ``alpha_curves.png`` (each metric vs alpha, with intervals), ``lang_heatmap.png`` (per-language
  change of hybrid vs X-X-mono and vs X-Y);
* ``report.md``: the tables, what is missing (alphas without a finished run, unfinished jobs) and a
  plain-language answer per setting.

The hybrid alpha picked automatically is chosen on the same evaluation data it is then tested on
(optimistic); ``--hybrid-alpha 0.5`` (the paper's value) fixes it in advance.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlir.errors import ConfigError, MlirError

SETTINGS = ("mono", "cross", "multi")
METRICS = ("ndcg@10", "map")
BIAS = "rank_distance"
DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
BASELINES = {"X-X-mono": 1.0, "X-Y": 0.0}
LOWER_IS_BETTER = {BIAS}


# ----------------------------------------------------------------------------------------- the runs


@dataclass
class Run:
    """One job of the sweep."""

    path: Path
    alpha: float | None
    seed: int | None
    schedule: str
    metrics: dict[str, float] | None  # ``eval/`` keys, prefix removed; None: no metrics.json
    per_query: Path | None
    optimized_metric: str | None = None

    @property
    def complete(self) -> bool:
        return bool(self.metrics)


def _akey(alpha: float) -> float:
    return round(float(alpha), 6)


def fmt_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def discover_runs(sweep_dir: Path) -> list[Run]:
    """Every job directory (one holding ``.hydra/config.yaml``) below ``sweep_dir``."""
    from omegaconf import OmegaConf

    runs = []
    for cfg_file in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        run_dir = cfg_file.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        cfg = OmegaConf.load(cfg_file)

        def get(key: str, default: Any = None, cfg: Any = cfg) -> Any:
            try:
                v = OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
            except Exception:  # noqa: BLE001 - an unresolvable interpolation: treat as unknown
                return default
            return default if v is None else v

        alpha = get("sampler.alpha")
        seed = get("seed")
        metrics = None
        mfile = run_dir / "metrics.json"
        if mfile.is_file():
            try:
                raw = json.loads(mfile.read_text())
                metrics = {k[5:]: float(v) for k, v in raw.items() if k.startswith("eval/")} or None
            except (OSError, ValueError):
                metrics = None
        pq = run_dir / "per_query.npz"
        runs.append(
            Run(
                path=run_dir,
                alpha=float(alpha) if isinstance(alpha, int | float) else None,
                seed=int(seed) if isinstance(seed, int) else None,
                schedule=str(get("sampler.schedule", "constant")),
                metrics=metrics,
                per_query=pq if pq.is_file() else None,
                optimized_metric=get("optimized_metric"),
            )
        )
    return runs


def expected_alphas(sweep_dir: Path) -> list[float] | None:
    """The alpha grid the sweep asked for (``multirun.yaml``), or ``None`` when it is not a grid."""
    from omegaconf import OmegaConf

    f = sweep_dir / "multirun.yaml"
    if not f.is_file():
        return None
    try:
        cfg = OmegaConf.load(f)
        spec = (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).get("sampler.alpha")
        for o in OmegaConf.select(cfg, "hydra.overrides.task") or []:  # -m sampler.alpha=0,0.5,1
            if str(o).startswith("sampler.alpha="):
                spec = str(o).split("=", 1)[1]
        if spec is None:
            return None
        return sorted({_akey(float(x)) for x in str(spec).split(",")})
    except Exception:  # noqa: BLE001 - optuna's interval(...) etc.: no fixed grid
        return None


# ------------------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std and the t-interval of the mean; n < 2 gives a NaN interval (stated in the report)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def paired_test(
    a: dict[tuple[str, ...], float],
    b: dict[tuple[str, ...], float],
    *,
    n_boot: int = 10000,
    n_perm: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired comparison of per-query scores ``a`` (hybrid) and ``b`` (baseline).

    Keys are ``(q_lang, d_lang, qid)``; rows sharing a ``qid`` (the same question in several
    languages/pairs) are averaged into one unit first. Returns the unit count, both means, their
    difference ``a - b`` with a 95 % bootstrap interval (units resampled), Cohen's d_z and the
    two-sided sign-flip permutation p-value (``(1 + #|perm| >= |obs|) / (1 + n_perm)``).
    """
    common = [k for k in a if k in b and not (math.isnan(a[k]) or math.isnan(b[k]))]
    units: dict[str, list[tuple[float, float]]] = {}
    for k in common:
        units.setdefault(k[-1], []).append((a[k], b[k]))
    if not units:
        return {"n_queries": 0, "n_rows": 0}
    pa = np.array([np.mean([x for x, _ in v]) for v in units.values()])
    pb = np.array([np.mean([y for _, y in v]) for v in units.values()])
    d = pa - pb
    n, obs = len(d), float(d.mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n)
    boots = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        boots.append(d[idx].mean(axis=1))
    boot = np.concatenate(boots)
    hits = 0
    for start in range(0, n_perm, chunk):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(chunk, n_perm - start), n))
        hits += int((np.abs((signs * d).mean(axis=1)) >= abs(obs) - 1e-12).sum())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    return {
        "n_queries": n,
        "n_rows": len(common),
        "mean_hybrid": float(pa.mean()),
        "mean_baseline": float(pb.mean()),
        "diff": obs,
        "rel_diff": obs / float(pb.mean()) if pb.mean() else math.nan,
        "diff_ci95_low": float(np.quantile(boot, 0.025)),
        "diff_ci95_high": float(np.quantile(boot, 0.975)),
        "cohens_dz": obs / sd if sd and not math.isnan(sd) else math.nan,
        "p_value": (hits + 1) / (n_perm + 1) if obs != 0 or sd else 1.0,
    }


# ---------------------------------------------------------------------------------------- the report


@dataclass
class SweepReport:
    """Everything :func:`build_report` found and computed (the files are views of this)."""

    sweep_dir: Path
    runs: list[Run]
    benchmarks: list[str]
    alphas: list[float]
    seeds: dict[float, list[int | None]]
    expected: list[float] | None
    missing_alphas: list[float]
    hybrid_alpha: float | None
    hybrid_choice: str
    table: list[dict[str, Any]] = field(default_factory=list)
    significance: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)

    @property
    def complete_runs(self) -> list[Run]:
        return [r for r in self.runs if r.complete and r.alpha is not None and r.schedule == "constant"]


def _metric_names(setting: str) -> tuple[str, ...]:
    return (*METRICS, BIAS) if setting == "multi" else METRICS


def _benchmarks(runs: Iterable[Run]) -> list[str]:
    names: dict[str, None] = {}
    for r in runs:
        for k in r.metrics or {}:
            parts = k.split("/")
            if len(parts) == 3 and parts[1] in SETTINGS:
                names[parts[0]] = None
    return list(names)


def _by_alpha(runs: Iterable[Run]) -> dict[float, list[Run]]:
    out: dict[float, list[Run]] = {}
    for r in runs:
        out.setdefault(_akey(r.alpha), []).append(r)  # type: ignore[arg-type]
    return dict(sorted(out.items()))


def _choose_hybrid(
    by_alpha: dict[float, list[Run]], benchmarks: list[str], hybrid_alpha: float | None
) -> tuple[float | None, str]:
    if hybrid_alpha is not None:
        a = _akey(hybrid_alpha)
        if a not in by_alpha:
            return None, f"alpha={fmt_alpha(a)} was asked for (--hybrid-alpha) but has no finished run"
        return a, f"alpha={fmt_alpha(a)}, fixed in advance (--hybrid-alpha)"
    inner = [a for a in by_alpha if 0.0 < a < 1.0]
    if not inner:
        return None, "no hybrid alpha (strictly between 0 and 1) has a finished run"
    runs = [r for a in inner for r in by_alpha[a]]
    key = next((r.optimized_metric for r in runs if r.optimized_metric), None)
    key = key[5:] if key and key.startswith("eval/") else key
    if not key or not any(key in (r.metrics or {}) for r in runs):
        key = f"{benchmarks[0]}/avg/ndcg@10" if benchmarks else None

    def score(a: float) -> float:
        vals = [r.metrics[key] for r in by_alpha[a] if r.metrics and key in r.metrics]
        return float(np.mean(vals)) if vals else -math.inf

    best = max(inner, key=score)
    return best, (
        f"alpha={fmt_alpha(best)}: the best mean `{key}` among the hybrid alphas "
        f"{', '.join(fmt_alpha(a) for a in inner)} (chosen on the evaluation data itself: optimistic; "
        "fix it in advance with --hybrid-alpha)"
    )


_PQ_CACHE: dict[Path, dict[str, np.ndarray]] = {}


def _per_query(run: Run) -> dict[str, np.ndarray] | None:
    from mlir.eval.per_query import read_per_query

    if run.per_query is None:
        return None
    if run.per_query not in _PQ_CACHE:
        _PQ_CACHE[run.per_query] = read_per_query(run.per_query)
    return _PQ_CACHE[run.per_query]


def _scores_over_seeds(
    runs: list[Run], benchmark: str, setting: str, metric: str
) -> dict[tuple[str, ...], float] | None:
    """Per-query scores of one alpha, averaged over its seeds (queries present in every seed)."""
    per_seed = []
    for r in runs:
        pq = _per_query(r)
        if pq is None or metric not in pq:
            continue
        m = (pq["benchmark"] == benchmark) & (pq["setting"] == setting)
        keys = zip(pq["q_lang"][m].tolist(), pq["d_lang"][m].tolist(), pq["qid"][m].tolist())
        per_seed.append(dict(zip(keys, pq[metric][m].tolist())))
    if not per_seed:
        return None
    common = set(per_seed[0]).intersection(*per_seed[1:])
    return {k: float(np.mean([s[k] for s in per_seed])) for k in common}


def build_report(
    sweep_dir: str | Path,
    hybrid_alpha: float | None = None,
    n_boot: int = 10000,
    n_perm: int = 10000,
    seed: int = 0,
) -> SweepReport:
    """Collect the sweep's runs, aggregate over seeds and test hybrid against both baselines."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise MlirError("sweep directory does not exist", where=str(sweep_dir))
    runs = discover_runs(sweep_dir)
    if not runs:
        raise MlirError("no job directories (.hydra/config.yaml) found", where=str(sweep_dir))
    notes = []
    unfinished = [r for r in runs if not r.complete]
    if unfinished:
        notes.append(
            f"{len(unfinished)} job(s) without metrics.json (unfinished or failed), left out: "
            + ", ".join(str(r.path.relative_to(sweep_dir)) for r in unfinished)
        )
    scheduled = [r for r in runs if r.complete and r.schedule != "constant"]
    if scheduled:
        notes.append(
            f"{len(scheduled)} job(s) with an alpha schedule ({scheduled[0].schedule}), not a fixed alpha: left out"
        )
    no_alpha = [r for r in runs if r.complete and r.alpha is None]
    if no_alpha:
        notes.append(f"{len(no_alpha)} job(s) without a numeric sampler.alpha, left out")
    good = [r for r in runs if r.complete and r.alpha is not None and r.schedule == "constant"]
    by_alpha = _by_alpha(good)
    benchmarks = _benchmarks(good)
    expected = expected_alphas(sweep_dir)
    wanted = expected if expected is not None else sorted(BASELINES.values())  # no grid (e.g. Optuna)
    missing = [a for a in wanted if a not in by_alpha]
    h_alpha, h_choice = _choose_hybrid(by_alpha, benchmarks, hybrid_alpha)
    rep = SweepReport(
        sweep_dir=sweep_dir,
        runs=runs,
        benchmarks=benchmarks,
        alphas=list(by_alpha),
        seeds={a: [r.seed for r in rs] for a, rs in by_alpha.items()},
        expected=expected,
        missing_alphas=missing,
        hybrid_alpha=h_alpha,
        hybrid_choice=h_choice,
        notes=notes,
    )
    for b in benchmarks:
        for s in SETTINGS:
            for m in _metric_names(s):
                key = f"{b}/{s}/{m}"
                for a, rs in by_alpha.items():
                    vals = [r.metrics[key] for r in rs if r.metrics and key in r.metrics]
                    if not vals:
                        continue
                    seeds = [r.seed for r in rs if r.metrics and key in r.metrics]
                    rep.table.append(
                        {"benchmark": b, "setting": s, "metric": m, "alpha": a, "seeds": seeds}
                        | t_interval(vals)
                    )
    if any(row["n"] == 1 for row in rep.table):
        notes.append("alphas with a single seed have no interval (NaN): a t-interval needs n >= 2")
    if h_alpha is not None:
        if not any(r.per_query for r in good):
            notes.append("no per_query.npz in the runs: significance tests skipped (needs per-query scores)")
        else:
            for b in benchmarks:
                for s in SETTINGS:
                    for m in _metric_names(s):
                        hyb = _scores_over_seeds(by_alpha[h_alpha], b, s, m)
                        for name, base_alpha in BASELINES.items():
                            base = _scores_over_seeds(by_alpha.get(base_alpha, []), b, s, m)
                            row = {
                                "benchmark": b,
                                "setting": s,
                                "metric": m,
                                "hybrid_alpha": h_alpha,
                                "baseline": name,
                                "baseline_alpha": base_alpha,
                            }
                            if hyb is None or base is None:
                                row["status"] = "missing " + (
                                    f"alpha={fmt_alpha(base_alpha)}"
                                    if base is None
                                    else "hybrid per-query scores"
                                )
                            else:
                                row |= paired_test(hyb, base, n_boot=n_boot, n_perm=n_perm, seed=seed)
                                row["status"] = "ok" if row.get("n_queries") else "no common queries"
                            rep.significance.append(row)
    rep.answer = plain_answer(rep)
    return rep


# ------------------------------------------------------------------------------------------- writing


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _cell(row: dict[str, Any] | None, metric: str) -> str:
    if row is None:
        return "—"
    d = 2 if metric == BIAS else 4
    if math.isnan(row["ci95_low"]):
        return f"{_f(row['mean'], d)} (n={row['n']})"
    return f"{_f(row['mean'], d)} [{_f(row['ci95_low'], d)}, {_f(row['ci95_high'], d)}]"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _verdict(row: dict[str, Any], alpha_level: float = 0.05) -> tuple[str, str]:
    """(short verdict, one sentence) for one significance row."""
    if row.get("status") != "ok":
        return "n/a", f"not tested ({row.get('status')})"
    lower = row["metric"] in LOWER_IS_BETTER
    diff, p = row["diff"], row["p_value"]
    better = diff < 0 if lower else diff > 0
    rel = row.get("rel_diff", math.nan)
    size = f"{diff:+.4f}" + ("" if math.isnan(rel) else f" ({rel * 100:+.1f} %)")
    pv = "p<0.001" if p < 0.001 else f"p={p:.3f}"
    if p < alpha_level and diff != 0:
        word = "better" if better else "worse"
        how = f"{'lower' if diff < 0 else 'higher'} by {abs(diff):.4f}" if lower else f"by {size}"
        return word, f"{word}, {how}, {pv}, d_z={_f(row['cohens_dz'], 2)}"
    return "no difference", f"no significant difference ({size}, {pv})"


def plain_answer(rep: SweepReport) -> list[str]:
    """One paragraph per benchmark: does hybrid improve mono / cross / multi, and by how much."""
    if rep.hybrid_alpha is None:
        return [f"The question cannot be answered from this sweep: {rep.hybrid_choice}."]
    if not rep.significance:
        return ["No per-query scores were found, so the comparison could not be tested (see the notes)."]
    lines = []
    for b in rep.benchmarks:
        lines.append(f"**{b}** — hybrid batches (alpha={fmt_alpha(rep.hybrid_alpha)}) compared with:")
        for s in SETTINGS:
            parts, verdicts = [], []
            for name in BASELINES:
                row = next(
                    (
                        r
                        for r in rep.significance
                        if r["benchmark"] == b
                        and r["setting"] == s
                        and r["metric"] == "ndcg@10"
                        and r["baseline"] == name
                    ),
                    None,
                )
                if row is None:
                    continue
                v, sentence = _verdict(row)
                verdicts.append(v)
                parts.append(f"{name}: {sentence}")
            if not parts:
                continue
            if all(v == "better" for v in verdicts):
                head = "**yes**, hybrid improves it over both baselines"
            elif "better" in verdicts and "worse" not in verdicts:
                head = "**partly**: hybrid improves it over one baseline and matches the other"
            elif "worse" in verdicts and "better" not in verdicts:
                head = "**no**: hybrid is worse than at least one baseline"
            elif "better" in verdicts:
                head = "**mixed**: better than one baseline, worse than the other"
            elif all(v == "n/a" for v in verdicts):
                head = "not testable"
            else:
                head = "**no significant change** against either baseline"
            lines.append(f"- {s} nDCG@10 — {head}. " + "; ".join(parts) + ".")
        bias = [
            r
            for r in rep.significance
            if r["benchmark"] == b and r["metric"] == BIAS and r.get("status") == "ok"
        ]
        if bias:
            lines.append(
                "- language bias (multi rank distance, lower = less biased) — "
                + "; ".join(f"{r['baseline']}: {_verdict(r)[1]}" for r in bias)
                + "."
            )
    lines.append(
        "Differences are hybrid minus baseline, per query (averaged over seeds and over a question's "
        "language pairs), tested with a two-sided sign-flip permutation test at the 5 % level; they are "
        "not corrected for testing several settings and metrics."
    )
    return lines


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    c: (" ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c, ""))
                    for c in columns
                }
            )


TABLE_COLUMNS = (
    "benchmark",
    "setting",
    "metric",
    "alpha",
    "n",
    "seeds",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
)
SIG_COLUMNS = (
    "benchmark", "setting", "metric", "hybrid_alpha", "baseline", "baseline_alpha", "status", "n_queries",
    "n_rows", "mean_hybrid", "mean_baseline", "diff", "rel_diff", "diff_ci95_low", "diff_ci95_high",
    "cohens_dz", "p_value",
)  # fmt: skip


def _row(rep: SweepReport, b: str, s: str, m: str, a: float) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in rep.table
            if r["benchmark"] == b and r["setting"] == s and r["metric"] == m and r["alpha"] == a
        ),
        None,
    )


def alpha_label(a: float) -> str:
    return {1.0: "1 (X-X-mono)", 0.0: "0 (X-Y)"}.get(a, fmt_alpha(a))


def to_markdown(rep: SweepReport, figures: Sequence[str] = ()) -> str:
    complete = rep.complete_runs
    out = [
        f"# Hybrid batches: alpha sweep report\n\nSweep: `{rep.sweep_dir}` — {len(rep.runs)} job(s), "
        f"{len(complete)} finished with a fixed alpha. alpha=1 is X-X-mono, alpha=0 is X-Y, anything in "
        "between is hybrid.\n",
        "## Runs\n",
        "| alpha | seeds |\n|---|---|",
        *[f"| {alpha_label(a)} | {', '.join(str(s) for s in seeds)} |" for a, seeds in rep.seeds.items()],
        "",
    ]
    if rep.missing_alphas:
        grid = "the sweep's grid" if rep.expected is not None else "the baselines"
        out.append(
            f"**Missing alphas** ({grid}): {', '.join(alpha_label(a) for a in rep.missing_alphas)} — no "
            "finished run; everything that needs them below is marked as missing.\n"
        )
    for n in rep.notes:
        out.append(f"- Note: {n}")
    out.append("")
    for b in rep.benchmarks:
        out.append(f"## {b}: mean over seeds [95 % t-interval]\n")
        cols = [(s, m) for s in SETTINGS for m in _metric_names(s)]
        out.append("| alpha | " + " | ".join(f"{s} {m}" for s, m in cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for a in rep.alphas:
            out.append(
                f"| {alpha_label(a)} | " + " | ".join(_cell(_row(rep, b, s, m, a), m) for s, m in cols) + " |"
            )
        out.append("")
    out.append(f"## Significance: hybrid vs X-X-mono and vs X-Y\n\nHybrid: {rep.hybrid_choice}.\n")
    if rep.significance:
        out.append(
            "| benchmark | setting | metric | vs | queries | hybrid | baseline | diff [95 % CI] | rel. | d_z | p |"
        )
        out.append("|---" * 11 + "|")
        for r in rep.significance:
            if r.get("status") != "ok":
                out.append(
                    f"| {r['benchmark']} | {r['setting']} | {r['metric']} | {r['baseline']} | "
                    f"{r['status']} | | | | | | |"
                )
                continue
            out.append(
                f"| {r['benchmark']} | {r['setting']} | {r['metric']} | {r['baseline']} | {r['n_queries']} | "
                f"{_f(r['mean_hybrid'])} | {_f(r['mean_baseline'])} | {r['diff']:+.4f} "
                f"[{r['diff_ci95_low']:+.4f}, {r['diff_ci95_high']:+.4f}] | "
                f"{_f(r['rel_diff'] * 100, 1)} % | {_f(r['cohens_dz'], 2)} | {_p(r['p_value'])} |"
            )
        out.append("")
    else:
        out.append("Not computed (see the notes above).\n")
    if figures:
        out.append("## Figures\n")
        out += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        out.append("")
    out.append("## Answer\n")
    out += rep.answer
    return "\n".join(out) + "\n"


def plot_alpha_curves(rep: SweepReport, path: Path) -> Path:
    """Each metric vs alpha (a line per setting), with the t-intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = [*METRICS, BIAS]
    nb = max(len(rep.benchmarks), 1)
    fig, axes = plt.subplots(nb, len(cols), figsize=(4.2 * len(cols), 3.2 * nb), squeeze=False)
    for i, b in enumerate(rep.benchmarks or ["(no benchmark)"]):
        for j, m in enumerate(cols):
            ax = axes[i][j]
            for s in SETTINGS if m != BIAS else ("multi",):
                rows = [_row(rep, b, s, m, a) for a in rep.alphas]
                pts = [(a, r) for a, r in zip(rep.alphas, rows) if r is not None]
                if not pts:
                    continue
                x = np.array([a for a, _ in pts])
                y = np.array([r["mean"] for _, r in pts])
                lo = np.array([r["ci95_low"] for _, r in pts])
                hi = np.array([r["ci95_high"] for _, r in pts])
                err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=s)
            if rep.hybrid_alpha is not None:
                ax.axvline(rep.hybrid_alpha, color="grey", ls=":", lw=1)
            ax.set_title(f"{b}: {m}" + (" (lower = less bias)" if m == BIAS else ""), fontsize=9)
            ax.set_xlabel("alpha  (0 = X-Y, 1 = X-X-mono)")
            ax.set_xticks(rep.alphas or list(DEFAULT_GRID))
            if ax.has_data():
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lang_deltas(rep: SweepReport, benchmark: str, base_alpha: float, metric: str = "ndcg@10"):
    """(languages, settings, [L, S] hybrid - baseline of the seed-mean per-language metric; NaN gaps)."""
    by_alpha = _by_alpha(rep.complete_runs)
    if rep.hybrid_alpha is None or base_alpha not in by_alpha:
        return [], list(SETTINGS), np.zeros((0, len(SETTINGS)))

    def per_lang(a: float) -> dict[tuple[str, str], float]:
        acc: dict[tuple[str, str], list[float]] = {}
        for r in by_alpha[a]:
            for k, v in (r.metrics or {}).items():
                parts = k.split("/")
                if len(parts) == 4 and parts[0] == benchmark and parts[2] == metric and "-" not in parts[3]:
                    acc.setdefault((parts[3], parts[1]), []).append(v)
        return {k: float(np.mean(v)) for k, v in acc.items()}

    hyb, base = per_lang(rep.hybrid_alpha), per_lang(base_alpha)
    langs = list(dict.fromkeys(lang for lang, _ in hyb))
    mat = np.full((len(langs), len(SETTINGS)), np.nan)
    for i, lang in enumerate(langs):
        for j, s in enumerate(SETTINGS):
            if (lang, s) in hyb and (lang, s) in base:
                mat[i, j] = hyb[(lang, s)] - base[(lang, s)]
    return langs, list(SETTINGS), mat


def plot_lang_heatmap(rep: SweepReport, path: Path, metric: str = "ndcg@10") -> Path:
    """Per language and setting: hybrid minus X-X-mono, and hybrid minus X-Y (seed means)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nb = max(len(rep.benchmarks), 1)
    fig, axes = plt.subplots(nb, 2, figsize=(9, 0.9 + 0.34 * 12 * nb), squeeze=False)
    for i, b in enumerate(rep.benchmarks or ["(no benchmark)"]):
        for j, (name, base_alpha) in enumerate(BASELINES.items()):
            ax = axes[i][j]
            langs, settings, mat = lang_deltas(rep, b, base_alpha, metric)
            title = f"{b}: hybrid - {name}, {metric}"
            if not langs:
                why = (
                    rep.hybrid_choice
                    if rep.hybrid_alpha is None
                    else f"alpha={fmt_alpha(base_alpha)} missing"
                )
                ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=8)
                ax.set_axis_off()
                ax.set_title(title, fontsize=9)
                continue
            lim = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
            lim = lim or 1e-6
            im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xticks(range(len(settings)), settings)
            ax.set_yticks(range(len(langs)), langs)
            for r in range(mat.shape[0]):
                for c in range(mat.shape[1]):
                    if not np.isnan(mat[r, c]):
                        color = "w" if abs(mat[r, c]) > 0.6 * lim else "k"
                        ax.text(c, r, f"{mat[r, c]:+.3f}", ha="center", va="center", fontsize=7, color=color)
            ax.set_title(title + f" (alpha={fmt_alpha(rep.hybrid_alpha)})", fontsize=9)  # type: ignore[arg-type]
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(rep: SweepReport, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv, significance.csv, alpha_curves.png and lang_heatmap.png."""
    out = Path(out_dir) if out_dir else rep.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "report.csv",
        "significance": out / "significance.csv",
        "curves": out / "alpha_curves.png",
        "heatmap": out / "lang_heatmap.png",
        "md": out / "report.md",
    }
    write_csv(paths["csv"], rep.table, TABLE_COLUMNS)
    write_csv(paths["significance"], rep.significance, SIG_COLUMNS)
    plot_alpha_curves(rep, paths["curves"])
    plot_lang_heatmap(rep, paths["heatmap"])
    paths["md"].write_text(to_markdown(rep, figures=[str(paths["curves"]), str(paths["heatmap"])]))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlir.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", help="the multirun directory (holds <job>/.hydra/config.yaml)")
    ap.add_argument("--out", default=None, help="output directory (default: the sweep directory)")
    ap.add_argument(
        "--hybrid-alpha", type=float, default=None, help="test this alpha (default: best in (0, 1))"
    )
    ap.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    ap.add_argument("--n-perm", type=int, default=10000, help="sign-flip permutations")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    args = ap.parse_args(argv)
    try:
        if args.hybrid_alpha is not None and not 0.0 < args.hybrid_alpha < 1.0:
            raise ConfigError(
                f"must be strictly between 0 and 1, got {args.hybrid_alpha}", where="--hybrid-alpha"
            )
        rep = build_report(
            args.sweep_dir, args.hybrid_alpha, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed
        )
        paths = write_report(rep, args.out)
    except MlirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(rep.answer))
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
