"""The plain-language answer: one sentence per comparison and one verdict per setting.

Why its own module with fixed rules: the answer is what readers quote, so it may only claim what was
tested. "better"/"worse" need a Holm-adjusted p < 0.05; anything else is "no detectable difference"
together with the minimum detectable effect (how large a difference could have gone unseen), never
"matches"; a baseline without runs is "not tested" and never counts towards a verdict. The verdict
rules (``docs/statistics.md``):

=====================  ========================================================================
verdict                when (per setting, over the two baselines)
=====================  ========================================================================
yes                    better than both
mixed                  better than one, worse than the other
no                     worse than at least one, better than none
partly                 better than one, no detectable difference from the other
no detectable diff.    both tested, neither better nor worse
incomplete             no "worse", one baseline not tested, the other better or no difference
not tested             neither baseline tested
=====================  ========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlir.study.runs import BASELINES, BIAS, LOWER_IS_BETTER, SETTINGS, fmt_alpha

if TYPE_CHECKING:
    from mlir.study.report import SweepReport

BETTER, WORSE, NO_DIFF, NOT_TESTED = "better", "worse", "no detectable difference", "not tested"
LEVEL = 0.05


def row_verdict(row: Mapping[str, Any], level: float = LEVEL) -> str:
    """better / worse / no detectable difference / not tested for one significance row.

    Family rows are judged on the Holm-adjusted p; descriptive rows (vs untrained) on the raw p.
    """
    if row.get("status") != "ok":
        return NOT_TESTED
    p = row["p_value"] if row.get("family") == "descriptive" else row.get("p_holm", math.nan)
    if not p < level or row["diff"] == 0:
        return NO_DIFF
    lower_better = row["metric"] in LOWER_IS_BETTER
    return BETTER if (row["diff"] < 0) == lower_better else WORSE


def _num(v: float, metric: str, sign: bool = True) -> str:
    digits = 2 if metric in LOWER_IS_BETTER else 4
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def _numbers(row: Mapping[str, Any]) -> str:
    """``+0.0123 (+2.1 %), 95 % CI [+0.0050, +0.0196], Holm-adjusted p=0.004``."""
    m = row["metric"]
    rel = row.get("rel_diff", math.nan)
    size = _num(row["diff"], m) + ("" if rel is None or math.isnan(rel) else f" ({rel * 100:+.1f} %)")
    ci = f"95 % CI [{_num(row['diff_ci95_low'], m)}, {_num(row['diff_ci95_high'], m)}]"
    if row.get("family") == "descriptive":
        return f"{size}, {ci}, p{_p(row['p_value'])} (not adjusted)"
    return f"{size}, {ci}, Holm-adjusted p{_p(row['p_holm'])}"


def comparison_sentence(row: Mapping[str, Any], name: str | None = None) -> str:
    """One comparison in words, with effect, interval, adjusted p and the minimum detectable effect."""
    name = name or row["baseline"]
    verdict = row_verdict(row)
    if verdict == NOT_TESTED:
        return f"{name}: {row.get('status', NOT_TESTED)}"
    mde = _num(row["mde"], row["metric"], sign=False)
    if verdict == NO_DIFF:
        return f"{name}: no detectable difference (minimum detectable effect {mde}), {_numbers(row)}"
    return f"{name}: {verdict}, {_numbers(row)}, minimum detectable effect {mde}"


def _names(names: list[str]) -> str:
    return " and ".join(names)


def setting_verdict(verdicts: Mapping[str, str]) -> str:
    """The verdict over the baselines (``{baseline: row verdict}``), by the rules of the module doc."""
    by = {v: [n for n, x in verdicts.items() if x == v] for v in (BETTER, WORSE, NO_DIFF, NOT_TESTED)}
    better, worse, nd, nt = by[BETTER], by[WORSE], by[NO_DIFF], by[NOT_TESTED]
    if not (better or worse or nd):
        return "**not tested** against either baseline"
    if better and len(better) == len(verdicts):
        return (
            "**yes**: better than both baselines" if len(better) > 1 else f"**yes**: better than {better[0]}"
        )
    if nd and len(nd) == len(verdicts):
        return "**no detectable difference** from either baseline"
    clauses = []
    if better:
        clauses.append(f"better than {_names(better)}")
    if worse:
        clauses.append(f"worse than {_names(worse)}")
    if nd:
        clauses.append(f"no detectable difference from {_names(nd)}")
    if nt:
        clauses.append(f"{_names(nt)} not tested")
    if better and worse:
        head = "mixed"
    elif worse:
        head = "no"
    elif nt:
        head = "incomplete"
    else:
        head = "partly"
    return f"**{head}**: " + "; ".join(clauses)


def _rows(rep: SweepReport, family: str, benchmark: str, setting: str, metric: str) -> list[dict]:
    return [
        r
        for r in rep.significance
        if r["family"] == family
        and r["benchmark"] == benchmark
        and r["setting"] == setting
        and r["metric"] == metric
    ]


def plain_answer(rep: SweepReport) -> list[str]:
    """One paragraph per benchmark: does hybrid improve mono / cross / multi and language bias."""
    if rep.hybrid_alpha is None:
        return [f"The question cannot be answered from this sweep: {rep.hybrid_choice}."]
    if not rep.significance:
        return ["No comparison could be made (see the notes)."]
    h = fmt_alpha(rep.hybrid_alpha)
    lines = []
    for b in rep.benchmarks:
        base = " and ".join(f"{n} (alpha={fmt_alpha(a)})" for n, a in BASELINES.items())
        lines.append(
            f"**{b}** ({rep.designs[b]} design, unit: the {rep.unit}) — hybrid batches (alpha={h}) "
            f"compared with {base}:"
        )
        for s, m, label in [*[(s, rep.metric, f"{s} {rep.metric}") for s in SETTINGS], ("multi", BIAS, None)]:
            rows = _rows(rep, "primary", b, s, m)
            if not rows:
                continue
            label = label or "language bias (multi rank distance, lower = less biased)"
            head = setting_verdict({r["baseline"]: row_verdict(r) for r in rows})
            lines.append(f"- {label} — {head}. " + "; ".join(comparison_sentence(r) for r in rows) + ".")
        desc = [r for r in rep.significance if r["family"] == "descriptive" and r["benchmark"] == b]
        if desc:
            parts = []
            for r in desc:
                what = f"{r['setting']} {r['metric']}" if r["metric"] != BIAS else "rank distance"
                parts.append(comparison_sentence(r, name=what))
            lines.append(
                "- fine-tuning vs untrained (hybrid minus the untrained backbone; descriptive, outside "
                "the Holm family): " + "; ".join(parts) + "."
            )
    m = rep.family_size("primary")
    lines.append(
        f"Differences are hybrid minus baseline. The unit of replication is the {rep.unit}: the standard "
        "error holds the run-to-run (seed, fold) variance and the question sample, and a question's "
        f"translations count once. p-values are Holm-adjusted over the {m} primary comparisons "
        f"({rep.metric} mono/cross/multi and the multi rank distance, every benchmark and baseline); "
        f'{rep.secondary} is a secondary family (significance.csv). "No detectable difference" is not '
        "evidence of equality: the minimum detectable effect (80 % power at Holm's strictest level) is "
        "the size a real difference would have needed to be seen. Method: docs/statistics.md."
    )
    return lines
