"""A separate validation corpus (``data.val_corpus``, the paper's English SQuADShifts loss) and hard
negatives only when the rows have them (``data.negatives_if_present``)."""

from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np
import pytest

from mlir.core.errors import ConfigError, DataError
from mlir.data.corpus import ParallelCorpus
from mlir.data.datamodule import RetrievalDataModule
from mlir.data.splits import plan_split
from mlir.data.xquad_r import read_squad
from mlir.sampling import HybridBatchSampler

LANGS = ("de", "en", "fr")


class _Encoder:
    """One id per character, so token ids decode back to the text."""

    def tokenize(self, texts, side):
        return [[ord(c) for c in t] for t in texts]


def _decode(ids) -> str:
    return "".join(chr(i) for i in ids)


def _train_rows(n_ids: int = 40, negatives: bool = False) -> list[dict]:
    return [
        {
            "id": f"t{i}",
            "lang": lang,
            "query": f"train question {i} {lang}",
            "positive": f"train passage {i} {lang}",
            "negatives": [f"hard {i} {lang} a", f"hard {i} {lang} b"] if negatives else [],
            "group": f"g{i % 10}",
        }
        for i in range(n_ids)
        for lang in LANGS
    ]


def _squad(n_articles: int = 3, paragraphs: int = 4, questions: int = 3) -> dict:
    """SQuAD v2 style: question 0 of paragraph 0 of every article is unanswerable."""
    data = []
    for a in range(n_articles):
        pars = []
        for p in range(paragraphs):
            context = f"Paragraph {p} of article {a} tells the answer {a}-{p}."
            qas = []
            for q in range(questions):
                answers = [] if (p == 0 and q == 0) else [{"text": f"{a}-{p}", "answer_start": 0}]
                qas.append(
                    {"id": f"s{a}-{p}-{q}", "question": f"What is {a}-{p}, part {q}?", "answers": answers}
                )
            pars.append({"context": "  " + context + "\n", "qas": qas})
        data.append({"title": f"Title {a}", "paragraphs": pars})
    return {"version": "v2.0", "data": data}


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _dm(corpus_rows, val=None, split=None, val_batches=4, batch_size=4, sampler=None, **kw):
    return RetrievalDataModule(
        corpus=lambda: ParallelCorpus.from_rows(corpus_rows, name="train"),
        sampler=sampler or partial(HybridBatchSampler, alpha=0.5),
        encoder=_Encoder(),
        split=split,
        batch_size=batch_size,
        val_batches=val_batches,
        val_corpus=val,
        **kw,
    )


# ------------------------------------------------------------------------------ the SQuAD reader


def test_read_squad_gives_question_paragraph_rows_and_skips_unanswerable(tmp_path):
    doc = _squad()
    corpus = read_squad(_write(tmp_path / "new_wiki_v1.0.json", doc), lang="EN")
    assert corpus.name == "new_wiki_v1" and corpus.langs == ["en"]
    expected = sorted(
        (qa["id"], qa["question"], par["context"].strip(), art["title"])
        for art in doc["data"]
        for par in art["paragraphs"]
        for qa in par["qas"]
        if qa["answers"]
    )
    rows = range(len(corpus))
    got = sorted(zip(*(corpus.texts(c, rows) for c in ("id", "query", "positive", "group"))))
    assert got == expected and len(got) == 3 * 4 * 3 - 3
    assert corpus.meta["questions_without_answer"] == 3
    # the questions of one paragraph share its text: one passage index per paragraph
    assert len(set(corpus.passage_idx.tolist())) == 3 * 4


def test_read_squad_names_file_and_place_of_a_bad_entry(tmp_path):
    with pytest.raises(DataError, match="'data' list"):
        read_squad(_write(tmp_path / "a.json", {"version": "1"}))
    doc = _squad(n_articles=1, paragraphs=1)
    doc["data"][0]["paragraphs"][0]["qas"][2]["id"] = "s0-0-1"
    with pytest.raises(DataError) as ei:
        read_squad(_write(tmp_path / "b.json", doc))
    assert ei.value.where.endswith("b.json:data[0].paragraphs[0].qas[2]") and "duplicate" in str(ei.value)


# ------------------------------------------------------------------------------ data.val_corpus


@pytest.fixture
def val_file(tmp_path):
    return _write(tmp_path / "val.json", _squad())


def test_val_corpus_replaces_dev_and_training_keeps_every_non_test_group(val_file):
    split = {"n_test_groups": 2, "seed": 0}
    dm = _dm(_train_rows(), val=partial(read_squad, val_file), split=split)
    dm.prepare_corpora()
    test_groups = set(plan_split([f"g{i}" for i in range(10)], **split).test)
    assert len(test_groups) == 2
    assert set(dm.train_corpus.groups) == {f"g{i}" for i in range(10)} - test_groups
    assert len(dm.train_corpus) == 8 * 4 * len(LANGS)  # 8 groups x 4 ids x 3 languages
    assert dm.val_corpus.langs == ["en"] and dm.val_corpus.name == "val"
    assert dm.plan.dev == []


def test_english_val_corpus_gives_only_x_x_mono_batches_of_its_questions(val_file):
    # training restricted to de/fr by the sampler: the validation corpus is used in its own language
    sampler = partial(HybridBatchSampler, alpha=0.5, langs=["de", "fr"])
    dm = _dm(_train_rows(), val=partial(read_squad, val_file), val_batches=5, sampler=sampler)
    dm.prepare_corpora()
    batches = list(dm.val_sampler())
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)
    val = dm.val_corpus
    questions = {qa["question"] for art in _squad()["data"] for p in art["paragraphs"] for qa in p["qas"]}
    for batch in batches:
        q, p = np.asarray(batch).T
        assert (q == p).all()  # X-X-mono: each question with its own paragraph, English
        assert set(val.texts("query", q)) <= questions
        assert len(set(val.texts("positive", p))) == len(p)  # no paragraph twice: no false negative
    assert list(dm.val_sampler()) == batches  # the same every validation


def test_a_multilingual_val_corpus_keeps_half_mono_half_cross(tmp_path):
    rows = _train_rows(n_ids=30)
    val_rows = [
        dict(r, id="v" + r["id"], query="val " + r["query"], positive="val " + r["positive"]) for r in rows
    ]
    dm = _dm(rows, val=lambda: ParallelCorpus.from_rows(val_rows, name="v"), val_batches=6)
    dm.prepare_corpora()
    kinds = []
    for batch in dm.val_sampler():
        q, p = np.asarray(batch).T
        same = dm.val_corpus.lang_idx[q] == dm.val_corpus.lang_idx[p]
        assert same.all() or not same.any()
        kinds.append(bool(same.all()))
    assert kinds.count(True) == kinds.count(False) == 3


@pytest.mark.parametrize("key", ["dev_fraction", "n_dev_groups"])
def test_dev_groups_next_to_a_val_corpus_are_refused(val_file, key):
    split = {"test_fraction": 0.1, key: 0.2 if key == "dev_fraction" else 2, "seed": 0}
    dm = _dm(_train_rows(), val=partial(read_squad, val_file), split=split)
    with pytest.raises(ConfigError) as ei:
        dm.prepare_corpora()
    assert ei.value.where == f"data.split.{key}" and "\n" not in str(ei.value)
    # null or 0 dev groups are fine
    _dm(_train_rows(), val=partial(read_squad, val_file), split={**split, key: None}).prepare_corpora()


@pytest.mark.parametrize("bad", ["/data/val.json", {"path": "/data/val.json"}, 3])
def test_a_val_corpus_that_is_not_a_reader_is_one_line(bad):
    with pytest.raises(ConfigError) as ei:
        _dm(_train_rows(), val=bad)
    assert ei.value.where == "data.val_corpus" and "\n" not in str(ei.value)
    assert "_partial_" in str(ei.value)


def test_a_reader_returning_no_corpus_is_one_line():
    dm = _dm(_train_rows(), val=lambda: {"rows": []})
    with pytest.raises(ConfigError) as ei:
        dm.prepare_corpora()
    assert ei.value.where == "data.val_corpus" and "dict" in str(ei.value)


def test_texts_shared_with_training_are_counted_in_the_log(val_file, caplog):
    rows = _train_rows()
    val = read_squad(val_file)
    shared_passage = val.texts("positive", [0])[0]
    shared_query = val.texts("query", [5])[0]
    rows[0] = dict(rows[0], positive=shared_passage)
    rows[3] = dict(rows[3], query=shared_query)
    rows[4] = dict(rows[4], positive=shared_passage)  # the same text twice counts once
    n_passages, n_queries = len(set(val.texts("positive", range(len(val))))), len(val)
    with caplog.at_level(logging.INFO, logger="mlir.data.datamodule"):
        _dm(rows, val=partial(read_squad, val_file)).prepare_corpora()
    (msg,) = [r for r in caplog.records if "shares" in r.getMessage()]
    assert msg.levelno == logging.WARNING
    assert f"1 of its {n_passages} positive texts and 1 of its {n_queries} query texts" in msg.getMessage()


def test_val_batches_zero_does_not_read_the_val_corpus():
    def reader():
        raise AssertionError("read")

    dm = _dm(_train_rows(), val=reader, val_batches=0)
    dm.prepare_corpora()
    assert dm.val_corpus is None


# ------------------------------------------------------------------------------ hard negatives


def _first_batch(dm, loader="train"):
    dm.setup("fit")
    ds, sampler = (dm._train_ds, dm.train_sampler()) if loader == "train" else (dm._val_ds, dm.val_sampler())
    batch = next(iter(sampler))
    return batch, ds.__getitems__(batch)


def test_one_negative_per_pair_when_the_rows_have_them(caplog):
    rows = _train_rows(negatives=True)
    dm = _dm(rows, num_negatives=1, negatives_if_present=True)
    with caplog.at_level(logging.INFO, logger="mlir.data.datamodule"):
        items, batch = _first_batch(dm)
    assert dm.num_negatives == 1
    assert any("up to 1 hard negative" in r.getMessage() for r in caplog.records)
    corpus = dm.train_corpus
    first_negative = [negs[0] for negs in corpus.table.select(np.asarray(items)[:, 1])["negatives"]]
    assert [_decode(ids) for ids in batch["neg_ids"]] == first_negative
    assert all(t.startswith("hard ") for t in first_negative) and len(first_negative) == len(items)


def test_no_negatives_in_the_rows_means_in_batch_only_when_allowed(caplog):
    dm = _dm(_train_rows(), num_negatives=1, negatives_if_present=True)
    with caplog.at_level(logging.INFO, logger="mlir.data.datamodule"):
        _, batch = _first_batch(dm)
    assert dm.num_negatives == 0 and "neg_ids" not in batch
    assert any("in-batch negatives only" in r.getMessage() for r in caplog.records)
    # without the setting it stays an error, as before
    with pytest.raises(ConfigError) as ei:
        _dm(_train_rows(), num_negatives=1).prepare_corpora()
    assert ei.value.where == "data.num_negatives" and "negatives_if_present" in str(ei.value)


def test_val_corpus_without_negatives_validates_in_batch_only(val_file):
    dm = _dm(
        _train_rows(negatives=True),
        val=partial(read_squad, val_file),
        num_negatives=1,
        negatives_if_present=True,
    )
    _, batch = _first_batch(dm, "val")
    assert (dm.num_negatives, dm.val_num_negatives) == (1, 0) and "neg_ids" not in batch
    with pytest.raises(ConfigError, match="corpus 'val' has"):
        _dm(_train_rows(negatives=True), val=partial(read_squad, val_file), num_negatives=1).prepare_corpora()


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"num_negatives": -1}, "data.num_negatives"),
        ({"num_negatives": 1.5}, "data.num_negatives"),
        ({"negatives_if_present": "yes"}, "data.negatives_if_present"),
    ],
)
def test_bad_negative_settings_name_their_key(kw, key):
    with pytest.raises(ConfigError) as ei:
        _dm(_train_rows(), **kw)
    assert ei.value.where == key and "\n" not in str(ei.value)


def test_show_split_reports_the_val_corpus_as_the_dev_part(tmp_path, val_file, monkeypatch):
    from mlir.show_split import compose_train_config, split_record

    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    rows = _train_rows()
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    overrides = [
        "data=jsonl",
        f"data.corpus.path={train}",
        f"paths.data_dir={tmp_path}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "data.split.dev_fraction=null",
        "data.split.test_fraction=0.2",
        "+data/val_corpus=squad",
        f"data.val_corpus.path={val_file}",
    ]
    rec = split_record(compose_train_config(overrides))
    assert rec["dev"]["source"] == "data.val_corpus"
    assert rec["dev"]["groups"] == ["Title 0", "Title 1", "Title 2"]
    assert len(rec["dev"]["ids"]) == 3 * 4 * 3 - 3  # articles x paragraphs x questions, unanswerable out
    assert len(rec["test"]["groups"]) == 2 and not set(rec["train"]["groups"]) & set(rec["test"]["groups"])
    assert set(rec["train"]["groups"]) | set(rec["test"]["groups"]) == {f"g{i}" for i in range(10)}
    assert not set(rec["train"]["ids"]) & set(rec["test"]["ids"])
