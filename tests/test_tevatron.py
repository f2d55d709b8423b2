"""Tevatron / FlagEmbedding JSONL readers (mlir.data.tevatron) on files the tests write."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mlir.core.errors import DataError
from mlir.data.convert import main as convert_main
from mlir.data.jsonl import read_jsonl
from mlir.data.tevatron import read_tevatron


def _write(path: Path, records: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def _rows(corpus) -> dict[tuple[str, str], dict]:
    return {(r["id"], r["lang"]): r for r in corpus.table.to_list()}


def _passage(title_text: tuple[str, str]) -> dict:
    return {"docid": "d", "title": title_text[0], "text": title_text[1]}


def _tev(qid, lang, query, pos, neg=()):
    """A Tevatron record; passages are (title, text) pairs."""
    return {
        "query_id": qid,
        "lang": lang,
        "query": query,
        "positive_passages": [_passage(x) for x in pos],
        "negative_passages": [_passage(x) for x in neg],
    }


def test_tevatron_one_file_with_lang_field(tmp_path):
    src = _write(
        tmp_path / "train.jsonl.gz",
        [
            _tev(
                "q1", "en", "who?", [("Paris", "It is in France."), ("", "second positive")], [("", "neg a")]
            ),
            _tev("q1", "de", "wer?", [("Paris", "Es liegt in Frankreich.")], [("T", "neg b"), ("", "  ")]),
            _tev(2, "EN", "what?", [("", "just text")]),
        ],
        gz=True,
    )
    corpus = read_tevatron(src, cache_dir=tmp_path / "cache")
    rows = _rows(corpus)
    assert corpus.langs == ["de", "en"] and corpus.num_ids == 2
    assert rows[("q1", "en")]["positive"] == "Paris It is in France."  # title + " " + text
    assert rows[("q1", "en")]["negatives"] == ["neg a"]
    assert rows[("q1", "de")]["negatives"] == ["T neg b"]  # the blank one dropped
    assert rows[("2", "en")]["positive"] == "just text"  # an empty title adds nothing
    stats = corpus.meta["tevatron"]
    assert stats["extra_positives_dropped"] == 1 and stats["empty_negatives_dropped"] == 1


def test_flag_per_language_files_without_ids_are_paired_by_line(tmp_path):
    en = _write(
        tmp_path / "en.jsonl",
        [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}a", f"n{i}b"]} for i in range(3)],
    )
    de = _write(
        tmp_path / "de.jsonl", [{"query": f"F{i}", "pos": [f"P{i}"], "prompt": "x"} for i in range(3)] + [""]
    )
    corpus = read_tevatron({"en": str(en), "de": str(de)}, max_negatives=1, cache_dir=tmp_path / "cache")
    rows = _rows(corpus)
    for i in range(3):  # record k of each file is id k (1-based), the trailing blank line not counted
        assert rows[(str(i + 1), "en")]["query"] == f"q{i}" and rows[(str(i + 1), "de")]["query"] == f"F{i}"
        assert rows[(str(i + 1), "en")]["negatives"] == [f"n{i}a"]
    assert corpus.meta["tevatron"]["negatives_cut"] == 3


def test_per_language_files_with_ids_need_not_align(tmp_path):
    en = _write(
        tmp_path / "en.jsonl",
        [{"id": "a", "query": "q", "pos": ["p"]}, {"id": "b", "query": "r", "pos": ["s"]}],
    )
    fr = _write(tmp_path / "fr.jsonl", [{"id": "b", "query": "R", "pos": ["S"]}])
    corpus = read_tevatron({"en": en, "fr": fr}, cache_dir=tmp_path / "cache")
    assert set(_rows(corpus)) == {("a", "en"), ("b", "en"), ("b", "fr")}


def test_second_read_uses_the_cache(tmp_path, monkeypatch):
    src = _write(tmp_path / "t.jsonl", [_tev("1", "en", "q", [("", "p")])])
    read_tevatron(src, cache_dir=tmp_path / "cache")
    import mlir.data.tevatron as tev

    monkeypatch.setattr(tev, "_convert", lambda *a, **k: pytest.fail("converted twice"))
    assert len(read_tevatron(src, cache_dir=tmp_path / "cache")) == 1


@pytest.mark.parametrize(
    ("records", "match", "line"),
    [
        (
            [_tev("1", "en", "q", [("", "p")]), {"query_id": "2", "lang": "en", "query": "q"}],
            "missing required field 'positive_passages'",
            2,
        ),
        (
            [_tev("1", "en", "q", [("", "p")]), {"query_id": "2", "lang": "en", "query": "q", "pos": ["p"]}],
            "mixed",
            2,
        ),
        (
            [{"query_id": "1", "query": "q", "positive_passages": [{"text": "p"}]}],
            "missing language field 'lang'",
            1,
        ),
        ([{"lang": "en", "query": "q", "pos": ["p"]}], "no 'query_id' or 'id'", 1),
        ([_tev("1", "en", "  ", [("", "p")])], "field 'query' is not a non-empty string", 1),
        ([_tev("1", "en", "q", [])], "has no positive", 1),
        (
            [
                _tev("1", "en", "q", [("", "p")]),
                _tev("2", "en", "q", [("", "p")]),
                _tev("1", "en", "r", [("", "s")]),
            ],
            "duplicate \\(id, lang\\) = \\('1', 'en'\\); first seen on line 1",
            3,
        ),
        (["{not json"], "malformed JSON", 1),
        ([{"query": "q", "positive": "p"}], "neither Tevatron .* nor FlagEmbedding", 1),
        ([{"query_id": "1", "query_text": "q", "positive_document_ids": ["7"]}], "Tevatron v2", 1),
    ],
)
def test_bad_records_name_the_source_line(tmp_path, records, match, line):
    src = _write(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError, match=match) as ei:
        read_tevatron(src, cache_dir=tmp_path / "cache")
    assert ei.value.where == f"{src}:{line}"
    assert not list((tmp_path / "cache").glob("*.jsonl"))  # nothing half-converted left behind


def test_unaligned_per_language_files_are_refused(tmp_path):
    en = _write(tmp_path / "en.jsonl", [{"query": "a", "pos": ["b"]}] * 3)
    zh = _write(tmp_path / "zh.jsonl", [{"query": "a", "pos": ["b"]}] * 2)
    with pytest.raises(DataError, match="2 records but .*en.jsonl has 3: .*line-aligned") as ei:
        read_tevatron({"en": en, "zh": zh}, cache_dir=tmp_path / "cache")
    assert ei.value.where == str(zh)
    mixed = _write(
        tmp_path / "zh.jsonl", [{"query": "a", "pos": ["b"]}, {"id": 5, "query": "a", "pos": ["b"]}]
    )
    with pytest.raises(DataError, match="has one 'query_id'/'id' but the first record has none") as ei:
        read_tevatron({"zh": mixed}, cache_dir=tmp_path / "cache")
    assert ei.value.where == f"{mixed}:2"
    wrong = _write(tmp_path / "de.jsonl", [{"lang": "fr", "query": "a", "pos": ["b"]}])
    with pytest.raises(DataError, match="is 'fr' but the file is given as language 'de'"):
        read_tevatron({"de": wrong}, cache_dir=tmp_path / "cache")


def test_cli_tevatron_writes_mlir_jsonl(tmp_path, capsys):
    en = _write(tmp_path / "en.jsonl", [{"query": "q", "pos": ["p", "p2"], "neg": ["n"]}])
    de = _write(tmp_path / "de.jsonl", [{"query": "Q", "pos": ["P"]}])
    out = tmp_path / "out.jsonl"
    convert_main(["tevatron", f"en={en}", f"de={de}", str(out)])
    assert json.loads(capsys.readouterr().out)["extra_positives_dropped"] == 1
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [
        {"id": "1", "lang": "de", "query": "Q", "positive": "P", "negatives": []},
        {"id": "1", "lang": "en", "query": "q", "positive": "p", "negatives": ["n"]},
    ]
    assert read_jsonl(out, cache_dir=tmp_path / "cache").num_ids == 1


def test_data_config_reads_through_hydra(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    import mlir.core.config  # noqa: F401  (resolvers)

    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    en = _write(tmp_path / "en.jsonl", [{"query": "q", "pos": ["p"]}])
    fr = _write(tmp_path / "fr.jsonl", [{"query": "Q", "pos": ["P"]}])
    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["data=tevatron", f"data.corpus.path={{en: {en}, fr: {fr}}}"])
    assert list(cfg.eval.benchmarks) == ["jsonl"] and list(cfg.eval.dev_benchmarks) == ["jsonl_dev"]
    assert cfg.eval.benchmarks.jsonl.split.part == "test"  # its own held-out groups (test_heldout_eval.py)
    corpus = instantiate(cfg.data.corpus)()
    assert corpus.langs == ["en", "fr"] and corpus.num_ids == 1


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match="file not found") as ei:
        read_tevatron({"en": tmp_path / "nope.jsonl"}, cache_dir=tmp_path / "cache")
    assert ei.value.where == str(tmp_path / "nope.jsonl")
