"""mlir.report on synthetic sweeps whose answer is known, plus the CLI's handling of gaps."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mlir.eval.per_query import read_per_query, write_per_query
from mlir.report import build_report, main, paired_test, t_interval

LANGS = ("en", "de", "zh")
N_Q = 60


def _views(alpha: float, seed: int) -> list[dict]:
    """Per-query scores: mono gains 0.10 with hybrid (alpha=0.5), cross is flat, multi is noise only."""
    rng = np.random.default_rng(1000 * seed + int(alpha * 100))
    base = np.random.default_rng(7).uniform(0.2, 0.7, size=N_Q)  # query difficulty, shared by all runs
    views = []
    qids = [f"q{i}" for i in range(N_Q)]
    for q in LANGS:
        gain = 0.10 if alpha == 0.5 else 0.0
        mono = np.clip(base + gain + rng.normal(0, 0.01, N_Q), 0, 1)
        views.append(
            {
                "benchmark": "xq",
                "setting": "mono",
                "q_lang": q,
                "d_lang": q,
                "qid": qids,
                "metrics": {"ndcg@10": mono, "map": mono * 0.9},
            }
        )
        for d in LANGS:
            if d != q:
                cross = np.clip(base + rng.normal(0, 0.01, N_Q), 0, 1)
                views.append(
                    {
                        "benchmark": "xq",
                        "setting": "cross",
                        "q_lang": q,
                        "d_lang": d,
                        "qid": qids,
                        "metrics": {"ndcg@10": cross, "map": cross * 0.9},
                    }
                )
        multi = np.clip(base + rng.normal(0, 0.01, N_Q), 0, 1)
        rd = np.where(np.arange(N_Q) % 5 == 0, np.nan, 10 - 4 * (alpha == 0.5) + rng.normal(0, 0.5, N_Q))
        views.append(
            {
                "benchmark": "xq",
                "setting": "multi",
                "q_lang": q,
                "d_lang": "*",
                "qid": qids,
                "metrics": {"ndcg@10": multi, "map": multi * 0.9, "rank_distance": rd},
            }
        )
    return views


def _metrics(views: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in ("mono", "cross", "multi"):
        for m in ("ndcg@10", "map", "rank_distance"):
            per_lang = {}
            for v in views:
                if v["setting"] == s and m in v["metrics"]:
                    per_lang.setdefault(v["q_lang"], []).append(np.nanmean(v["metrics"][m]))
            for lang, vals in per_lang.items():
                out[f"eval/xq/{s}/{m}/{lang}"] = float(np.mean(vals))
            if per_lang:
                out[f"eval/xq/{s}/{m}"] = float(np.mean([np.mean(v) for v in per_lang.values()]))
    out["eval/xq/avg/ndcg@10"] = float(
        np.mean([out[f"eval/xq/{s}/ndcg@10"] for s in ("mono", "cross", "multi")])
    )
    return out


def make_sweep(root: Path, alphas=(0.0, 0.5, 1.0), seeds=(1, 2), per_query: bool = True) -> Path:
    job = 0
    for a in alphas:
        for s in seeds:
            d = root / str(job)
            (d / ".hydra").mkdir(parents=True)
            (d / ".hydra" / "config.yaml").write_text(
                f"seed: {s}\nsampler:\n  alpha: {a}\n  schedule: constant\noptimized_metric: eval/xq/avg/ndcg@10\n"
            )
            views = _views(a, s)
            (d / "metrics.json").write_text(json.dumps(_metrics(views)))
            if per_query:
                write_per_query(d / "per_query.npz", views)
            job += 1
    grid = ",".join(f"{a:g}" for a in (0, 0.25, 0.5, 0.75, 1))
    (root / "multirun.yaml").write_text(
        f"hydra:\n  sweeper:\n    params:\n      sampler.alpha: {grid}\n      seed: 1,2\n"
    )
    return root


def test_t_interval_matches_scipy_and_is_nan_for_one_seed():
    from scipy import stats

    got = t_interval([0.5, 0.6, 0.7])
    lo, hi = stats.t.interval(0.95, 2, loc=0.6, scale=stats.sem([0.5, 0.6, 0.7]))
    assert (
        got["mean"] == pytest.approx(0.6)
        and got["ci95_low"] == pytest.approx(lo)
        and got["ci95_high"] == pytest.approx(hi)
    )
    one = t_interval([0.5])
    assert (
        one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["ci95_low"]) and math.isnan(one["ci95_high"])
    )


def test_paired_test_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    base = {("en", "en", f"q{i}"): float(v) for i, v in enumerate(rng.uniform(0, 1, 200))}
    shifted = {k: v + 0.05 + rng.normal(0, 0.01) for k, v in base.items()}
    r = paired_test(shifted, base, n_boot=2000, n_perm=2000)
    assert r["n_queries"] == 200 and r["diff"] == pytest.approx(0.05, abs=0.005)
    assert r["diff_ci95_low"] < 0.05 < r["diff_ci95_high"] and r["p_value"] < 0.001 and r["cohens_dz"] > 2
    noise = {k: v + rng.normal(0, 0.05) for k, v in base.items()}
    assert paired_test(noise, base, n_boot=2000, n_perm=2000)["p_value"] > 0.01
    # rows of one query id (its language pairs) are one unit
    two_langs = base | {("de", "de", k[2]): v for k, v in base.items()}
    assert paired_test(two_langs, two_langs, n_perm=100, n_boot=100)["n_queries"] == 200


def test_per_query_file_round_trip(tmp_path):
    views = _views(0.5, 1)
    write_per_query(tmp_path / "pq.npz", views)
    cols = read_per_query(tmp_path / "pq.npz")
    n = sum(len(v["qid"]) for v in views)
    assert all(len(c) == n for c in cols.values())
    multi = cols["setting"] == "multi"
    assert np.isnan(cols["rank_distance"][~multi]).all() and np.isfinite(cols["rank_distance"][multi]).any()
    assert set(cols["d_lang"][multi]) == {"*"}


def test_report_answers_the_synthetic_question(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    rep = build_report(sweep, n_boot=2000, n_perm=2000)
    assert rep.alphas == [0.0, 0.5, 1.0] and rep.hybrid_alpha == 0.5
    assert rep.missing_alphas == [0.25, 0.75]
    sig = {(r["setting"], r["metric"], r["baseline"]): r for r in rep.significance}
    for base in ("X-X-mono", "X-Y"):
        mono = sig[("mono", "ndcg@10", base)]
        assert mono["diff"] == pytest.approx(0.10, abs=0.01) and mono["p_value"] < 0.01
        assert abs(sig[("cross", "ndcg@10", base)]["diff"]) < 0.01
        bias = sig[("multi", "rank_distance", base)]
        assert bias["diff"] == pytest.approx(-4, abs=0.3) and bias["p_value"] < 0.01
    text = "\n".join(rep.answer)
    assert "mono nDCG@10 — **yes**" in text and "cross nDCG@10 — **no significant change**" in text

    assert main([str(sweep), "--n-boot", "500", "--n-perm", "500"]) == 0
    for name in ("report.md", "report.csv", "significance.csv", "alpha_curves.png", "lang_heatmap.png"):
        assert (sweep / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(sweep / "report.csv")))
    mono_hybrid = next(
        r for r in rows if r["setting"] == "mono" and r["metric"] == "ndcg@10" and r["alpha"] == "0.5"
    )
    assert mono_hybrid["n"] == "2" and float(mono_hybrid["ci95_low"]) < float(mono_hybrid["mean"]) < float(
        mono_hybrid["ci95_high"]
    )
    md = (sweep / "report.md").read_text()
    assert "**Missing alphas**" in md and "0.25" in md and "## Answer" in md


def test_report_without_baseline_or_hybrid_says_so(tmp_path):
    only_hybrid = build_report(make_sweep(tmp_path / "a", alphas=(0.5,), seeds=(1,)), n_boot=100, n_perm=100)
    assert {r["status"] for r in only_hybrid.significance} == {"missing alpha=1", "missing alpha=0"}
    assert all(math.isnan(r["ci95_low"]) for r in only_hybrid.table)  # one seed: no interval
    assert any("single seed" in n for n in only_hybrid.notes)

    no_hybrid = build_report(make_sweep(tmp_path / "b", alphas=(0.0, 1.0), seeds=(1,)))
    assert no_hybrid.hybrid_alpha is None and not no_hybrid.significance
    assert "cannot be answered" in no_hybrid.answer[0]

    no_pq = build_report(make_sweep(tmp_path / "c", per_query=False))
    assert not no_pq.significance and any("per_query.npz" in n for n in no_pq.notes)


def test_unfinished_jobs_are_listed_and_bad_dirs_are_one_line(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "s", alphas=(0.0, 0.5, 1.0), seeds=(1,))
    (sweep / "0" / "metrics.json").unlink()
    rep = build_report(sweep, n_boot=100, n_perm=100)
    assert rep.alphas == [0.5, 1.0] and 0.0 in rep.missing_alphas
    assert any("without metrics.json" in n and "0" in n for n in rep.notes)
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main([str(sweep), "--hybrid-alpha", "1.5"]) == 2


def test_evaluate_writes_per_query_scores_that_average_to_the_metrics(tmp_path):
    """The per-query rows mlir.eval.runner collects reproduce every per-language mean it reports."""
    from _eval_data import KeyEncoder, make_xquad_dir

    from mlir.eval.runner import evaluate

    xq = make_xquad_dir(tmp_path / "xquad-r", langs=LANGS, n_articles=2)
    views: list[dict] = []
    metrics = evaluate(
        KeyEncoder(), {"toy": {"type": "xquad_r", "path": str(xq), "download": False}}, per_query=views
    )
    write_per_query(tmp_path / "pq.npz", views)
    cols = read_per_query(tmp_path / "pq.npz")
    for lang in LANGS:
        for setting in ("mono", "multi"):
            m = (cols["setting"] == setting) & (cols["q_lang"] == lang)
            assert cols["ndcg@10"][m].mean() == pytest.approx(metrics[f"toy/{setting}/ndcg@10/{lang}"])
        pairs = [
            np.nanmean(
                cols["map"][(cols["setting"] == "cross") & (cols["q_lang"] == lang) & (cols["d_lang"] == d)]
            )
            for d in LANGS
            if d != lang
        ]
        assert np.mean(pairs) == pytest.approx(metrics[f"toy/cross/map/{lang}"])
        multi = (cols["setting"] == "multi") & (cols["q_lang"] == lang)
        assert np.nanmean(cols["rank_distance"][multi]) == pytest.approx(
            metrics[f"toy/multi/rank_distance/{lang}"]
        )
    # parallel questions share their id across languages
    ids = {lang: set(cols["qid"][(cols["setting"] == "mono") & (cols["q_lang"] == lang)]) for lang in LANGS}
    assert ids["en"] == ids["de"] == ids["zh"] and len(ids["en"]) > 1
