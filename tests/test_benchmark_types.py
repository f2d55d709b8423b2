"""Benchmark types: the registry, the unknown-type error, a new type in one place, the real types unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from _eval_data import KeyEncoder, make_xquad_dir, write_mkqa

import mlir.data.mkqa
import mlir.data.xquad_r
from mlir.core.errors import ConfigError
from mlir.eval.benchmarks import (
    TYPES,
    BenchmarkConfig,
    load_benchmark,
    load_benchmarks,
    register_type,
)
from mlir.eval.runner import evaluate
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask

REAL_TYPES = {  # type -> the module that builds it (one module per protocol)
    "mkqa": "mlir.eval.benchmarks.mkqa",
    "xquad_r": "mlir.eval.benchmarks.lareqa",
    "mlqa_r": "mlir.eval.benchmarks.lareqa",
    "xquad_r_mkqa": "mlir.eval.benchmarks.lareqa_mkqa",
    "mlqa_r_mkqa": "mlir.eval.benchmarks.lareqa_mkqa",
    "jsonl": "mlir.eval.benchmarks.jsonl",
    "beir": "mlir.eval.benchmarks.beir",
}


@pytest.fixture
def registry():
    """The registry, restored after the test (a fake type must not leak into other tests)."""
    saved = dict(TYPES)
    yield TYPES
    TYPES.clear()
    TYPES.update(saved)


def test_registry_lists_the_types():
    assert list(TYPES) == list(REAL_TYPES)
    assert {name: load.__module__ for name, load in TYPES.items()} == REAL_TYPES


def test_unknown_type_is_one_line_naming_the_key_and_the_known_types():
    for call in (
        lambda: load_benchmark("mine", {"type": "trec_car", "path": "nowhere"}),
        lambda: load_benchmark("mine", BenchmarkConfig(name="mine", type="trec_car")),  # built in Python
    ):
        with pytest.raises(ConfigError) as ei:
            call()
        msg = str(ei.value)
        assert "\n" not in msg and ei.value.where == "benchmarks.mine.type"
        assert msg.startswith("benchmarks.mine.type: unknown benchmark type 'trec_car'")
        assert all(repr(t) in msg for t in REAL_TYPES)


# ------------------------------------------------------------------------------------ a new type


def _load_fake(cfg: BenchmarkConfig) -> RetrievalTask:
    """Two questions asked in languages a and b; each has one relevant passage per language."""
    langs = ["a", "b"]
    return RetrievalTask(
        name=cfg.name,
        langs=langs,
        query_ids=["q1", "q2"],
        queries={x: LangQueries(np.array([0, 1]), [f"{x} who k1", f"{x} when k2"]) for x in langs},
        docs={x: [f"{x} passage k1", f"{x} passage k2", f"{x} noise"] for x in langs},
        rel={x: Relevance.from_lists([[0], [1]]) for x in langs},
        meta={"protocol": "fake"},
    )


def test_a_new_type_is_one_registered_function(registry):
    register_type("fake")(_load_fake)
    assert list(registry)[-1] == "fake"
    # the shared steps apply to it: languages, query subsample
    bench = load_benchmark("toy", {"type": "fake", "langs": ["b"], "max_queries_per_lang": 1, "seed": 0})
    assert bench.task.langs == ["b"] and len(bench.task.queries["b"].ids) == 1
    assert bench.task.meta["max_queries_per_lang"] == 1
    (bench,) = load_benchmarks({"toy": {"type": "fake"}, "off": None})
    m = evaluate(KeyEncoder(), [bench])
    for setting in ("mono", "cross", "multi"):
        assert m[f"toy/{setting}/ndcg@10"] == pytest.approx(1.0)
    # a type without groups refuses a split instead of ignoring it
    with pytest.raises(ConfigError) as ei:
        load_benchmark("toy", {"type": "fake", "split": {"groups": ["g"]}})
    assert ei.value.where == "benchmarks.toy.split" and "\n" not in str(ei.value)
    # a name is registered once: a second type of the same name is a programming error
    with pytest.raises(ValueError, match="fake"):
        register_type("fake")(lambda cfg: _load_fake(cfg))


def test_the_adapter_keeps_its_old_import_path():
    assert mlir.data.mkqa.xquad_r_to_mkqa_records is mlir.data.xquad_r.xquad_r_to_mkqa_records


# -------------------------------------------------------------------- the real types, unchanged


def _ans(*texts):
    return [{"type": "entity" if t else "unanswerable", "text": t, "aliases": []} for t in texts]


MKQA_RECORDS = [
    {
        "example_id": 1,
        "query": "who k1",
        "queries": {"en": "who k1", "de": "wer k1", "ja": "k1 ja"},
        "answers": {"en": _ans("Scott k1"), "de": _ans("Scott k1"), "ja": _ans("k1 スコット")},
    },
    {  # two texts, and a text-less entry next to them
        "example_id": 2,
        "query": "when k2",
        "queries": {"en": "when k2", "de": "wann k2", "ja": "k2 ja"},
        "answers": {x: _ans("k2 2017", "k2 2017-05-18", None) for x in ("en", "de", "ja")},
    },
    {  # unanswerable everywhere
        "example_id": 3,
        "query": "k3?",
        "queries": {"en": "k3?", "de": "k3 de?", "ja": "k3 ja?"},
        "answers": {x: _ans(None) for x in ("en", "de", "ja")},
    },
    {  # German query missing; the same English query text as example 1 (merged in one query)
        "example_id": 4,
        "query": "who k1",
        "queries": {"en": "who k1", "de": None, "ja": "k4 ja"},
        "answers": {x: _ans(f"k4 {x}") for x in ("en", "de", "ja")},
    },
    {  # Japanese answers missing
        "example_id": 5,
        "query": "which k5",
        "queries": {"en": "which k5", "de": "welche k5", "ja": "k5 ja"},
        "answers": {"en": _ans("k5 en"), "de": _ans("k5 de"), "ja": []},
    },
]
PLAN = {"n_folds": 3, "fold": 1, "n_dev_groups": 1, "seed": 3}

# sha256[:16] of every field of the built task (paths under the test's data root written "<root>"),
# as built by the single-module loader this layout replaced: a changed digest means that a benchmark
# now evaluates different queries, documents, relevance or metadata.
CASES = [
    ("xquad_r", {"type": "xquad_r"}, "2ea8b893f81a516b"),
    (
        "xq_ctx",
        {"type": "xquad_r", "candidates": "sentence_with_paragraph", "langs": ["zh", "de"]},
        "a3da9b119b2f92a9",
    ),
    ("xq_para", {"type": "xquad_r", "candidates": "paragraph", "candidate_sep": " | "}, "3f3e01d13d61dd13"),
    (
        "xq_dev",
        {
            "type": "xquad_r",
            "split": {**PLAN, "part": "dev"},
            "langs": ["en", "zh"],
            "max_queries_per_lang": 3,
            "seed": 1,
        },
        "b37284f1ca63371d",
    ),
    ("xq_groups", {"type": "xquad_r", "split": {"groups": ["Article_1", "Article_3"]}}, "e935fdb54cb93fed"),
    ("mlqa_r", {"type": "mlqa_r", "split": PLAN}, "d0421397e4a2cc01"),
    ("xquad_r_mkqa", {"type": "xquad_r_mkqa", "split": {**PLAN, "part": "train"}}, "d6ffa7f865d2dc4f"),
    (
        "mlqa_r_mkqa",
        {"type": "mlqa_r_mkqa", "langs": ["de", "en"], "max_queries_per_lang": 5, "seed": 2},
        "d998af81d02721aa",
    ),
    ("mkqa", {"type": "mkqa"}, "f82d46fb98d768c8"),
    (
        "mkqa_sub",
        {"type": "mkqa", "langs": ["ja", "en"], "max_queries_per_lang": 2, "seed": 3},
        "8c6076037f2e49f4",
    ),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("types")
    make_xquad_dir(root / "xquad-r")
    write_mkqa(root / "mkqa" / "mkqa.jsonl.gz", MKQA_RECORDS)
    return root


def _with_path(cfg: dict, root) -> dict:
    path = root / "mkqa" / "mkqa.jsonl.gz" if cfg["type"] == "mkqa" else root / "xquad-r"
    return {**cfg, "path": str(path), "download": False}


def task_digest(task: RetrievalTask, root) -> str:
    """Every field of ``task`` as canonical JSON, hashed; the data root is written ``<root>``."""
    fields = {
        "name": task.name,
        "langs": task.langs,
        "query_ids": task.query_ids,
        "queries": {x: [q.ids.tolist(), q.texts] for x, q in task.queries.items()},
        "docs": task.docs,
        "rel": {x: [r.indptr.tolist(), r.indices.tolist()] for x, r in task.rel.items()},
        "query_groups": task.query_groups,
        "doc_groups": task.doc_groups,
        "merge_duplicate_queries": task.merge_duplicate_queries,
        "meta": task.meta,
    }
    text = json.dumps(fields, sort_keys=True, default=str).replace(str(root), "<root>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name, cfg, digest", CASES, ids=[c[0] for c in CASES])
def test_each_type_builds_the_same_task_as_before(root, name, cfg, digest):
    task = load_benchmark(name, _with_path(cfg, root)).task
    assert task_digest(task, root) == digest


def test_mkqa_still_refuses_a_split(root):
    with pytest.raises(ConfigError) as ei:
        load_benchmark("m", _with_path({"type": "mkqa", "split": PLAN}, root))
    assert ei.value.where == "benchmarks.m.split" and "MKQA has no article groups" in str(ei.value)
