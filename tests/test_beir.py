"""Type beir: BEIR-format directories (plain and gzipped), graded relevance, settings, bad input, eval.py."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _eval_data import KeyEncoder

from mlir.core.errors import ConfigError, DataError, exit_on_user_error
from mlir.eval.benchmarks import BenchmarkConfig, load_benchmark
from mlir.eval.runner import evaluate, score_task

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ test data


def _write(path: Path, lines: list[str], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{x}\n" for x in lines).encode()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


def write_lang(
    d: Path,
    corpus: list[dict],
    queries: list[dict],
    qrels: dict[str, list[tuple[str, str, int]]],
    gz: bool = False,
) -> None:
    """One language directory: corpus, queries and qrels/{split}.tsv (with BEIR's header line)."""
    _write(d / "corpus.jsonl", [json.dumps(x, ensure_ascii=False) for x in corpus], gz)
    _write(d / "queries.jsonl", [json.dumps(x, ensure_ascii=False) for x in queries], gz)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{c}\t{s}" for q, c, s in rows]
        _write(d / "qrels" / f"{split}.tsv", lines, gz)


def make_beir_dir(root: Path, gz: bool = False) -> Path:
    """Two languages with their own questions. de: 3 dev queries (q2 judged only 0), one train query."""
    write_lang(
        root / "de",
        [
            {"_id": "d1", "title": "Berlin k1", "text": "Hauptstadt"},
            {"_id": "d2", "title": "", "text": "k2 Text ohne Titel"},
            {"_id": "d3", "title": "Titel k3", "text": "noch ein k1"},
            {"_id": "d 4", "text": "k4 ohne Titelfeld"},
        ],
        [
            {"_id": "q1", "text": "wo k1"},
            {"_id": "q2", "text": "was k2"},
            {"_id": "q3", "text": "wer k3"},
            {"_id": "qt", "text": "train k4"},
        ],
        {
            "dev": [("q1", "d1", 2), ("q1", "d3", 1), ("q1", "d2", 0), ("q2", "d2", 0), ("q3", "d3", 1)],
            "train": [("qt", "d 4", 1)],
        },
        gz,
    )
    write_lang(
        root / "sw",
        [{"_id": "s1", "title": "T", "text": "k5 a"}, {"_id": "s2", "title": "U", "text": "k6 b"}],
        [{"_id": "q1", "text": "k6 swali"}],
        {"dev": [("q1", "s2", 1)]},
        gz,
    )
    return root


# ------------------------------------------------------------------------------------ the task


def test_task_of_a_beir_directory(tmp_path):
    task = load_benchmark("mine", {"type": "beir", "path": str(make_beir_dir(tmp_path))}).task
    assert task.langs == ["de", "sw"]
    # query ids are per language (different questions), only the dev-judged queries are read
    assert task.query_ids == ["de:q1", "de:q2", "de:q3", "sw:q1"]
    assert task.queries["de"].texts == ["wo k1", "was k2", "wer k3"]
    assert task.queries["de"].ids.tolist() == [0, 1, 2] and task.queries["sw"].ids.tolist() == [3]
    # title + candidate_sep + text; the text alone without a title; the dataset's own ids
    assert task.docs["de"] == [
        "Berlin k1 Hauptstadt",
        "k2 Text ohne Titel",
        "Titel k3 noch ein k1",
        "k4 ohne Titelfeld",
    ]
    assert task.doc_ids == {"de": ["d1", "d2", "d3", "d 4"], "sw": ["s1", "s2"]}
    # graded relevance, score 0 is not relevant; another language's relevance is empty
    rel = task.rel["de"]
    assert rel.of(0).tolist() == [0, 2] and rel.grades_of(0).tolist() == [2.0, 1.0]
    assert rel.of(1).tolist() == [] and rel.of(2).tolist() == [2] and rel.of(3).tolist() == []
    assert task.rel["sw"].of(3).tolist() == [1]
    assert task.meta["read"]["de"] == {
        "queries": 3,
        "documents": 4,
        "relevant": 3,
        "non_relevant_judgements": 2,
        "unjudged_queries": 1,
    }
    # the mono view drops the query without a relevant document and carries the grades
    v = task.view("de", ["de"])
    assert v.rows.tolist() == [0, 2] and v.dropped == 1
    assert [g.tolist() for g in v.gains] == [[2.0, 1.0], [1.0]]


def test_gzipped_layout_options_and_a_single_dataset_directory(tmp_path):
    plain = load_benchmark("b", {"type": "beir", "path": str(make_beir_dir(tmp_path / "plain"))}).task
    gz = load_benchmark("b", {"type": "beir", "path": str(make_beir_dir(tmp_path / "gz", gz=True))}).task
    assert (gz.query_ids, gz.docs, gz.doc_ids) == (plain.query_ids, plain.docs, plain.doc_ids)
    for x in plain.langs:
        for a, b in ((gz.rel[x].indices, plain.rel[x].indices), (gz.rel[x].grades, plain.rel[x].grades)):
            np.testing.assert_array_equal(a, b)
    cfg = {"type": "beir", "path": str(tmp_path / "plain"), "langs": ["sw"], "qrels_split": "train"}
    with pytest.raises(DataError, match="no qrels for split 'train'.*\\['dev'\\]"):
        load_benchmark("b", cfg)
    task = load_benchmark("b", {**cfg, "langs": ["de"], "candidates": "text"}).task
    assert task.query_ids == ["de:qt"] and task.docs["de"][0] == "Hauptstadt"
    task = load_benchmark("b", {**cfg, "langs": ["de"], "qrels_split": "dev", "candidate_sep": " | "}).task
    assert task.docs["de"][0] == "Berlin k1 | Hauptstadt"
    # a directory holding corpus.jsonl itself is one dataset named after it
    task = load_benchmark("b", {"type": "beir", "path": str(tmp_path / "plain" / "sw")}).task
    assert task.langs == ["sw"] and task.query_ids == ["sw:q1"]


def test_only_the_configured_languages_are_read(tmp_path):
    root = make_beir_dir(tmp_path)
    write_lang(root / "xx", [], [{"_id": "q"}], {"dev": []})  # broken, but not asked for
    assert load_benchmark("b", {"type": "beir", "path": str(root), "langs": ["sw"]}).task.langs == ["sw"]
    with pytest.raises(ConfigError) as ei:
        load_benchmark("b", {"type": "beir", "path": str(root), "langs": ["fr"]})
    assert ei.value.where == "benchmarks.b.langs" and "['de', 'sw', 'xx']" in str(ei.value)


def test_settings_default_to_mono_and_cross_needs_parallel_queries(tmp_path):
    assert BenchmarkConfig.from_mapping("b", {"type": "beir"}).settings == ["mono"]
    assert BenchmarkConfig.from_mapping("x", {"type": "xquad_r"}).settings == ["mono", "cross", "multi"]
    for build in (
        lambda: BenchmarkConfig.from_mapping("b", {"type": "beir", "settings": ["mono", "cross"]}),
        lambda: load_benchmark("b", BenchmarkConfig("b", "beir", path=str(tmp_path))),  # all settings
    ):
        with pytest.raises(ConfigError) as ei:
            build()
        assert ei.value.where == "benchmarks.b.settings" and "parallel_queries: true" in str(ei.value)
    for key, value in (("qrels_split", "dev"), ("parallel_queries", True)):
        with pytest.raises(ConfigError) as ei:
            BenchmarkConfig.from_mapping("x", {"type": "xquad_r", key: value})
        assert ei.value.where == f"benchmarks.x.{key}"
    with pytest.raises(ConfigError, match="file name"):
        BenchmarkConfig.from_mapping("b", {"type": "beir", "qrels_split": "../dev"})


def test_parallel_queries_give_cross_and_multi(tmp_path):
    """mMARCO-like: the same ids in both languages are translations; KeyEncoder is language-agnostic."""
    for lang in ("en", "fr"):
        write_lang(
            tmp_path / lang,
            [{"_id": f"p{i}", "title": "", "text": f"{lang} passage k{i}"} for i in range(6)],
            [{"_id": f"q{i}", "text": f"{lang} question k{i}"} for i in range(4)],
            {"dev": [(f"q{i}", f"p{i}", 1) for i in range(4)]},
        )
    cfg = {
        "type": "beir",
        "path": str(tmp_path),
        "parallel_queries": True,
        "settings": ["mono", "cross", "multi"],
    }
    bench = load_benchmark("mm", cfg)
    assert bench.task.query_ids == ["q0", "q1", "q2", "q3"]
    m = evaluate(KeyEncoder(), [bench], fairness_k=None)
    for setting in ("mono", "cross", "multi"):  # multi: 2 relevant passages per query (en and fr)
        assert m[f"mm/{setting}/recall@5"] == m[f"mm/{setting}/mrr@10"] == pytest.approx(1.0)
    assert m["mm/multi/rank_distance"] == 0.0  # the two languages' relevant passages tie


# ------------------------------------------------------------------------------------ graded nDCG


def test_grades_survive_group_restriction_language_selection_and_query_merging():
    """RetrievalTask keeps a document's grade wherever its relevance goes (generic code, any type)."""
    from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask

    task = RetrievalTask(
        name="t",
        langs=["a", "b"],
        query_ids=["x", "y"],
        queries={
            "a": LangQueries(np.array([0, 1]), ["same", "same"]),
            "b": LangQueries(np.array([0]), ["q"]),
        },
        docs={"a": ["d0", "d1", "d2"], "b": ["e0"]},
        rel={
            "a": Relevance.from_lists([[0, 2], [2, 1]], [[1, 3], [2, 1]]),
            "b": Relevance.from_lists([[0], []]),
        },
        query_groups=["g1", "g2"],
        doc_groups={"a": ["g1", "g2", "g1"], "b": ["g1"]},
        merge_duplicate_queries=True,
    )
    # identical query texts are one query: the union of the documents, each with its highest grade
    v = task.view("a", ["a"])
    assert v.rel[0].tolist() == [0, 1, 2] and v.gains[0].tolist() == [1.0, 1.0, 3.0] and v.merged == 1
    # a binary language in a graded pool has grade 1
    v = task.view("a", ["b", "a"])
    assert v.rel[0].tolist() == [0, 1, 2, 3] and v.gains[0].tolist() == [1.0, 1.0, 1.0, 3.0]
    assert task.view("b", ["b"]).gains is None  # binary only: no gains, the metrics are the binary ones
    sub = task.restrict_groups(["g1"])
    assert sub.rel["a"].of(0).tolist() == [0, 1] and sub.rel["a"].grades_of(0).tolist() == [1.0, 3.0]
    assert sub.rel["a"].of(1).tolist() == [] and sub.rel["b"].grades is None
    assert task.select_langs(["a"]).rel["a"].grades.tolist() == [1.0, 3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="grades must be positive"):
        RetrievalTask(
            "t",
            ["a"],
            ["x"],
            {"a": task.queries["b"]},
            {"a": ["d"]},
            {"a": Relevance.from_lists([[0]], [[0]])},
        )


class VectorEncoder:
    """text -> a fixed vector (``table``); queries and passages alike."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def _enc(self, texts):
        return torch.from_numpy(np.stack([self.table[t] for t in texts]).astype(np.float32))

    def encode_queries(self, texts, batch_size=None):
        return self._enc(texts)

    def encode_passages(self, texts, batch_size=None):
        return self._enc(texts)


def _random_graded_dir(root: Path, seed: int) -> tuple[dict, dict, dict]:
    """40 queries x 150 documents per language, grades 0..3, integer vectors (many exact score ties)."""
    rng = np.random.default_rng(seed)
    table, qrels, scores = {}, {}, {}
    for lang in ("aa", "bb"):
        docs = [{"_id": f"{lang}d{j}", "title": "", "text": f"{lang} doc {j}"} for j in range(150)]
        queries = [{"_id": f"q{i}", "text": f"{lang} query {i}"} for i in range(40)]
        rows = []
        for i in range(40):
            judged = rng.choice(150, size=rng.integers(1, 8), replace=False)
            grades = rng.integers(0, 4, len(judged))
            rows += [(f"q{i}", f"{lang}d{j}", int(g)) for j, g in zip(judged, grades)]
        write_lang(root / lang, docs, queries, {"dev": rows})
        qv = rng.integers(-1, 2, (40, 4)).astype(np.float32)
        dv = rng.integers(-1, 2, (150, 4)).astype(np.float32)
        table.update({q["text"]: v for q, v in zip(queries, qv)})
        table.update({d["text"]: v for d, v in zip(docs, dv)})
        scores[lang] = qv.astype(np.float64) @ dv.astype(np.float64).T
        qrels[lang] = rows
    return table, qrels, scores


def _pytrec(lang: str, qrels: dict, scores: dict) -> dict:
    """pytrec_eval on the full score matrix; docnos descend as the index ascends (mlir's tie order)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    n = scores[lang].shape[1]
    name = {f"{lang}d{j}": f"{n - 1 - j:06d}" for j in range(n)}
    qr: dict[str, dict[str, int]] = {}
    for q, d, g in qrels[lang]:
        qr.setdefault(q, {})[name[d]] = g
    run = {
        f"q{i}": {f"{n - 1 - j:06d}": float(s) for j, s in enumerate(row)}
        for i, row in enumerate(scores[lang])
    }
    return pytrec_eval.RelevanceEvaluator(qr, {"ndcg_cut.10", "map", "recall.100"}).evaluate(run)


def test_graded_view_metrics_match_pytrec_eval(tmp_path):
    """The task's views carry the qrels grades into nDCG: per query equal to trec_eval to 1e-6."""
    from mlir.eval.metrics import compute_metrics
    from mlir.eval.search import relevant_ranks

    table, qrels, scores = _random_graded_dir(tmp_path, seed=0)
    task = load_benchmark("g", {"type": "beir", "path": str(tmp_path)}).task
    enc = VectorEncoder(table)
    for lang in task.langs:
        v = task.view(lang, [lang])
        q = enc.encode_queries([task.queries[lang].texts[r] for r in v.rows])
        ours = compute_metrics(relevant_ranks(q, enc.encode_passages(task.docs[lang]), v.rel), gains=v.gains)
        trec = _pytrec(lang, qrels, scores)
        qids = [task.query_ids[i].split(":", 1)[1] for i in v.qids]
        # trec_eval scores a query judged only 0 as 0; mlir leaves it out (counted as dropped)
        assert v.dropped == sum(all(g <= 0 for qq, _, g in qrels[lang] if qq == q) for q in trec) > 0
        for ours_name, trec_name in (
            ("ndcg@10", "ndcg_cut_10"),
            ("map", "map"),
            ("recall@100", "recall_100"),
        ):
            ref = np.array([trec[q][trec_name] for q in qids])
            np.testing.assert_allclose(ours[ours_name], ref, rtol=0, atol=1e-6, err_msg=f"{lang} {ours_name}")


def test_evaluate_scores_graded_ndcg(tmp_path):
    """Through the runner (score_task): mono nDCG@10 per language is trec_eval's graded ndcg_cut_10."""
    table, qrels, scores = _random_graded_dir(tmp_path, seed=1)
    bench = load_benchmark("g", {"type": "beir", "path": str(tmp_path)})
    enc = VectorEncoder(table)
    task = bench.task
    q = enc.encode_queries([t for x in task.langs for t in task.queries[x].texts])
    d = enc.encode_passages([t for x in task.langs for t in task.docs[x]])
    m, _ = score_task(task, q, d, settings=["mono"], fairness_k=None)
    for lang in task.langs:
        trec = _pytrec(lang, qrels, scores)
        keep = [q for q in trec if any(g > 0 for qq, _, g in qrels[lang] if qq == q)]
        for ours_name, trec_name in (("ndcg@10", "ndcg_cut_10"), ("map", "map")):
            ref = np.mean([trec[q][trec_name] for q in keep])
            assert m[f"g/mono/{ours_name}/{lang}"] == pytest.approx(ref, abs=1e-6), ours_name


# ------------------------------------------------------------------------------------ bad input


def _bad(root: Path, case: str) -> tuple[Path, int | None]:
    """Break one file of a good directory; returns the file and the line the error must name."""
    make_beir_dir(root)
    de = root / "de"
    corpus = (de / "corpus.jsonl").read_text().splitlines()
    queries = (de / "queries.jsonl").read_text().splitlines()
    qrels = (de / "qrels" / "dev.tsv").read_text().splitlines()
    if case == "unknown_query":
        qrels.insert(2, "q9\td1\t1")
        _write(de / "qrels" / "dev.tsv", qrels)
        return de / "qrels" / "dev.tsv", 3
    if case == "unknown_document":
        qrels.append("q1\td9\t1")
        _write(de / "qrels" / "dev.tsv", qrels)
        return de / "qrels" / "dev.tsv", len(qrels)
    if case == "conflicting_judgement":
        qrels.append("q1\td1\t1")
        _write(de / "qrels" / "dev.tsv", qrels)
        return de / "qrels" / "dev.tsv", len(qrels)
    if case == "bad_score":
        qrels.append("q1\td2\thigh")
        _write(de / "qrels" / "dev.tsv", qrels)
        return de / "qrels" / "dev.tsv", len(qrels)
    if case == "duplicate_doc_id":
        corpus.append(json.dumps({"_id": "d2", "title": "", "text": "again"}))
        _write(de / "corpus.jsonl", corpus)
        return de / "corpus.jsonl", len(corpus)
    if case == "duplicate_query_id":
        queries.insert(1, json.dumps({"_id": "q1", "text": "again"}))
        _write(de / "queries.jsonl", queries)
        return de / "queries.jsonl", 2
    if case == "missing_text":
        corpus[2] = json.dumps({"_id": "d3", "title": "t"})
        _write(de / "corpus.jsonl", corpus)
        return de / "corpus.jsonl", 3
    if case == "missing_query_id":
        queries[0] = json.dumps({"text": "wo k1"})
        _write(de / "queries.jsonl", queries)
        return de / "queries.jsonl", 1
    if case == "empty_corpus":
        (de / "corpus.jsonl").write_text("\n")
        return de / "corpus.jsonl", None
    if case == "plain_and_gzip":
        _write(de / "corpus.jsonl", corpus, gz=True)
        return de / "corpus.jsonl", None
    raise AssertionError(case)


BAD = {
    "unknown_query": "unknown query-id 'q9'",
    "unknown_document": "unknown corpus-id 'd9'",
    "conflicting_judgement": "judged twice with different scores (first on line 2)",
    "bad_score": "integer relevance grade",
    "duplicate_doc_id": "duplicate _id 'd2' (first on line 2)",
    "duplicate_query_id": "duplicate _id 'q1' (first on line 1)",
    "missing_text": "missing field 'text'",
    "missing_query_id": "missing field '_id'",
    "empty_corpus": "empty corpus",
    "plain_and_gzip": "both corpus.jsonl and corpus.jsonl.gz exist",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_file_and_line(case, tmp_path, capsys):
    path, line = _bad(tmp_path, case)

    def read():
        load_benchmark("b", {"type": "beir", "path": str(tmp_path)})

    with pytest.raises(DataError) as ei:
        read()
    assert ei.value.where == (f"{path}:{line}" if line else str(path))
    assert BAD[case] in ei.value.message
    with pytest.raises(SystemExit) as ex:
        exit_on_user_error(read)()
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {ei.value.where}: {ei.value.message}"]


# ------------------------------------------------------------------------------------ eval.py


def _eval_py(tmp_path: Path, tiny_model_dir: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLIR_CACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0", PYTHONPATH=str(ROOT))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [
        sys.executable,
        str(ROOT / "eval.py"),
        "+benchmark@eval.benchmarks.mine=beir",
        f"eval.benchmarks.mine.path={data}",
        "~eval.benchmarks.xquad_r",
        "model=tiny_random",
        f"model.encoder.name_or_path={tiny_model_dir}",
        "eval.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_eval_py_on_a_beir_directory(tmp_path, tiny_model_dir):
    data = make_beir_dir(tmp_path / "beir", gz=True)
    res = _eval_py(tmp_path, tiny_model_dir, data, f"eval.run_dir={tmp_path / 'runs'}")
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for lang in ("de", "sw"):
        for metric in ("ndcg@10", "map", "recall@100", "mrr@10"):
            assert 0.0 <= metrics[f"mine/mono/{metric}/{lang}"] <= 1.0
    assert not any(k.startswith(("mine/cross", "mine/multi")) for k in metrics)
    # the run files name the dataset's own documents and the language-qualified query ids
    run = (tmp_path / "runs" / "mine" / "mono" / "de.run.trec").read_text().split("\n")
    assert {line.split()[0] for line in run if line} == {"de:q1", "de:q3"}
    assert {line.split()[2] for line in run if line} == {"de:d1", "de:d2", "de:d3", "de:d%204"}
    # a bad file: one line naming it, exit 2
    (data / "sw" / "corpus.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "s1"}\n'))
    res = _eval_py(tmp_path, tiny_model_dir, data)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines == [f"error: {data / 'sw' / 'corpus.jsonl.gz'}:1: missing field 'text'"]
