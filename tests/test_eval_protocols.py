"""Evaluation protocols: tasks, settings, rank distance, MKQA/LAReQA construction, encoding, subsamples."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _eval_data import HashingEncoder, KeyEncoder, TableEncoder, make_xquad_dir, write_mkqa

from mlir.core.errors import ConfigError, MlirError
from mlir.eval.benchmarks import Benchmark, BenchmarkConfig, load_benchmark, mkqa_task
from mlir.eval.encode import DistInfo, dedupe, encode_texts, shard_bounds
from mlir.eval.runner import evaluate
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask, language_rank_distance

SHARED = Path(os.environ.get("MLIR_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
METRICS = ("ndcg@10", "map", "recall@1", "recall@10", "mrr@10")


def _vec(score: float) -> list[float]:
    """A unit vector whose inner product with the query [1, 0] is ``score``."""
    return [score, math.sqrt(1.0 - score * score)]


def _toy_benchmark(**cfg) -> tuple[Benchmark, TableEncoder]:
    """One query (asked in a) and hand-placed documents in languages a, b, c."""
    scores = {"a_rel": 0.9, "a_d1": 0.8, "b_rel": 0.5, "b_d1": 0.6, "c_rel": 0.7}
    table = {"qa": [1.0, 0.0], **{t: _vec(s) for t, s in scores.items()}}
    task = RetrievalTask(
        name="toy",
        langs=["a", "b", "c"],
        query_ids=["q0"],
        queries={
            "a": LangQueries(np.array([0]), ["qa"]),
            "b": LangQueries(np.zeros(0, np.int64), []),
            "c": LangQueries(np.zeros(0, np.int64), []),
        },
        docs={"a": ["a_rel", "a_d1"], "b": ["b_rel", "b_d1"], "c": ["c_rel"]},
        rel={x: Relevance.from_lists([[0]]) for x in "abc"},
    )
    return Benchmark(BenchmarkConfig.from_mapping("toy", {"type": "xquad_r", **cfg}), task), TableEncoder(
        table
    )


# ------------------------------------------------------------------------------------ rank distance


def test_hand_computed_multi_pool_rank_distance_and_metrics():
    bench, enc = _toy_benchmark(cross={"pair_keys": True})
    m = evaluate(enc, [bench])
    # pool ranking by score: a_rel .9 (1), a_d1 .8 (2), c_rel .7 (3), b_d1 .6 (4), b_rel .5 (5)
    assert m["toy/multi/rank_distance/a"] == 5 - 1
    assert m["toy/multi/rank_distance"] == 4
    assert m["toy/multi/map/a"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(6)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["toy/multi/ndcg@10/a"] == pytest.approx(dcg / idcg)
    assert m["toy/multi/recall@1/a"] == pytest.approx(1 / 3)
    # mono a: rank 1; cross a->b: b_d1 outranks b_rel (rank 2); cross a->c: rank 1
    assert m["toy/mono/recall@1/a"] == 1.0
    assert m["toy/cross/mrr@10/a-b"] == 0.5
    assert m["toy/cross/mrr@10/a-c"] == 1.0
    assert m["toy/cross/mrr@10/a"] == pytest.approx(0.75)  # query language a: mean over its targets
    # languages without queries have no per-language keys (not NaN)
    assert not any(k.endswith("/b") or k.endswith("/c") for k in m)
    assert m["toy/avg/ndcg@10"] == pytest.approx(
        np.mean([m["toy/mono/ndcg@10"], m["toy/cross/ndcg@10"], m["toy/multi/ndcg@10"]])
    )


def test_language_rank_distance_definition():
    # best rank per language (3, 4, 7), then max - min
    r = language_rank_distance([np.array([3, 10, 4, 7])], [np.array([0, 0, 1, 2])])
    assert r[0] == 7 - 3
    # relevant docs of one language only: undefined
    assert np.isnan(language_rank_distance([np.array([1, 5])], [np.array([0, 0])])[0])
    # exact ties are ranked by index (1, 2, 3) but equal scores mean no language bias
    ranks, langs = [np.array([1, 2, 3])], [np.array([0, 1, 2])]
    assert language_rank_distance(ranks, langs)[0] == 2
    assert language_rank_distance(ranks, langs, [np.array([0.5, 0.5, 0.5])])[0] == 0
    # a tie between two languages only: the third still counts
    assert language_rank_distance([np.array([1, 2, 9])], langs, [np.array([0.5, 0.5, 0.1])])[0] == 8


# ------------------------------------------------------------------------------- LAReQA / XQuAD-R


@pytest.fixture(scope="module")
def xquad_dir(tmp_path_factory):
    return make_xquad_dir(tmp_path_factory.mktemp("xq") / "xquad-r")


def _xq(xquad_dir, **cfg):
    return {"type": "xquad_r", "path": str(xquad_dir), "download": False, **cfg}


def test_perfect_encoder_all_settings(xquad_dir):
    """Parallel texts -> identical vectors: every setting is perfect, and ties are no language bias."""
    bench = load_benchmark("xq", _xq(xquad_dir))
    langs = bench.task.langs
    m = evaluate(KeyEncoder(), [bench])
    for setting in ("mono", "cross", "multi"):
        for lang in langs:
            assert m[f"xq/{setting}/ndcg@10/{lang}"] == pytest.approx(1.0)
            assert m[f"xq/{setting}/map/{lang}"] == pytest.approx(1.0)
    for lang in langs:
        assert m[f"xq/mono/recall@1/{lang}"] == 1.0
        assert m[f"xq/cross/recall@1/{lang}"] == 1.0
        # one relevant sentence per language in the pool; only one can be first
        assert m[f"xq/multi/recall@1/{lang}"] == pytest.approx(1 / len(langs))
        assert m[f"xq/multi/recall@10/{lang}"] == 1.0
        assert m[f"xq/multi/rank_distance/{lang}"] == 0.0


def test_per_language_keys_present(xquad_dir):
    bench = load_benchmark("xq", _xq(xquad_dir))
    m = evaluate(HashingEncoder(dim=64), [bench])
    for setting in ("mono", "cross", "multi"):
        for metric in METRICS:
            assert f"xq/{setting}/{metric}" in m
            for lang in bench.task.langs:
                assert f"xq/{setting}/{metric}/{lang}" in m
    for lang in bench.task.langs:
        assert f"xq/multi/rank_distance/{lang}" in m
    for metric in METRICS:
        assert f"xq/avg/{metric}" in m
    assert not any("-" in k.rsplit("/", 1)[-1] for k in m)  # no pair keys unless asked
    assert all(np.isfinite(v) for v in m.values())


def test_lareqa_candidates_are_all_sentences(xquad_dir):
    raw = json.loads((xquad_dir / "de.json").read_text())
    sentences = [s for a in raw["data"] for p in a["paragraphs"] for s in p["sentences"]]
    task = load_benchmark("xq", _xq(xquad_dir)).task
    assert task.docs["de"] == sentences
    # relevant = the sentence holding the answer start
    qa = raw["data"][1]["paragraphs"][0]["qas"][1]
    qid = task.query_ids.index(qa["id"])
    (rel,) = task.rel["de"].of(qid)
    assert qa["answers"][0]["text"] in task.docs["de"][rel]
    ctx_task = load_benchmark("xq", _xq(xquad_dir, candidates="sentence_with_paragraph")).task
    para = raw["data"][0]["paragraphs"][1]
    i = sentences.index(para["sentences"][2])
    assert ctx_task.docs["de"][i] == para["sentences"][2] + " " + para["context"]


def test_group_split_restricts_queries_and_candidates(xquad_dir):
    task = load_benchmark("xq", _xq(xquad_dir, split={"groups": ["Article_1", "Article_3"]})).task
    for lang in task.langs:
        assert task.docs[lang] and all(("article 1." in d) or ("article 3." in d) for d in task.docs[lang])
        assert all(task.query_ids[i].startswith(("q1-", "q3-")) for i in task.queries[lang].ids)
        assert len(task.docs[lang]) == 2 * 2 * 3  # 2 articles x 2 paragraphs x 3 sentences
    # the generic RetrievalTask.restrict_groups agrees with the reader's restriction
    full = load_benchmark("xq", _xq(xquad_dir)).task
    sub = full.restrict_groups(["Article_1", "Article_3"])
    for lang in task.langs:
        assert sub.docs[lang] == task.docs[lang]
        assert [full.query_ids[i] for i in sub.queries[lang].ids] == [
            task.query_ids[i] for i in task.queries[lang].ids
        ]


def test_benchmark_parts_match_training_split(xquad_dir):
    """The benchmark's test (and dev, train) articles are exactly those of training's plan_split."""
    from mlir.data.splits import plan_split
    from mlir.data.xquad_r import read_xquad_r

    split = {"n_folds": 3, "fold": 1, "n_dev_groups": 1, "seed": 3}
    plan = plan_split(read_xquad_r(xquad_dir).groups, **split)
    for part in ("test", "dev", "train"):
        task = load_benchmark("xq", _xq(xquad_dir, split={**split, "part": part}, langs=["de", "zh"])).task
        assert task.meta["groups"] == plan.part(part)
    docs = {
        p: set(load_benchmark("xq", _xq(xquad_dir, split={**split, "part": p})).task.docs["en"])
        for p in ("test", "dev", "train")
    }
    assert docs["test"].isdisjoint(docs["train"]) and docs["test"].isdisjoint(docs["dev"])
    assert docs["dev"].isdisjoint(docs["train"])


def test_query_subsample_is_seeded_and_parallel(xquad_dir):
    full = load_benchmark("xq", _xq(xquad_dir)).task
    a = full.subsample_queries(5, seed=1)
    b = full.subsample_queries(5, seed=1)
    c = full.subsample_queries(5, seed=2)
    for lang in full.langs:
        assert len(a.queries[lang].ids) == 5
        assert a.queries[lang].ids.tolist() == b.queries[lang].ids.tolist()
        assert a.queries[lang].ids.tolist() == a.queries[full.langs[0]].ids.tolist()  # same questions
        assert a.docs[lang] == full.docs[lang]  # candidates are never subsampled
    assert a.queries["en"].ids.tolist() != c.queries["en"].ids.tolist()
    # a smaller subsample of a subsample is the smaller subsample
    assert (
        a.subsample_queries(3, seed=1).queries["en"].ids.tolist()
        == full.subsample_queries(3, seed=1).queries["en"].ids.tolist()
    )
    # via config, and a language missing some questions still gets its quota
    cfg_task = load_benchmark("xq", _xq(xquad_dir, max_queries_per_lang=4, seed=1)).task
    assert cfg_task.queries["de"].ids.tolist() == full.subsample_queries(4, seed=1).queries["de"].ids.tolist()
    q = full.queries["de"]
    gappy = RetrievalTask(
        **{**full.__dict__, "queries": {**full.queries, "de": LangQueries(q.ids[::2], q.texts[::2])}}
    )
    assert len(gappy.subsample_queries(5, seed=1).queries["de"].ids) == 5


def test_cross_pairs_configuration(xquad_dir):
    bench = load_benchmark("xq", _xq(xquad_dir, cross={"target": "en", "pair_keys": True}))
    assert bench.cross_pairs() == [("de", "en"), ("zh", "en")]
    m = evaluate(KeyEncoder(), [bench])
    assert "xq/cross/ndcg@10/de-en" in m and "xq/cross/ndcg@10/en" not in m
    bench = load_benchmark("xq", _xq(xquad_dir, cross={"pairs": [["zh", "de"]]}))
    assert bench.cross_pairs() == [("zh", "de")]
    with pytest.raises(ConfigError):
        load_benchmark("xq", _xq(xquad_dir, cross={"pairs": [["de", "de"]]})).cross_pairs()
    with pytest.raises(MlirError, match="xx"):
        load_benchmark("xq", _xq(xquad_dir, langs=["de", "xx"]))
    with pytest.raises(ConfigError):
        BenchmarkConfig.from_mapping("xq", _xq(xquad_dir, settings=["mono", "bilingual"]))


def test_mkqa_format_from_xquad_r_is_labelled_by_source(xquad_dir):
    with pytest.raises(ConfigError):
        BenchmarkConfig.from_mapping("mkqa", {"type": "xquad_r_mkqa", "path": str(xquad_dir)})
    bench = load_benchmark(
        "xquad_r_mkqa", {"type": "xquad_r_mkqa", "path": str(xquad_dir), "download": False}
    )
    assert bench.task.meta["protocol"] == "mkqa"
    assert bench.task.docs["de"] == sorted(set(bench.task.docs["de"]), key=bench.task.docs["de"].index)
    m = evaluate(KeyEncoder(), [bench])
    assert m and all(k.startswith("xquad_r_mkqa/") for k in m)
    assert m["xquad_r_mkqa/multi/rank_distance"] == 0.0


# ------------------------------------------------------------------------------------------- MKQA


def _ans(text):
    return [{"type": "entity" if text else "unanswerable", "text": text, "aliases": []}]


MKQA_RECORDS = [
    {  # same answer string in en and de: two documents (language, text) with identical vectors
        "example_id": 1,
        "query": "who directed k1",
        "queries": {"en": "who directed k1", "de": "wer k1", "ja": "k1 ja"},
        "answers": {"en": _ans("Ridley Scott k1"), "de": _ans("Ridley Scott k1"), "ja": _ans("k1 スコット")},
    },
    {  # two answer texts per language (year and date)
        "example_id": 2,
        "query": "when k2",
        "queries": {"en": "when k2", "de": "wann k2", "ja": "k2 いつ"},
        "answers": {
            lang: [
                {"type": "date", "text": "k2 2017", "aliases": []},
                {"type": "date", "text": "k2 2017-05-18"},
            ]
            for lang in ("en", "de", "ja")
        },
    },
    {  # unanswerable everywhere
        "example_id": 3,
        "query": "k3?",
        "queries": {"en": "k3?", "de": "k3 de?", "ja": "k3 ja?"},
        "answers": {lang: _ans(None) for lang in ("en", "de", "ja")},
    },
    {  # German query missing
        "example_id": 4,
        "query": "what k4",
        "queries": {"en": "what k4", "de": None, "ja": "k4 ja"},
        "answers": {lang: _ans(f"k4 {lang}") for lang in ("en", "de", "ja")},
    },
    {  # Japanese answers missing
        "example_id": 5,
        "query": "which k5",
        "queries": {"en": "which k5", "de": "welche k5", "ja": "k5 ja"},
        "answers": {"en": _ans("k5 en"), "de": _ans("k5 de"), "ja": []},
    },
]


@pytest.fixture(scope="module")
def mkqa_file(tmp_path_factory):
    return write_mkqa(tmp_path_factory.mktemp("mkqa") / "mkqa.jsonl.gz", MKQA_RECORDS)


def test_mkqa_parsing_and_drop_counts(mkqa_file):
    task = load_benchmark("mkqa", {"type": "mkqa", "path": str(mkqa_file), "download": False}).task
    assert task.langs == ["de", "en", "ja"]
    skipped = task.meta["skipped"]
    assert skipped["en"] == {"missing_query": 0, "missing_answers": 0, "no_answer_text": 1}
    assert skipped["de"] == {"missing_query": 1, "missing_answers": 0, "no_answer_text": 1}
    assert skipped["ja"] == {"missing_query": 0, "missing_answers": 1, "no_answer_text": 1}
    assert sorted(task.queries["en"].texts) == sorted(["who directed k1", "when k2", "what k4", "which k5"])
    assert sorted(task.queries["de"].texts) == sorted(["wer k1", "wann k2", "welche k5"])
    assert sorted(task.docs["en"]) == sorted(
        ["Ridley Scott k1", "k2 2017", "k2 2017-05-18", "k4 en", "k5 en"]
    )
    assert sorted(task.docs["ja"]) == sorted(["k1 スコット", "k2 2017", "k2 2017-05-18", "k4 ja"])
    qid = task.query_ids.index("2")
    assert sorted(task.docs["de"][i] for i in task.rel["de"].of(qid)) == ["k2 2017", "k2 2017-05-18"]


def test_mkqa_settings_with_perfect_encoder(mkqa_file):
    bench = load_benchmark("mkqa", {"type": "mkqa", "path": str(mkqa_file), "download": False})
    details: dict = {}
    m = evaluate(KeyEncoder(), [bench], details=details)
    for setting in ("mono", "cross", "multi"):
        assert m[f"mkqa/{setting}/ndcg@10"] == pytest.approx(1.0)
        assert m[f"mkqa/{setting}/map"] == pytest.approx(1.0)
    assert m["mkqa/multi/rank_distance"] == 0.0
    counts = details["mkqa"]["counts"]
    # de queries: 1, 2, 5; example 5 has no Japanese answer, so de->ja has 2 queries
    assert counts["cross"]["de-ja"]["queries"] == 2 and counts["cross"]["de-ja"]["dropped"] == 1
    assert counts["mono"]["ja"]["queries"] == 3
    # the example with two answer texts: only one can be first
    assert m["mkqa/mono/recall@1/en"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_mkqa_duplicate_query_texts_are_merged_as_in_mteb():
    from mlir.data.mkqa import mkqa_from_records

    recs = [
        {"example_id": 1, "query": "same", "queries": {"en": "same"}, "answers": {"en": _ans("A")}},
        {"example_id": 2, "query": "same", "queries": {"en": "same"}, "answers": {"en": _ans("B")}},
    ]
    task = mkqa_task(mkqa_from_records(recs))
    view = task.view("en", ["en"])
    assert len(view.rows) == 1 and view.merged == 1
    assert sorted(task.docs["en"][i] for i in view.rel[0]) == ["A", "B"]


@pytest.mark.data
@pytest.mark.skipif(
    not (SHARED / "mkqa" / "test_mkqa.jsonl.gz").is_file(), reason="needs the shared MKQA fixture"
)
def test_official_mkqa_fixture_counts():
    import gzip

    path = SHARED / "mkqa" / "test_mkqa.jsonl.gz"
    raw = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    task = load_benchmark(
        "mkqa", {"type": "mkqa", "path": str(path), "download": False, "langs": ["en", "ru"]}
    ).task
    for lang in ("en", "ru"):
        answerable = [r for r in raw if any(a.get("text") for a in r["answers"][lang])]
        assert len(task.queries[lang].ids) == len(answerable)
        texts = {a["text"] for r in answerable for a in r["answers"][lang] if a.get("text")}
        assert sorted(task.docs[lang]) == sorted(texts)
        assert task.meta["skipped"][lang]["no_answer_text"] == len(raw) - len(answerable)
    m = evaluate(
        HashingEncoder(dim=64), [Benchmark(BenchmarkConfig.from_mapping("mkqa", {"type": "mkqa"}), task)]
    )
    assert {"mkqa/mono/ndcg@10/en", "mkqa/cross/ndcg@10/ru", "mkqa/multi/rank_distance/en"} <= set(m)


# ------------------------------------------------------------------------------------------ encoding


def test_each_unique_text_is_encoded_once():
    enc = KeyEncoder()
    texts = ["x k1", "y k2", "x k1", "z k3", "y k2", "x k1"]
    emb = encode_texts(enc, texts, "passage")
    assert enc.calls == [("passage", ["x k1", "y k2", "z k3"])]
    for i, t in enumerate(texts):
        assert torch.equal(emb[i], enc._enc([t], "passage")[0])
    uniq, inv = dedupe(texts)
    assert [uniq[j] for j in inv] == texts


def test_benchmark_encodes_shared_texts_once(mkqa_file):
    bench = load_benchmark("mkqa", {"type": "mkqa", "path": str(mkqa_file), "download": False})
    enc = KeyEncoder()
    evaluate(enc, [bench])
    (passages,) = [t for side, t in enc.calls if side == "passage"]
    assert len(passages) == len(set(passages))
    assert "k2 2017" in passages  # in three languages' corpora, encoded once


def test_benchmarks_of_one_evaluation_share_embeddings(mkqa_file):
    """A second benchmark over the same texts encodes nothing new and scores exactly as on its own."""
    cfg = {"type": "mkqa", "path": str(mkqa_file), "download": False}
    enc = KeyEncoder()
    both = evaluate(enc, [load_benchmark("a", cfg), load_benchmark("b", cfg)])
    for side in ("query", "passage"):
        texts = [t for s, ts in enc.calls if s == side for t in ts]
        assert texts and len(texts) == len(set(texts))  # each text encoded once over both benchmarks
    alone = evaluate(KeyEncoder(), [load_benchmark("b", cfg)])
    assert {k: v for k, v in both.items() if k.startswith("eval/b/") or k.startswith("b/")} == alone


def test_shard_bounds_cover_everything_once():
    for n in (0, 1, 5, 7, 64):
        for world in (1, 2, 3, 8):
            spans = [shard_bounds(n, r, world) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert max(e - s for s, e in spans) - min(e - s for s, e in spans) <= 1


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        texts = [f"text {i % 5} k{i % 5}" for i in range(13)] + ["another k9"]
        enc = HashingEncoder(dim=32)
        emb = encode_texts(enc, texts, "query", dist=DistInfo(rank, world))
        one = encode_texts(HashingEncoder(dim=32), ["single"], "passage", dist=DistInfo(rank, world))
        bcast = DistInfo(rank, world).broadcast_object({"r": rank} if rank == 0 else None)
        torch.save({"emb": emb, "one": one, "calls": enc.calls, "bcast": bcast}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_encoding_matches_single_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    texts = [f"text {i % 5} k{i % 5}" for i in range(13)] + ["another k9"]
    ref = encode_texts(HashingEncoder(dim=32), texts, "query")
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]
    for res in results:
        assert torch.equal(res["emb"], ref)
        assert torch.equal(res["one"], HashingEncoder(dim=32).encode_passages(["single"]))
        assert res["bcast"] == {"r": 0}
    # 6 unique texts: each rank encoded its own 3, not all of them
    assert [r["calls"] for r in results] == [[("query", 3)], [("query", 3)]]


@pytest.mark.data
def test_mlqa_r_real_files_zero_shot_protocol(mlqa_r_dir):
    """The real LAReQA MLQA-R files: 7 languages, 1,148 questions asked 4,199 times, 20,534 candidate
    sentences; every question exists in English plus 1-3 other languages, so a multi query has 2 to 4
    relevant sentences, each in its own language, and a rank distance (none is left out)."""
    bench = load_benchmark("mlqa_r", {"type": "mlqa_r", "path": str(mlqa_r_dir), "download": False})
    task = bench.task
    assert task.langs == ["ar", "de", "en", "es", "hi", "vi", "zh"]
    assert len(set(task.query_ids)) == 1148
    assert sum(len(task.queries[x].ids) for x in task.langs) == 4199
    assert sum(len(task.docs[x]) for x in task.langs) == 20534
    view = task.view("en", task.langs)
    n_langs = [len(np.unique(rl)) for rl in view.rel_lang]
    assert len(view.rows) == 1148 and min(n_langs) == 2 and max(n_langs) == 4
    assert all(len(rl) == len(np.unique(rl)) for rl in view.rel_lang)  # one relevant sentence per language
    sub = Benchmark(bench.config, task.subsample_queries(40, seed=0))
    m = evaluate(HashingEncoder(dim=64), [sub])
    for setting in ("mono", "cross", "multi"):
        assert 0.0 <= m[f"mlqa_r/{setting}/map"] <= 1.0 and 0.0 <= m[f"mlqa_r/{setting}/ndcg@10"] <= 1.0
    assert m["mlqa_r/multi/rank_distance_undefined"] == 0
    assert m["mlqa_r/multi/rank_distance_queries"] == sum(
        len(sub.task.queries[x].ids) for x in sub.task.langs
    )
    assert m["mlqa_r/multi/rank_distance"] > 0
