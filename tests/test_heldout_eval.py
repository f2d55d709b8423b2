"""Held-out evaluation whatever reader built the training corpus: ``data=corpora`` and ``data=tevatron``
evaluate their own TEST groups (benchmark ``jsonl_test``, ``corpus: data.corpus``) and give the retrieval
curves their DEV groups (``jsonl_dev``), exactly as ``data=jsonl`` does.

The expected query ids are computed here from what the test files hold (the namespaced ids and groups of
``data=corpora``, the ids of the Tevatron records) and :func:`mlir.data.splits.plan_from_config`, which
depends only on the set of groups and the split keys; they are never read from the benchmark.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _fast_run import FAST_DEV_RUN
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

import mlir.core.config
from mlir.core.errors import ConfigError
from mlir.data.splits import plan_from_config
from mlir.eval.benchmarks import BenchmarkConfig, check_benchmarks, load_benchmarks

ROOT = Path(__file__).resolve().parents[1]
LANGS = {"alpha": ("en", "de", "fr"), "beta": ("en", "de")}
SIZES = {"alpha": 32, "beta": 24}  # ids; 4 ids per group, raw ids and groups reused by both corpora
TEV_IDS, TEV_LANGS = 40, ("en", "de", "fr")  # Tevatron: each id its own group
SPLIT = {"n_test_groups": 3, "n_dev_groups": 3, "seed": 0}
TEV_SPLIT = {"n_test_groups": 6, "n_dev_groups": 4, "seed": 0}


def _write_corpus(path: Path, name: str) -> Path:
    rows = [
        {
            "id": str(i + 1),
            "lang": lang,
            "query": f"{name} question {i + 1} in {lang}",
            "positive": f"{name} passage {i + 1} in {lang}",
            "group": f"g{i // 4}",
        }
        for i in range(SIZES[name])
        for lang in LANGS[name]
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_tevatron(path: Path) -> Path:
    records = [
        {
            "query_id": f"t{i}",
            "lang": lang,
            "query": f"question {i} in {lang}",
            "positive_passages": [
                {"docid": f"d{i}", "title": f"title {i}", "text": f"passage {i} in {lang}"}
            ],
            "negative_passages": [],
        }
        for i in range(TEV_IDS)
        for lang in TEV_LANGS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _corpora_part(part: str) -> set[str]:
    """The namespaced ids of one part of the combined corpus, from the files' description."""
    groups = sorted({f"{n}:g{i // 4}" for n, size in SIZES.items() for i in range(size)})
    held = set(getattr(plan_from_config(groups, SPLIT), part))
    return {f"{n}:{i + 1}" for n, size in SIZES.items() for i in range(size) if f"{n}:g{i // 4}" in held}


def _tevatron_part(part: str) -> set[str]:
    return set(getattr(plan_from_config([f"t{i}" for i in range(TEV_IDS)], TEV_SPLIT), part))


def _split_overrides(split: dict) -> list[str]:
    return [
        "~data.split.test_fraction",
        "~data.split.dev_fraction",
        f"+data.split.n_test_groups={split['n_test_groups']}",
        f"+data.split.n_dev_groups={split['n_dev_groups']}",
    ]


@pytest.fixture
def corpora(tmp_path, monkeypatch) -> list[str]:
    """data=corpora over two test-built files (overrides), and the cache in tmp_path."""
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    files = {n: _write_corpus(tmp_path / f"{n}.jsonl", n) for n in LANGS}
    return [
        "data=corpora",
        "data.corpus.corpora=[{name: alpha, weight: null, path: null}, {name: beta, weight: null, path: null}]",
        *(f"data.corpus.corpora.{i}.path={p}" for i, p in enumerate(files.values())),
        *_split_overrides(SPLIT),
    ]


@pytest.fixture
def tevatron(tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    path = _write_tevatron(tmp_path / "train.jsonl")
    return ["data=tevatron", f"data.corpus.path={path}", *_split_overrides(TEV_SPLIT)]


def _compose(tmp_path: Path, *overrides: str, config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def _trained_ids(cfg, epochs: int = 2) -> set[str]:
    """Every id of the training sampler's batches (the DataModule's, as train.py builds it)."""
    from mlir.preview_batches import preview_records

    dm = instantiate(cfg.data, sampler=instantiate(cfg.sampler), encoder=None, seed=cfg.seed)
    sampler = dm.train_sampler(cfg.trainer)
    records = preview_records(sampler, dm.train_corpus, epochs * sampler.steps_per_epoch)
    return {pair["id"] for rec in records for pair in rec["pairs"]}


# ------------------------------------------------------------------------------ which groups


@pytest.mark.parametrize("data", ["corpora", "tevatron"])
def test_test_and_dev_benchmarks_are_the_held_out_groups_of_the_reader(data, request, tmp_path):
    """jsonl_test / jsonl_dev read data.corpus itself: the namespaced (or Tevatron) ids, training's split.

    The dev benchmark is built from the retrieval callback's config as Hydra instantiates it (its
    ``corpus`` is then a reader callable, not a config).
    """
    cfg = _compose(tmp_path, *request.getfixturevalue(data), "callbacks=[default,retrieval_eval]")
    expected = _corpora_part if data == "corpora" else _tevatron_part
    (test,) = load_benchmarks({k: v for k, v in cfg.eval.benchmarks.items() if v is not None})
    assert test.name == "jsonl" and set(test.task.query_ids) == expected("test")
    callback = instantiate(cfg.callbacks.retrieval_eval)
    (dev,) = load_benchmarks(callback.benchmarks_cfg)
    assert dev.name == "jsonl_dev" and set(dev.task.query_ids) == expected("dev")
    assert not expected("test") & expected("dev")
    assert len(expected("test")) == (12 if data == "corpora" else 6)  # 3 groups of 4 ids; 6 single ids


def test_a_path_replaces_the_training_reader(corpora, tmp_path):
    """``path`` wins over ``corpus``: a separate test file of yours, with its own ids."""
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x1", "lang": "en", "query": "q", "positive": "p"}) + "\n")
    cfg = _compose(
        tmp_path, *corpora, f"eval.benchmarks.jsonl.path={other}", "eval.benchmarks.jsonl.split=null"
    )
    (bench,) = load_benchmarks({k: v for k, v in cfg.eval.benchmarks.items() if v is not None})
    assert bench.task.query_ids == ["x1"] and bench.task.meta["source"] == str(other)


@pytest.mark.parametrize("data", ["corpora", "tevatron"])
@pytest.mark.parametrize("part", ["test", "dev"])
def test_eval_py_on_a_runs_checkpoint_reads_that_runs_data_and_split(data, part, request, tmp_path):
    """``eval.py ckpt_path=RUN/... +benchmark@eval.benchmarks.jsonl=jsonl_test``: eval.py has no
    ``data.corpus``, so the benchmark takes the run's (from RUN/.hydra/config.yaml) and its split."""
    from omegaconf import OmegaConf

    from mlir.eval.app import restrict_to_run_data

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(_compose(tmp_path, *request.getfixturevalue(data)), run / ".hydra" / "config.yaml")
    cfg = _compose(
        tmp_path,
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "~eval.benchmarks.xquad_r",
        "+benchmark@eval.benchmarks.jsonl=jsonl_test",
        f"eval.benchmarks.jsonl.split.part={part}",
        config_name="eval",
    )
    note = restrict_to_run_data(cfg)
    assert note and note.startswith("jsonl: the checkpoint's run data")
    (bench,) = load_benchmarks({k: v for k, v in cfg.eval.benchmarks.items() if v is not None})
    expected = _corpora_part if data == "corpora" else _tevatron_part
    assert set(bench.task.query_ids) == expected(part)


def test_eval_py_keeps_a_benchmarks_own_file(corpora, tmp_path):
    from omegaconf import OmegaConf

    from mlir.eval.app import restrict_to_run_data

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(_compose(tmp_path, *corpora), run / ".hydra" / "config.yaml")
    cfg = _compose(
        tmp_path,
        f"ckpt_path={run / 'last.ckpt'}",
        "+benchmark@eval.benchmarks.mine=jsonl",
        f"eval.benchmarks.mine.path={tmp_path / 'alpha.jsonl'}",
        config_name="eval",
    )
    assert restrict_to_run_data(cfg) is None and cfg.eval.benchmarks.mine.corpus is None


# ------------------------------------------------------------------------------ end to end


def _train(cfg):
    from mlir.eval.per_query import read_per_query
    from mlir.training.pipeline import train

    metrics = train(cfg)
    pq = read_per_query(Path(cfg.paths.output_dir) / "per_query.npz")
    assert not [k for k in metrics if "xquad" in k]
    for setting in ("mono", "cross", "multi"):
        assert 0.0 <= metrics[f"eval/jsonl/{setting}/ndcg@10"] <= 1.0
    assert set(np.unique(pq["benchmark"])) == {"jsonl"}
    return metrics, {str(q) for q in np.unique(pq["qid"])}


TRAIN = ["model=tiny_random", *FAST_DEV_RUN]


def test_corpora_run_evaluates_exactly_its_namespaced_test_groups(corpora, tmp_path, tiny_model_dir):
    cfg = _compose(
        tmp_path,
        *corpora,
        *TRAIN,
        f"model.encoder.name_or_path={tiny_model_dir}",
        "callbacks=[default,retrieval_eval]",
    )
    metrics, evaluated = _train(cfg)
    test_ids = _corpora_part("test")
    assert evaluated == test_ids and all(":" in q for q in test_ids)
    assert {q.split(":")[0] for q in _corpora_part("train")} == set(LANGS)
    assert math.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["dev/jsonl_dev/avg/ndcg@10"] <= 1.0  # the curves: the dev groups
    trained = _trained_ids(cfg)
    assert trained and trained <= _corpora_part("train") and not trained & test_ids


def test_tevatron_run_evaluates_exactly_its_test_groups(tevatron, tmp_path, tiny_model_dir):
    cfg = _compose(tmp_path, *tevatron, *TRAIN, f"model.encoder.name_or_path={tiny_model_dir}")
    metrics, evaluated = _train(cfg)
    test_ids = _tevatron_part("test")
    assert evaluated == test_ids and len(test_ids) == TEV_SPLIT["n_test_groups"]
    trained = _trained_ids(cfg)
    assert trained and trained <= _tevatron_part("train") and not trained & test_ids


# ------------------------------------------------------------------------------ mistakes


def test_neither_corpus_nor_path_is_one_line_before_training(tmp_path):
    from mlir.training.pipeline import preflight

    cfg = _compose(tmp_path, "data=jsonl", "eval.benchmarks.jsonl.corpus=null")
    with pytest.raises(ConfigError) as ei:
        preflight(cfg)
    assert ei.value.where == "benchmarks.jsonl.path" and "\n" not in str(ei.value)
    assert "neither path" in ei.value.message and "corpus" in ei.value.message
    eval_cfg = _compose(tmp_path, "+benchmark@eval.benchmarks.mine=jsonl", config_name="eval")
    with pytest.raises(ConfigError, match=r"^benchmarks\.mine\.path: neither path"):
        check_benchmarks(eval_cfg.eval.benchmarks)


@pytest.mark.parametrize(
    "entry, where",
    [
        ({"type": "jsonl", "corpus": 5}, "benchmarks.b.corpus"),
        ({"type": "jsonl", "corpus": {"path": "x.jsonl"}}, "benchmarks.b.corpus"),  # no _target_
        ({"type": "jsonl", "path": {"en": "x.jsonl"}}, "benchmarks.b.path"),
        ({"type": "xquad_r", "corpus": {"_target_": "x"}}, "benchmarks.b.corpus"),  # jsonl only
    ],
)
def test_a_bad_source_is_one_line_naming_the_key(entry, where):
    with pytest.raises(ConfigError) as ei:
        BenchmarkConfig.from_mapping("b", entry)
    assert ei.value.where == where and "\n" not in str(ei.value)


def test_the_preflight_checks_the_corpora_list(corpora, tmp_path):
    """mlir.core.config.validate (before any model) calls check_corpora on data.corpus.corpora."""
    cfg = _compose(tmp_path, *corpora, "data.corpus.corpora.0.weight=1")
    with pytest.raises(ConfigError) as ei:
        mlir.core.config.validate(cfg)
    assert ei.value.where == "data.corpus.corpora[1].weight" and "\n" not in str(ei.value)
    mlir.core.config.validate(_compose(tmp_path, *corpora))  # a good list passes
