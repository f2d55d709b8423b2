"""``experiment=paper_xlmr`` / ``paper_labse`` end to end on small built data: the paper's triplets (one
hard negative per pair), the validation loss on a separate English SQuAD-format file (the paper's
SQuADShifts), and every configured zero-shot benchmark evaluated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _eval_data import make_xquad_dir, write_mkqa
from _fast_run import FAST_DEV_RUN
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.data.datamodule import RetrievalDataModule
from mlir.data.xquad_r import xquad_r_to_mkqa_records
from mlir.training.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
TRAIN_LANGS = ("de", "en", "zh")


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def _training_corpus(path: Path) -> Path:
    """Parallel triplets: 24 ids x 3 languages, each row with two hard negatives."""
    lines = [
        json.dumps(
            {
                "id": f"t{i}",
                "lang": lang,
                "query": f"{lang} training question {i}",
                "positive": f"{lang} training passage {i}",
                "negatives": [f"{lang} hard negative {i} a", f"{lang} hard negative {i} b"],
            }
        )
        for i in range(24)
        for lang in TRAIN_LANGS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _val_file(path: Path) -> tuple[Path, set[str]]:
    """An English SQuAD-format file (no sentence breaks): 12 paragraphs, 2 questions each."""
    data, questions = [], set()
    for a in range(3):
        pars = []
        for p in range(4):
            qas = [{"id": f"v{a}{p}{q}", "question": f"validation question {a} {p} {q}?"} for q in range(2)]
            for qa in qas:
                qa["answers"] = [{"text": "answer", "answer_start": 0}]
                questions.add(qa["question"])
            pars.append({"context": f"answer paragraph {a} {p} of the validation set.", "qas": qas})
        data.append({"title": f"val article {a}", "paragraphs": pars})
    path.write_text(json.dumps({"version": "1.0", "data": data}), encoding="utf-8")
    return path, questions


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    """A data dir with XQuAD-R, MLQA-R and MKQA in their formats, a training corpus and a val file."""
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    xquad = make_xquad_dir(data / "xquad-r", langs=("en", "de", "el"), n_articles=3)
    make_xquad_dir(data / "mlqa-r", langs=("en", "es", "vi"), n_articles=2)
    write_mkqa(data / "mkqa" / "mkqa.jsonl.gz", xquad_r_to_mkqa_records(xquad))
    val, questions = _val_file(tmp_path / "val.json")
    return {
        "data": data,
        "train": _training_corpus(tmp_path / "train.jsonl"),
        "val": val,
        "questions": questions,
    }


@pytest.mark.parametrize("experiment", ["paper_xlmr", "paper_labse"])
def test_paper_config_sets_the_papers_selection_and_negatives(experiment):
    cfg = _compose([f"experiment={experiment}"])
    data = cfg.data
    assert data.val_corpus._target_ == "mlir.data.xquad_r.read_squad" and data.val_corpus.lang == "en"
    assert data.val_corpus._partial_ is True and data.split is None
    assert (data.num_negatives, data.negatives_if_present, data.batch_size) == (1, True, 100)
    assert set(cfg.eval.benchmarks) == {"xquad_r", "mlqa_r", "mkqa"}
    assert cfg.callbacks.early_stopping.monitor == cfg.callbacks.model_checkpoint.monitor == "val/loss"


@pytest.mark.parametrize("experiment", ["paper_xlmr", "paper_labse"])
def test_paper_config_trains_validates_on_the_val_file_and_evaluates_every_benchmark(
    experiment, paper_data, tiny_model_dir, tmp_path, monkeypatch
):
    seen: dict[str, list] = {"val_queries": [], "val_langs": [], "train_neg": []}
    val_sampler = RetrievalDataModule.val_sampler

    def recording_val_sampler(self):
        batches = val_sampler(self)
        for batch in batches:
            q_rows = [q for q, _ in batch]
            seen["val_queries"] += self.val_corpus.texts("query", q_rows)
            seen["val_langs"] += [self.val_corpus.langs[i] for i in self.val_corpus.lang_idx[q_rows]]
        seen["train_neg"].append(self.num_negatives)
        return batches

    monkeypatch.setattr(RetrievalDataModule, "val_sampler", recording_val_sampler)
    run = tmp_path / "run"
    cfg = _compose(
        [
            f"experiment={experiment}",
            "model=tiny_random",
            f"model.encoder.name_or_path={tiny_model_dir}",
            f"paths.data_dir={paper_data['data']}",
            f"data.corpus.path={paper_data['train']}",
            f"data.val_corpus.path={paper_data['val']}",
            *FAST_DEV_RUN,
            "eval.batch_size=16",
            *(
                f"eval.benchmarks.{b}.download=false" for b in ("xquad_r", "mlqa_r", "mkqa")
            ),  # the built files
            f"hydra.run.dir={run}",
        ]
    )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(run)
        cfg.paths.log_dir = str(tmp_path / "logs")
    benchmarks = list(OmegaConf.to_container(cfg.eval.benchmarks))
    assert sorted(benchmarks) == ["mkqa", "mlqa_r", "xquad_r"]

    metrics = train(cfg)

    # the validation loss: from the English file only, 2 batches of 4 of its questions, X-X-mono
    assert math.isfinite(metrics["val/loss"])
    assert len(seen["val_queries"]) == 2 * 4 and set(seen["val_queries"]) <= paper_data["questions"]
    assert set(seen["val_langs"]) == {"en"}
    assert seen["train_neg"] == [1]  # the rows have negatives: one per pair
    # every configured benchmark was evaluated, in every setting
    for name in benchmarks:
        for setting in ("mono", "cross", "multi"):
            value = metrics[f"eval/{name}/{setting}/ndcg@10"]
            assert 0.0 <= value <= 1.0, (name, setting)
    assert "eval/xquad_r/multi/map" in metrics and "eval/mlqa_r/multi/rank_distance" in metrics
    written = json.loads((run / "metrics.json").read_text())
    assert set(written) >= {k for k in metrics if k.startswith("eval/")}
