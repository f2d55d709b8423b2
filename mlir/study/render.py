"""The report's files: report.md, summary.md, report.csv, significance.csv and the two figures.

Why separate from the statistics: these are views of a :class:`~mlir.study.report.SweepReport`; the
numbers are computed once in :mod:`mlir.study.report` and only formatted here, so a figure can never
disagree with the table it illustrates.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlir.core.atomic import open_atomic, write_text
from mlir.study.runs import BASELINES, BIAS, SETTINGS, UNTRAINED, arm_label, fmt_alpha, unit_values

if TYPE_CHECKING:
    from mlir.study.report import SweepReport

TABLE_COLUMNS = (
    "benchmark", "setting", "metric", "arm", "alpha", "n_runs", "unit", "n_units", "units", "seeds",
    "mean", "sd", "ci95_low", "ci95_high",
)  # fmt: skip
SIG_COLUMNS = (
    "family", "benchmark", "setting", "metric", "hybrid_alpha", "baseline", "baseline_alpha", "status",
    "design", "n_units", "n_questions", "mean_hybrid", "mean_baseline", "diff", "rel_diff", "se", "df", "df_satterthwaite",
    "diff_ci95_low", "diff_ci95_high", "effect_size", "p_value", "p_holm", "m_family", "mde", "mde_level",
    "mde_unadjusted", "seeds_per_fold", "seed_share", "mde_projected_as_run", "mde_seeds_10", "mde_seeds_inf", "verdict",
)  # fmt: skip


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV; lists joined by spaces, missing values empty."""
    with open_atomic(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    c: (" ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c, ""))
                    for c in columns
                }
            )


def _f(v: Any, digits: int = 4) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _digits(metric: str) -> int:
    return 2 if metric == BIAS else 4


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    d = _digits(row["metric"])
    if math.isnan(row["ci95_low"]):
        return f"{_f(row['mean'], d)} (n={row['n_units']})"
    return f"{_f(row['mean'], d)} [{_f(row['ci95_low'], d)}, {_f(row['ci95_high'], d)}]"


def _p(p: Any) -> str:
    if p is None or p == "" or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_row(rep: SweepReport, b: str, s: str, m: str, arm: Any) -> dict[str, Any] | None:
    label = arm_label(arm)
    return next(
        (
            r
            for r in rep.table
            if r["benchmark"] == b and r["setting"] == s and r["metric"] == m and r["arm"] == label
        ),
        None,
    )


def _layout(rep: SweepReport) -> list[str]:
    folds = sorted({r.fold for r in rep.complete_runs})
    out = ["| arm | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---" * (len(folds) + 1) + "|"]
    for arm, rs in rep.arms.items():
        cells = []
        for f in folds:
            seeds = sorted(r.seed for r in rs if r.fold == f and r.seed is not None)
            n = sum(1 for r in rs if r.fold == f)
            cells.append(
                "—"
                if not n
                else (f"seeds {', '.join(map(str, seeds))}" if arm != UNTRAINED else f"{n} job(s)")
            )
        out.append(f"| {arm_label(arm)} | " + " | ".join(cells) + " |")
    return out


def _design_lines(rep: SweepReport) -> list[str]:
    unit = (
        "the fold (its seeds averaged first: they are sub-samples of the fold)"
        if rep.by_fold
        else "the run (one fold: each seed is a unit)"
    )
    out = [f"- Unit of replication: {unit}."]
    for b in rep.benchmarks:
        d = rep.designs[b]
        what = {
            "nested": "each question belongs to one fold (t-test on the fold means)",
            "crossed": "every unit answers the same questions (two-way random effects: units x questions)",
            "partial": "the units' questions overlap partly (t-test on the unit means)",
        }[d]
        out.append(f"- `{b}`: {d} — {what}; {rep.questions[b]} questions.")
    out.append(f"- Hybrid: {rep.hybrid_choice}.")
    out.append(
        f"- Primary family (Holm): {rep.metric} mono/cross/multi and multi rank distance, every benchmark x "
        f"baseline ({rep.family_size('primary')} tests). Secondary family (Holm within itself): "
        f"{rep.secondary} ({rep.family_size('secondary')} tests). Hybrid vs untrained: descriptive, not "
        "corrected. Method: docs/statistics.md."
    )
    return out


def arm_tables(rep: SweepReport, heading: str = "##") -> list[str]:
    """Per benchmark: every arm's mean [95 % t-interval over units] of each setting and metric."""
    from mlir.study.report import table_metrics

    cols = table_metrics(rep)
    out = []
    for b in rep.benchmarks:
        out.append(f"{heading} {b}: mean over {rep.unit}s [95 % t-interval over {rep.unit}s]\n")
        if rep.designs[b] != "nested":
            out.append(
                "The interval is over units answering the same questions: it holds run-to-run variance, "
                "not the question sample (the tests hold both).\n"
            )
        out.append("| arm | " + " | ".join(f"{s} {m}" for s, m in cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for arm in rep.arms:
            out.append(
                f"| {arm_label(arm)} | "
                + " | ".join(_cell(table_row(rep, b, s, m, arm)) for s, m in cols)
                + " |"
            )
        out.append("")
    return out


def to_markdown(rep: SweepReport, figures: Sequence[str] = ()) -> str:
    """The whole report as markdown: design, runs, gaps, tables, tests, figures and the answer."""
    complete = rep.complete_runs
    out = [
        f"# Hybrid batches: study report\n\nSweep: `{rep.sweep_dir}` — {len(rep.runs)} job(s), "
        f"{len(complete)} finished and used. alpha=1 is X-X-mono, alpha=0 is X-Y, anything in between is "
        "hybrid; `untrained` is the backbone without fine-tuning.\n",
        "## Design\n",
        *_design_lines(rep),
        "",
        "## Runs\n",
        *_layout(rep),
        "",
    ]
    if rep.missing_alphas:
        grid = "the sweep's grid" if rep.expected is not None else "the baselines"
        out.append(
            f"**Missing alphas** ({grid}): {', '.join(arm_label(a) for a in rep.missing_alphas)} — no "
            "finished run; every comparison that needs them is marked as not tested.\n"
        )
    out += [f"- Note: {n}" for n in rep.notes]
    out.append("")
    out += arm_tables(rep)
    out.append(f"## Tests: hybrid vs X-X-mono and vs X-Y\n\nHybrid: {rep.hybrid_choice}.\n")
    sig = [r for r in rep.significance if r["family"] != "descriptive"]
    if sig:
        out += _sig_table(sig)
    else:
        out.append("Not computed (see the notes above).\n")
    out += seed_projection_table(rep)
    desc = [r for r in rep.significance if r["family"] == "descriptive"]
    if desc:
        out.append("## Fine-tuning vs untrained (descriptive, not Holm-corrected)\n")
        out += _sig_table(desc)
    if figures:
        out.append("## Figures\n")
        out += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
        out.append("")
    out.append("## Answer\n")
    out += rep.answer
    return "\n".join(out) + "\n"


def seed_projection_table(rep: SweepReport) -> list[str]:
    """The primary comparisons' MDE as measured and projected to more seeds (mlir.study.power)."""
    rows = [r for r in rep.significance if r["family"] == "primary" and "mde_seeds_inf" in r]
    if not rows:
        return []
    out = [
        "## What more seeds would buy (projection, not a test)\n",
        "Each primary comparison's minimum detectable effect (80 % power at its Holm level), measured, and "
        "projected from its variance split into the folds' own part and seed noise: with the seeds that "
        "were run (the projection's baseline; it rests on the seed variance, estimated on more df than "
        "the folds' spread), with 10 and with unlimited seeds per fold and arm. More seeds shrink the "
        "seed part only (method: mlir/study/power.py, docs/statistics.md).\n",
        "| benchmark | setting | metric | vs | seeds per fold | seed share of the fold variance "
        "| MDE measured | projected: as run | 10 seeds | unlimited seeds |",
        "|---" * 10 + "|",
    ]
    for r in rows:
        d = _digits(r["metric"])
        out.append(
            f"| {r['benchmark']} | {r['setting']} | {r['metric']} | {r['baseline']} | {r['seeds_per_fold']:.3g} | "
            f"{_f(r['seed_share'] * 100, 0)} % | {_f(r['mde'], d)} | {_f(r['mde_projected_as_run'], d)} | "
            f"{_f(r['mde_seeds_10'], d)} | {_f(r['mde_seeds_inf'], d)} |"
        )
    out.append("")
    return out


def _sig_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| family | benchmark | setting | metric | vs | design | U | Q | diff [95 % CI] | rel. | p | Holm p | MDE | verdict |",
        "|---" * 14 + "|",
    ]
    for r in rows:
        head = f"| {r['family']} | {r['benchmark']} | {r['setting']} | {r['metric']} | {r['baseline']} |"
        if r.get("status") != "ok":
            out.append(f"{head} | | | {r['status']} | | | | | {r['verdict']} |")
            continue
        d = _digits(r["metric"])
        rel = r.get("rel_diff", math.nan)
        out.append(
            f"{head} {r['design']} | {r['n_units']} | {r['n_questions']} | {r['diff']:+.{d}f} "
            f"[{r['diff_ci95_low']:+.{d}f}, {r['diff_ci95_high']:+.{d}f}] | "
            f"{'—' if math.isnan(rel) else f'{rel * 100:+.1f} %'} | {_p(r['p_value'])} | {_p(r['p_holm'])} | "
            f"{_f(r.get('mde'), d)} | {r['verdict']} |"
        )
    out.append("")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_alpha_curves(rep: SweepReport, path: Path) -> Path:
    """Each metric vs alpha (a line per setting, 95 % t-intervals over units), the untrained backbone
    as a dashed line of the setting's colour, the hybrid alpha as a dotted vertical line."""
    plt = _pyplot()
    metrics = [rep.metric, rep.secondary, BIAS]
    nb = max(len(rep.benchmarks), 1)
    fig, axes = plt.subplots(nb, len(metrics), figsize=(4.6 * len(metrics), 3.6 * nb), squeeze=False)
    colors = dict(zip(SETTINGS, ("C0", "C1", "C2")))
    for i, b in enumerate(rep.benchmarks or ["(no benchmark)"]):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            for s in SETTINGS if m != BIAS else ("multi",):
                pts = [(a, table_row(rep, b, s, m, a)) for a in rep.alphas]
                pts = [(a, r) for a, r in pts if r is not None]
                if pts:
                    x = np.array([a for a, _ in pts])
                    y = np.array([r["mean"] for _, r in pts])
                    lo = np.array([r["ci95_low"] for _, r in pts])
                    hi = np.array([r["ci95_high"] for _, r in pts])
                    err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
                    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colors[s], label=s)
                un = table_row(rep, b, s, m, UNTRAINED)
                if un is not None:
                    ax.axhline(un["mean"], color=colors[s], ls="--", lw=1, label=f"{s}: untrained")
            if rep.hybrid_alpha is not None:
                ax.axvline(rep.hybrid_alpha, color="grey", ls=":", lw=1)
            better = "lower = less language bias" if m == BIAS else "higher = better"
            ax.set_title(
                f"{b}: {m} vs alpha ({better})\nmean over {rep.unit}s, bars: 95 % t-interval; dashed: untrained",
                fontsize=8,
            )
            ax.set_xlabel("alpha  (0 = X-Y, 1 = X-X-mono; dotted: hybrid tested)")
            ax.set_ylabel(m)
            ax.set_xticks(rep.alphas or [0.0, 0.5, 1.0])
            if ax.has_data():
                ax.legend(fontsize=6)
    fig.tight_layout()
    with open_atomic(path, "wb") as f:
        fig.savefig(f, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def lang_deltas(rep: SweepReport, benchmark: str, base_alpha: float, metric: str | None = None):
    """(query languages, settings, [L, S] hybrid minus baseline of the per-language mean over units)."""
    metric = metric or rep.metric
    if rep.hybrid_alpha is None or base_alpha not in rep.arms:
        return [], list(SETTINGS), np.zeros((0, len(SETTINGS)))

    def per_lang(arm: float) -> dict[tuple[str, str], float]:
        runs = rep.arms[arm]
        keys = {k for r in runs for k in r.metrics if k.startswith(f"{benchmark}/")}
        out = {}
        for k in keys:
            parts = k.split("/")
            if len(parts) == 4 and parts[2] == metric and parts[1] in SETTINGS and "-" not in parts[3]:
                vals = unit_values(runs, k, rep.by_fold)
                if vals:
                    out[(parts[3], parts[1])] = float(np.mean(list(vals.values())))
        return out

    hyb, base = per_lang(rep.hybrid_alpha), per_lang(base_alpha)
    langs = sorted({lang for lang, _ in hyb})
    mat = np.full((len(langs), len(SETTINGS)), np.nan)
    for i, lang in enumerate(langs):
        for j, s in enumerate(SETTINGS):
            if (lang, s) in hyb and (lang, s) in base:
                mat[i, j] = hyb[(lang, s)] - base[(lang, s)]
    return langs, list(SETTINGS), mat


def plot_lang_heatmap(rep: SweepReport, path: Path) -> Path:
    """Per query language and setting: hybrid minus X-X-mono and minus X-Y (headline metric)."""
    plt = _pyplot()
    nb = max(len(rep.benchmarks), 1)
    fig, axes = plt.subplots(nb, 2, figsize=(10, 1.4 + 0.34 * 12 * nb), squeeze=False)
    for i, b in enumerate(rep.benchmarks or ["(no benchmark)"]):
        for j, (name, base_alpha) in enumerate(BASELINES.items()):
            ax = axes[i][j]
            langs, settings, mat = lang_deltas(rep, b, base_alpha)
            hyb = "hybrid" if rep.hybrid_alpha is None else f"hybrid (alpha={fmt_alpha(rep.hybrid_alpha)})"
            title = (
                f"{b}: {hyb} - {name} (alpha={fmt_alpha(base_alpha)}), {rep.metric}\n"
                f"per query language, mean over {rep.unit}s; descriptive, not tested"
            )
            ax.set_title(title, fontsize=8)
            if not langs:
                why = (
                    rep.hybrid_choice
                    if rep.hybrid_alpha is None
                    else f"alpha={fmt_alpha(base_alpha)} missing"
                )
                ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=8)
                ax.set_axis_off()
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
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with open_atomic(path, "wb") as f:
        fig.savefig(f, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def write_all(rep: SweepReport, out: Path) -> dict[str, Path]:
    """Every file of the report into ``out``; returns their paths by kind."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "report.csv",
        "significance": out / "significance.csv",
        "curves": out / "alpha_curves.png",
        "heatmap": out / "lang_heatmap.png",
        "md": out / "report.md",
        "summary": out / "summary.md",
    }
    write_csv(paths["csv"], rep.table, TABLE_COLUMNS)
    write_csv(paths["significance"], rep.significance, SIG_COLUMNS)
    plot_alpha_curves(rep, paths["curves"])
    plot_lang_heatmap(rep, paths["heatmap"])
    write_text(paths["md"], to_markdown(rep, figures=[str(paths["curves"]), str(paths["heatmap"])]))
    from mlir.study.summary import summary_markdown

    write_text(paths["summary"], summary_markdown(rep))
    return paths
