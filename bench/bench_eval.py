"""Full XQuAD-R evaluation end to end, and mlir's scoring vs MTEB's retrieval evaluator.

1. **End to end**: ``python eval.py`` (offline e5-small, XQuAD-R, 11 languages, mono + cross + multi +
   language bias; the stock ``conf/eval.yaml``) as a subprocess under ``/usr/bin/time -v``: wall time,
   CPU time and peak RSS of the whole job (model build, data, encoding, scoring, reports), plus the
   encode/total seconds eval.py itself records in ``metrics_details.json``.
2. **Scoring side by side** on the *same* embeddings (encoded once here with the same encoder and
   settings): the mono setting (queries of L against the candidates of L, for every L) scored by

   * mlir: ``mlir.eval.runner.score_task(..., settings=("mono",))`` -- full-ranking counting search +
     nDCG/MAP/recall/MRR;
   * MTEB (2.x): ``RetrievalEvaluator`` with ``SearchEncoderWrapper`` over a lookup "model" that returns
     the precomputed embeddings (exact dot-product search, top_k=1000, heap merge), then
     ``RetrievalEvaluator.evaluate`` (pytrec_eval ``ndcg_cut``, ``map_cut``, ``recall``, ``P``,
     ``success`` + MRR + abstention nAUCs). Candidate ``i`` of a language with ``C`` candidates gets
     docno ``C-1-i`` (zero-padded), so pytrec_eval's tie order (docno descending) equals mlir's (index
     ascending): duplicate sentences tie exactly.

   Both are timed (interleaved, best of ``--reps``) and their nDCG@10 per language must agree.

Writes ``bench/results/eval.json``. ``--quick``: 100 queries per language and 3 languages for MTEB.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402


# --------------------------------------------------------------------------------------- end to end
def run_eval_py(max_queries: int | None, langs: list[str] | None, timeout: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        cmd = [
            sys.executable,
            str(bench.ROOT / "eval.py"),
            f"hydra.run.dir={tmp}",
            "eval.benchmarks.xquad_r.download=false",
        ]
        if max_queries:
            cmd.append(f"eval.max_queries_per_lang={max_queries}")
        if langs:
            cmd.append(f"eval.benchmarks.xquad_r.langs=[{','.join(langs)}]")
        timed = ["/usr/bin/time", "-v", *cmd] if Path("/usr/bin/time").exists() else cmd
        load0 = bench.loadavg()
        cpu0 = bench.cpu_seconds(children=True)
        t0 = time.perf_counter()
        proc = subprocess.run(timed, cwd=bench.ROOT, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        cpu = bench.cpu_seconds(children=True) - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"eval.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out: dict[str, Any] = {
            "command": " ".join(cmd[1:]),
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "load_average_before": load0,
            "load_average_after": bench.loadavg(),
        }
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if m:
            out["peak_rss_mib"] = round(int(m.group(1)) / 1024, 1)
            out["peak_rss_source"] = "/usr/bin/time -v"
        else:
            import resource

            out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
            out["peak_rss_source"] = "getrusage(RUSAGE_CHILDREN).ru_maxrss"
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
        details_path = Path(tmp) / "metrics_details.json"
        details = json.loads(details_path.read_text()) if details_path.is_file() else {}
        xq = details.get("benchmarks", {}).get("xquad_r", {})
        out["eval_py_seconds"] = {"model_load_to_end": details.get("seconds"), **(xq.get("seconds") or {})}
        out["texts"] = xq.get("texts")
        out["metrics"] = {k: round(v, 5) for k, v in metrics.items() if k.count("/") == 2}
        out["mono_ndcg10_per_lang"] = {
            k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith("xquad_r/mono/ndcg@10/")
        }
        return out


# ------------------------------------------------------------------------------------- MTEB scoring
class _Lookup:
    """An MTEB ``EncoderProtocol``-shaped object returning precomputed embeddings by text."""

    mteb_model_meta = None

    def __init__(self, queries: dict[str, Any], docs: dict[str, Any]) -> None:
        self.tables = {"query": queries, "document": docs}

    def encode(self, inputs, *, prompt_type=None, **kw):  # noqa: ANN001, ARG002
        import numpy as np

        table = self.tables[
            "query" if str(getattr(prompt_type, "value", prompt_type)) == "query" else "document"
        ]
        return np.stack([table[t] for batch in inputs for t in batch["text"]])

    def similarity(self, a, b):  # noqa: ANN001
        import torch

        return torch.as_tensor(a) @ torch.as_tensor(b).T


def mteb_mono(task: Any, q_emb: Any, d_emb: Any, top_k: int) -> tuple[dict[str, float], float]:
    """nDCG@10 per language from MTEB's evaluator on the mono views; returns (scores, seconds)."""
    import logging

    import numpy as np
    from datasets import Dataset, disable_progress_bars
    from mteb import get_task
    from mteb._evaluators.retrieval_evaluator import RetrievalEvaluator
    from mteb.models.search_wrappers import SearchEncoderWrapper
    from mteb.timing import TimingStack

    disable_progress_bars()
    logging.getLogger("mteb").setLevel(logging.WARNING)
    metadata = get_task("XQuADRetrieval").metadata  # any text retrieval task's metadata: modalities=text
    q_off = np.cumsum([0] + [len(task.queries[x].texts) for x in task.langs])
    d_off = np.cumsum([0] + [len(task.docs[x]) for x in task.langs])
    scores: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, lang in enumerate(task.langs):
        view = task.view(lang, [lang])
        qtexts = task.queries[lang].texts
        docs = task.docs[lang]
        qe = q_emb[q_off[i] : q_off[i + 1]].numpy()
        de = d_emb[d_off[i] : d_off[i + 1]].numpy()
        c = len(docs)
        width = len(str(c))
        docno = [f"{c - 1 - j:0{width}d}" for j in range(c)]
        rows = view.rows.tolist()
        corpus = Dataset.from_dict({"id": docno, "text": docs})
        queries = Dataset.from_dict({"id": [f"q{r}" for r in rows], "text": [qtexts[r] for r in rows]})
        qrels = {f"q{r}": {docno[int(d)]: 1 for d in rel} for r, rel in zip(rows, view.rel)}
        model = _Lookup({t: qe[j] for j, t in enumerate(qtexts)}, {t: de[j] for j, t in enumerate(docs)})
        ev = RetrievalEvaluator(
            corpus,
            queries,
            task_metadata=metadata,
            hf_split="test",
            hf_subset=lang,
            top_k=top_k,
            timer=TimingStack(),
        )
        results = ev(
            SearchEncoderWrapper(model), encode_kwargs={"batch_size": 1024, "show_progress_bar": False}
        )
        res = ev.evaluate(qrels, results, [1, 5, 10, 100])
        scores[lang] = float(res.ndcg["NDCG@10"])
    return scores, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--max-queries", type=int, default=None, help="eval.max_queries_per_lang (None = all 1190)"
    )
    ap.add_argument("--langs", default=None, help="comma list for eval.py (default: all 11)")
    ap.add_argument("--mteb-langs", default=None, help="languages of the side-by-side scoring (default: all)")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of the two scorers")
    ap.add_argument("--top-k", type=int, default=1000, help="MTEB's top_k (its default)")
    ap.add_argument("--skip-eval-py", action="store_true")
    ap.add_argument("--skip-mteb", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--quick", action="store_true", help="100 queries/lang; 3 languages for MTEB")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.max_queries = args.max_queries or 100
        args.mteb_langs = args.mteb_langs or "en,de,zh"
    langs = args.langs.split(",") if args.langs else None
    load_start = bench.loadavg()
    result: dict[str, Any] = {
        "what": "XQuAD-R evaluation end to end (eval.py) + mono scoring: mlir vs MTEB RetrievalEvaluator",
        "settings": {
            "max_queries_per_lang": args.max_queries,
            "eval_langs": langs or "all 11",
            "mteb_langs": args.mteb_langs or "all 11",
            "mteb_top_k": args.top_k,
            "reps": args.reps,
            "quick": args.quick,
        },
    }
    if not args.skip_eval_py:
        result["eval_py"] = run_eval_py(args.max_queries, langs, args.timeout)
        e = result["eval_py"]
        print(
            bench.summary_line(
                "eval.py", [("wall_s", e["wall_seconds"]), ("peak_rss_mib", e["peak_rss_mib"])]
            ),
            flush=True,
        )

    if not args.skip_mteb:
        try:
            import mteb  # noqa: F401
        except ImportError:
            result["scoring"] = {"skipped": "mteb is not installed (pip install mteb)"}
        else:
            result["scoring"] = side_by_side(args)
    result["machine"] = {
        **bench.machine(),
        "load_average_at_start": load_start,
        "load_average_at_end": bench.loadavg(),
    }
    p = bench.write_result("eval", result, args.out)
    print(f"written to {p}")
    return result


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from bench.bench_encode import build_mlir
    from mlir.eval.benchmarks import load_benchmark
    from mlir.eval.encode import encode_texts
    from mlir.eval.runner import score_task

    cfg = {
        "type": "xquad_r",
        "path": str(bench.data_dir() / "xquad-r"),
        "langs": args.mteb_langs.split(",") if args.mteb_langs else None,
        "settings": ["mono"],
        "max_queries_per_lang": args.max_queries,
        "download": False,
    }
    b = load_benchmark("xquad_r", cfg, seed=0)
    task = b.task
    enc = build_mlir()
    clock = bench.Clock()
    q_texts = [t for x in task.langs for t in task.queries[x].texts]
    d_texts = [t for x in task.langs for t in task.docs[x]]
    q_emb = encode_texts(enc, q_texts, "query")
    d_emb = encode_texts(enc, d_texts, "passage")
    enc_s = clock.wall()

    mlir_s, mteb_s = [], []
    mlir_nd: dict[str, float] = {}
    mteb_nd: dict[str, float] = {}
    for _ in range(args.reps):
        t0 = time.perf_counter()
        metrics, _ = score_task(task, q_emb, d_emb, settings=("mono",), ks=(1, 5, 10, 100), device="cpu")
        mlir_s.append(time.perf_counter() - t0)
        mlir_nd = {x: metrics[f"xquad_r/mono/ndcg@10/{x}"] for x in task.langs}
        mteb_nd, s = mteb_mono(task, q_emb, d_emb, args.top_k)
        mteb_s.append(s)
        print(
            bench.summary_line(
                "scoring", [("mlir_s", round(mlir_s[-1], 2)), ("mteb_s", round(mteb_s[-1], 2))]
            ),
            flush=True,
        )
    diffs = {x: abs(mlir_nd[x] - mteb_nd[x]) for x in task.langs}
    return {
        "langs": task.langs,
        "queries": len(q_texts),
        "candidates": len(d_texts),
        "encode_seconds": round(enc_s, 2),
        "mlir_seconds_best": round(min(mlir_s), 3),
        "mteb_seconds_best": round(min(mteb_s), 3),
        "mlir_seconds_all": [round(t, 3) for t in mlir_s],
        "mteb_seconds_all": [round(t, 3) for t in mteb_s],
        "speedup_mlir_vs_mteb": round(min(mteb_s) / min(mlir_s), 2),
        "ndcg10_mlir": {x: round(v, 6) for x, v in mlir_nd.items()},
        "ndcg10_mteb": {x: round(v, 6) for x, v in mteb_nd.items()},
        "ndcg10_macro_mlir": round(float(np.mean(list(mlir_nd.values()))), 6),
        "ndcg10_macro_mteb": round(float(np.mean(list(mteb_nd.values()))), 6),
        "ndcg10_max_abs_diff": float(f"{max(diffs.values()):.3g}"),
        "notes": "MTEB time = its search (dot product + topk + heap merge, Python dicts) + pytrec_eval + "
        "MRR/nAUC; mlir time = counting search over the full ranking + all its metrics. Same embeddings.",
    }


if __name__ == "__main__":
    main()
