"""The study's summary for a README: its answer in numbers, the comparisons and the alpha tables.

Why: a README's Results section must match ``report.md`` number for number. ``write_report`` writes
this summary as ``summary.md`` from the same :class:`~mlir.study.report.SweepReport` that report.md
comes from, and the command below puts it between two markers in the README, so the match is a
check rather than a hope::

    python -m mlir.study.summary README.md results/hybrid_study/summary.md          # splice it in
    python -m mlir.study.summary README.md results/hybrid_study/summary.md --check  # exit 1 if stale

Everything written here is a number of report.csv / significance.csv in report.md's formats; the
words around it (what the benchmarks are, the paper's figures) belong to the README.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlir.core.atomic import write_text
from mlir.core.errors import DataError, MlirError
from mlir.study.answer import NO_DIFF, _rows, row_verdict, setting_verdict
from mlir.study.render import _digits, _p, arm_tables
from mlir.study.runs import BASELINES, BIAS, LOWER_IS_BETTER, SETTINGS, UNTRAINED, fmt_alpha

if TYPE_CHECKING:
    from mlir.study.report import SweepReport

START = "<!-- study-summary:start: python -m mlir.study.summary writes this block -->"
END = "<!-- study-summary:end -->"


def _diff(row: dict[str, Any]) -> str:
    """``+0.0209 [+0.0165, +0.0254]``: a difference and its 95 % interval, in report.md's digits."""
    d = _digits(row["metric"])
    return f"{row['diff']:+.{d}f} [{row['diff_ci95_low']:+.{d}f}, {row['diff_ci95_high']:+.{d}f}]"


def _comparison_cell(row: dict[str, Any] | None) -> str:
    if row is None or row.get("status") != "ok":
        return "not tested" if row is None else row["status"]
    p = f"p {_p(row['p_value'])}" if row["family"] == "descriptive" else f"Holm p {_p(row['p_holm'])}"
    return f"{_diff(row)}, {p}, MDE {row['mde']:.{_digits(row['metric'])}f}"


def _find(rep: SweepReport, family: str, b: str, s: str, m: str, baseline: str) -> dict[str, Any] | None:
    return next((r for r in _rows(rep, family, b, s, m) if r["baseline"] == baseline), None)


def _primary_rows(rep: SweepReport) -> list[tuple[str, str, str]]:
    """(benchmark, setting, metric) of the primary family, in the answer's order."""
    return [
        (b, s, m)
        for b in rep.benchmarks
        for s, m in [*[(s, rep.metric) for s in SETTINGS], ("multi", BIAS)]
        if any(_find(rep, "primary", b, s, m, n) for n in BASELINES)
    ]


def headline(rep: SweepReport) -> str:
    """How many primary comparisons found a difference, which, and the MDEs of the others."""
    ok = [r for r in rep.significance if r["family"] == "primary" and r["status"] == "ok"]
    if rep.hybrid_alpha is None or not ok:
        return f"No comparison could be made: {rep.hybrid_choice}."
    found = [r for r in ok if row_verdict(r) != NO_DIFF]
    rest = [r for r in ok if row_verdict(r) == NO_DIFF]
    text = (
        f"Hybrid batches (alpha={fmt_alpha(rep.hybrid_alpha)}) against X-X-mono (alpha=1) and X-Y (alpha=0), "
        f"{len(ok)} primary comparisons (Holm-adjusted; {rep.metric} mono / cross / multi and the multi rank "
        f"distance, on {' and '.join(rep.benchmarks)}): "
    )
    if found:
        text += f"a detectable difference in {len(found)}: " + "; ".join(
            f"{r['benchmark']} {r['setting']} {r['metric']} vs {r['baseline']} {_diff(r)}, Holm p {_p(r['p_holm'])}, "
            f"{row_verdict(r)} for hybrid"
            for r in found
        )
        text += f"; no detectable difference in the other {len(rest)}"
    else:
        text += "no detectable difference in any"
    if rest:
        ps = sorted(r["p_holm"] for r in rest)
        text += f" (Holm p {_p(ps[0])} to {_p(ps[-1])})"
        text += "; the minimum detectable effects there: " + _ranges(rep, rest, "mde")
        if all("mde_seeds_inf" in r for r in rest):
            text += (
                ". Projected with unlimited seeds per fold (what more seeds alone could buy; report.md, "
                '"What more seeds would buy"): ' + _ranges(rep, rest, "mde_seeds_inf")
            )
    return text + "."


def _ranges(rep: SweepReport, rows: list[dict[str, Any]], col: str) -> str:
    """``0.0136 to 0.0573 map, 20.38 to 99.10 rank positions``: a column's range per kind of metric."""
    parts = []
    for kind, some in (
        (rep.metric, [r for r in rows if r["metric"] not in LOWER_IS_BETTER]),
        ("rank positions", [r for r in rows if r["metric"] in LOWER_IS_BETTER]),
    ):
        if some:
            d = _digits(some[0]["metric"])
            parts.append(f"{min(r[col] for r in some):.{d}f} to {max(r[col] for r in some):.{d}f} {kind}")
    return ", ".join(parts)


def comparisons_table(rep: SweepReport) -> list[str]:
    """One row per benchmark and setting: its verdict, hybrid minus each baseline and minus untrained."""
    out = [
        "| benchmark | setting | verdict | hybrid − X-X-mono [95 % CI] | hybrid − X-Y [95 % CI] "
        "| hybrid − untrained (descriptive) |",
        "|---" * 6 + "|",
    ]
    for b, s, m in _primary_rows(rep):
        rows = {n: _find(rep, "primary", b, s, m, n) for n in BASELINES}
        verdict = setting_verdict({n: row_verdict(r) for n, r in rows.items() if r is not None})
        untrained = _find(rep, "descriptive", b, s, m, UNTRAINED)
        label = f"{s} {m}" if m != BIAS else "language bias (multi rank distance, lower = less)"
        out.append(
            f"| {b} | {label} | {verdict} | {_comparison_cell(rows['X-X-mono'])} | "
            f"{_comparison_cell(rows['X-Y'])} | {_comparison_cell(untrained)} |"
        )
    return out


def _seeds_per_fold(rep: SweepReport) -> str:
    """``seeds 1, 2, 3 of every arm on folds 0, 1, 2, 3``, one clause per group of folds alike."""
    by_fold: dict[int, set[tuple[Any, ...]]] = {}
    for a, rs in rep.arms.items():
        if a != UNTRAINED:
            for f in sorted({r.fold for r in rs}):
                by_fold.setdefault(f, set()).add(tuple(sorted(r.seed for r in rs if r.fold == f)))
    groups: dict[str, list[int]] = {}
    for f, seed_sets in sorted(by_fold.items()):
        seeds = next(iter(seed_sets))
        key = (
            f"{'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))} of every arm"
            if len(seed_sets) == 1
            else "seeds differing by arm (report.md, Runs)"
        )
        groups.setdefault(key, []).append(f)
    unit = rep.unit if rep.by_fold else "fold"
    return "; ".join(
        f"{key} on {unit}{'s' if len(fs) > 1 else ''} {', '.join(map(str, fs))}" for key, fs in groups.items()
    )


def summary_markdown(rep: SweepReport) -> str:
    """The README block: headline, the comparisons table, each benchmark's alpha x setting table."""
    designs = "; ".join(f"{b}: {rep.designs[b]}, {rep.questions[b]} questions" for b in rep.benchmarks)
    trained = [r for a, rs in rep.arms.items() if a != UNTRAINED for r in rs]
    out = [
        f"From the report of `{rep.sweep_dir}` (report.md has the same numbers): {len(trained)} trained "
        f"runs ({_seeds_per_fold(rep)}) and {len(rep.arms.get(UNTRAINED, []))} untrained jobs ({designs}).",
        "",
        headline(rep),
        "",
        *comparisons_table(rep),
        "",
        "Differences are hybrid minus baseline, with the 95 % interval of the comparison, the Holm-adjusted "
        "p-value and the minimum detectable effect (MDE: 80 % power at Holm's strictest level). The "
        "untrained column is descriptive (raw p, outside the Holm family).",
        "",
        *arm_tables(rep, heading="###"),
    ]
    return "\n".join(out).rstrip() + "\n"


def splice(readme: str, summary: str, where: str = "README") -> str:
    """``readme`` with the text between :data:`START` and :data:`END` replaced by ``summary``."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise DataError(f"needs exactly one '{START}' line followed by one '{END}' line", where=where)
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{summary}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """Splice (or with ``--check`` compare) a report's summary.md into a README; exit 1 if stale."""
    ap = argparse.ArgumentParser(prog="python -m mlir.study.summary", description=__doc__.split("\n")[0])
    ap.add_argument("readme", help="the markdown file with the two study-summary markers")
    ap.add_argument("summary", help="summary.md of a report (python -m mlir.report writes it)")
    ap.add_argument("--check", action="store_true", help="only compare: exit 1 if the README differs")
    args = ap.parse_args(argv)
    try:
        readme, summary = (_read(p) for p in (args.readme, args.summary))
        new = splice(readme, summary, where=args.readme)
    except MlirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != readme:
            print(
                f"{args.readme}: its study summary differs from {args.summary}; run without --check",
                file=sys.stderr,
            )
            return 1
        print(f"{args.readme}: its study summary matches {args.summary}")
        return 0
    write_text(args.readme, new)
    print(f"{args.readme}: study summary written from {args.summary}")
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", where=path) from None


if __name__ == "__main__":
    sys.exit(main())
