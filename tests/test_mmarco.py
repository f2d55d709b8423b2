"""mMARCO -> parallel JSONL (mlir.data.mmarco, python -m mlir.data.convert mmarco) on a tiny hub layout."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from mlir.core.errors import ConfigError, DataError
from mlir.data.convert import main as convert_main
from mlir.data.jsonl import read_jsonl
from mlir.data.mmarco import convert_mmarco

LANGS = {"english": "en", "german": "de", "chinese": "zh"}
N_FILLER = 500  # passages no query needs: the converter must not keep them


def passage(pid: int, name: str) -> str:
    return f"{name} passage number {pid}"


def query(qid: int, name: str) -> str:
    return f"{name} question {qid}?"


# qid -> its relevant passages in qrels order (101 has two: the second must be dropped, never a negative)
QRELS = {100: [3], 101: [5, 6], 102: [7]}
# (qid, positive, negative); 104 is in no qrels, 100's negative 1 repeats, 101's negative 6 is a positive
TRIPLES = [(100, 3, 1), (100, 3, 2), (100, 3, 1), (101, 5, 6), (101, 5, 8), (102, 7, 9), (104, 0, 1)]
QIDS = [100, 101, 102, 103]  # 103 has no qrels: no row


def _write(path: Path, lines: list[str], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def build_mmarco(root: Path, qrels: bool = True) -> Path:
    """The hub's layout: data/google/{queries/train, collections}, triples in data/ (the parent)."""
    d = root / "data" / "google"
    pids = list(range(10)) + list(range(1000, 1000 + N_FILLER))
    for i, name in enumerate(LANGS):
        gz = name == "german"  # one language gzip-compressed
        qids = QIDS if name != "chinese" else QIDS[::-1]  # another query order: ids must still pair
        _write(
            d / "queries" / "train" / f"{name}_queries.train.tsv",
            [f"{q}\t{query(q, name)}" for q in qids],
            gz,
        )
        order = pids if i % 2 == 0 else pids[::-1]
        _write(d / "collections" / f"{name}_collection.tsv", [f"{p}\t{passage(p, name)}" for p in order], gz)
    if qrels:
        _write(d / "qrels.train.tsv", [f"{q}\t0\t{p}\t1" for q, ps in QRELS.items() for p in ps])
    _write(root / "data" / "triples.train.ids.small.tsv", ["\t".join(map(str, t)) for t in TRIPLES])
    return d


def _rows_by_key(corpus) -> dict[tuple[str, str], dict]:
    rows = corpus.table.to_list() if hasattr(corpus.table, "to_list") else list(corpus.table)
    return {(r["id"], r["lang"]): r for r in rows}


def test_convert_keeps_parallel_ids_texts_and_negatives(tmp_path):
    d = build_mmarco(tmp_path)
    out = tmp_path / "out" / "mmarco.jsonl.gz"
    stats = convert_mmarco(d, out, negatives_from="triples", max_negatives=8)
    corpus = read_jsonl(out, cache_dir=tmp_path / "cache")
    assert corpus.langs == ["de", "en", "zh"]
    assert len(corpus) == 3 * 3 and corpus.num_ids == 3
    rows = _rows_by_key(corpus)
    expected_negs = {100: [1, 2], 101: [8], 102: [9]}
    for name, lang in LANGS.items():
        for qid, positives in QRELS.items():
            r = rows[(str(qid), lang)]
            assert r["query"] == query(qid, name)
            assert r["positive"] == passage(positives[0], name)
            assert r["negatives"] == [passage(p, name) for p in expected_negs[qid]]
    assert stats.extra_positives_dropped == 1
    assert stats.rows_per_lang == {"de": 3, "en": 3, "zh": 3}
    assert stats.not_in_queries == {"de": 0, "en": 0, "zh": 0}
    # memory: only the needed passages of one language are held, never the 500 others
    assert stats.max_passages_held == len({3, 5, 7, 1, 2, 8, 9})


def test_positives_from_triples_without_qrels_and_max_queries(tmp_path):
    d = build_mmarco(tmp_path, qrels=False)
    out = tmp_path / "out.jsonl"
    stats = convert_mmarco(d, out, langs=["en", "german"], max_queries=2)
    corpus = read_jsonl(out, cache_dir=tmp_path / "cache")
    rows = _rows_by_key(corpus)
    # the triples' first two query ids, each with its triples' positive; no negatives unless asked
    assert set(rows) == {(q, lang) for q in ("100", "101") for lang in ("en", "de")}
    assert rows[("101", "de")]["positive"] == passage(5, "german")
    assert rows[("100", "en")]["negatives"] == []
    assert stats.queries == 2 and stats.max_passages_held == 2


def test_missing_passage_drops_the_row_in_that_language_only(tmp_path, caplog):
    d = build_mmarco(tmp_path)
    coll = d / "collections" / "english_collection.tsv"
    lines = [x for x in coll.read_text().splitlines() if not x.startswith("5\t")]
    coll.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING, logger="mlir.data.mmarco"):
        stats = convert_mmarco(d, out)
    assert stats.missing_positive == {"de": 0, "en": 1, "zh": 0}
    assert "1 positive passage ids missing" in caplog.text
    rows = _rows_by_key(read_jsonl(out, cache_dir=tmp_path / "cache"))
    assert ("101", "en") not in rows and ("101", "de") in rows and ("100", "en") in rows


def test_a_collection_without_any_positive_is_an_error(tmp_path):
    d = build_mmarco(tmp_path)
    coll = d / "collections" / "english_collection.tsv"
    coll.write_text("".join(f"{p}\tfiller {p}\n" for p in range(2000, 2010)))
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="none of the 3 positive passages") as ei:
        convert_mmarco(d, out)
    assert ei.value.where == str(coll)
    assert not out.exists()  # atomic: nothing half-written


def test_cli_malformed_line_is_one_line_exit_2(tmp_path, capsys):
    d = build_mmarco(tmp_path)
    q = d / "queries" / "train" / "english_queries.train.tsv"
    q.write_text("100\tfine\n101 no tab here\n")
    with pytest.raises(SystemExit) as ei:
        convert_main(["mmarco", str(d), str(tmp_path / "o.jsonl")])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{q}:2: malformed line" in err


@pytest.mark.parametrize(
    ("mutate", "match", "where"),
    [
        (
            lambda d: (d / "qrels.train.tsv").write_text("100\t0\tx7\t1\n"),
            "column 3 must be an integer",
            "qrels.train.tsv:1",
        ),
        (
            lambda d: (d / "qrels.train.tsv").write_text("100\t0\t7\n"),
            "expected 4 columns, got 3",
            "qrels.train.tsv:1",
        ),
        (
            lambda d: (d / "queries/train/english_queries.train.tsv").write_text("100\ta\n101\tb\n100\tc\n"),
            "query id 100 repeats line 1",
            "english_queries.train.tsv:3",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, mutate, match, where):
    d = build_mmarco(tmp_path)
    mutate(d)
    with pytest.raises(DataError, match=match) as ei:
        convert_mmarco(d, tmp_path / "o.jsonl")
    assert ei.value.where.endswith(where)


def test_missing_files_and_unknown_languages(tmp_path):
    d = build_mmarco(tmp_path)
    with pytest.raises(DataError, match="file not found") as ei:
        convert_mmarco(d, tmp_path / "o.jsonl", langs=["fr"])
    assert "french_queries.train.tsv" in ei.value.where
    with pytest.raises(ConfigError, match="unknown mMARCO language 'klingon'"):
        convert_mmarco(d, tmp_path / "o.jsonl", langs=["klingon"])
    (d / "qrels.train.tsv").unlink()
    (tmp_path / "data" / "triples.train.ids.small.tsv").unlink()
    with pytest.raises(DataError, match="neither qrels.train.tsv nor triples"):
        convert_mmarco(d, tmp_path / "o.jsonl")


def test_cli_converts_and_prints_counts(tmp_path, capsys):
    import json

    d = build_mmarco(tmp_path)
    out = tmp_path / "cli.jsonl"
    convert_main(
        [
            "mmarco",
            str(d),
            str(out),
            "--langs",
            "en,zh",
            "--negatives-from",
            "triples",
            "--max-negatives",
            "1",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows_per_lang"] == {"en": 3, "zh": 3}
    rows = _rows_by_key(read_jsonl(out, cache_dir=tmp_path / "cache"))
    assert rows[("100", "zh")]["negatives"] == [passage(1, "chinese")]
