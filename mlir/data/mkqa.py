"""MKQA (apple/ml-mkqa): 10k open-domain questions, each in 26 languages with typed answers.

Official line format (``mkqa.jsonl.gz``)::

    {"example_id": 563260143484355911, "query": "...english...",
     "queries": {"en": "...", "de": "...", ...},
     "answers": {"en": [{"type": "entity", "entity": "Q...", "text": "...", "aliases": ["..."]}], ...}}

For retrieval evaluation a (question, language) needs a query and at least one answer text. MKQA has
many with none (``type`` ``unanswerable`` or ``long_answer``, ``text`` null); those are dropped per
language and counted in :attr:`MkqaData.dropped`, so a report can say how many were evaluated.
Individual answer entries whose text is null are dropped from a list that has other answers.

Other parallel QA sets give records of the same format (:func:`mlir.data.xquad_r.xquad_r_to_mkqa_records`,
re-exported here for older imports), so one evaluation path serves them all.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlir.core.errors import ConfigError, DataError
from mlir.data.download import MKQA_SHA256, MKQA_URL, download_mkqa
from mlir.data.io import iter_jsonl, verify_sha256
from mlir.data.xquad_r import xquad_r_to_mkqa_records

__all__ = [
    "MKQA_LANGS",
    "MKQA_SHA256",
    "MKQA_URL",
    "MkqaAnswer",
    "MkqaData",
    "MkqaExample",
    "download_mkqa",
    "mkqa_from_records",
    "read_mkqa",
    "xquad_r_to_mkqa_records",
]

MKQA_LANGS = (
    "ar", "da", "de", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "km", "ko", "ms", "nl", "no",
    "pl", "pt", "ru", "sv", "th", "tr", "vi", "zh_cn", "zh_hk", "zh_tw",
)  # fmt: skip
DROP_REASONS = ("missing_query", "missing_answers", "no_answer_text")


@dataclass(frozen=True)
class MkqaAnswer:
    """One gold answer: its MKQA ``type`` (entity, date, number, short_phrase, binary, ...), text, aliases."""

    type: str
    text: str
    aliases: tuple[str, ...] = ()
    entity: str | None = None

    def strings(self) -> list[str]:
        """The text then its aliases, without repeats."""
        return list(dict.fromkeys((self.text, *self.aliases)))


@dataclass
class MkqaExample:
    """One MKQA question, restricted to the languages where it has a query and an answer text.

    ``example_id`` is a string (the file stores a 64-bit integer). ``query`` is the original English
    query; ``queries``/``answers`` are keyed by language code (``zh_cn`` etc.).
    """

    example_id: str
    query: str
    queries: dict[str, str]
    answers: dict[str, list[MkqaAnswer]]

    def answer_strings(self, lang: str) -> list[str]:
        """All acceptable answer strings in ``lang`` (texts and aliases), for answer-recall metrics."""
        out: dict[str, None] = {}
        for a in self.answers.get(lang, ()):
            out.update(dict.fromkeys(a.strings()))
        return list(out)


@dataclass
class MkqaData:
    """Parsed MKQA.

    Attributes:
        source: the file (or a description of the records).
        langs: languages read (sorted).
        examples: file order; only examples with at least one usable language.
        kept: per language, how many examples it has.
        dropped: per language, ``{"missing_query": n, "missing_answers": n, "no_answer_text": n}``.
        meta: ``examples_in_file``, ``examples_without_any_language``, ``no_answer_types``
            (answer ``type`` counts of the ``no_answer_text`` drops, all languages).
    """

    source: str
    langs: list[str]
    examples: list[MkqaExample]
    kept: dict[str, int]
    dropped: dict[str, dict[str, int]]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def for_lang(self, lang: str) -> list[MkqaExample]:
        """The examples usable in ``lang`` (query and answers present)."""
        if lang not in self.langs:
            raise ConfigError(f"language {lang!r} was not read; have {self.langs}", where="lang")
        return [e for e in self.examples if lang in e.queries]


def _parse_answers(raw, where: str) -> tuple[list[MkqaAnswer], Counter]:
    """Answers with a text; and the types of those without one."""
    if not isinstance(raw, list):
        raise DataError(f"answers must be a list, got {type(raw).__name__}", where=where)
    out, empty = [], Counter()
    for k, a in enumerate(raw):
        if not isinstance(a, dict):
            raise DataError(f"answer {k} must be an object, got {type(a).__name__}", where=where)
        typ = a.get("type")
        typ = typ if isinstance(typ, str) else "unknown"
        text = a.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"answer {k} 'text' must be a string or null, got {type(text).__name__}", where=where
            )
        aliases = a.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(x, str) for x in aliases):
            raise DataError(f"answer {k} 'aliases' must be a list of strings", where=where)
        if text is None or not text.strip():
            empty[typ] += 1
            continue
        entity = a.get("entity")
        out.append(
            MkqaAnswer(
                type=typ,
                text=text.strip(),
                aliases=tuple(x.strip() for x in aliases if x.strip()),
                entity=entity if isinstance(entity, str) else None,
            )
        )
    return out, empty


def _checked_record(r: dict, where: str, seen_ids: dict[str, str]) -> tuple[str, str, dict, dict]:
    """A record's example id, English query, ``queries`` and ``answers`` objects, checked."""
    eid = r.get("example_id")
    if isinstance(eid, bool) or not isinstance(eid, (str, int)) or not str(eid).strip():
        raise DataError("missing or invalid 'example_id' (string or integer)", where=where)
    eid = str(eid)
    if eid in seen_ids:
        raise DataError(f"duplicate example_id {eid} (first at {seen_ids[eid]})", where=where)
    seen_ids[eid] = where
    queries, answers = r.get("queries"), r.get("answers")
    if not isinstance(queries, dict):
        raise DataError("missing 'queries' object (language -> query)", where=where)
    if not isinstance(answers, dict):
        raise DataError("missing 'answers' object (language -> list of answers)", where=where)
    query = r.get("query")
    return eid, query.strip() if isinstance(query, str) else "", queries, answers


@dataclass
class _Tally:
    """What :func:`mkqa_from_records` counts: kept and dropped (question, language) pairs."""

    dropped: dict[str, Counter] = field(default_factory=dict)
    kept: Counter = field(default_factory=Counter)
    no_answer_types: Counter = field(default_factory=Counter)

    def add_language(self, ex: MkqaExample, queries: dict, answers: dict, lang: str, where: str) -> None:
        """Put ``lang`` into ``ex`` when it has a query and an answer text; else count why not."""
        drop = self.dropped.setdefault(lang, Counter())
        q = queries.get(lang)
        if q is not None and not isinstance(q, str):
            raise DataError(
                f"queries[{lang!r}] must be a string or null, got {type(q).__name__}", where=where
            )
        if q is None or not q.strip():
            drop["missing_query"] += 1
            return
        raw = answers.get(lang)
        if not raw:
            drop["missing_answers"] += 1
            return
        good, empty = _parse_answers(raw, f"{where}: answers[{lang!r}]")
        if not good:
            drop["no_answer_text"] += 1
            self.no_answer_types.update(empty)
            return
        ex.queries[lang] = q.strip()
        ex.answers[lang] = good
        self.kept[lang] += 1

    def dropped_of(self, read: list[str], n_in: int) -> dict[str, dict[str, int]]:
        """Per language read, the drops by reason; a record without the language misses its query."""
        for lang in read:
            d = self.dropped.setdefault(lang, Counter())
            d["missing_query"] += n_in - self.kept[lang] - sum(d.values())
        return {lang: {k: self.dropped[lang][k] for k in DROP_REASONS} for lang in read}


def mkqa_from_records(
    records: Iterable[tuple[str, dict]] | Iterable[dict],
    langs: Sequence[str] | None = None,
    source: str = "records",
) -> MkqaData:
    """Build :class:`MkqaData` from MKQA-format dicts (or ``(where, dict)`` pairs naming each record).

    Used by :func:`read_mkqa` and for in-memory records such as :func:`xquad_r_to_mkqa_records`' output.
    """
    want = None if langs is None else list(dict.fromkeys(langs))
    examples: list[MkqaExample] = []
    tally = _Tally()
    seen_langs: set[str] = set()
    seen_ids: dict[str, str] = {}
    n_in = 0
    n_empty = 0
    for i, item in enumerate(records):
        where, r = item if isinstance(item, tuple) else (f"{source}[{i}]", item)
        n_in += 1
        eid, query, queries, answers = _checked_record(r, where, seen_ids)
        seen_langs.update(queries, answers)
        ex = MkqaExample(eid, query, {}, {})
        for lang in want if want is not None else sorted(set(queries) | set(answers)):
            tally.add_language(ex, queries, answers, lang, where)
        if ex.queries:
            examples.append(ex)
        else:
            n_empty += 1
    if want is not None:
        unknown = [lang for lang in want if lang not in seen_langs]
        if unknown and n_in:
            raise ConfigError(
                f"language(s) {unknown} do not occur in {source}; it has {sorted(seen_langs)}", where="langs"
            )
    read = sorted(want if want is not None else tally.dropped)
    return MkqaData(
        source=source,
        langs=read,
        examples=examples,
        kept={lang: tally.kept[lang] for lang in read},
        dropped=tally.dropped_of(read, n_in),
        meta={
            "examples_in_file": n_in,
            "examples_without_any_language": n_empty,
            "no_answer_types": dict(sorted(tally.no_answer_types.items())),
        },
    )


def read_mkqa(
    path: str | os.PathLike,
    langs: Sequence[str] | None = None,
    sha256: str | None = None,
) -> MkqaData:
    """Read the official ``mkqa.jsonl.gz`` (or a subset in the same format).

    ``sha256``: expected checksum of the file (mismatch -> :class:`DataError` naming the file); pass
    :data:`MKQA_SHA256` for the official file once it is pinned. Malformed lines, truncated gzip and
    non-UTF-8 bytes raise :class:`DataError` at ``path:line``.
    """
    path = Path(path)
    verify_sha256(path, sha256)
    records = ((f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path))
    return mkqa_from_records(records, langs=langs, source=str(path))
