"""Your own data is evaluated on its own held-out test groups (issue 16): `python train.py data=jsonl
data.corpus.path=X` never scores the default XQuAD-R benchmark on a sliver of its articles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _reliability import write_corpus
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.core.errors import ConfigError
from mlir.data.jsonl import read_jsonl
from mlir.data.splits import plan_from_config
from mlir.eval.benchmarks import BenchmarkConfig, check_benchmarks, load_benchmark

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def _compose(overrides, config_name="train", hydra_cfg=False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_cfg)


def _benchmarks(cfg, key="benchmarks"):
    return {k: v for k, v in (cfg.eval.get(key) or {}).items() if v is not None}


# ------------------------------------------------------------------------------ which benchmarks


def test_jsonl_data_evaluates_its_own_test_groups_instead_of_xquad_r():
    cfg = _compose(["data=jsonl", "data.corpus.path=/data/mine.jsonl", "+data.split.n_dev_groups=3"])
    assert list(_benchmarks(cfg)) == ["jsonl"]
    assert list(_benchmarks(cfg, "dev_benchmarks")) == ["jsonl_dev"]
    test = OmegaConf.to_container(cfg.eval.benchmarks.jsonl, resolve=True)
    # the reader training uses (data.corpus itself), so the same ids and groups; no separate path
    assert test["type"] == "jsonl" and test["path"] is None
    assert test["corpus"] == OmegaConf.to_container(cfg.data.corpus, resolve=True)
    assert test["corpus"]["path"] == "/data/mine.jsonl"
    # the same split keys as training, so the same groups: plan_split depends on nothing else
    split = {k: v for k, v in test["split"].items() if v is not None}
    assert split.pop("part") == "test"
    assert split == OmegaConf.to_container(cfg.data.split, resolve=True)
    dev = OmegaConf.to_container(cfg.eval.dev_benchmarks.jsonl_dev, resolve=True)
    assert (
        dev["split"]["part"] == "dev"
        and dev["split"]["n_dev_groups"] == 3
        and dev["corpus"] == test["corpus"]
    )


def test_the_default_job_and_the_study_still_evaluate_xquad_r():
    assert list(_benchmarks(_compose([]))) == ["xquad_r"]
    assert list(_benchmarks(_compose(["experiment=hybrid_study"]))) == ["xquad_r", "mlqa_r"]
    assert list(_benchmarks(_compose(["experiment=xquad_proxy"]))) == ["xquad_r", "xquad_r_mkqa"]


def test_named_benchmarks_are_added_to_the_corpus_test():
    cfg = _compose(["data=jsonl", "benchmark@eval.benchmarks.xquad_r=xquad_r"])
    assert set(_benchmarks(cfg)) == {"jsonl", "xquad_r"}
    assert cfg.eval.benchmarks.xquad_r.split is None  # zero-shot: all 48 articles, none trained on
    # the paper's setup evaluates zero-shot benchmarks, not held-out groups of its training corpus
    assert set(_benchmarks(_compose(["experiment=paper_xlmr"]))) == {"xquad_r", "mlqa_r", "mkqa"}
    assert set(_benchmarks(_compose(["data=jsonl", "~eval.benchmarks.jsonl"]))) == set()


# ------------------------------------------------------------------------------ the jsonl type


@pytest.fixture
def corpus_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    return write_corpus(tmp_path / "mine.jsonl", n_ids=48, langs=("en", "de", "fr"), n_groups=16)


def test_jsonl_benchmark_is_exactly_the_test_groups_of_the_training_split(corpus_file):
    split = {"n_test_groups": 4, "n_dev_groups": 2, "seed": 0}
    bench = load_benchmark(
        "jsonl", {"type": "jsonl", "path": str(corpus_file), "split": {"part": "test", **split}}
    )
    plan = plan_from_config(read_jsonl(corpus_file).groups, split)
    task = bench.task
    assert task.meta["groups"] == plan.test and len(plan.test) == 4
    assert task.langs == ["de", "en", "fr"]
    assert set(task.query_groups) == set(plan.test)
    # 48 ids over 16 groups: 3 ids per group, each in 3 languages; one candidate per (id, language)
    assert len(task.query_ids) == 12 and all(len(task.docs[x]) == 12 for x in task.langs)
    rows = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    positive = {(r["id"], r["lang"]): r["positive"] for r in rows}
    for lang in task.langs:
        q = task.queries[lang]
        for qid in q.ids:
            (doc,) = task.rel[lang].of(int(qid))
            assert task.docs[lang][doc] == positive[(task.query_ids[qid], lang)]
    dev = load_benchmark("d", {"type": "jsonl", "path": str(corpus_file), "split": {"part": "dev", **split}})
    assert dev.task.meta["groups"] == plan.dev and not set(dev.task.query_ids) & set(task.query_ids)


def test_jsonl_candidates_dedupe_shared_positives_and_can_add_negatives(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    rows = [
        {"id": "a", "lang": "en", "query": "who a", "positive": "P1", "negatives": ["N1", "P2"]},
        {"id": "b", "lang": "en", "query": "who b", "positive": "P1"},  # the same passage as a
        {"id": "c", "lang": "en", "query": "who c", "positive": "P2"},
        {"id": "a", "lang": "de", "query": "wer a", "positive": "Q1"},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_benchmark("mine", {"type": "jsonl", "path": str(path)}).task
    assert task.docs == {"de": ["Q1"], "en": ["P1", "P2"]}
    ids = task.query_ids
    assert [task.rel["en"].of(ids.index(q)).tolist() for q in ("a", "b", "c")] == [[0], [0], [1]]
    assert task.rel["de"].of(ids.index("b")).tolist() == []  # b exists in English only
    hard = load_benchmark(
        "mine", {"type": "jsonl", "path": str(path), "candidates": "positive_and_negatives"}
    )
    assert hard.task.docs["en"] == ["P1", "P2", "N1"]  # P2 stays c's positive, N1 is a distractor
    with pytest.raises(ConfigError, match="benchmarks.mine.candidates: unknown candidates 'paragraph'"):
        load_benchmark("mine", {"type": "jsonl", "path": str(path), "candidates": "paragraph"})


def test_a_training_split_of_null_is_refused_not_evaluated_on_the_training_data():
    """data.split=null trains on every group: the held-out benchmark has nothing to evaluate."""
    cfg = _compose(["data=jsonl", "data.split=null"])
    test = OmegaConf.to_container(cfg.eval.benchmarks.jsonl, resolve=True)
    with pytest.raises(ConfigError) as ei:
        BenchmarkConfig.from_mapping("jsonl", test)
    assert ei.value.where == "benchmarks.jsonl.split" and "\n" not in str(ei.value)
    assert "data.split null" in str(ei.value)


def test_benchmark_mistakes_are_found_without_reading_data():
    """check_benchmarks is what train.py can run before training (no file is opened)."""
    assert [c.name for c in check_benchmarks(_compose([]).eval.benchmarks)] == ["xquad_r"]
    jsonl = check_benchmarks(_compose(["data=jsonl", "data.corpus.path=/nowhere.jsonl"]).eval.benchmarks)
    assert [(c.name, c.type, c.candidates, c.split["part"]) for c in jsonl] == [
        ("jsonl", "jsonl", "positive", "test")
    ]
    with pytest.raises(ConfigError, match="benchmarks.jsonl.split: chooses no held-out groups"):
        check_benchmarks(_compose(["data=jsonl", "data.split=null"]).eval.benchmarks)


def test_eval_py_can_name_the_jsonl_test_of_a_run():
    cfg = _compose(
        [
            "+benchmark@eval.benchmarks.jsonl=jsonl_test",
            "eval.benchmarks.jsonl.path=/data/mine.jsonl",
            "eval.benchmarks.jsonl.split.test_fraction=0.01",
        ],
        config_name="eval",
    )
    c = BenchmarkConfig.from_mapping("jsonl", cfg.eval.benchmarks.jsonl)
    assert c.path == "/data/mine.jsonl" and c.split["test_fraction"] == 0.01 and c.split["part"] == "test"


# ------------------------------------------------------------------------------ end to end


def test_train_on_jsonl_evaluates_its_test_groups_end_to_end(tmp_path, tiny_model_dir, monkeypatch):
    from mlir.eval.per_query import read_per_query
    from mlir.training.pipeline import train

    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "mine.jsonl", n_ids=48, langs=("en", "de", "fr"), n_groups=16)
    run = tmp_path / "run"
    cfg = _compose(
        [
            "model=tiny_random",
            f"model.encoder.name_or_path={tiny_model_dir}",
            "data=jsonl",
            f"data.corpus.path={corpus}",
            "~data.split.test_fraction",
            "~data.split.dev_fraction",
            "+data.split.n_test_groups=4",
            "+data.split.n_dev_groups=3",
            "data.batch_size=8",
            "data.val_batches=1",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "trainer.max_steps=2",
            "trainer.enable_progress_bar=false",
            "logger=none",
            f"hydra.run.dir={run}",
        ],
        hydra_cfg=True,
    )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(run)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    metrics = train(cfg)
    assert not [k for k in metrics if "xquad" in k]
    for setting in ("mono", "cross", "multi"):
        assert 0.0 <= metrics[f"eval/jsonl/{setting}/ndcg@10"] <= 1.0
    assert "eval/jsonl/multi/rank_distance" in metrics
    pq = read_per_query(run / "per_query.npz")
    plan = plan_from_config(read_jsonl(corpus).groups, {"n_test_groups": 4, "n_dev_groups": 3, "seed": 0})
    test_ids = {f"q{i}" for i in range(48) if f"g{i % 16}" in plan.test}
    assert set(np.unique(pq["benchmark"])) == {"jsonl"} and set(np.unique(pq["qid"])) == test_ids
