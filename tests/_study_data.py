"""A synthetic hybrid study written as job directories (tests/test_report.py, test_study_summary.py).

Folds x alphas x seeds plus one untrained job per fold, two benchmarks -- ``xq``, whose questions
differ per fold (nested, like XQuAD-R's test articles), and ``ml``, where every fold answers the same
questions (crossed, like zero-shot MLQA-R). Three languages; a question's score is its difficulty +
the arm's effect + a per-run shift (SD 0.005) + per-row noise (SD 0.02). Effects of the hybrid
(alpha=0.5) on the primary metric (mAP):

* mono +0.10 over both baselines -> "yes";
* cross none -> "no detectable difference";
* multi: X-Y is 0.20 above X-X-mono, hybrid halfway -> better than X-X-mono, worse than X-Y: "mixed";
* rank distance 6 for hybrid, 10 for the baselines (lower = less biased) -> "yes".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlir.eval.per_query import write_per_query

LANGS = ("en", "de", "zh")
N_Q = 12  # questions per fold (xq) / in total (ml)
GRID = (0, 0.25, 0.5, 0.75, 1)


def _effect(alpha: float | None, setting: str) -> float:
    if alpha is None:  # untrained
        return -0.3
    if setting == "mono":
        return 0.10 if 0 < alpha < 1 else 0.0
    if setting == "multi":
        return 0.20 * (1 - alpha)  # X-Y 0.20, hybrid 0.10, X-X-mono 0
    return 0.0


def _views(alpha: float | None, fold: int, seed: int) -> list[dict]:
    rng = np.random.default_rng([fold, seed, int(100 * (alpha if alpha is not None else 9))])
    shift = rng.normal(0, 0.005)  # the run's shift: what a rerun changes
    views = []
    for bench in ("xq", "ml"):
        qids = [f"{bench}{fold if bench == 'xq' else ''}-{i}" for i in range(N_Q)]
        difficulty = np.random.default_rng([fold if bench == "xq" else 99, 7]).uniform(0.3, 0.6, N_Q)

        def scores(setting: str, difficulty=difficulty) -> np.ndarray:
            return difficulty + _effect(alpha, setting) + shift + rng.normal(0, 0.02, N_Q)

        rd = 30.0 if alpha is None else (6.0 if 0 < alpha < 1 else 10.0)
        for q in LANGS:
            pairs = [("mono", q)] + [("cross", d) for d in LANGS if d != q] + [("multi", "*")]
            for setting, d in pairs:
                m = scores(setting)
                metrics = {"map": m, "ndcg@10": m + 0.05}
                if setting == "multi":
                    metrics["rank_distance"] = np.where(
                        np.arange(N_Q) % 5 == 0, np.nan, rd + rng.normal(0, 0.5, N_Q)
                    )
                views.append(
                    {
                        "benchmark": bench,
                        "setting": setting,
                        "q_lang": q,
                        "d_lang": d,
                        "qid": qids,
                        "metrics": metrics,
                    }
                )
    return views


def _metrics(views: list[dict]) -> dict[str, float]:
    """metrics.json as the evaluation writes it: per-language means, their mean per setting."""
    out: dict[str, float] = {}
    for bench in ("xq", "ml"):
        for s in ("mono", "cross", "multi"):
            for m in ("ndcg@10", "map", "rank_distance"):
                per_lang: dict[str, list[float]] = {}
                for v in views:
                    if v["benchmark"] == bench and v["setting"] == s and m in v["metrics"]:
                        per_lang.setdefault(v["q_lang"], []).append(float(np.nanmean(v["metrics"][m])))
                for lang, vals in per_lang.items():
                    out[f"eval/{bench}/{s}/{m}/{lang}"] = float(np.mean(vals))
                if per_lang:
                    out[f"eval/{bench}/{s}/{m}"] = float(np.mean([np.mean(v) for v in per_lang.values()]))
    return out


def _job(d: Path, alpha: float | None, fold: int | None, seed: int, dev_loss: float | None = None) -> None:
    (d / ".hydra").mkdir(parents=True)
    fold_line = "" if fold is None else f"data:\n  split:\n    fold: {fold}\n"
    train = "train: false\n" if alpha is None else ""
    (d / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\n{train}{fold_line}sampler:\n  alpha: {0.5 if alpha is None else alpha}\n  schedule: constant\n"
    )
    views = _views(alpha, fold or 0, seed)
    metrics = _metrics(views)
    if dev_loss is not None:
        metrics["dev/val_loss_best"] = dev_loss
    (d / "metrics.json").write_text(json.dumps(metrics))
    write_per_query(d / "per_query.npz", views)


def make_sweep(
    root: Path,
    alphas=(0.0, 0.5, 1.0),
    folds=(0, 1, 2, 3),
    seeds=(1, 2, 3),
    untrained: bool = True,
    dev_loss=None,
) -> Path:
    """Job directories like conf/experiment/hybrid_study.yaml's, the untrained arm below them."""
    for f in folds:
        for a in alphas:
            for s in seeds:
                loss = None if dev_loss is None else dev_loss(a)
                _job(root / f"fold{f}_alpha{a}_seed{s}", a, f if len(folds) > 1 else None, s, loss)
        if untrained:
            _job(root / "untrained" / f"fold{f}", None, f if len(folds) > 1 else None, 0)
    grid = ",".join(f"{a:g}" for a in GRID)
    (root / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    params:\n      sampler.alpha: {grid}\n")
    return root
