"""Hard-negative mining (``python -m mlir.mine``): translations of the positive are never negatives.

The corpus is built so that translations are near-duplicates in the test encoder's space (every text of
one question carries its key ``k<n>``; :class:`NearDuplicateEncoder` maps it to the key's vector plus a
small text-specific perturbation), so an encoder *would* retrieve them right after the positive.
Expected negatives and counts come from a brute-force reimplementation of the rules in plain Python
(every candidate scored in float64, classified one by one), not from the module.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from _eval_data import KEY, key_vector

from mlir.data.corpus import ParallelCorpus
from mlir.data.jsonl import read_jsonl
from mlir.data.mining import MineSettings, mine_corpus
from mlir.mine import main

LANGS = ("en", "de", "fr")
CATEGORIES = ("positive", "translation", "same_text", "shared_positive")


class NearDuplicateEncoder:
    """Key vector + 0.1 x a text-specific random vector, L2-normalised: texts sharing a key score ~0.99."""

    def __init__(self, dim: int = 64):
        self.dim = dim

    def vector(self, text: str) -> np.ndarray:
        m = KEY.search(text)
        base = key_vector(m.group(0) if m else "text:" + text, self.dim).astype(np.float64)
        noise = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim)
        v = base + 0.1 * noise / np.linalg.norm(noise)
        return v / np.linalg.norm(v)

    def _enc(self, texts, batch_size=None) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.vector(t) for t in texts]).astype(np.float32))

    encode_queries = encode_passages = _enc


MERGED = "de fact k10 holding both sentences"


def parallel_rows() -> list[dict]:
    """q0-q5 in en/de/fr, q6 in en/de, q7/q8 share an English positive, q9 repeats q1's English
    positive up to case and spacing, q10/q11 have different English positives but one German one
    (a coarser segmentation); every text of question n carries key k<n> (q8 k7, q11 k10)."""
    rows = []
    for i in range(7):
        for lang in LANGS[: 3 if i < 6 else 2]:
            rows.append(
                {
                    "id": f"q{i}",
                    "lang": lang,
                    "query": f"{lang} question k{i}?",
                    "positive": f"{lang} fact k{i} here",
                }
            )
    shared = "en fact k7 shared by two questions"
    rows += [
        {"id": "q7", "lang": "en", "query": "en question k7?", "positive": shared},
        {"id": "q7", "lang": "de", "query": "de question k7?", "positive": "de fact k7 first"},
        {"id": "q8", "lang": "en", "query": "en other question k7?", "positive": shared},
        {"id": "q8", "lang": "de", "query": "de other question k7?", "positive": "de fact k7 second"},
        {"id": "q9", "lang": "en", "query": "EN question K1?", "positive": "EN  Fact K1   HERE"},
        {"id": "q10", "lang": "en", "query": "en question k10?", "positive": "en fact k10 first sentence"},
        {"id": "q10", "lang": "de", "query": "de question k10?", "positive": MERGED},
        {
            "id": "q11",
            "lang": "en",
            "query": "en question k10 again?",
            "positive": "en fact k10 second sentence",
        },
        {"id": "q11", "lang": "de", "query": "de question k10 again?", "positive": MERGED},
    ]
    return rows


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def brute_force(rows: list[dict], enc: NearDuplicateEncoder, n: int, skip: int, pool: str) -> dict:
    """Negatives and counts by definition: rank every candidate, classify each, keep the rest."""
    owners: dict[str, set] = {}
    for r in rows:
        owners.setdefault(r["positive"], set()).add((r["id"], r["lang"]))
    norms_of_id: dict[str, set] = {}
    for r in rows:
        norms_of_id.setdefault(r["id"], set()).add(_norm(r["positive"]))
    above = dict.fromkeys(CATEGORIES, 0)
    searched = dict.fromkeys(CATEGORIES, 0)
    negatives = []
    for r in rows:
        cands = [t for t, o in owners.items() if pool == "all" or any(lang == r["lang"] for _, lang in o)]
        q = enc.vector(r["query"])
        cands.sort(key=lambda t: -float(q @ enc.vector(t)))
        kept, pending = [], dict.fromkeys(CATEGORIES, 0)
        for t in cands:
            ids = {i for i, _ in owners[t]}
            if t == r["positive"]:
                cat = "positive"
            elif r["id"] in ids:
                cat = "translation"
            elif _norm(t) == _norm(r["positive"]):
                cat = "same_text"
            elif any(_norm(r["positive"]) in norms_of_id[i] for i in ids):
                cat = "shared_positive"
            else:
                kept.append(t)
                if len(kept) == skip + n:
                    for c in CATEGORIES:
                        above[c] += pending[c]
                        pending[c] = 0
                continue
            searched[cat] += 1
            pending[cat] += 1
        if len(kept) < skip + n:
            for c in CATEGORIES:
                above[c] += pending[c]
        negatives.append(kept[skip : skip + n])
    return {"negatives": negatives, "above": above, "searched": searched}


def mined_texts(corpus: ParallelCorpus, result) -> list[list[str]]:
    return [[result.passages[j] for j in row if j >= 0] for row in result.negatives]


@pytest.mark.parametrize(("pool", "skip"), [("all", 0), ("same_lang", 0), ("all", 2)])
def test_negatives_and_counts_match_brute_force(pool, skip):
    rows, enc = parallel_rows(), NearDuplicateEncoder()
    corpus = ParallelCorpus.from_rows(rows)
    n_passages = len({r["positive"] for r in rows})
    res = mine_corpus(corpus, enc, MineSettings(num_negatives=3, depth=n_passages, skip_top=skip, pool=pool))
    want = brute_force(rows, enc, 3, skip, pool)
    assert mined_texts(corpus, res) == want["negatives"]
    assert res.counts["excluded_in_searched_depth"] == want["searched"]
    assert res.counts["excluded_above_last_negative"] == want["above"]
    assert res.counts["rows"] == len(rows)
    assert res.counts["negatives_written"] == sum(len(x) for x in want["negatives"])


def test_translations_would_rank_first_and_are_excluded_and_counted():
    rows, enc = parallel_rows(), NearDuplicateEncoder()
    corpus = ParallelCorpus.from_rows(rows)
    res = mine_corpus(corpus, enc, MineSettings(num_negatives=3, depth=40, pool="all"))
    # by construction: q0-q5 have 3 languages (2 translations per row), q6-q8, q10, q11 have 2 (1 each)
    translations = 6 * 3 * 2 + 5 * 2 * 1
    assert res.counts["excluded_above_last_negative"]["translation"] == translations
    assert res.counts["per_lang"]["fr"]["translations_excluded_above_last_negative"] == 6 * 2
    # the near-duplicate encoder really ranks them next to the positive (what makes them false negatives)
    q = enc.vector("de question k3?")
    scores = {t: float(q @ enc.vector(t)) for t in {r["positive"] for r in rows}}
    best = sorted(scores, key=scores.get, reverse=True)[:3]
    assert set(best) == {"de fact k3 here", "en fact k3 here", "fr fact k3 here"}
    same_id: dict[str, set] = {}
    for r in rows:
        same_id.setdefault(r["id"], set()).add(r["positive"])
    for r, negs in zip(rows, mined_texts(corpus, res)):
        assert len(negs) == 3 and r["positive"] not in negs
        assert not same_id[r["id"]] & set(negs)


def test_shared_positive_is_not_transitive():
    """q11's English sentence answers a German query of q10 (their German positive is one text) but
    not q10's English query: the two English sentences differ."""
    rows = parallel_rows()
    corpus = ParallelCorpus.from_rows(rows)
    res = mine_corpus(corpus, NearDuplicateEncoder(), MineSettings(num_negatives=2, depth=30, pool="all"))
    negs = dict(zip([(r["id"], r["lang"]) for r in rows], mined_texts(corpus, res)))
    assert "en fact k10 second sentence" in negs["q10", "en"]
    assert "en fact k10 second sentence" not in negs["q10", "de"]
    assert "de fact k7 second" not in negs["q7", "en"]  # q8 has q7's English positive


def test_same_lang_pool_has_no_translations_and_searches_one_language():
    rows = parallel_rows()
    corpus = ParallelCorpus.from_rows(rows)
    res = mine_corpus(corpus, NearDuplicateEncoder(), MineSettings(num_negatives=2, depth=30))
    assert res.counts["excluded_in_searched_depth"]["translation"] == 0
    for r, negs in zip(rows, mined_texts(corpus, res)):
        assert all(neg.lower().startswith(r["lang"]) for neg in negs)


def test_cli_writes_corpus_back_with_negatives(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("mlir.mine.build_encoder", lambda *a, **k: (NearDuplicateEncoder(), "near-dup"))
    rows = parallel_rows()
    src = tmp_path / "train.jsonl"
    src.write_text(
        "".join(json.dumps({**r, "negatives": ["old"], "note": i}) + "\n" for i, r in enumerate(rows))
    )
    out = tmp_path / "out" / "train.neg.jsonl.gz"
    assert main(["--corpus", str(src), "--out", str(out), "--num-negatives", "2", "--pool", "all"]) == 0
    back = read_jsonl(out, cache_dir=tmp_path / "cache2")
    assert back.texts("id", np.arange(len(rows))) == [r["id"] for r in rows]
    want = brute_force(rows, NearDuplicateEncoder(), 2, 0, "all")["negatives"]
    assert back.texts("negatives", np.arange(len(rows))) == want
    notes = [json.loads(line)["note"] for line in gzip.open(out, "rt")]
    assert notes == list(range(len(rows)))  # the input's other fields are kept
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["rows"] == len(rows) and summary["negatives_written"] == sum(map(len, want))
    assert summary["settings"]["pool"] == "all" and summary["encoder"] == "near-dup"


def test_cli_with_tiny_random_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    rows = parallel_rows()
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.neg.jsonl"
    args = ["--corpus", str(src), "--out", str(out), "--model", "tiny_random", "--device", "cpu"]
    assert main([*args, "--pool", "all", "--backend", "torch"]) == 0
    back = read_jsonl(out, cache_dir=tmp_path / "cache2")
    negs = back.texts("negatives", np.arange(len(rows)))
    positives = {}
    for r in rows:
        positives.setdefault(r["id"], set()).add(r["positive"])
    assert all(len(n) == 7 for n in negs)  # 27 distinct passages, at most 5 excluded
    assert all(not positives[r["id"]] & set(n) for r, n in zip(rows, negs))


@pytest.mark.parametrize(
    ("content", "extra", "where"),
    [
        (
            '{"id": "a", "lang": "en", "query": "q", "positive": "p"}\n{"id": "b", "lang": "en"\n',
            [],
            "bad.jsonl:2",
        ),
        ('{"id": "a", "lang": "en", "query": "q"}\n', [], "bad.jsonl:1"),
        ('{"id": "a", "lang": "en", "query": "q", "positive": "p"}\n', ["--depth", "3"], "--depth"),
        ('{"id": "a", "lang": "en", "query": "q", "positive": "p"}\n', ["--model", "tiny_rando"], "--model"),
        ('{"id": "a", "lang": "en", "query": "q", "positive": "p"}\n', ["--langs", "en"], "--langs"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, content, extra, where):
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    out = tmp_path / "o.jsonl"
    assert main(["--corpus", str(src), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and where in err
    assert not out.exists()


def test_module_exit_code_and_output_directory(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text("not json\n")
    env = {"MLIR_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "mlir.mine", "--corpus", str(src), "--out", str(tmp_path / "o.jsonl")]
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert f"{src}:1" in p.stderr
    p = subprocess.run([*cmd[:-1], str(tmp_path)], capture_output=True, text=True, env=env, cwd=repo)
    assert p.returncode == 2 and "is a directory" in p.stderr
