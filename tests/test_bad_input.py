"""Bad input, data part: every case ends in one line naming the file and the line (or JSON path),
and leaves no half-written cache or output file behind."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from mlir.core.errors import DataError, exit_on_user_error
from mlir.data.jsonl import read_jsonl
from mlir.data.mkqa import read_mkqa
from mlir.data.xquad_r import read_xquad_r, read_xquad_r_candidates


def _line(**kw) -> str:
    base = {"id": "q1", "lang": "en", "query": "what?", "positive": "this."}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


GOOD = [_line(id=f"q{i}", lang=lang) for i in range(3) for lang in ("en", "de")]  # 6 lines


def _jsonl(tmp: Path, lines: list[str] | bytes, name: str = "bad.jsonl") -> Path:
    p = tmp / name
    p.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return p


def _truncated_gz(tmp: Path, name: str, lines: list[str]) -> Path:
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    p = tmp / name
    p.write_bytes(data[: len(data) // 2])
    return p


def _many_lines(n=3000):
    return [_line(id=f"q{i}", query=f"question number {i} " * 3) for i in range(n)]


def _squad(paragraph_edit=None) -> dict:
    """Two articles, the second with two paragraphs; ``paragraph_edit`` mutates data[1].paragraphs[1]."""

    def para(sents, qid):
        ctx = " ".join(sents)
        breaks, pos = [], 0
        for s in sents:
            breaks.append([pos, pos + len(s)])
            pos += len(s) + 1
        return {
            "context": ctx,
            "sentences": sents,
            "sentence_breaks": breaks,
            "qas": [
                {
                    "id": qid,
                    "question": "Which?",
                    "answers": [{"text": sents[-1][:4], "answer_start": breaks[-1][0]}],
                }
            ],
        }

    doc = {
        "version": "1.1",
        "data": [
            {"title": "A", "paragraphs": [para(["First one.", "Second one."], "a")]},
            {
                "title": "B",
                "paragraphs": [
                    para(["Third here."], "b"),
                    para(["Fourth here.", "Fifth here.", "Sixth."], "c"),
                ],
            },
        ],
    }
    if paragraph_edit:
        paragraph_edit(doc["data"][1]["paragraphs"][1])
    return doc


def _xquad(tmp: Path, edit=None, raw: str | None = None) -> Path:
    d = tmp / "xq"
    d.mkdir(exist_ok=True)
    (d / "en.json").write_text(raw if raw is not None else json.dumps(_squad(edit)))
    return d


def _mkqa_lines(n=3):
    return [
        json.dumps(
            {
                "example_id": i,
                "query": f"q{i}",
                "queries": {"en": f"q{i}", "de": f"f{i}"},
                "answers": {
                    "en": [{"type": "entity", "text": "x", "aliases": []}],
                    "de": [{"type": "entity", "text": "x"}],
                },
            }
        )
        for i in range(n)
    ]


def _set(key, value):
    def edit(p):
        p[key] = value

    return edit


def _break(k, value):
    def edit(p):
        p["sentence_breaks"][k] = value

    return edit


P = "data[1].paragraphs[1]"

# (case id, build(tmp) -> (read(), expected where, message fragment))
CASES = [
    (
        "jsonl-malformed-json",
        lambda t: (
            p := _jsonl(t, GOOD[:2] + ['{"id": "q9", "lang": "en", "query": "x",'] + GOOD[2:]),
            f"{p}:3",
            "malformed JSON",
        ),
    ),
    (
        "jsonl-truncated-gzip",
        lambda t: (
            p := _truncated_gz(t, "bad.jsonl.gz", _many_lines()),
            re.compile(rf"{re.escape(str(p))}:\d+$"),
            "truncated",
        ),
    ),
    (
        "jsonl-non-utf8",
        lambda t: (
            p := _jsonl(
                t,
                ("\n".join(GOOD[:1]) + "\n").encode()
                + b'{"id": "q\xff", "lang": "en", "query": "x", "positive": "y"}\n',
            ),
            f"{p}:2",
            "UTF-8",
        ),
    ),
    (
        "jsonl-missing-field",
        lambda t: (p := _jsonl(t, GOOD[:1] + [_line(positive=...)] + GOOD[1:]), f"{p}:2", "'positive'"),
    ),
    (
        "jsonl-whitespace-query",
        lambda t: (p := _jsonl(t, GOOD[:3] + [_line(id="z", query=" \t ")]), f"{p}:4", "whitespace"),
    ),
    (
        "jsonl-empty-positive",
        lambda t: (p := _jsonl(t, GOOD[:1] + [_line(id="z", positive="")]), f"{p}:2", "'positive'"),
    ),
    (
        "jsonl-wrong-type",
        lambda t: (p := _jsonl(t, GOOD[:2] + [_line(id="z", negatives="not a list")]), f"{p}:3", "negatives"),
    ),
    ("jsonl-id-wrong-type", lambda t: (p := _jsonl(t, [_line(id=[1, 2])]), f"{p}:1", "'id'")),
    ("jsonl-not-an-object", lambda t: (p := _jsonl(t, GOOD[:1] + ["[1, 2]"]), f"{p}:2", "JSON object")),
    (
        "jsonl-duplicate-id-lang",
        lambda t: (p := _jsonl(t, GOOD + [_line(id="q1", lang="de", query="again")]), f"{p}:7", "line 4"),
    ),
    ("jsonl-empty-file", lambda t: (p := _jsonl(t, b""), f"{p}", "empty")),
    (
        "mkqa-malformed-json",
        lambda t: (p := _jsonl(t, _mkqa_lines()[:2] + ["{oops"], "m.jsonl"), f"{p}:3", "malformed JSON"),
    ),
    (
        "mkqa-truncated-gzip",
        lambda t: (
            p := _truncated_gz(t, "mkqa.jsonl.gz", _mkqa_lines(400)),
            re.compile(rf"{re.escape(str(p))}:\d+$"),
            "truncated",
        ),
    ),
    (
        "mkqa-missing-queries",
        lambda t: (
            p := _jsonl(t, _mkqa_lines()[:1] + ['{"example_id": 5, "answers": {}}'], "m.jsonl"),
            f"{p}:2",
            "queries",
        ),
    ),
    (
        "mkqa-duplicate-id",
        lambda t: (p := _jsonl(t, _mkqa_lines() + _mkqa_lines()[1:2], "m.jsonl"), f"{p}:4", "duplicate"),
    ),
    (
        "xquad-breaks-count",
        lambda t: (
            d := _xquad(t, _set("sentence_breaks", [[0, 12], [13, 24]])),
            f"{d / 'en.json'}:{P}",
            "3 sentences but 2",
        ),
    ),
    (
        "xquad-breaks-out-of-range",
        lambda t: (d := _xquad(t, _break(2, [25, 400])), f"{d / 'en.json'}:{P}", "outside the context"),
    ),
    (
        "xquad-breaks-overlap",
        lambda t: (d := _xquad(t, _break(1, [5, 24])), f"{d / 'en.json'}:{P}", "overlaps"),
    ),
    ("xquad-breaks-text", lambda t: (d := _xquad(t, _break(1, [25, 31])), f"{d / 'en.json'}:{P}", "selects")),
    (
        "xquad-breaks-not-ints",
        lambda t: (d := _xquad(t, _break(0, [0, "12"])), f"{d / 'en.json'}:{P}", "integers"),
    ),
    (
        "xquad-no-sentences",
        lambda t: (d := _xquad(t, lambda p: p.pop("sentences")), f"{d / 'en.json'}:{P}", "sentence_breaks"),
    ),
    (
        "xquad-malformed-json",
        lambda t: (
            d := _xquad(t, raw='{"data": [\n  {"title": "A",,}\n]}'),
            f"{d / 'en.json'}:2:17",
            "malformed JSON",
        ),
    ),
    (
        "xquad-blank-question",
        lambda t: (
            d := _xquad(t, lambda p: p["qas"][0].update(question="  ")),
            f"{d / 'en.json'}:{P}.qas[0]",
            "question",
        ),
    ),
]


def _reader(case_id: str, target: Path, cache: Path):
    if case_id.startswith("jsonl"):
        return lambda: read_jsonl(target, cache_dir=cache)
    if case_id.startswith("mkqa"):
        return lambda: read_mkqa(target)
    return lambda: read_xquad_r(target)


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_data_bad_input_names_file_and_line(case, tmp_path, request, capsys):
    case_id = request.node.callspec.id
    target, where, fragment = case(tmp_path)
    cache = tmp_path / "cache"
    read = _reader(case_id, target, cache)
    with pytest.raises(DataError) as ei:
        read()
    err = ei.value
    if isinstance(where, re.Pattern):
        assert where.fullmatch(err.where), err.where
    else:
        assert err.where == where
    assert fragment in err.message
    assert "\n" not in str(err)
    # nothing half-written: no cache entries, no temp files next to the input
    assert not [f for f in cache.rglob("*") if f.is_file()]
    assert not [f for f in tmp_path.rglob(".*") if f.is_file()]
    # the command-line wrapper turns it into exactly one line on stderr and exit code 2
    with pytest.raises(SystemExit) as se:
        exit_on_user_error(read)()
    assert se.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {err.where}: ")


def test_truncated_gzip_line_is_the_first_incomplete_one(tmp_path):
    lines = _many_lines()
    p = _truncated_gz(tmp_path, "t.jsonl.gz", lines)
    with pytest.raises(DataError) as ei:
        read_jsonl(p, cache_dir=tmp_path / "c")
    n = int(ei.value.where.rsplit(":", 1)[1])
    # every line before the reported one decompressed intact
    with gzip.open(p, "rt") as f:
        got = []
        with pytest.raises(EOFError):
            for line in f:
                got.append(line.rstrip("\n"))
    complete = 0
    while complete < len(got) and got[complete] == lines[complete]:
        complete += 1
    assert 1 < n == complete + 1


def test_mkqa_checksum_mismatch_names_the_file(tmp_path):
    p = tmp_path / "mkqa.jsonl.gz"
    p.write_bytes(gzip.compress(("\n".join(_mkqa_lines()) + "\n").encode()))
    with pytest.raises(DataError) as ei:
        read_mkqa(p, sha256="ab" * 32)
    assert ei.value.where == str(p) and "sha256 mismatch" in ei.value.message
    assert len(read_mkqa(p)) == 3  # the file itself is fine


def test_strict_mode_rejects_near_identical_break_text(tmp_path):
    """A one-character offset slip is tolerated and counted by default, an error in strict mode."""
    d = _xquad(tmp_path, _break(1, [12, 23]))  # 'Fifth here.' -> ' Fifth here' (slice shifted by one)
    x = read_xquad_r_candidates(d)
    assert x.meta["sentence_text_mismatches"] == {"en": [f"{P}.sentence_breaks[1]"]}
    with pytest.raises(DataError) as ei:
        read_xquad_r_candidates(d, strict=True)
    assert ei.value.where == f"{d / 'en.json'}:{P}"


def test_answer_start_between_sentences_snaps_to_the_next_sentence(tmp_path):
    def edit(p):
        p["qas"][0]["answers"][0]["answer_start"] = 12  # the space between sentences 0 and 1

    d = _xquad(tmp_path, edit)
    x = read_xquad_r_candidates(d)
    assert x["en"].positive(2) == "Fifth here."
    assert x.meta["per_lang"]["en"]["answer_start_snapped"] == 1


def test_answer_start_outside_context_skips_the_question(tmp_path):
    d = _xquad(tmp_path, lambda p: p["qas"][0]["answers"][0].update(answer_start=999))
    x = read_xquad_r_candidates(d)
    assert x["en"].ids == ["a", "b"] and x.meta["per_lang"]["en"]["questions_skipped"] == 1
