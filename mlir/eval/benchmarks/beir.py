"""Type ``beir``: BEIR-format retrieval datasets (MIRACL, Mr. TyDi, mMARCO dev, your own), one per language.

Layout (``path``; every file may also be gzipped, ``corpus.jsonl.gz`` etc., but not both)::

    {path}/{lang}/corpus.jsonl        {"_id": "doc1", "title": "...", "text": "..."}   one per line
    {path}/{lang}/queries.jsonl       {"_id": "q1", "text": "..."}
    {path}/{lang}/qrels/{split}.tsv   query-id<TAB>corpus-id<TAB>score   (a header line; graded scores)

A ``path`` that holds ``corpus.jsonl`` itself is one dataset whose language is the directory's name
(``scifact/`` -> ``scifact``). Qrels lines may also be TREC's ``qid 0 docid rel`` (MIRACL ships those).
``qrels_split`` (``dev``) chooses the qrels file; ``candidates``: ``title_text`` (``title``, then
``candidate_sep``, then ``text``; the text alone when the title is empty or missing) or ``text``.

The protocol, per language L: the queries are those of ``queries.jsonl`` with a judgement in the qrels
split (the others, e.g. the train queries, are not read into the task); the candidates are the whole
corpus of L; a document is relevant with a judgement ``score > 0``, and that score is its grade (nDCG's
gain, trec_eval ``ndcg_cut``; AP, recall and MRR count it as relevant). A judgement ``<= 0`` is
non-relevant, as in trec_eval; a query whose judgements are all ``<= 0`` is left out of the scores and
counted as dropped (trec_eval would score it 0). TREC docnos are ``{lang}:{_id}`` (the dataset's ids).

Settings. Queries of different languages are different questions (MIRACL, Mr. TyDi), so a query id is
``{lang}:{_id}`` and the default is ``mono`` only. ``multi`` may be added: the queries of L against the
pool of every language's corpus, relevant still only its L documents (does a mixed pool distract the
model?); the rank distance and fairness measures are then undefined. ``parallel_queries: true``
declares that the same ``_id`` is the same question in every language (mMARCO: translated queries and
passages): the query id is the ``_id`` and ``cross`` (queries of X against the corpus and qrels of Y)
and the multi setting's language measures become meaningful.

Bad input (an unknown query or document in the qrels, a duplicate ``_id``, a missing field, an empty
corpus) is one :class:`~mlir.core.errors.DataError` naming ``file:line``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlir.core.errors import ConfigError, DataError
from mlir.data.io import iter_jsonl, iter_lines
from mlir.eval.benchmarks.config import BenchmarkConfig, check_beir_settings
from mlir.eval.benchmarks.registry import register_type
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask

log = logging.getLogger("mlir.eval.benchmarks")

CORPUS, QUERIES, QRELS = "corpus.jsonl", "queries.jsonl", "qrels"


# (query positions, query texts, documents, document ids, {query position: {document index: grade}})
_LangData = tuple[list[int], list[str], list[str], list[str], dict[int, dict[int, float]]]


@register_type("beir")
def load_beir(cfg: BenchmarkConfig) -> RetrievalTask:
    """The task of a BEIR directory (see the module doc): the configured languages, or all of them."""
    root, dirs, langs = _beir_langs(cfg)
    with_title = cfg.candidates != "text"  # "sentence": a Python-built config's default
    query_ids: list[str] = []
    qpos: dict[str, int] = {}
    per_lang: dict[str, _LangData] = {}
    counts: dict[str, dict[str, int]] = {}
    for lang in langs:
        t0 = time.perf_counter()
        per_lang[lang], counts[lang] = _read_beir_lang(cfg, lang, dirs[lang], with_title, query_ids, qpos)
        log.info(
            "benchmark %s: %s/%s read in %.1fs: %s",
            cfg.name,
            root,
            lang,
            time.perf_counter() - t0,
            counts[lang],
        )
    return RetrievalTask(
        name=cfg.name,
        langs=langs,
        query_ids=query_ids,
        queries={x: LangQueries(np.asarray(p[0], dtype=np.int64), p[1]) for x, p in per_lang.items()},
        docs={x: p[2] for x, p in per_lang.items()},
        rel=_relevance(per_lang, len(query_ids)),
        merge_duplicate_queries=False,
        meta={
            "protocol": "beir",
            "source": str(root),
            "qrels_split": cfg.qrels_split,
            "parallel_queries": cfg.parallel_queries,
            "candidates": "title_text" if with_title else "text",
            "read": counts,
        },
        doc_ids={x: p[3] for x, p in per_lang.items()},
    )


def _beir_langs(cfg: BenchmarkConfig) -> tuple[Path, dict[str, Path], list[str]]:
    """The root, its language directories and the languages to read, checked before any file is read.

    A bad configuration (no path, bad settings, a language the directory lacks) fails fast with a
    :class:`ConfigError` naming its key, not after minutes of reading corpora.
    """
    where = f"benchmarks.{cfg.name}"
    if not cfg.path:
        raise ConfigError(
            "no path configured (a BEIR directory: one sub-directory per language)", f"{where}.path"
        )
    check_beir_settings(cfg)  # a BenchmarkConfig built in Python skips from_mapping
    root = Path(cfg.path).expanduser()
    dirs = beir_languages(root)
    langs = [str(x) for x in cfg.langs] if cfg.langs else list(dirs)
    unknown = [x for x in langs if x not in dirs]
    if unknown:
        raise ConfigError(f"unknown language(s) {unknown}; {root} has {list(dirs)}", where=f"{where}.langs")
    return root, dirs, langs


def _read_beir_lang(
    cfg: BenchmarkConfig,
    lang: str,
    d: Path,
    with_title: bool,
    query_ids: list[str],
    qpos: dict[str, int],
) -> tuple[_LangData, dict[str, int]]:
    """One language's judged queries, corpus and relevant documents, and the counts that were read.

    ``query_ids`` and ``qpos`` are shared by all languages and extended here: with ``parallel_queries``
    the same ``_id`` in two languages is one query position (the same question), else ``{lang}:{_id}``
    keeps them apart. Queries without a judgement in the split are left out (counted as unjudged).
    """
    doc_ids, docs = read_corpus(find_file(d, CORPUS), cfg.candidate_sep, with_title)
    queries = read_queries(find_file(d, QUERIES))
    judged, n_nonrel = read_qrels(qrels_file(d, cfg.qrels_split), queries, doc_ids)
    ids, texts, rel = [], [], {}
    for qid, text in queries.items():
        if qid not in judged:
            continue
        key = qid if cfg.parallel_queries else f"{lang}:{qid}"
        if key not in qpos:
            qpos[key] = len(query_ids)
            query_ids.append(key)
        ids.append(qpos[key])
        texts.append(text)
        rel[qpos[key]] = {j: g for j, g in judged[qid].items() if g > 0}
    counts = {
        "queries": len(ids),
        "documents": len(docs),
        "relevant": sum(len(r) for r in rel.values()),
        "non_relevant_judgements": n_nonrel,
        "unjudged_queries": len(queries) - len(ids),
    }
    return (ids, texts, docs, doc_ids, rel), counts


def _relevance(per_lang: dict[str, _LangData], n_queries: int) -> dict[str, Relevance]:
    """Each language's relevant documents and grades over every query position of the task.

    A query position another language added has no documents in this one: an empty row, so that every
    language's :class:`Relevance` indexes the task's ``query_ids``.
    """
    rels = {}
    for lang, (_, _, _, _, rel) in per_lang.items():
        lists = [list(rel.get(q, {})) for q in range(n_queries)]
        grades = [list(rel.get(q, {}).values()) for q in range(n_queries)]
        rels[lang] = Relevance.from_lists(lists, grades)
    return rels


# ------------------------------------------------------------------------------------ files


def beir_languages(root: Path) -> dict[str, Path]:
    """Language -> its directory: ``root`` itself when it holds a corpus, else its sub-directories
    with any of the three parts (sorted by name)."""
    if not root.is_dir():
        raise DataError(
            "not found or not a directory (a BEIR dataset: one sub-directory per language)", str(root)
        )
    if _has(root, CORPUS):
        return {root.name: root}
    out = {
        d.name: d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and (_has(d, CORPUS) or _has(d, QUERIES) or (d / QRELS).is_dir())
    }
    if not out:
        raise DataError(
            f"no BEIR data: expected {{lang}}/{CORPUS}, {{lang}}/{QUERIES} and {{lang}}/{QRELS}/<split>.tsv",
            where=str(root),
        )
    return out


def _has(d: Path, name: str) -> bool:
    return (d / name).is_file() or (d / f"{name}.gz").is_file()


def find_file(d: Path, name: str) -> Path:
    """``d/name`` or ``d/name.gz``; neither, or both (which one is meant?), is an error."""
    plain, gz = d / name, d / f"{name}.gz"
    if plain.is_file() and gz.is_file():
        raise DataError(f"both {plain.name} and {gz.name} exist; keep one", where=str(plain))
    if gz.is_file():
        return gz
    if not plain.is_file():
        raise DataError(f"missing (or {gz.name})", where=str(plain))
    return plain


def qrels_file(d: Path, split: str) -> Path:
    """``d/qrels/{split}.tsv[.gz]``; a missing split names the ones there are."""
    q = d / QRELS
    if not _has(q, f"{split}.tsv"):
        have = sorted({p.name.split(".tsv")[0] for p in q.glob("*.tsv*")}) if q.is_dir() else []
        raise DataError(
            f"no qrels for split {split!r} (qrels_split); this language has {have or 'none'}",
            where=str(q / f"{split}.tsv"),
        )
    return find_file(q, f"{split}.tsv")


def _field(obj: dict, key: str, path: Path, lineno: int, *, kind: str = "text", required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"missing field {key!r}", where=f"{path}:{lineno}")
        return ""
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            raise DataError(
                f"field {key!r} must be a non-empty string, got {value!r}", where=f"{path}:{lineno}"
            )
        return str(value)
    if not isinstance(value, str):
        raise DataError(
            f"field {key!r} must be a string, got {type(value).__name__}", where=f"{path}:{lineno}"
        )
    return value


def read_corpus(path: Path, sep: str = " ", with_title: bool = True) -> tuple[list[str], list[str]]:
    """(ids, passage texts) of a ``corpus.jsonl[.gz]``: ``_id`` and ``text`` required, ``title`` optional."""
    ids: list[str] = []
    texts: list[str] = []
    line_of: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        _id = _field(obj, "_id", path, lineno, kind="id")
        text = _field(obj, "text", path, lineno)
        title = _field(obj, "title", path, lineno, required=False) if with_title else ""
        first = line_of.setdefault(_id, lineno)
        if first != lineno:
            raise DataError(f"duplicate _id {_id!r} (first on line {first})", where=f"{path}:{lineno}")
        ids.append(_id)
        texts.append(f"{title}{sep}{text}" if title else text)
    if not ids:
        raise DataError("empty corpus: no documents", where=str(path))
    return ids, texts


def read_queries(path: Path) -> dict[str, str]:
    """``_id`` -> text of a ``queries.jsonl[.gz]`` (file order)."""
    out: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        _id = _field(obj, "_id", path, lineno, kind="id")
        text = _field(obj, "text", path, lineno)
        first = line_of.setdefault(_id, lineno)
        if first != lineno:
            raise DataError(f"duplicate _id {_id!r} (first on line {first})", where=f"{path}:{lineno}")
        out[_id] = text
    if not out:
        raise DataError("no queries", where=str(path))
    return out


def _grade(value: str, path: Path, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        f = float("nan")
    if not math.isfinite(f) or f != int(f):
        raise DataError(f"score must be an integer relevance grade, got {value!r}", where=f"{path}:{lineno}")
    return int(f)


def read_qrels(
    path: Path, queries: dict[str, Any], doc_ids: list[str]
) -> tuple[dict[str, dict[int, float]], int]:
    """query ``_id`` -> {document index: grade} of every judgement, and the number with grade <= 0.

    Lines are ``query-id corpus-id score`` (tab-separated; BEIR) or ``qid iter docid rel`` (TREC); a
    first line whose score is not a number is the header. A query or document missing from the queries
    or the corpus, a judgement given twice with different grades, or a malformed line is a
    :class:`DataError` at its line.
    """
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    judged: dict[str, dict[int, float]] = {}
    line_of: dict[tuple[str, int], int] = {}
    n_nonrel = 0
    seen_line = False
    for lineno, text in iter_lines(path):
        if not text.strip():
            continue
        cols = text.split("\t") if "\t" in text else text.split()
        cols = [c.strip() for c in cols]
        if len(cols) == 4:
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DataError(
                f"expected query-id<TAB>corpus-id<TAB>score (or TREC 'qid 0 docid rel'), got {len(cols)} columns",
                where=f"{path}:{lineno}",
            )
        first, seen_line = not seen_line, True
        qid, did, score = cols
        if first:
            try:
                float(score)
            except ValueError:
                continue  # the header
        grade = _grade(score, path, lineno)
        if qid not in queries:
            raise DataError(f"unknown query-id {qid!r} (not in the queries file)", where=f"{path}:{lineno}")
        j = doc_index.get(did)
        if j is None:
            raise DataError(f"unknown corpus-id {did!r} (not in the corpus)", where=f"{path}:{lineno}")
        rel = judged.setdefault(qid, {})
        if j in rel:
            if rel[j] != grade:
                raise DataError(
                    f"({qid}, {did}) judged twice with different scores (first on line {line_of[qid, j]})",
                    where=f"{path}:{lineno}",
                )
            continue
        line_of[qid, j] = lineno
        rel[j] = float(grade)
        n_nonrel += grade <= 0
    if not judged:
        raise DataError("no judgements", where=str(path))
    return judged, n_nonrel
