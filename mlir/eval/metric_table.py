"""Readable views of the flat metric keys: a languages x settings text table, W&B rows, a heatmap.

Everything here is derived from the ``{benchmark}/{setting}/{metric}[/{lang}]`` keys that
:func:`mlir.eval.runner.evaluate` returns, so a ``metrics.json`` written by any run can be re-tabled.
Not the study's report (``python -m mlir.report``, :mod:`mlir.study.report`): these are the tables
of one evaluation, printed by ``eval.py`` and logged by the periodic evaluation callback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mlir.eval.tasks import SETTINGS

DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mono", "ndcg@10"),
    ("cross", "ndcg@10"),
    ("multi", "ndcg@10"),
    ("multi", "map"),
    ("multi", "rank_distance"),
)


def benchmarks_in(metrics: Mapping[str, float]) -> list[str]:
    """Benchmark names present in the keys, in first-seen order."""
    return list(dict.fromkeys(k.split("/", 1)[0] for k in metrics if k.count("/") >= 2))


def languages_in(metrics: Mapping[str, float], benchmark: str) -> list[str]:
    """Per-language keys' languages (pair keys ``x-y`` excluded), in first-seen order."""
    langs: dict[str, None] = {}
    for k in metrics:
        parts = k.split("/")
        if len(parts) == 4 and parts[0] == benchmark and parts[1] in SETTINGS and "-" not in parts[3]:
            langs[parts[3]] = None
    return list(langs)


def metrics_in(metrics: Mapping[str, float], benchmark: str, setting: str) -> list[str]:
    """Metric names of one setting (from its macro keys), in first-seen order."""
    out: dict[str, None] = {}
    for k in metrics:
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == benchmark and parts[1] == setting:
            out[parts[2]] = None
    return list(out)


def _fmt(v: float | None, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.1f}" if metric == "rank_distance" else f"{v:.4f}"


def format_table(
    metrics: Mapping[str, float],
    benchmark: str | None = None,
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
) -> str:
    """One text table per benchmark: a row per query language plus the macro ``avg`` row.

    ``columns`` are (setting, metric) pairs; columns without any value are left out. For ``cross`` a
    language's cell is its mean over target languages (see :mod:`mlir.eval.runner`).
    """
    names = [benchmark] if benchmark else benchmarks_in(metrics)
    blocks = []
    for b in names:
        cols = [(s, m) for s, m in columns if f"{b}/{s}/{m}" in metrics]
        if not cols:
            continue
        langs = languages_in(metrics, b)
        header = ["lang", *[f"{s} {m}" for s, m in cols]]
        rows = [[lang, *[_fmt(metrics.get(f"{b}/{s}/{m}/{lang}"), m) for s, m in cols]] for lang in langs]
        rows.append(["avg", *[_fmt(metrics.get(f"{b}/{s}/{m}"), m) for s, m in cols]])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str], widths: list[int] = widths) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )

        rule = "-" * len(line(header))
        title = f"{b}"
        if f"{b}/avg/ndcg@10" in metrics:
            title += f"  (avg nDCG@10 over settings: {metrics[f'{b}/avg/ndcg@10']:.4f})"
        blocks.append(
            "\n".join([title, line(header), rule, *[line(r) for r in rows[:-1]], rule, line(rows[-1])])
        )
    return "\n\n".join(blocks)


def table_rows(metrics: Mapping[str, float], benchmark: str) -> tuple[list[str], list[list]]:
    """(columns, rows) of a long table ``lang, setting, <metrics...>`` (e.g. for ``wandb.Table``)."""
    settings = [s for s in SETTINGS if metrics_in(metrics, benchmark, s)]
    names: dict[str, None] = {}
    for s in settings:
        names.update(dict.fromkeys(metrics_in(metrics, benchmark, s)))
    cols = ["lang", "setting", *names]
    rows = []
    for s in settings:
        for lang in [*languages_in(metrics, benchmark), "avg"]:
            suffix = "" if lang == "avg" else f"/{lang}"
            vals = [metrics.get(f"{benchmark}/{s}/{m}{suffix}") for m in names]
            if any(v is not None for v in vals):
                rows.append([lang, s, *[float("nan") if v is None else float(v) for v in vals]])
    return cols, rows


def heatmap_matrix(metrics: Mapping[str, float], benchmark: str, metric: str = "ndcg@10"):
    """(languages, settings, ``[L, S]`` array with NaN gaps) of one metric, the ``avg`` row last."""
    import numpy as np

    settings = [s for s in SETTINGS if f"{benchmark}/{s}/{metric}" in metrics]
    langs = [*languages_in(metrics, benchmark), "avg"]
    mat = np.full((len(langs), len(settings)), np.nan)
    for j, s in enumerate(settings):
        for i, lang in enumerate(langs):
            key = f"{benchmark}/{s}/{metric}" + ("" if lang == "avg" else f"/{lang}")
            if key in metrics:
                mat[i, j] = metrics[key]
    return langs, settings, mat


def heatmap_figure(metrics: Mapping[str, float], benchmark: str, metric: str = "ndcg@10"):
    """A matplotlib figure (Agg backend, no display needed) of :func:`heatmap_matrix`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    langs, settings, mat = heatmap_matrix(metrics, benchmark, metric)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * max(len(settings), 1), 0.9 + 0.32 * len(langs)))
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_yticks(range(len(langs)), langs)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if not np.isnan(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.3f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_title(f"{benchmark} {metric}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig
