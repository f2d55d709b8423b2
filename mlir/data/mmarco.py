"""mMARCO's per-language TSV files -> mlir's parallel JSONL, streaming (40M lines never in memory).

mMARCO (Bonifacio et al. 2021, arXiv:2108.13897) is MS MARCO passage ranking machine-translated into
13 languages (plus the English original) with the **same query and passage ids in every language**,
so a query id is a parallel id: the converter keeps it as ``id``. Layout of the Hugging Face dataset
``unicamp-dl/mmarco`` (checked on https://huggingface.co/datasets/unicamp-dl/mmarco/tree/main/data;
the Google-translated "v2" files, called ``data/v2/`` in earlier revisions, are ``data/google/``)::

    data/google/queries/train/{language}_queries.train.tsv   qid <TAB> query
    data/google/collections/{language}_collection.tsv        pid <TAB> passage   (8.8M lines, 3-8 GB)
    data/triples.train.ids.small.tsv                          qid <TAB> positive pid <TAB> negative pid
    data/qrels.dev.tsv, data/qrels.dev.small.tsv              (dev only)

``{language}`` is a full English name (``english``, ``chinese``, ... :data:`MMARCO_LANGS` maps them
to ISO 639-1 codes). The training qrels are MS MARCO's own ``qrels.train.tsv`` (``qid 0 pid 1``), not
part of the hub dataset: put it in ``<dir>`` or its parent (or pass ``qrels=``) to take the positives
from it; otherwise they come from the triples' second column. Every file may be gzip-compressed
(``.tsv.gz``). ``<dir>`` is the folder holding ``queries/`` and ``collections/`` (``data/google``);
qrels and triples are looked for in ``<dir>`` and then its parent.

What is kept: per query id, its **first** positive (qrels or triples order; further positives are
dropped and counted: mlir pairs one positive per id and language) and, with
``negatives_from="triples"``, the first ``max_negatives`` distinct negatives of its triples (never
one of its positives). Rows are ``{"id": qid, "lang", "query", "positive", "negatives"}``, language
after language, each language's rows in its queries file's order.

Memory: pass 1 reads qrels/triples into integer maps (query -> positive, negative ids); then, per
language, the collection is streamed and only the passages those maps name are kept (``O(needed
passages of one language)``, released before the next language), the queries are streamed and the
rows written at once. A passage id missing from a language's collection drops that row (positive) or
that negative in that language and is counted and warned about; a language where *no* positive is
found is an error (the wrong file). A query with an empty text in one language is dropped there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlir.core.errors import ConfigError, DataError
from mlir.data.io import iter_lines, write_jsonl

log = logging.getLogger(__name__)

MMARCO_LANGS: dict[str, str] = {
    "arabic": "ar",
    "chinese": "zh",
    "dutch": "nl",
    "english": "en",
    "french": "fr",
    "german": "de",
    "hindi": "hi",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
    "vietnamese": "vi",
}
ISO_TO_NAME = {v: k for k, v in MMARCO_LANGS.items()}
QRELS = "qrels.train.tsv"
TRIPLES = "triples.train.ids.small.tsv"


def _int(s: str, what: str, where: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise DataError(f"{what} must be an integer, got {s[:40]!r}", where=where) from None


def iter_id_text(path: Path) -> Iterator[tuple[int, int, str]]:
    """``(lineno, id, text)`` of an ``id <TAB> text`` file (queries, collections); blank lines skipped."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        key, tab, text = line.partition("\t")
        where = f"{path}:{lineno}"
        if not tab:
            raise DataError("malformed line: expected 'id<TAB>text'", where=where)
        yield lineno, _int(key.strip(), "the id (first column)", where), text


def iter_id_rows(path: Path, columns: int) -> Iterator[tuple[int, list[int]]]:
    """``(lineno, ints)`` of a whitespace-separated all-integer file (qrels: 4 columns, triples: 3)."""
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != columns:
            raise DataError(f"malformed line: expected {columns} columns, got {len(parts)}", where=where)
        yield lineno, [_int(p, f"column {i + 1}", where) for i, p in enumerate(parts)]


@dataclass
class Pairs:
    """Pass 1: integer ids only. ``positive[qid]`` is the kept positive, in first-seen query order."""

    positive: dict[int, int] = field(default_factory=dict)
    others: dict[int, set[int]] = field(default_factory=dict)  # the dropped positives (never negatives)
    negatives: dict[int, list[int]] = field(default_factory=dict)
    extra_positives_dropped: int = 0

    def add_positive(self, qid: int, pid: int, max_queries: int | None) -> None:
        first = self.positive.get(qid)
        if first is None:
            if max_queries is None or len(self.positive) < max_queries:
                self.positive[qid] = pid
        elif pid != first and pid not in self.others.setdefault(qid, set()):
            self.others[qid].add(pid)
            self.extra_positives_dropped += 1

    def add_negative(self, qid: int, pid: int, max_negatives: int) -> None:
        pos = self.positive.get(qid)
        if pos is None or pid == pos or pid in self.others.get(qid, ()):
            return
        negs = self.negatives.setdefault(qid, [])
        if len(negs) < max_negatives and pid not in negs:
            negs.append(pid)

    def needed(self) -> set[int]:
        """The passage ids any row needs (what each collection pass keeps)."""
        out = set(self.positive.values())
        for negs in self.negatives.values():
            out.update(negs)
        return out


def read_pairs(
    qrels: Path | None,
    triples: Path | None,
    negatives_from: str = "none",
    max_negatives: int = 8,
    max_queries: int | None = None,
) -> Pairs:
    """Pass 1: positives from ``qrels`` (else the triples), negatives from the triples if asked."""
    pairs = Pairs()
    want_negs = negatives_from == "triples" and max_negatives > 0
    if qrels is not None:
        for _, (qid, _it, pid, rel) in iter_id_rows(qrels, 4):
            if rel > 0:
                pairs.add_positive(qid, pid, max_queries)
    if triples is not None and (qrels is None or want_negs):
        for _, (qid, pos, neg) in iter_id_rows(triples, 3):
            if qrels is None:
                pairs.add_positive(qid, pos, max_queries)
            if want_negs:
                pairs.add_negative(qid, neg, max_negatives)
    if not pairs.positive:
        raise DataError("no positive (query, passage) pair", where=str(qrels or triples))
    return pairs


def load_passages(path: Path, needed: set[int]) -> dict[int, str]:
    """The texts of the ``needed`` passage ids in one collection file (the first line of a repeated id)."""
    kept: dict[int, str] = {}
    for _, pid, text in iter_id_text(path):
        if pid in needed and pid not in kept:
            kept[pid] = text
    return kept


@dataclass
class Files:
    """Where one conversion reads from: per ISO language its queries and collection files."""

    queries: dict[str, Path]
    collections: dict[str, Path]
    qrels: Path | None
    triples: Path | None


def _find(name: str, *dirs: Path) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _lang_codes(directory: Path, langs: Sequence[str] | None) -> list[str]:
    if not langs:
        qdir = directory / "queries" / "train"
        found = (
            sorted(p.name.split("_queries")[0] for p in qdir.glob("*_queries.train.tsv*"))
            if qdir.is_dir()
            else []
        )
        codes = [MMARCO_LANGS[n] for n in found if n in MMARCO_LANGS]
        if not codes:
            raise DataError("no {language}_queries.train.tsv[.gz] of a known language here", where=str(qdir))
        return codes
    codes = []
    for lang in langs:
        key = str(lang).strip().lower()
        code = MMARCO_LANGS.get(key, key)
        if code not in ISO_TO_NAME:
            known = ", ".join(sorted(ISO_TO_NAME))
            raise ConfigError(
                f"unknown mMARCO language {lang!r} (ISO codes: {known}, or full names)", where="--langs"
            )
        if code not in codes:
            codes.append(code)
    return codes


def find_files(
    directory: str | os.PathLike,
    langs: Sequence[str] | None = None,
    qrels: str | os.PathLike | None = None,
    triples: str | os.PathLike | None = None,
) -> Files:
    """Locate the files of an mMARCO directory (see the module doc); a missing one is a DataError."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DataError(
            "not a directory (expected the folder holding queries/ and collections/)", where=str(d)
        )
    queries, collections = {}, {}
    for code in _lang_codes(d, langs):
        name = ISO_TO_NAME[code]
        for table, sub, fname in (
            (queries, d / "queries" / "train", f"{name}_queries.train.tsv"),
            (collections, d / "collections", f"{name}_collection.tsv"),
        ):
            table[code] = _find(fname, sub)
            if table[code] is None:
                raise DataError(f"file not found (language {code}: {fname}[.gz])", where=str(sub / fname))
    q = Path(qrels).expanduser() if qrels else _find(QRELS, d, d.parent)
    t = Path(triples).expanduser() if triples else _find(TRIPLES, d, d.parent)
    for p in (q, t):
        if p is not None and not p.is_file():
            raise DataError("file not found", where=str(p))
    if q is None and t is None:
        raise DataError(f"neither {QRELS} nor {TRIPLES} (.gz) in this folder or its parent", where=str(d))
    return Files(queries, collections, q, t)


@dataclass
class Stats:
    """What a conversion kept and dropped, per language (the CLI prints it)."""

    queries: int = 0
    extra_positives_dropped: int = 0
    rows_per_lang: dict[str, int] = field(default_factory=dict)
    missing_positive: dict[str, int] = field(default_factory=dict)  # positive pid not in the collection
    missing_negatives: dict[str, int] = field(default_factory=dict)
    empty_texts: dict[str, int] = field(default_factory=dict)  # rows dropped for an empty query/positive
    not_in_queries: dict[str, int] = field(default_factory=dict)  # pair qids absent from the queries file
    max_passages_held: int = 0  # the most passage texts held at once (memory check)


def _language_rows(
    lang: str, files: Files, pairs: Pairs, passages: dict[int, str], stats: Stats
) -> Iterator[dict]:
    """The rows of one language, in its queries file's order (a repeated query id is an error)."""
    seen: dict[int, int] = {}
    missing_pos = missing_neg = empty = 0
    first_missing = None
    path = files.queries[lang]
    for lineno, qid, query in iter_id_text(path):
        pid = pairs.positive.get(qid)
        if pid is None:
            continue
        if qid in seen:
            raise DataError(f"query id {qid} repeats line {seen[qid]}", where=f"{path}:{lineno}")
        seen[qid] = lineno
        positive = passages.get(pid)
        if positive is None:
            missing_pos += 1
            first_missing = pid if first_missing is None else first_missing
            continue
        if not query.strip() or not positive.strip():
            empty += 1
            continue
        negs = [passages.get(n) for n in pairs.negatives.get(qid, ())]
        missing_neg += sum(n is None for n in negs)
        yield {
            "id": str(qid),
            "lang": lang,
            "query": query,
            "positive": positive,
            "negatives": [n for n in negs if n is not None and n.strip()],
        }
    stats.rows_per_lang[lang] = len(seen) - missing_pos - empty
    stats.missing_positive[lang] = missing_pos
    stats.missing_negatives[lang] = missing_neg
    stats.empty_texts[lang] = empty
    stats.not_in_queries[lang] = len(pairs.positive) - len(seen)
    coll = files.collections[lang]
    if missing_pos and missing_pos == len(seen):
        raise DataError(
            f"none of the {missing_pos} positive passages of language {lang} is in this collection "
            f"(e.g. passage id {first_missing}): the wrong or a truncated file?",
            where=str(coll),
        )
    if missing_pos:
        log.warning(
            "%s: %d positive passage ids missing (e.g. %d); those %s rows dropped",
            coll,
            missing_pos,
            first_missing,
            lang,
        )


def _rows(files: Files, pairs: Pairs, stats: Stats) -> Iterator[dict]:
    needed = pairs.needed()
    log.info("%d queries, %d passages needed per language", stats.queries, len(needed))
    for lang in files.queries:
        passages = load_passages(files.collections[lang], needed)
        stats.max_passages_held = max(stats.max_passages_held, len(passages))
        log.info("%s: %d of %d needed passages found", lang, len(passages), len(needed))
        yield from _language_rows(lang, files, pairs, passages, stats)
        del passages  # one language's passages at a time


def convert_mmarco(
    directory: str | os.PathLike,
    out: str | os.PathLike,
    langs: Sequence[str] | None = None,
    negatives_from: str = "none",
    max_negatives: int = 8,
    max_queries: int | None = None,
    qrels: str | os.PathLike | None = None,
    triples: str | os.PathLike | None = None,
) -> Stats:
    """Write an mMARCO directory as mlir's parallel JSONL at ``out`` (atomic; ``.gz`` compresses).

    ``langs``: ISO codes or mMARCO names (default: every language with a train queries file).
    ``negatives_from``: ``"none"`` or ``"triples"`` (up to ``max_negatives`` per query).
    ``max_queries``: keep the first N query ids of the qrels (or triples) only.
    """
    if negatives_from not in ("none", "triples"):
        raise ConfigError(f"must be 'none' or 'triples', got {negatives_from!r}", where="--negatives-from")
    if max_negatives < 0:
        raise ConfigError(f"must be >= 0, got {max_negatives}", where="--max-negatives")
    if max_queries is not None and max_queries < 1:
        raise ConfigError(f"must be >= 1, got {max_queries}", where="--max-queries")
    files = find_files(directory, langs, qrels, triples)
    if negatives_from == "triples" and files.triples is None:
        raise DataError(
            f"--negatives-from triples but no {TRIPLES} (.gz) here or in the parent", where=str(directory)
        )
    pairs = read_pairs(files.qrels, files.triples, negatives_from, max_negatives, max_queries)
    stats = Stats(queries=len(pairs.positive), extra_positives_dropped=pairs.extra_positives_dropped)
    write_jsonl(out, _rows(files, pairs, stats))
    return stats
