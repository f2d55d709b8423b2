"""Check an evaluation's ``metrics.json`` against its TREC runs with ir_measures (pytrec_eval inside).

Why: mlir scores from the full ranking with its own code; the run files are what other tools read.
This recomputes, per view, nDCG@10, R@100 and AP@depth from ``{run_dir}/{benchmark}/{setting}/{key}``
run + qrels, aggregates them as ``mlir.eval.runner`` does (mono / multi: the query language's view;
cross: the mean over the query language's target languages of the per-pair means) and compares them
with the ``{benchmark}/{setting}/{metric}/{lang}`` keys of ``metrics.json``.

mlir's ``map`` is over the *full* ranking, a run holds the top ``depth``: AP@depth is lower by the
relevant documents ranked below the depth, so its difference is reported, not required to be 0.

    python eval.py +benchmark@eval.benchmarks.mlqa_r=mlqa_r eval.run_dir=RUNS hydra.run.dir=OUT
    python bench/verify_trec_runs.py RUNS OUT/metrics.json --out bench/results/trec_verify.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

MEASURES = {"ndcg@10": "nDCG@10", "recall@100": "R@100"}


def view_means(run: Path, qrels: Path, depth: int) -> dict[str, float]:
    """Mean nDCG@10, R@100 and AP@depth of one run file over its qrels' queries."""
    import ir_measures

    measures = [ir_measures.parse_measure(m) for m in (*MEASURES.values(), f"AP@{depth}")]
    agg = ir_measures.calc_aggregate(
        measures, ir_measures.read_trec_qrels(str(qrels)), ir_measures.read_trec_run(str(run))
    )
    out = {ours: agg[ir_measures.parse_measure(theirs)] for ours, theirs in MEASURES.items()}
    out["ap@depth"] = agg[ir_measures.parse_measure(f"AP@{depth}")]
    return out


def language_means(run_dir: Path, depth: int) -> dict[str, float]:
    """``{benchmark}/{setting}/{metric}/{query lang}`` from every run in ``run_dir``."""
    per_lang: dict[str, list[float]] = defaultdict(list)
    for run in sorted(run_dir.glob("*/*/*.run.trec")):
        bench, setting, key = run.parent.parent.name, run.parent.name, run.name[: -len(".run.trec")]
        lang = key.split("-", 1)[0]
        for metric, value in view_means(run, run.with_name(f"{key}.qrels.trec"), depth).items():
            per_lang[f"{bench}/{setting}/{metric}/{lang}"].append(value)
    return {k: sum(v) / len(v) for k, v in per_lang.items()}


def compare(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, dict]:
    """Per setting and metric: how many keys were compared and the largest |difference| (AP@depth vs full map)."""
    out: dict[str, dict] = {}
    for key, value in theirs.items():
        metric = "/".join(key.split("/")[1:3])  # setting/metric
        mine = key.replace("ap@depth", "map")
        prefixed = f"eval/{mine}" if f"eval/{mine}" in ours else mine
        if prefixed not in ours:
            continue
        d = out.setdefault(metric, {"keys": 0, "max_abs_diff": 0.0, "worst": None})
        diff = abs(ours[prefixed] - value)
        d["keys"] += 1
        if diff >= d["max_abs_diff"]:
            d["max_abs_diff"], d["worst"] = diff, key
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("--depth", type=int, default=1000, help="the runs' depth (eval.run_depth)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ours = json.loads(args.metrics.read_text())
    result = {
        "run_dir": str(args.run_dir),
        "metrics": str(args.metrics),
        "depth": args.depth,
        "comparison": compare(ours, language_means(args.run_dir, args.depth)),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
