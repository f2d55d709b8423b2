"""TREC run and qrels files (mlir.eval.trec): ir_measures on the written files gives mlir's metrics.

The real-data test evaluates a subset of XQuAD-R with a model-free encoder whose embeddings are
multiples of 1/64 (every inner product is exact in float32, so no ranking depends on GEMM rounding
and exact ties are frequent: the tie rule is exercised), writes the runs of every view, and checks
nDCG@10, AP@1000 and R@100 of ir_measures (pytrec_eval inside) against mlir's own, per query.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _eval_data import HashingEncoder, TableEncoder

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks import Benchmark, BenchmarkConfig, load_benchmark
from mlir.eval.metrics import average_precision, ndcg_at_k, recall_at_k
from mlir.eval.runner import evaluate
from mlir.eval.search import relevant_ranks
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask
from mlir.eval.trec import RunFiles, score_strings, trec_id, view_paths


def _ir():
    return pytest.importorskip(
        "ir_measures", reason="ir_measures is in the dev extra (pip install -e .[dev])"
    )


class GridHashingEncoder(HashingEncoder):
    """HashingEncoder rounded to multiples of 1/64: exact float32 inner products (see the module doc)."""

    def _encode(self, texts, side):
        return torch.round(super()._encode(texts, side) * 64) / 64


def _ir_measures(run: Path, qrels: Path) -> dict[tuple[str, str], float]:
    ir_measures = _ir()
    from ir_measures import AP, R, nDCG

    rows = ir_measures.iter_calc(
        [nDCG @ 10, AP @ 1000, R @ 100],
        ir_measures.read_trec_qrels(str(qrels)),
        ir_measures.read_trec_run(str(run)),
    )
    return {(m.query_id, str(m.measure)): m.value for m in rows}


@pytest.mark.data
def test_runs_reproduce_mlir_metrics_on_real_xquad_r(xquad_r_dir, tmp_path):
    _ir()
    langs = ["de", "en", "zh"]
    bench = load_benchmark(
        "xquad_r", {"type": "xquad_r", "path": str(xquad_r_dir), "download": False, "langs": langs}
    )
    bench = Benchmark(bench.config, bench.task.subsample_queries(12, seed=0))
    task, enc = bench.task, GridHashingEncoder(dim=64)
    per_query: list = []
    m = evaluate(enc, [bench], per_query=per_query, runs=RunFiles(str(tmp_path / "runs")))
    q = {x: enc.encode_queries(task.queries[x].texts) for x in langs}
    d = {x: enc.encode_passages(task.docs[x]) for x in langs}
    assert len(per_query) == 3 + 6 + 3
    for e in per_query:
        setting, x = e["setting"], e["q_lang"]
        key = x if setting != "cross" else f"{x}-{e['d_lang']}"
        doc_langs = langs if setting == "multi" else [e["d_lang"]]
        run, qrels = view_paths(tmp_path / "runs", "xquad_r", setting, key)
        got = _ir_measures(run, qrels)
        # mlir's own AP@1000 (the run's depth) from the ranks of the full ranking
        view = task.view(x, doc_langs)
        ranks = relevant_ranks(
            q[x][torch.from_numpy(view.rows)], torch.cat([d[y] for y in doc_langs]), view.rel
        )
        assert [str(task.query_ids[i]) for i in view.qids] == e["qid"]
        np.testing.assert_allclose(ndcg_at_k(ranks, 10), e["metrics"]["ndcg@10"], atol=1e-12)
        for i, qid in enumerate(e["qid"]):
            assert got[(qid, "nDCG@10")] == pytest.approx(e["metrics"]["ndcg@10"][i], abs=1e-6)
            assert got[(qid, "R@100")] == pytest.approx(e["metrics"]["recall@100"][i], abs=1e-6)
            assert got[(qid, "AP@1000")] == pytest.approx(average_precision(ranks, k=1000)[i], abs=1e-6)
        assert len({k[0] for k in got}) == len(e["qid"])  # every evaluated query, nothing else
        # and the means in metrics.json
        mean = np.mean([got[(qid, "nDCG@10")] for qid in e["qid"]])
        if setting != "cross":
            assert m[f"xquad_r/{setting}/ndcg@10/{x}"] == pytest.approx(mean, abs=1e-6)
        np.testing.assert_allclose(recall_at_k(ranks, 100), e["metrics"]["recall@100"], atol=1e-12)
    # docnos are {lang}:{id} with the dataset-wide candidate position: the same in every view
    multi = (tmp_path / "runs/xquad_r/multi/en.qrels.trec").read_text().split()
    mono = (tmp_path / "runs/xquad_r/mono/de.qrels.trec").read_text().split()
    assert {t for t in multi if t.startswith("de:")} >= {t for t in mono if ":" in t}


def _toy(scores: dict[str, float]) -> tuple[Benchmark, TableEncoder]:
    """One query (language a, id "q 0" with a space) over documents of a and b with given scores."""
    table = {"q": [1.0, 0.0], **{t: [s, math.sqrt(1.0 - s * s)] for t, s in scores.items()}}
    task = RetrievalTask(
        name="toy",
        langs=["a", "b"],
        query_ids=["q 0"],
        queries={"a": LangQueries(np.array([0]), ["q"]), "b": LangQueries(np.zeros(0, np.int64), [])},
        docs={"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]},
        rel={"a": Relevance.from_lists([[2]]), "b": Relevance.from_lists([[0]])},
        doc_ids={"a": ["x", "y", "z"], "b": ["u", "v"]},
    )
    return Benchmark(BenchmarkConfig.from_mapping("toy", {"type": "xquad_r"}), task), TableEncoder(table)


def test_run_files_by_hand(tmp_path):
    """The pool ranking b1 .9, a2 .8, a0 = b0 .5 (tied), a1 .3; ties in mlir's order (a0 before b0)."""
    bench, enc = _toy({"a0": 0.5, "a1": 0.3, "a2": 0.8, "b0": 0.5, "b1": 0.9})
    evaluate(enc, [bench], runs=RunFiles(str(tmp_path), depth=4))
    lines = (tmp_path / "toy/multi/a.run.trec").read_text().splitlines()
    assert [ln.split()[:4] for ln in lines] == [
        ["q%200", "Q0", "b:v", "1"],
        ["q%200", "Q0", "a:z", "2"],
        ["q%200", "Q0", "a:x", "3"],
        ["q%200", "Q0", "b:u", "4"],
    ]
    assert all(ln.split()[5] == "mlir" for ln in lines)
    s = [float(ln.split()[4]) for ln in lines]
    assert s == sorted(s, reverse=True) and len(set(s)) == 4  # the tie is split by one step, a0 first
    assert np.float32(s[2]) == 0.5 and np.float32(s[3]) == np.nextafter(np.float32(0.5), np.float32(0))
    assert (tmp_path / "toy/multi/a.qrels.trec").read_text() == "q%200 0 a:z 1\nq%200 0 b:u 1\n"
    assert (tmp_path / "toy/mono/a.qrels.trec").read_text() == "q%200 0 a:z 1\n"
    assert (tmp_path / "toy/cross/a-b.run.trec").read_text().count("\n") == 2  # clamped to b's 2 docs
    assert not list(tmp_path.rglob(".*"))  # no temporary files left
    # the documents and queries behind the runs (to index with BM25 and fuse)
    docs = [json.loads(ln) for ln in (tmp_path / "toy/docs.jsonl").read_text().splitlines()]
    assert [d["id"] for d in docs] == ["a:x", "a:y", "a:z", "b:u", "b:v"]
    assert docs[0] == {"id": "a:x", "contents": "a0", "lang": "a"}
    assert (tmp_path / "toy/queries/a.tsv").read_text() == "q%200\tq\n"
    assert (tmp_path / "toy/queries/b.tsv").read_text() == ""
    # ir_measures ranks as mlir did: relevant at 2 and 4 (trec_eval's docno order would put b:u at 3)
    ir_measures = _ir()
    from ir_measures import AP

    run, qrels = view_paths(tmp_path, "toy", "multi", "a")
    got = ir_measures.calc_aggregate(
        [AP], ir_measures.read_trec_qrels(str(qrels)), ir_measures.read_trec_run(str(run))
    )
    assert got[AP] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_run_settings_restrict_the_views_written(tmp_path):
    bench, enc = _toy({"a0": 0.5, "a1": 0.3, "a2": 0.8, "b0": 0.5, "b1": 0.9})
    evaluate(enc, [bench], runs=RunFiles(str(tmp_path), settings=("multi",)))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.trec")) == [
        "toy/multi/a.qrels.trec",
        "toy/multi/a.run.trec",
    ]


def test_written_scores_are_strictly_decreasing_float32():
    rng = np.random.default_rng(0)
    s = np.sort(rng.random((50, 40)).astype(np.float32), axis=1)[:, ::-1].copy()
    s[:, 5:9] = s[:, 5:6]  # a group of four equal scores
    s[:, 20:22] = s[:, 20:21]
    s[:, 22] = np.nextafter(s[:, 21], np.float32(-np.inf))  # one step below a tie: pushed down too
    back = np.array([[float(x) for x in row] for row in score_strings(s)]).astype(np.float32)
    assert (np.diff(back, axis=1) < 0).all()  # no tie left for trec_eval's float32 sort
    moved = back != s
    assert not moved[:, :6].any() and moved[:, 6:9].all() and not moved[:, 9:21].any()
    steps = (s.view(np.int32).astype(np.int64) - back.view(np.int32)).astype(np.int64)
    np.testing.assert_array_equal(steps[0, 5:9], [0, 1, 2, 3])
    np.testing.assert_array_equal(steps[0, 20:23], [0, 1, 1])
    assert (np.abs(back - s) <= 4 * np.spacing(np.abs(s))).all()
    mixed = score_strings(np.array([[1.5, 0.0, -0.0, -0.0, -2.0]], dtype=np.float32))[0]
    assert [float(x) for x in mixed] == sorted({float(x) for x in mixed}, reverse=True)


def test_trec_ids_are_whitespace_free():
    assert trec_id("a b\tc%") == "a%20b%09c%25"
    assert trec_id("frage 1\u3000x") == "frage%201%E3%80%80x"  # an ideographic space
    assert trec_id("d:17/x") == "d:17/x" and trec_id("") == "%00"


def test_doc_ids_survive_group_restriction():
    task = RetrievalTask(
        name="t",
        langs=["a"],
        query_ids=["q0", "q1"],
        queries={"a": LangQueries(np.array([0, 1]), ["x", "y"])},
        docs={"a": ["d0", "d1", "d2"]},
        rel={"a": Relevance.from_lists([[0], [2]])},
        query_groups=["g0", "g1"],
        doc_groups={"a": ["g0", "g0", "g1"]},
    )
    assert task.doc_ids == {"a": ["0", "1", "2"]}
    assert task.restrict_groups(["g1"]).doc_ids == {"a": ["2"]}
    with pytest.raises(ValueError, match="doc_ids"):
        RetrievalTask(
            name="t",
            langs=["a"],
            query_ids=["q0"],
            queries={"a": LangQueries(np.array([0]), ["x"])},
            docs={"a": ["d0"]},
            rel={"a": Relevance.from_lists([[0]])},
            doc_ids={"a": []},
        )


def test_eval_options_from_config():
    from omegaconf import OmegaConf

    from mlir.eval.runner import evaluate_options

    cfg = OmegaConf.create(
        {"eval": {"run_dir": "/x/runs", "run_settings": ["mono", "multi"], "run_depth": 50}}
    )
    opts = evaluate_options(cfg)
    assert opts["fairness_k"] == 10 and opts["runs"] == RunFiles("/x/runs", 50, ("mono", "multi"))
    assert evaluate_options(OmegaConf.create({"eval": {}})) == {"fairness_k": 10, "runs": None}
    for bad in ({"run_depth": 0}, {"fairness_k": "ten"}, {"run_settings": ["bilingual"]}):
        with pytest.raises(ConfigError):
            evaluate_options(OmegaConf.create({"eval": {"run_dir": "r", **bad}}))
