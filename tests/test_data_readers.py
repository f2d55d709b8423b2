"""Readers: XQuAD-R (real shared data), generic JSONL, MKQA, the XQuAD-R -> MKQA adapter, downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from mlir.core.errors import ConfigError, DataError, MlirError
from mlir.data import download
from mlir.data.io import write_jsonl
from mlir.data.jsonl import read_jsonl
from mlir.data.mkqa import mkqa_from_records, read_mkqa
from mlir.data.xquad_r import XQUAD_R_LANGS, read_xquad_r, read_xquad_r_candidates, xquad_r_to_mkqa_records

# ------------------------------------------------------------------------------------ XQuAD-R (real)


@pytest.fixture(scope="module")
def xq(xquad_r_dir):
    return read_xquad_r_candidates(xquad_r_dir)


@pytest.fixture(scope="module")
def raw_xquad(xquad_r_dir):
    return {lang: json.loads((xquad_r_dir / f"{lang}.json").read_text("utf-8")) for lang in XQUAD_R_LANGS}


def _clean(s: str) -> str:
    return s.replace("\ufeff", "").strip()


@pytest.mark.data
def test_xquad_r_languages_questions_and_parallel_ids(xq, raw_xquad):
    assert xq.langs == sorted(XQUAD_R_LANGS)
    en_ids = xq["en"].ids
    assert len(en_ids) == len(set(en_ids))
    for lang in xq.langs:
        d = xq[lang]
        raw_ids = [q["id"] for a in raw_xquad[lang]["data"] for p in a["paragraphs"] for q in p["qas"]]
        assert d.ids == raw_ids
        assert len(d) == len(raw_ids) == 1190
        assert d.ids == en_ids  # parallel: same ids, same order
        n_sent = sum(len(p["sentences"]) for a in raw_xquad[lang]["data"] for p in a["paragraphs"])
        assert len(d.sentences) == len(d.contexts) == len(d.candidate_groups) == n_sent


@pytest.mark.data
def test_xquad_r_corpus_rows_and_groups_aligned(xquad_r_dir, raw_xquad):
    corpus = read_xquad_r(xquad_r_dir)
    assert len(corpus) == 11 * 1190
    assert corpus.num_ids == 1190
    assert np.all(np.bincount(corpus.pid) == 11)  # every question in every language
    assert len(corpus.groups) == len(raw_xquad["en"]["data"]) == 48
    # a parallel id has one group in all languages, and it is the English article title
    gi = corpus.group_idx
    for p in range(corpus.num_ids):
        assert len(set(gi[corpus.pid == p].tolist())) == 1
    en_title = {
        q["id"]: a["title"] for a in raw_xquad["en"]["data"] for p in a["paragraphs"] for q in p["qas"]
    }
    ids = corpus.texts("id", np.arange(len(corpus)))
    assert all(corpus.groups[g] == en_title[i] for i, g in zip(ids, gi.tolist()))


@pytest.mark.data
def test_xquad_r_positive_is_the_sentence_holding_the_answer_start(xq, raw_xquad):
    """Independent re-derivation: the break containing answer_start selects the positive sentence."""
    for lang in xq.langs:
        d = xq[lang]
        expected = []
        for a in raw_xquad[lang]["data"]:
            for p in a["paragraphs"]:
                for q in p["qas"]:
                    st = q["answers"][0]["answer_start"]
                    (k,) = [i for i, (b, e) in enumerate(p["sentence_breaks"]) if b <= st < e]
                    expected.append(_clean(p["sentences"][k]))
        assert [d.positive(i) for i in range(len(d))] == expected
        # relevant candidates belong to the question's own article and paragraph
        assert [d.candidate_groups[c] for c in d.relevant] == d.groups
        assert np.array_equal(d.candidate_paragraph[d.relevant], d.question_paragraph)


@pytest.mark.data
def test_xquad_r_answer_text_in_positive_sentence(xq):
    """Measured, not hard-coded: the answer should lie inside the chosen sentence almost always."""
    rates = {}
    for lang in xq.langs:
        d = xq[lang]
        hits = sum(d.answers[i][0] in d.positive(i) for i in range(len(d)))
        rates[lang] = hits / len(d)
    overall = sum(rates.values()) / len(rates)
    print(
        "answer-in-positive rate:", {k: round(v, 4) for k, v in rates.items()}, "overall", round(overall, 4)
    )
    assert min(rates.values()) > 0.95
    assert overall > 0.98


@pytest.mark.data
def test_xquad_r_paragraph_positive(xquad_r_dir, xq):
    corpus = read_xquad_r(xquad_r_dir, langs=["en", "de"], positive="paragraph")
    assert corpus.langs == ["de", "en"] and len(corpus) == 2 * 1190
    pos = corpus.texts("positive", np.arange(len(corpus)))
    langs = [corpus.langs[i] for i in corpus.lang_idx]
    ids = corpus.texts("id", np.arange(len(corpus)))
    for lang in ("en", "de"):
        d = xq[lang]
        by_id = {qid: i for i, qid in enumerate(d.ids)}
        for qid, lg, p in zip(ids, langs, pos):
            if lg == lang:
                i = by_id[qid]
                assert d.positive(i) in p  # the sentence is part of its paragraph
                assert p == d.contexts[int(d.relevant[i])]
    # paragraphs are shared by several questions: fewer unique positives than rows
    assert corpus.passage_idx.max() + 1 < len(corpus)
    with pytest.raises(ConfigError):
        read_xquad_r(xquad_r_dir, langs=["en"], positive="document")


@pytest.mark.data
def test_xquad_r_candidate_texts_and_restriction(xq):
    d = xq["zh"]
    assert d.candidate_texts("sentence") == d.sentences
    both = d.candidate_texts("sentence_context", sep="\n")
    assert all(t.startswith(s + "\n") and t.endswith(c) for t, s, c in zip(both, d.sentences, d.contexts))
    held = xq.groups[:5]
    sub = xq.restrict_groups(held)
    for lang in sub.langs:
        s, full = sub[lang], xq[lang]
        assert set(s.candidate_groups) == set(held) == set(s.groups)
        assert len(s.sentences) == sum(g in held for g in full.candidate_groups)
        # remapped indices still point at the same sentence text
        full_pos = {qid: full.positive(i) for i, qid in enumerate(full.ids)}
        assert all(s.positive(i) == full_pos[qid] for i, qid in enumerate(s.ids))
    with pytest.raises(ConfigError):
        xq.restrict_groups(["no such article"])


@pytest.mark.data
def test_xquad_r_tolerates_near_identical_break_text_but_strict_raises(xquad_r_dir, xq):
    """tr.json has a paragraph whose breaks are shifted by an encoding glitch: counted, or fatal if strict."""
    mism = xq.meta["sentence_text_mismatches"]
    assert set(mism) <= {"tr"} and mism.get("tr")
    with pytest.raises(DataError) as ei:
        read_xquad_r_candidates(xquad_r_dir, ["tr"], strict=True)
    assert ei.value.where.startswith(f"{xquad_r_dir / 'tr.json'}:data[")
    assert ".paragraphs[" in ei.value.where


@pytest.mark.data
def test_xquad_r_group_keys_do_not_depend_on_loaded_languages(xquad_r_dir, xq):
    sub = read_xquad_r_candidates(xquad_r_dir, ["zh", "th"])
    assert sub.langs == ["zh", "th"]
    assert sub["th"].groups == xq["th"].groups and sub.meta["reference_lang"] == "en"


def _squad(articles):
    """A tiny XQuAD-R-format document: articles = [(title, [(sentences, [(qid, question, answer)])])]."""
    data = []
    for title, paragraphs in articles:
        ps = []
        for sentences, qas in paragraphs:
            ctx, breaks = "", []
            for s in sentences:
                start = len(ctx) + (1 if ctx else 0)
                ctx = f"{ctx} {s}" if ctx else s
                breaks.append([start, start + len(s)])
            ps.append(
                {
                    "context": ctx,
                    "sentences": list(sentences),
                    "sentence_breaks": breaks,
                    "qas": [
                        {"id": qid, "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}
                        for qid, q, a in qas
                    ],
                }
            )
        data.append({"title": title, "paragraphs": ps})
    return {"version": "1.1", "data": data}


def test_mlqa_style_translated_titles_grouped_through_question_ids(tmp_path):
    """MLQA-R titles are translated: groups follow shared question ids to the English article."""
    (tmp_path / "en.json").write_text(
        json.dumps(
            _squad(
                [
                    ("Cats", [(["Cats purr.", "They sleep a lot."], [("a1", "What do cats do?", "purr")])]),
                    ("Dogs", [(["Dogs bark."], [("b1", "What do dogs do?", "bark")])]),
                ]
            )
        )
    )
    (tmp_path / "de.json").write_text(
        json.dumps(
            _squad(
                [
                    ("Katzen", [(["Katzen schnurren."], [("a1", "Was tun Katzen?", "schnurren")])]),
                    ("Igel", [(["Igel stechen."], [("c1", "Was tun Igel?", "stechen")])]),
                ]
            )
        )
    )
    x = read_xquad_r_candidates(tmp_path)
    assert x["de"].groups == ["Cats", "de:Igel"]
    assert x["en"].groups == ["Cats", "Dogs"]
    assert not x.meta["titles_agree_across_langs"]
    only_de = read_xquad_r_candidates(tmp_path, ["de"])  # en.json still decides the key
    assert only_de["de"].groups == ["Cats", "de:Igel"]
    corpus = read_xquad_r(tmp_path)
    assert corpus.num_ids == 3 and len(corpus) == 4
    assert sorted(corpus.groups) == ["Cats", "Dogs", "de:Igel"]
    assert x["en"].positive(0) == "Cats purr." and x["en"].relevant.tolist() == [0, 2]


# --------------------------------------------------------------------------------------------- JSONL


def _rows():
    rows = []
    for i in range(30):
        for lang in ("en", "de", "fr"):
            if lang == "fr" and i % 5 == 0:
                continue  # some ids lack a language: legitimate
            r = {
                "id": f"q{i}",
                "lang": lang,
                "query": f"{lang} question {i}",
                "positive": f"{lang} passage {i}",
            }
            if i % 2:
                r["group"] = f"art{i % 7}"
            if i % 3 == 0:
                r["negatives"] = [f"{lang} hard negative {i}"]
            if i == 4:
                r["meta"] = {"source": "x", "score": 0.5}  # extra fields are ignored
            rows.append(r)
    return rows


def _write(path: Path, rows, gz=False):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _as_dicts(corpus):
    rows = corpus.table.with_format("arrow")[:].to_pylist()
    return {(r["id"], r["lang"]): r for r in rows}


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_roundtrip(tmp_path, gz):
    rows = _rows()
    path = _write(tmp_path / ("c.jsonl.gz" if gz else "c.jsonl"), rows, gz=gz)
    cache = tmp_path / "cache"
    corpus = read_jsonl(path, name="toy", cache_dir=cache)
    assert corpus.name == "toy" and len(corpus) == len(rows)
    got = _as_dicts(corpus)
    for r in rows:
        g = got[(r["id"], r["lang"])]
        assert g["query"] == r["query"] and g["positive"] == r["positive"]
        assert g["negatives"] == r.get("negatives", [])
        assert g["group"] == r.get("group", r["id"])  # missing group: the id is its own group
    assert corpus.langs == ["de", "en", "fr"]
    assert corpus.meta["rows_per_lang"] == dict(Counter(r["lang"] for r in rows))
    assert corpus.meta["ids"] == 30
    assert corpus.meta["ids_missing_langs"] == sum(1 for i in range(30) if i % 5 == 0)
    # the texts are memory-mapped from the cache dir, not held in Python lists
    files = [f for f in cache.rglob("*") if f.is_file()]
    assert any(f.suffix == ".arrow" for f in files)
    assert corpus.table.cache_files and Path(corpus.table.cache_files[0]["filename"]).parent == cache
    # second read re-uses the cache (no rewrite)
    arrow = next(f for f in files if f.suffix == ".arrow")
    before = arrow.stat().st_mtime_ns
    again = read_jsonl(path, cache_dir=cache)
    assert arrow.stat().st_mtime_ns == before
    assert _as_dicts(again) == got and again.meta["ids_missing_langs"] == corpus.meta["ids_missing_langs"]


def test_jsonl_integer_ids_blank_lines_and_bom(tmp_path):
    path = tmp_path / "ints.jsonl"
    lines = [
        json.dumps({"id": 7, "lang": "en", "query": "q", "positive": "p", "group": 3}),
        "",
        json.dumps({"id": 7, "lang": "de", "query": "q de", "positive": "p de", "group": 3}),
        "   ",
    ]
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    corpus = read_jsonl(path, cache_dir=tmp_path / "c")
    assert len(corpus) == 2 and corpus.num_ids == 1 and corpus.groups == ["3"]
    assert corpus.texts("id", [0, 1]) == ["7", "7"]


def test_jsonl_cache_invalidated_when_file_changes(tmp_path):
    path = _write(tmp_path / "c.jsonl", _rows()[:6])
    cache = tmp_path / "cache"
    assert len(read_jsonl(path, cache_dir=cache)) == 6
    _write(path, _rows()[:9])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert len(read_jsonl(path, cache_dir=cache)) == 9


# ---------------------------------------------------------------------------------------------- MKQA


def _expected_mkqa_drops(path: Path):
    """Independent count: (lang -> kept, lang -> dropped) straight from the JSON."""
    kept, dropped = Counter(), Counter()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            for lang in r["queries"]:
                q = r["queries"][lang]
                texts = [a.get("text") for a in r["answers"].get(lang) or []]
                if q and any(t for t in texts):
                    kept[lang] += 1
                else:
                    dropped[lang] += 1
    return kept, dropped


@pytest.mark.data
def test_mkqa_fixture_with_missing_answers(mkqa_test_file):
    data = read_mkqa(mkqa_test_file)
    kept, dropped = _expected_mkqa_drops(mkqa_test_file)
    assert len(data.langs) == 26 and "zh_cn" in data.langs
    assert data.meta["examples_in_file"] == 6
    for lang in data.langs:
        assert data.kept[lang] == kept[lang]
        assert sum(data.dropped[lang].values()) == dropped[lang]
        assert data.kept[lang] + sum(data.dropped[lang].values()) == 6
    assert sum(dropped.values()) > 0  # the fixture does contain null answers
    # the null-text answers are unanswerable / long_answer questions
    assert set(data.meta["no_answer_types"]) <= {"unanswerable", "long_answer"}
    for ex in data.examples:
        assert isinstance(ex.example_id, str)
        for lang, answers in ex.answers.items():
            assert answers and all(a.text for a in answers) and ex.queries[lang].strip()
    en = data.for_lang("en")
    assert len(en) == kept["en"]
    gladiator = next(e for e in en if "gladiator" in e.queries["en"].lower())
    assert "Ridley Scott" in gladiator.answer_strings("en")
    assert "Sir Ridley Scott" in gladiator.answer_strings("en")  # aliases included


@pytest.mark.data
def test_mkqa_language_subset_and_checksum(mkqa_test_file):
    digest = hashlib.sha256(mkqa_test_file.read_bytes()).hexdigest()
    data = read_mkqa(mkqa_test_file, langs=["en", "de", "zh_cn"], sha256=digest)
    assert data.langs == ["de", "en", "zh_cn"]
    assert all(set(e.queries) <= {"en", "de", "zh_cn"} for e in data.examples)
    with pytest.raises(ConfigError):
        read_mkqa(mkqa_test_file, langs=["xx"])
    with pytest.raises(ConfigError):
        data.for_lang("fr")


def test_mkqa_records_with_missing_pieces():
    records = [
        {
            "example_id": 1,
            "query": "who",
            "queries": {"en": "who", "de": "wer", "fr": None},
            "answers": {
                "en": [
                    {"type": "entity", "text": "Bob", "aliases": ["Robert"]},
                    {"type": "entity", "text": None},
                ],
                "de": [{"type": "unanswerable", "text": None}],
                "fr": [{"type": "entity", "text": "Bob"}],
            },
        },
        {"example_id": "2", "query": "x", "queries": {"en": "x", "de": "x de"}, "answers": {"en": []}},
    ]
    data = mkqa_from_records(records)
    assert data.langs == ["de", "en", "fr"]
    assert data.kept == {"de": 0, "en": 1, "fr": 0}
    assert data.dropped["de"] == {"missing_query": 0, "missing_answers": 1, "no_answer_text": 1}
    assert data.dropped["en"] == {"missing_query": 0, "missing_answers": 1, "no_answer_text": 0}
    assert data.dropped["fr"]["missing_query"] == 2  # null in record 1, absent from record 2
    (ex,) = data.examples
    assert ex.example_id == "1" and [a.text for a in ex.answers["en"]] == ["Bob"]
    assert ex.answer_strings("en") == ["Bob", "Robert"]
    assert data.meta["examples_without_any_language"] == 1


@pytest.mark.data
def test_xquad_r_to_mkqa_records_roundtrip(xq, tmp_path):
    records = xquad_r_to_mkqa_records(xq, lang_map={"zh": "zh_cn"})
    assert len(records) == 1190
    r0 = records[0]
    assert set(r0) == {"example_id", "query", "queries", "answers"}
    assert set(r0["queries"]) == {*XQUAD_R_LANGS} - {"zh"} | {"zh_cn"}
    assert r0["query"] == r0["queries"]["en"]
    i = xq["de"].ids.index(r0["example_id"])
    assert r0["answers"]["de"][0]["text"] == xq["de"].answers[i][0]
    path = write_jsonl(tmp_path / "xquad_mkqa.jsonl.gz", records)
    data = read_mkqa(path)
    assert len(data) == 1190 and all(v == 1190 for v in data.kept.values())
    assert data.examples[5].queries["zh_cn"] == xq["zh"].questions[5]


# ----------------------------------------------------------------------------------------- downloads


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_ensure_xquad_r_offline_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise URLError("no network")

    monkeypatch.setattr(download, "urlopen", offline)
    with pytest.raises(MlirError) as ei:
        download.ensure_xquad_r(tmp_path, ["de", "en"])
    msg = str(ei.value)
    assert "\n" not in msg
    assert "MLIR_DATA_DIR" in msg and "de.json, en.json" in msg and str(tmp_path / "xquad-r") in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_download_mkqa_verifies_checksum(tmp_path, monkeypatch):
    payload = gzip.compress(b'{"example_id": 1, "query": "q", "queries": {}, "answers": {}}\n')
    monkeypatch.setattr(download, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    good = hashlib.sha256(payload).hexdigest()
    path = download.download_mkqa(tmp_path / "a", sha256=good)
    assert path.read_bytes() == payload
    with pytest.raises(DataError) as ei:
        download.download_mkqa(tmp_path / "b", sha256="0" * 64)
    assert "sha256" in ei.value.message and ei.value.where == str(tmp_path / "b" / "mkqa.jsonl.gz")
    assert not any(p.is_file() for p in (tmp_path / "b").rglob("*"))
