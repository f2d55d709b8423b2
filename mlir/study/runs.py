"""The jobs of a sweep: what each one is (arm, fold, seed) and its scores per question.

Why: a sweep leaves one directory per job (any depth, each with ``.hydra/config.yaml``); the study's
statistics need, per job, its arm (an alpha, or ``untrained`` for ``train: false``), its fold and seed,
the means of ``metrics.json`` and every question's score from ``per_query.npz``
(:mod:`mlir.eval.per_query`). A question's rows (its query languages, language pairs) are averaged
here, within the run, because translations of one question are not independent samples. The large
per-row file is reduced at once to per-question arrays, so a sweep of many jobs fits in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlir.eval.tasks import SETTINGS  # the retrieval settings of the metric keys: mono, cross, multi

UNTRAINED = "untrained"
BIAS = "rank_distance"
LOWER_IS_BETTER = {BIAS}
BASELINES = {"X-X-mono": 1.0, "X-Y": 0.0}

Arm = float | str  # an alpha (rounded by akey) or UNTRAINED
ScoreKey = tuple[str, str, str]  # (benchmark, setting, metric)


def akey(alpha: float) -> float:
    """Alphas as dictionary keys: 0.30000000000000004 and 0.3 are the same arm."""
    return round(float(alpha), 6)


def fmt_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def arm_label(arm: Arm) -> str:
    """``1 (X-X-mono)``, ``0 (X-Y)``, ``0.5`` or ``untrained``: how tables name an arm."""
    if isinstance(arm, str):
        return arm
    return {1.0: "1 (X-X-mono)", 0.0: "0 (X-Y)"}.get(arm, fmt_alpha(arm))


@dataclass
class Run:
    """One job of the sweep; ``problem`` says why it cannot be used (None: complete)."""

    path: Path
    alpha: float | None
    seed: int | None
    fold: int
    trained: bool
    schedule: str
    metrics: dict[str, float] = field(default_factory=dict)  # ``eval/`` keys, prefix removed
    dev_loss: float | None = None  # ``dev/val_loss_best``: the checkpoint-selection criterion
    scores: dict[ScoreKey, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    qids: dict[str, set[str]] = field(default_factory=dict)  # per benchmark, every question id seen
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None

    @property
    def arm(self) -> Arm | None:
        """``untrained``, the alpha of a fixed-alpha run, or None (no usable alpha / a schedule)."""
        if not self.trained:
            return UNTRAINED
        if self.alpha is None or self.schedule != "constant":
            return None
        return akey(self.alpha)


def question_scores(cols: dict[str, np.ndarray]) -> tuple[dict[ScoreKey, tuple], dict[str, set[str]]]:
    """Per (benchmark, setting, metric): sorted question ids and each question's mean over its rows
    (NaN rows, e.g. an undefined rank distance, left out; a question with none is dropped)."""
    from mlir.eval.per_query import KEYS

    metrics = [k for k in cols if k not in KEYS]
    out: dict[ScoreKey, tuple[np.ndarray, np.ndarray]] = {}
    qids: dict[str, set[str]] = {}
    bench, setting = cols["benchmark"], cols["setting"]
    for b in np.unique(bench).tolist():
        in_b = bench == b
        qids[b] = set(np.unique(cols["qid"][in_b]).tolist())
        for s in np.unique(setting[in_b]).tolist():
            rows = in_b & (setting == s)
            uq, inv = np.unique(cols["qid"][rows], return_inverse=True)
            for m in metrics:
                v = cols[m][rows].astype(np.float64)
                ok = ~np.isnan(v)
                if not ok.any():
                    continue
                n = np.bincount(inv[ok], minlength=len(uq))
                total = np.bincount(inv[ok], weights=v[ok], minlength=len(uq))
                keep = n > 0
                out[(b, s, m)] = (uq[keep], total[keep] / n[keep])
    return out, qids


def _load_per_query(path: Path) -> tuple[dict[ScoreKey, tuple], dict[str, set[str]]]:
    from mlir.eval.per_query import KEYS, read_per_query

    cols = read_per_query(path)
    missing = [k for k in KEYS if k not in cols]
    if missing:
        raise ValueError(f"columns {missing} missing")
    return question_scores(cols)


def discover_runs(sweep_dir: Path) -> list[Run]:
    """Every job directory below ``sweep_dir`` (one holding ``.hydra/config.yaml``; not under
    ``.submitit``), with its config, metrics and per-question scores; unusable jobs say why."""
    from omegaconf import OmegaConf

    runs = []
    for cfg_file in sorted(Path(sweep_dir).rglob(".hydra/config.yaml")):
        run_dir = cfg_file.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        try:
            cfg = OmegaConf.load(cfg_file)
        except Exception as e:  # noqa: BLE001 - a broken config: an unusable job, not a crash
            runs.append(Run(run_dir, None, None, 0, True, "constant", problem=f"unreadable config ({e})"))
            continue

        def get(key: str, default: Any = None, cfg: Any = cfg) -> Any:
            try:
                v = OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
            except Exception:  # noqa: BLE001 - an unresolvable interpolation: treat as unknown
                return default
            return default if v is None else v

        alpha, seed, fold = get("sampler.alpha"), get("seed"), get("data.split.fold", 0)
        run = Run(
            path=run_dir,
            alpha=float(alpha) if isinstance(alpha, int | float) and not isinstance(alpha, bool) else None,
            seed=int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None,
            fold=int(fold) if isinstance(fold, int) and not isinstance(fold, bool) else 0,
            trained=bool(get("train", True)),
            schedule=str(get("sampler.schedule", "constant")),
        )
        run.problem = _read_results(run, tested=bool(get("test", True)))
        runs.append(run)
    return runs


def _read_results(run: Run, tested: bool = True) -> str | None:
    """Fill ``run`` from metrics.json and per_query.npz; the reason it is incomplete, or None.

    ``tested``: the job's ``test`` setting; a ``test=false`` job finishes without ``eval/`` metrics,
    which is not the same as a missing file.
    """
    mfile, pq = run.path / "metrics.json", run.path / "per_query.npz"
    if not mfile.is_file():
        return "no metrics.json"
    try:
        raw = json.loads(mfile.read_text())
        run.metrics = {k[5:]: float(v) for k, v in raw.items() if k.startswith("eval/")}
        dev = raw.get("dev/val_loss_best")
        run.dev_loss = float(dev) if isinstance(dev, int | float) and math.isfinite(dev) else None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        return f"unreadable metrics.json ({type(e).__name__})"
    if not run.metrics:
        return "metrics.json without eval/ keys" if tested else "finished without test metrics (test=false)"
    if not pq.is_file():
        return "no per_query.npz"
    try:
        run.scores, run.qids = _load_per_query(pq)
    except Exception as e:  # noqa: BLE001 - truncated zip, wrong columns: an unusable job, named
        return f"unreadable per_query.npz ({type(e).__name__}: {e})"
    return None


def expected_alphas(sweep_dir: Path) -> list[float] | None:
    """The alpha grid the sweep asked for (``multirun.yaml``), or None when it is not a grid."""
    from omegaconf import OmegaConf

    f = Path(sweep_dir) / "multirun.yaml"
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
        return sorted({akey(float(x)) for x in str(spec).split(",")})
    except Exception:  # noqa: BLE001 - optuna's interval(...) etc.: no fixed grid
        return None


def benchmarks(runs: Iterable[Run]) -> list[str]:
    """Benchmarks with a per-setting mean in any run, in order of first appearance."""
    names: dict[str, None] = {}
    for r in runs:
        for k in r.metrics:
            parts = k.split("/")
            if len(parts) == 3 and parts[1] in SETTINGS:
                names[parts[0]] = None
    return list(names)


def qid_sets_by_fold(runs: Iterable[Run], benchmark: str) -> dict[int, set[str]]:
    """Every question id of ``benchmark`` per fold (over all runs of the fold): the design's evidence."""
    out: dict[int, set[str]] = {}
    for r in runs:
        if benchmark in r.qids:
            out.setdefault(r.fold, set()).update(r.qids[benchmark])
    return out


Unit = int | str  # a fold number, or ``seed <n>`` when the sweep has one fold


def unit_of(run: Run, by_fold: bool) -> Unit:
    """The top-level unit of replication: the fold when the sweep has several, else the run (seed)."""
    return run.fold if by_fold else f"seed {run.seed}"


def arm_unit_scores(
    runs: Iterable[Run], key: ScoreKey, by_fold: bool
) -> dict[Unit, tuple[np.ndarray, np.ndarray]]:
    """One arm's per-question scores per unit: within a fold, the mean over the arm's seeds (seeds are
    sub-samples of the fold). A question missing from a seed is averaged over the seeds that have it."""
    groups: dict[Unit, list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in runs:
        if key in r.scores:
            groups.setdefault(unit_of(r, by_fold), []).append(r.scores[key])
    out = {}
    for u, parts in groups.items():
        if len(parts) == 1:
            out[u] = parts[0]
            continue
        qs = np.unique(np.concatenate([q for q, _ in parts]))
        total, n = np.zeros(len(qs)), np.zeros(len(qs))
        for q, v in parts:
            idx = np.searchsorted(qs, q)
            total[idx] += v
            n[idx] += 1
        out[u] = (qs, total / n)
    return out


def paired_differences(
    a: dict[Unit, tuple[np.ndarray, np.ndarray]],
    b: dict[Unit, tuple[np.ndarray, np.ndarray]],
) -> dict[Unit, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per unit present in both arms: (question ids in both, a - b, a, b)."""
    out = {}
    for u in sorted(set(a) & set(b), key=str):
        qa, va = a[u]
        qb, vb = b[u]
        common, ia, ib = np.intersect1d(qa, qb, assume_unique=True, return_indices=True)
        if len(common):
            out[u] = (common, va[ia] - vb[ib], va[ia], vb[ib])
    return out


def unit_values(runs: Iterable[Run], metric_key: str, by_fold: bool) -> dict[Unit, float]:
    """A ``metrics.json`` mean per unit (fold: mean over its seeds; else per run) for the tables."""
    groups: dict[Unit, list[float]] = {}
    for r in runs:
        if metric_key in r.metrics and math.isfinite(r.metrics[metric_key]):
            groups.setdefault(unit_of(r, by_fold), []).append(r.metrics[metric_key])
    return {u: float(np.mean(v)) for u, v in groups.items()}
