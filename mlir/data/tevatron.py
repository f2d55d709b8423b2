"""Tevatron and FlagEmbedding training JSONL -> mlir's parallel rows (and a :class:`ParallelCorpus`).

Two line formats are read, detected from each file's first record (or forced with ``format``):

* **Tevatron** (v1 train files, e.g. ``Tevatron/msmarco-passage``)::

    {"query_id": "3", "query": "...", "positive_passages": [{"docid": "7", "title": "", "text": "..."}],
     "negative_passages": [{"docid": "9", "title": "...", "text": "..."}]}

  A passage is ``title + title_sep + text`` when its title is not empty, else its text.
* **FlagEmbedding** (``FlagEmbedding`` / BGE fine-tuning data)::

    {"query": "...", "pos": ["..."], "neg": ["..."], "prompt": "..."}

  ``prompt``, ``pos_scores``, ``neg_scores`` and other keys are ignored: the model's own query and
  passage prefixes apply.

Languages come either from a field of every record (``lang_field``, default ``lang``: one file holds
every language) or from a mapping ``{lang: file}`` (one file per language). The parallel id, which
pairs the translations of one question, is the record's ``query_id`` (or ``id``). Per-language files
without ids are paired by position instead: record *k* of every file is one question (id ``k``,
blank lines not counted), so such files must be line-aligned translations, and files with different
record counts are refused. A single file with a ``lang`` field must have ids.

mlir keeps **one positive per id and language** (the parallel semantics: the translations of one
positive): the first of ``positive_passages`` / ``pos``; the others are dropped and counted
(``meta["tevatron"]["extra_positives_dropped"]``, also logged). Negatives become ``negatives`` (the
first ``max_negatives`` when set); empty negative texts are dropped and counted.

Why a conversion: the rows go through the same validation and memory-mapped Arrow cache as
``data=jsonl`` (:func:`mlir.data.jsonl.read_jsonl`). The converted JSONL is written once to the cache
directory (keyed by the sources' paths, sizes, modification times and the options), streaming, so a
40M-row input never sits in memory; duplicate ``(id, language)`` pairs are found from 16 bytes per
record. Every bad record is a one-line :class:`DataError` naming the *source* file and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from mlir.core.atomic import write_json
from mlir.core.errors import ConfigError, DataError
from mlir.core.paths import default_cache_dir
from mlir.data.corpus import ParallelCorpus
from mlir.data.io import iter_jsonl, write_jsonl
from mlir.data.jsonl import normalize_lang, read_jsonl

log = logging.getLogger(__name__)
FORMATS = ("auto", "tevatron", "flag")
ID_FIELDS = ("query_id", "id")
_VERSION = "tevatron-1"  # bump when the converted rows change


def _blank(s: str) -> bool:
    return not s or s.isspace()


def detect_format(obj: dict, where: str) -> str:
    """``"tevatron"`` or ``"flag"`` from a record's keys; a DataError for anything else."""
    if "positive_passages" in obj:
        return "tevatron"
    if "pos" in obj:
        return "flag"
    if "positive_document_ids" in obj:
        raise DataError(
            "passages given by id only (Tevatron v2 format) are not supported: give the passage texts "
            "inline ('positive_passages': [{'text': ...}])",
            where=where,
        )
    keys = ", ".join(sorted(obj)[:8])
    raise DataError(
        "neither Tevatron ('query', 'positive_passages') nor FlagEmbedding ('query', 'pos') format; "
        f"keys: {keys}",
        where=where,
    )


def _passage_text(p: object, field: str, title_sep: str, where: str) -> str:
    if isinstance(p, str):
        return p
    if not isinstance(p, dict) or not isinstance(p.get("text"), str):
        raise DataError(f"{field} must hold {{'title', 'text'}} objects with a string 'text'", where=where)
    title = p.get("title")
    if title is not None and not isinstance(title, str):
        raise DataError(f"{field}: 'title' must be a string, got {type(title).__name__}", where=where)
    return f"{title}{title_sep}{p['text']}" if title and not title.isspace() else p["text"]


def _texts(obj: dict, field: str, title_sep: str, where: str, required: bool) -> list[str]:
    v = obj.get(field)
    if v is None:
        if required:
            raise DataError(f"missing required field '{field}'", where=where)
        return []
    if not isinstance(v, list):
        raise DataError(f"field '{field}' must be a list, got {type(v).__name__}", where=where)
    out = [_passage_text(p, field, title_sep, where) for p in v]
    if required and (not out or _blank(out[0])):
        raise DataError(f"field '{field}' has no positive (empty list or empty first text)", where=where)
    return out


def parse_record(obj: dict, fmt: str, title_sep: str, where: str) -> tuple[str, list[str], list[str]]:
    """``(query, positives, negatives)`` of one Tevatron (``fmt="tevatron"``) or FlagEmbedding record."""
    pos_field, neg_field = ("positive_passages", "negative_passages") if fmt == "tevatron" else ("pos", "neg")
    if fmt == "flag" and "pos" not in obj and "positive_passages" in obj:
        raise DataError("a Tevatron record in a FlagEmbedding file (formats must not be mixed)", where=where)
    if fmt == "tevatron" and "positive_passages" not in obj and "pos" in obj:
        raise DataError("a FlagEmbedding record in a Tevatron file (formats must not be mixed)", where=where)
    query = obj.get("query")
    if not isinstance(query, str) or _blank(query):
        what = "missing" if query is None else "not a non-empty string"
        raise DataError(f"field 'query' is {what}", where=where)
    positives = _texts(obj, pos_field, title_sep, where, required=True)
    return query, positives, _texts(obj, neg_field, title_sep, where, required=False)


def _record_id(obj: dict, where: str) -> str | None:
    for f in ID_FIELDS:
        v = obj.get(f)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)) or _blank(str(v)):
            raise DataError(f"field '{f}' must be a non-empty string or an integer", where=where)
        return str(v)
    return None


def _record_lang(obj: dict, lang_field: str, file_lang: str | None, where: str) -> str:
    v = obj.get(lang_field)
    if v is None:
        if file_lang is None:
            raise DataError(
                f"missing language field '{lang_field}' (set lang_field, or give one file per language "
                "as {lang: path})",
                where=where,
            )
        return file_lang
    if not isinstance(v, str) or _blank(v) or v != v.strip():
        raise DataError(f"field '{lang_field}' must be a language code such as 'en', got {v!r}", where=where)
    lang = normalize_lang(v)
    if file_lang is not None and lang != file_lang:
        raise DataError(
            f"field '{lang_field}' is {v!r} but the file is given as language {file_lang!r}", where=where
        )
    return lang


def _sources(path: object) -> list[tuple[str | None, Path]]:
    """``[(lang or None, file)]``: one file with a language field, or a ``{lang: file}`` mapping."""
    if isinstance(path, Mapping):
        out: dict[str, Path] = {}
        for lang, p in path.items():
            code = normalize_lang(str(lang).strip())
            if code in out:
                raise ConfigError(f"language {lang!r} is given twice (as {code!r})", where="path")
            out[code] = Path(str(p)).expanduser()
        if not out:
            raise ConfigError("no files given", where="path")
        return sorted(out.items())
    return [(None, Path(str(path)).expanduser())]


class _Converter:
    """One streaming pass over the sources, yielding mlir rows; checks and counts as it goes."""

    def __init__(self, sources, lang_field: str, fmt: str, max_negatives: int | None, title_sep: str):
        if fmt not in FORMATS:
            raise ConfigError(f"must be one of {', '.join(FORMATS)}, got {fmt!r}", where="format")
        if max_negatives is not None and int(max_negatives) < 0:
            raise ConfigError(f"must be >= 0 or null, got {max_negatives}", where="max_negatives")
        self.sources, self.lang_field, self.fmt = sources, lang_field, fmt
        self.max_negatives = None if max_negatives is None else int(max_negatives)
        self.title_sep = title_sep
        self.per_lang = sources[0][0] is not None
        self.by_line: bool | None = None  # per-language files: ids from records (False) or positions (True)
        self.stats = {"rows_per_lang": {}, "extra_positives_dropped": 0, "empty_negatives_dropped": 0}
        self.stats.update(negatives_cut=0, formats={})
        self.counts: dict[Path, int] = {}

    def rows(self) -> Iterator[dict]:
        for file_lang, path in self.sources:
            yield from self._file_rows(path, file_lang)
        self._check_alignment()

    def _file_rows(self, path: Path, file_lang: str | None) -> Iterator[dict]:
        fmt = None if self.fmt == "auto" else self.fmt
        hashes, lines = array("q"), array("q")
        n = 0
        for lineno, obj in iter_jsonl(path):
            where = f"{path}:{lineno}"
            fmt = fmt or detect_format(obj, where)
            n += 1
            row = self._row(obj, fmt, file_lang, n, where)
            hashes.append(hash((row["id"], row["lang"])))
            lines.append(lineno)
            yield row
        if n == 0:
            raise DataError("no records (the file is empty)", where=str(path))
        self.counts[path] = n
        self.stats["formats"][str(path)] = fmt
        if not self.by_line:  # ids by position cannot repeat
            _first_duplicate(path, hashes, lines, self._key_at)

    def _row(self, obj: dict, fmt: str, file_lang: str | None, n: int, where: str) -> dict:
        query, positives, negatives = parse_record(obj, fmt, self.title_sep, where)
        lang = _record_lang(obj, self.lang_field, file_lang, where)
        pid = self._id(obj, n, where)
        self.stats["extra_positives_dropped"] += len(positives) - 1
        kept = [t for t in negatives if not _blank(t)]
        self.stats["empty_negatives_dropped"] += len(negatives) - len(kept)
        if self.max_negatives is not None and len(kept) > self.max_negatives:
            self.stats["negatives_cut"] += len(kept) - self.max_negatives
            kept = kept[: self.max_negatives]
        per_lang = self.stats["rows_per_lang"]
        per_lang[lang] = per_lang.get(lang, 0) + 1
        return {"id": pid, "lang": lang, "query": query, "positive": positives[0], "negatives": kept}

    def _id(self, obj: dict, n: int, where: str) -> str:
        pid = _record_id(obj, where)
        if not self.per_lang:
            if pid is None:
                raise DataError(
                    "no 'query_id' or 'id': with one file for every language the id pairs the "
                    "translations (or give one line-aligned file per language)",
                    where=where,
                )
            return pid
        if self.by_line is None:
            self.by_line = pid is None
        if self.by_line != (pid is None):
            now, before = ("no", "one") if pid is None else ("one", "none")
            raise DataError(
                f"this record has {now} 'query_id'/'id' but the first record has {before}: give every "
                "record an id, or none (line-aligned per-language files)",
                where=where,
            )
        return str(n) if pid is None else pid

    def _key_at(self, path: Path, wanted: set[int]) -> dict[int, tuple[str, str]]:
        file_lang = dict((p, lang) for lang, p in self.sources)[path]
        keys = {}
        for lineno, obj in iter_jsonl(path):
            if lineno in wanted:
                keys[lineno] = (_record_id(obj, ""), _record_lang(obj, self.lang_field, file_lang, ""))
        return keys

    def _check_alignment(self) -> None:
        if not (self.per_lang and self.by_line):
            return
        (first, m), *rest = self.counts.items()
        for path, n in rest:
            if n != m:
                raise DataError(
                    f"{n} records but {first} has {m}: per-language files without ids must be line-aligned "
                    "translations (record k of every file is one question)",
                    where=str(path),
                )


def _first_duplicate(path: Path, hashes: array, lines: array, key_at) -> None:
    """Raise for the earliest line whose (id, lang) repeats an earlier one (hash hits are re-checked)."""
    if len(hashes) < 2:
        return
    h, ln = np.frombuffer(hashes, np.int64), np.frombuffer(lines, np.int64)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1]) + 1
    if not len(same):
        return
    later, earlier = ln[order[same]], ln[order[np.searchsorted(hs, hs[same], side="left")]]
    by_later = np.argsort(later, kind="stable")[:10000]
    later, earlier = later[by_later].tolist(), earlier[by_later].tolist()
    keys = key_at(path, set(later) | set(earlier))
    for a, b in zip(earlier, later):
        if keys.get(a) == keys.get(b):
            pid, lang = keys[b]
            raise DataError(
                f"duplicate (id, lang) = ({pid!r}, {lang!r}); first seen on line {a}", where=f"{path}:{b}"
            )


def convert_tevatron(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    lang_field: str = "lang",
    format: str = "auto",
    max_negatives: int | None = None,
    title_sep: str = " ",
) -> dict:
    """Write Tevatron / FlagEmbedding records as mlir's parallel JSONL at ``out`` (atomic, streaming).

    ``path`` is one file whose records carry ``lang_field``, or ``{lang: file}``. Returns the counts
    (rows per language, extra positives dropped, empty negatives dropped, negatives cut).
    """
    return _convert(_sources(path), out, lang_field, format, max_negatives, title_sep)


def _convert(sources: list, out: str | os.PathLike, *options) -> dict:
    conv = _Converter(sources, *options)
    write_jsonl(out, conv.rows())
    stats = dict(conv.stats, rows_per_lang=dict(sorted(conv.stats["rows_per_lang"].items())))
    if stats["extra_positives_dropped"]:
        log.info(
            "%s: %d extra positives dropped (mlir keeps the first positive per id and language)",
            out,
            stats["extra_positives_dropped"],
        )
    return stats


def _cache_key(sources: list[tuple[str | None, Path]], options: tuple) -> str:
    parts = [_VERSION, repr(options)]
    for lang, p in sources:
        if not p.is_file():
            raise DataError("file not found" if not p.exists() else "not a regular file", where=str(p))
        st = p.stat()
        parts.append(f"{lang}\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\0\0".join(parts).encode()).hexdigest()[:20]


def read_tevatron(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    lang_field: str = "lang",
    format: str = "auto",
    max_negatives: int | None = None,
    title_sep: str = " ",
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ParallelCorpus:
    """Read Tevatron / FlagEmbedding JSONL (one file with ``lang_field``, or ``{lang: file}``).

    The converted rows and their Arrow copy are cached in ``cache_dir`` (default
    ``<mlir cache>/tevatron``); ``corpus.meta["tevatron"]`` holds the conversion's counts.
    """
    sources = _sources(path)
    options = (lang_field, format, max_negatives, title_sep)
    cache = Path(cache_dir) if cache_dir is not None else Path(default_cache_dir()) / "tevatron"
    stem = sources[0][1].name.split(".")[0] or "tevatron"
    converted = cache / f"{stem}-{_cache_key(sources, options)}.jsonl"
    stats_file = converted.with_suffix(".stats.json")
    if converted.is_file() and stats_file.is_file():
        stats = json.loads(stats_file.read_text())
    else:
        stats = _convert(sources, converted, *options)
        write_json(stats_file, stats)
    corpus = read_jsonl(converted, name=name or stem, cache_dir=cache)
    corpus.meta["tevatron"] = stats
    corpus.meta["source"] = [str(p) for _, p in sources]
    return corpus
