"""mlir.report (mlir.study) end to end: synthetic sweeps written as job directories, whose answer is
known by construction (tests/_study_data.py says how), and the command line's handling of gaps.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
from _study_data import N_Q, make_sweep
from scipy import optimize, stats

from mlir.eval.per_query import read_per_query
from mlir.report import build_report, main
from mlir.study.answer import (
    BETTER,
    NO_DIFF,
    NOT_TESTED,
    WORSE,
    comparison_sentence,
    row_verdict,
    setting_verdict,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The full synthetic study (4 folds x 3 alphas x 3 seeds + 4 untrained jobs) and its report."""
    sweep = make_sweep(tmp_path_factory.mktemp("study") / "sweep")
    return sweep, build_report(sweep)


# ------------------------------------------------------------------------------ the answer's rules

B, W, N, T = BETTER, WORSE, NO_DIFF, NOT_TESTED


@pytest.mark.parametrize(
    "mono,xy,expected",
    [
        (B, B, "**yes**: better than both baselines"),
        (B, W, "**mixed**: better than X-X-mono; worse than X-Y"),
        (W, B, "**mixed**: better than X-Y; worse than X-X-mono"),
        (B, N, "**partly**: better than X-X-mono; no detectable difference from X-Y"),
        (N, B, "**partly**: better than X-Y; no detectable difference from X-X-mono"),
        (B, T, "**incomplete**: better than X-X-mono; X-Y not tested"),
        (W, W, "**no**: worse than X-X-mono and X-Y"),
        (W, N, "**no**: worse than X-X-mono; no detectable difference from X-Y"),
        (T, W, "**no**: worse than X-Y; X-X-mono not tested"),
        (N, N, "**no detectable difference** from either baseline"),
        (N, T, "**incomplete**: no detectable difference from X-X-mono; X-Y not tested"),
        (T, N, "**incomplete**: no detectable difference from X-Y; X-X-mono not tested"),
        (T, T, "**not tested** against either baseline"),
    ],
)
def test_setting_verdict_rules(mono, xy, expected):
    assert setting_verdict({"X-X-mono": mono, "X-Y": xy}) == expected


ROW = {
    "status": "ok",
    "family": "primary",
    "metric": "map",
    "baseline": "X-Y",
    "diff": 0.0123,
    "rel_diff": 0.021,
    "diff_ci95_low": 0.005,
    "diff_ci95_high": 0.0196,
    "p_value": 0.0004,
    "p_holm": 0.004,
    "mde": 0.015,
}


def test_comparison_sentences_are_exact():
    assert comparison_sentence(ROW) == (
        "X-Y: better, +0.0123 (+2.1 %), 95 % CI [+0.0050, +0.0196], Holm-adjusted p=0.004, "
        "minimum detectable effect 0.0150"
    )
    # raw p < 0.05 is not enough: the Holm-adjusted p decides
    nd = ROW | {"p_value": 0.02, "p_holm": 0.41}
    assert row_verdict(nd) == NO_DIFF
    assert comparison_sentence(nd) == (
        "X-Y: no detectable difference (minimum detectable effect 0.0150), +0.0123 (+2.1 %), "
        "95 % CI [+0.0050, +0.0196], Holm-adjusted p=0.410"
    )
    worse = ROW | {"diff": -0.0123, "rel_diff": -0.021, "diff_ci95_low": -0.0196, "diff_ci95_high": -0.005}
    assert comparison_sentence(worse).startswith("X-Y: worse, -0.0123 (-2.1 %), 95 % CI [-0.0196, -0.0050], ")
    # rank distance: lower is better, two decimals
    bias = ROW | {
        "metric": "rank_distance",
        "baseline": "X-X-mono",
        "diff": -3.2,
        "rel_diff": -0.3,
        "diff_ci95_low": -4.1,
        "diff_ci95_high": -2.3,
        "p_holm": 0.0002,
        "mde": 1.5,
    }
    assert comparison_sentence(bias) == (
        "X-X-mono: better, -3.20 (-30.0 %), 95 % CI [-4.10, -2.30], Holm-adjusted p<0.001, "
        "minimum detectable effect 1.50"
    )
    assert comparison_sentence({"status": "not tested (missing alpha=0)", "baseline": "X-Y"}) == (
        "X-Y: not tested (missing alpha=0)"
    )
    # descriptive (vs untrained): the raw p, and it says so
    desc = ROW | {"family": "descriptive", "baseline": "untrained", "p_value": 0.03, "p_holm": ""}
    assert comparison_sentence(desc, name="mono map") == (
        "mono map: better, +0.0123 (+2.1 %), 95 % CI [+0.0050, +0.0196], p=0.030 (not adjusted), "
        "minimum detectable effect 0.0150"
    )


# ------------------------------------------------------------------- independent recomputation


def _question_means(job: Path, bench: str, setting: str, metric: str) -> dict[str, float]:
    cols = read_per_query(job / "per_query.npz")
    acc: dict[str, list[float]] = {}
    for b, s, q, v in zip(cols["benchmark"], cols["setting"], cols["qid"], cols[metric]):
        if b == bench and s == setting and not math.isnan(v):
            acc.setdefault(str(q), []).append(float(v))
    return {q: float(np.mean(v)) for q, v in acc.items()}


def _fold_arm(sweep: Path, fold: int, alpha: float, *key: str) -> dict[str, float]:
    per_seed = [_question_means(sweep / f"fold{fold}_alpha{alpha}_seed{s}", *key) for s in (1, 2, 3)]
    return {q: float(np.mean([p[q] for p in per_seed])) for q in per_seed[0]}


def _mde(se: float, df: float, level: float) -> float:
    tc = stats.t.isf(level / 2, df)

    def power(delta: float) -> float:
        nc = delta / se
        return stats.nct.sf(tc, df, nc) + np.nan_to_num(stats.nct.cdf(-tc, df, nc)) - 0.8

    return optimize.bisect(power, 0, 100 * se, xtol=1e-12)


# ----------------------------------------------------------------------------------- the tests


def test_report_finds_the_design(study):
    _, rep = study
    assert rep.alphas == [0.0, 0.5, 1.0] and "untrained" in rep.arms and rep.hybrid_alpha == 0.5
    assert rep.missing_alphas == [0.25, 0.75] and rep.by_fold and rep.unit == "fold"
    assert rep.designs == {"xq": "nested", "ml": "crossed"}
    assert rep.questions == {"xq": 4 * N_Q, "ml": N_Q}
    assert "fixed in advance" in rep.hybrid_choice


def test_nested_comparison_matches_an_independent_t_test_on_fold_means(study):
    """xq mono mAP, hybrid vs X-X-mono: recomputed here from the files with scipy, then the sentence."""
    sweep, rep = study
    key = ("xq", "mono", "map")
    d, base = [], []
    for f in range(4):
        h, b = _fold_arm(sweep, f, 0.5, *key), _fold_arm(sweep, f, 1.0, *key)
        d.append(np.mean([h[q] - b[q] for q in h]))
        base.append(np.mean(list(b.values())))
    ref = stats.ttest_1samp(d, 0.0)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(d), scale=stats.sem(d))
    row = next(
        r
        for r in rep.significance
        if r["family"] == "primary" and r[("benchmark")] == "xq" and r["setting"] == "mono"
        if r["metric"] == "map" and r["baseline"] == "X-X-mono"
    )
    assert row["diff"] == pytest.approx(np.mean(d)) and row["p_value"] == pytest.approx(ref.pvalue)
    assert (row["diff_ci95_low"], row["diff_ci95_high"]) == pytest.approx((lo, hi))
    assert row["n_units"] == 4 and row["n_questions"] == 4 * N_Q and row["df"] == 3
    m = 2 * 2 * 4  # benchmarks x baselines x (mono, cross, multi mAP + rank distance)
    assert row["m_family"] == m and row["p_holm"] <= min(1.0, m * row["p_value"])
    mde = _mde(stats.sem(d), 3, 0.05 / m)
    assert row["mde"] == pytest.approx(mde, rel=1e-6)
    rel = np.mean(d) / np.mean(base)
    expected = (
        f"X-X-mono: better, {np.mean(d):+.4f} ({rel * 100:+.1f} %), 95 % CI [{lo:+.4f}, {hi:+.4f}], "
        f"Holm-adjusted p<0.001, minimum detectable effect {mde:.4f}"
    )
    assert expected in "\n".join(rep.answer)


def _effect_after(text: str, prefix: str) -> float:
    """The signed effect right after ``prefix`` in a sentence (``X-Y: worse, -0.0970 (...``)."""
    m = re.search(re.escape(prefix) + r"([+-]\d+\.\d+) ", text)
    assert m, (prefix, text)
    return float(m.group(1))


def test_the_answer_says_what_was_built_in(study):
    _, rep = study
    text = "\n".join(rep.answer)
    for b in ("xq", "ml"):
        para = text.split(f"**{b}**")[1].split("\n**")[0]
        lines = para.splitlines()

        def line(prefix: str, lines=lines) -> str:
            return next(x for x in lines if x.startswith(prefix))

        mono = line("- mono map — ")
        assert mono.startswith("- mono map — **yes**: better than both baselines. X-X-mono: better, ")
        assert _effect_after(mono, "X-X-mono: better, ") == pytest.approx(0.10, abs=0.01)
        assert _effect_after(mono, "; X-Y: better, ") == pytest.approx(0.10, abs=0.01)
        cross = line("- cross map — ")
        assert cross.startswith("- cross map — **no detectable difference** from either baseline. ")
        assert re.search(
            r"X-X-mono: no detectable difference \(minimum detectable effect 0\.\d{4}\), [+-]0\.\d{4} "
            r"\([+-]\d+\.\d %\), 95 % CI \[[+-]0\.\d{4}, [+-]0\.\d{4}\], Holm-adjusted p=\d\.\d{3}; X-Y: ",
            cross,
        ), cross
        multi = line("- multi map — ")
        assert multi.startswith(
            "- multi map — **mixed**: better than X-X-mono; worse than X-Y. X-X-mono: better, "
        )
        assert _effect_after(multi, "X-X-mono: better, ") == pytest.approx(0.10, abs=0.01)
        assert _effect_after(multi, "; X-Y: worse, ") == pytest.approx(-0.10, abs=0.01)
        bias = line("- language bias (multi rank distance, lower = less biased) — ")
        assert "— **yes**: better than both baselines. X-X-mono: better, " in bias
        assert _effect_after(bias, "X-X-mono: better, ") == pytest.approx(-4.0, abs=0.3)
        untrained = line("- fine-tuning vs untrained")
        assert _effect_after(untrained, "mono map: better, ") == pytest.approx(0.40, abs=0.01)
        assert _effect_after(untrained, "rank distance: better, ") == pytest.approx(-24, abs=0.5)
        assert "(not adjusted)" in untrained
    assert "Holm-adjusted over the 16 primary comparisons" in text
    assert "matches" not in text and "partly" not in text


def test_report_files_and_columns(study, tmp_path):
    sweep, _ = study
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    for name in ("report.md", "report.csv", "significance.csv", "alpha_curves.png", "lang_heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    table = list(csv.DictReader(open(out / "report.csv")))
    assert list(table[0]) == [
        "benchmark", "setting", "metric", "arm", "alpha", "n_runs", "unit", "n_units", "units", "seeds",
        "mean", "sd", "ci95_low", "ci95_high",
    ]  # fmt: skip
    untrained = [r for r in table if r["arm"] == "untrained"]
    assert untrained and all(r["n_runs"] == "4" and r["n_units"] == "4" for r in untrained)
    hyb = next(
        r
        for r in table
        if r["benchmark"] == "xq" and r["setting"] == "mono" and r["metric"] == "map" and r["arm"] == "0.5"
    )
    assert hyb["n_runs"] == "12" and hyb["units"] == "0 1 2 3" and hyb["seeds"] == "1 2 3"
    assert float(hyb["ci95_low"]) < float(hyb["mean"]) < float(hyb["ci95_high"])
    sig = list(csv.DictReader(open(out / "significance.csv")))
    for col in ("family", "design", "n_units", "n_questions", "df", "diff", "diff_ci95_low", "diff_ci95_high",
                "p_value", "p_holm", "mde", "mde_unadjusted", "verdict"):  # fmt: skip
        assert col in sig[0], col
    assert {r["family"] for r in sig} == {"primary", "secondary", "descriptive"}
    assert (
        sum(r["family"] == "primary" for r in sig) == 16
        and sum(r["family"] == "secondary" for r in sig) == 12
    )
    assert {r["design"] for r in sig if r["benchmark"] == "ml"} == {"crossed (two-way random effects)"}
    assert all(r["p_holm"] == "" and r["m_family"] == "" for r in sig if r["family"] == "descriptive")
    assert all(float(r["mde"]) > float(r["mde_unadjusted"]) for r in sig if r["family"] == "primary")
    md = (out / "report.md").read_text()
    assert "**Missing alphas** (the sweep's grid): 0.25, 0.75" in md
    assert "| untrained | 1 job(s) | 1 job(s) | 1 job(s) | 1 job(s) |" in md  # the runs table
    assert "| untrained | 0.1" in md  # its row in every alpha x setting table
    assert "## Fine-tuning vs untrained (descriptive, not Holm-corrected)" in md
    assert "- `xq`: nested" in md and "- `ml`: crossed" in md and "## Answer" in md


def test_missing_baseline_is_not_tested_and_never_counts(tmp_path):
    rep = build_report(make_sweep(tmp_path / "s", alphas=(0.5, 1.0), seeds=(1, 2), untrained=False))
    assert rep.missing_alphas == [0.0, 0.25, 0.75]
    text = "\n".join(rep.answer)
    assert "- mono map — **incomplete**: better than X-X-mono; X-Y not tested. X-X-mono: better, " in text
    assert "- cross map — **incomplete**: no detectable difference from X-X-mono; X-Y not tested." in text
    assert text.count("; X-Y: not tested (missing alpha=0).") == 8  # 2 benchmarks x 4 primary lines
    assert "untrained" not in text and any("no untrained job" in n for n in rep.notes)
    xy = [r for r in rep.significance if r["baseline"] == "X-Y"]
    assert xy and all(
        r["verdict"] == "not tested" and "p_value" not in r or math.isnan(r["p_value"]) for r in xy
    )
    assert rep.family_size("primary") == 8  # Holm counts the tests made, not the ones that could not be


def test_two_folds_can_see_little(tmp_path):
    """Two folds: df = 1; the answer says so through the minimum detectable effect, never "matches"."""
    rep = build_report(make_sweep(tmp_path / "s", folds=(0, 1), seeds=(1, 2), untrained=False))
    row = next(r for r in rep.significance if r["status"] == "ok" and r["benchmark"] == "xq")
    assert (
        row["df"] == 1 and row["n_units"] == 2 and row["mde"] > 5 * abs(row["diff_ci95_high"] - row["diff"])
    )
    assert "matches" not in "\n".join(rep.answer)


def test_one_run_per_arm_is_not_testable(tmp_path):
    rep = build_report(make_sweep(tmp_path / "s", folds=(0,), seeds=(1,)))
    assert {r["status"] for r in rep.significance} == {"not tested (needs >= 2 runs/folds per arm)"}
    assert all(math.isnan(r["ci95_low"]) for r in rep.table)
    assert any("single run have no interval" in n for n in rep.notes)
    assert "- mono map — **not tested** against either baseline." in "\n".join(rep.answer)


def test_one_fold_sweep_uses_runs_as_units_and_the_crossed_design(tmp_path):
    rep = build_report(make_sweep(tmp_path / "s", folds=(0,), seeds=(1, 2, 3)))
    assert not rep.by_fold and rep.unit == "run" and rep.designs == {"xq": "crossed", "ml": "crossed"}
    ok = [r for r in rep.significance if r["status"] == "ok"]
    assert ok and all(r["n_units"] == 3 for r in ok)
    # every question counts, except where the rank distance is undefined (NaN) in all its rows
    assert {r["n_questions"] for r in ok if r["metric"] != "rank_distance"} == {N_Q}
    assert {r["n_questions"] for r in ok if r["metric"] == "rank_distance"} == {N_Q - len(range(0, N_Q, 5))}
    desc = [r for r in ok if r["family"] == "descriptive"]  # the one untrained job serves every run
    assert desc and all(r["verdict"] == "better" for r in desc if r["metric"] != "rank_distance")


def test_hybrid_alpha_dev_uses_the_dev_loss_never_a_test_metric(tmp_path):
    """alpha=0.25 has the lowest dev loss, alpha=0.5 the best test scores: dev picks 0.25."""
    sweep = make_sweep(
        tmp_path / "s",
        alphas=(0.0, 0.25, 0.5, 1.0),
        folds=(0, 1),
        seeds=(1, 2),
        untrained=False,
        dev_loss=lambda a: {0.25: 0.40, 0.5: 0.45}.get(a, 0.5),
    )
    rep = build_report(sweep, hybrid_alpha="dev")
    assert rep.hybrid_alpha == 0.25 and "lowest mean dev validation loss" in rep.hybrid_choice
    assert build_report(sweep).hybrid_alpha == 0.5  # the default: fixed in advance
    no_dev = build_report(
        make_sweep(tmp_path / "t", folds=(0,), seeds=(1,), untrained=False), hybrid_alpha="dev"
    )
    assert no_dev.hybrid_alpha is None and not no_dev.significance
    assert no_dev.answer[0].startswith("The question cannot be answered from this sweep: --hybrid-alpha dev")


def test_without_the_hybrid_alpha_the_question_cannot_be_answered(tmp_path):
    rep = build_report(make_sweep(tmp_path / "s", alphas=(0.0, 1.0), folds=(0,), seeds=(1,), untrained=False))
    assert rep.hybrid_alpha is None and not rep.significance
    assert rep.answer == [
        "The question cannot be answered from this sweep: alpha=0.5 (--hybrid-alpha, fixed in advance) "
        "has no finished run."
    ]


def test_cli_gaps_are_one_line_errors(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "s", folds=(0,), seeds=(1, 2), untrained=False)
    (sweep / "fold0_alpha0.0_seed1" / "per_query.npz").unlink()
    (sweep / "fold0_alpha1.0_seed2" / "metrics.json").unlink()
    (sweep / "fold0_alpha0.5_seed2" / "per_query.npz").write_bytes(b"not a zip")
    rep = build_report(sweep)
    note = next(n for n in rep.notes if "unfinished or failed" in n)
    assert note.startswith("3 job(s) unfinished or failed, left out: ")
    assert (
        "fold0_alpha0.0_seed1 (no per_query.npz)" in note and "fold0_alpha1.0_seed2 (no metrics.json)" in note
    )
    assert "fold0_alpha0.5_seed2 (unreadable per_query.npz" in note
    assert sorted(len(rs) for rs in rep.arms.values()) == [1, 1, 1]

    def fails(*args: str) -> str:
        assert main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        return err

    assert "does not exist" in fails(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no job directories" in fails(str(empty))
    unfinished = tmp_path / "unfinished"
    (unfinished / "0" / ".hydra").mkdir(parents=True)
    (unfinished / "0" / ".hydra" / "config.yaml").write_text("seed: 1\nsampler:\n  alpha: 0.5\n")
    assert "no finished job" in fails(str(unfinished))
    assert "--hybrid-alpha" in fails(str(sweep), "--hybrid-alpha", "1.5")
    assert "--hybrid-alpha" in fails(str(sweep), "--hybrid-alpha", "best")
    assert "--metric" in fails(str(sweep), "--metric", "bleu")


def test_python_dash_m_mlir_report_still_works(tmp_path):
    import subprocess
    import sys

    sweep = make_sweep(tmp_path / "s", folds=(0,), seeds=(1, 2), untrained=False)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlir.report",
            str(sweep),
            "--out",
            str(tmp_path / "o"),
            "--metric",
            "ndcg@10",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "- mono ndcg@10 — " in res.stdout and (tmp_path / "o" / "report.md").is_file()
