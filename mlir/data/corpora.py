"""Several corpora in one run: ``data.corpus.corpora: [{name, reader | path, weight}, ...]``.

:func:`read_corpora` reads each corpus with its own reader and concatenates them into ONE
:class:`~mlir.data.corpus.ParallelCorpus`, so the split, the tokeniser and the hybrid sampler see one
parallel corpus. Ids and groups are namespaced ``{name}:{id}`` / ``{name}:{group}``.

Why namespaced: two corpora numbering their questions ``1, 2, ...`` would otherwise merge unrelated
questions into one parallel id. With the prefix, rows are translations of each other only within one
corpus, so the paper's batch definitions hold whatever corpora a batch draws from: an X-X-mono batch
is one language for all its pairs, and in an X-Y batch every pair's query and passage are the same
(namespaced) id in two different languages. Groups are namespaced for the same reason: a split never
joins articles of different corpora.

Mixing: with every ``weight`` null the corpora are sampled in proportion to their sizes (every usable
id equally likely, as for one corpus). With weights, each epoch's id stream gives corpus ``c`` the share
``weight_c / sum(weights)`` (:mod:`mlir.sampling.mix`, which also says what an epoch then is). Give
every corpus a weight, or none.

The combined table is written once to an Arrow file in the cache directory (memory-mapped, like
:func:`mlir.data.jsonl.read_jsonl`'s), keyed by the names and the parts' own cache files; parts held in
memory (a hand-built corpus) are combined in memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlir.core.atomic import atomic_path
from mlir.core.errors import ConfigError, DataError
from mlir.core.paths import default_cache_dir
from mlir.data.corpus import COLUMNS, CORPUS_COLUMN, ParallelCorpus, corpus_features

log = logging.getLogger(__name__)

KEY = "data.corpus.corpora"  # where train.py's config holds the list (ConfigError locations)
ENTRY_KEYS = ("name", "reader", "path", "weight")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FORMAT_VERSION = "corpora-arrow-1"  # bump when the combined layout changes
_BATCH_ROWS = 8192


@dataclass(frozen=True)
class CorpusEntry:
    """One checked entry of ``data.corpus.corpora``: its name, its reader (or path) and its weight."""

    name: str
    reader: Any  # a zero-argument callable, a reader config (``_target_``) or None when ``path`` is set
    path: str | None
    weight: float | None

    def read(self, where: str) -> ParallelCorpus:
        """The corpus of this entry (``path``: :func:`mlir.data.jsonl.read_jsonl`)."""
        if self.path is not None:
            from mlir.data.jsonl import read_jsonl

            corpus = read_jsonl(Path(self.path).expanduser(), name=self.name)
        elif callable(self.reader):
            corpus = self.reader()
        else:
            raise ConfigError(
                "must be a corpus reader with _target_ and _partial_: true (e.g. mlir.data.jsonl.read_jsonl)",
                where=f"{where}.reader",
            )
        if not isinstance(corpus, ParallelCorpus):
            raise ConfigError(
                f"the reader returned {type(corpus).__name__}, not a corpus", where=f"{where}.reader"
            )
        if not len(corpus):
            raise DataError(f"corpus '{self.name}' has no rows", where=where)
        return corpus


def _check_weight(value: Any, where: str) -> float | None:
    """``null`` or a finite number > 0."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        w = float(value)
    except (TypeError, ValueError):
        w = math.nan
    if not (w > 0 and math.isfinite(w)):
        raise ConfigError(f"must be a finite number > 0 or null, got {value!r}", where=where)
    return w


def _check_entry(entry: Any, where: str) -> CorpusEntry:
    """One list entry: a mapping with a valid ``name``, exactly one of ``reader``/``path``, a weight."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"must be a mapping with name, reader (or path) and weight, got {entry!r:.80}", where=where
        )
    unknown = [str(k) for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"unknown key; use {', '.join(ENTRY_KEYS)}", where=f"{where}.{unknown[0]}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"must be a name of letters, digits, '_', '.' or '-' (it prefixes the ids), got {name!r}",
            where=f"{where}.name",
        )
    reader, path = entry.get("reader"), entry.get("path")
    if (reader is None) == (path is None):
        raise ConfigError(
            "give exactly one of reader (a corpus reader config) or path (a parallel JSONL file)",
            where=f"{where}.{'reader' if reader is None else 'path'}",
        )
    if reader is not None and not (callable(reader) or isinstance(reader, Mapping)):
        raise ConfigError(
            f"must be a corpus reader with _target_ and _partial_: true, got {reader!r:.80}",
            where=f"{where}.reader",
        )
    if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path).strip()):
        raise ConfigError(f"must be a file path, got {path!r}", where=f"{where}.path")
    weight = _check_weight(entry.get("weight"), f"{where}.weight")
    return CorpusEntry(name, reader, None if path is None else str(path), weight)


def check_corpora(corpora: Any, key: str = KEY) -> list[CorpusEntry]:
    """Check ``data.corpus.corpora`` without reading anything: a non-empty list, unique valid names,
    exactly one of ``reader``/``path`` each, weights finite and > 0, either all null or all set.

    Works on the composed config (readers are ``_target_`` mappings) and on the instantiated one
    (readers are callables), so a preflight and :func:`read_corpora` give the same one-line error.
    """
    if isinstance(corpora, (str, bytes, Mapping)) or not isinstance(corpora, Sequence) or not corpora:
        raise ConfigError(
            f"must be a non-empty list of {{name, reader | path, weight}}, got {corpora!r:.80}", where=key
        )
    entries = [_check_entry(e, f"{key}[{i}]") for i, e in enumerate(corpora)]
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.name in seen:
            raise ConfigError(
                f"'{e.name}' is also the name of {key}[{seen[e.name]}]; names must be unique",
                where=f"{key}[{i}].name",
            )
        seen[e.name] = i
    given = [e.weight is not None for e in entries]
    if any(given) and not all(given):
        i, j = given.index(False), given.index(True)
        raise ConfigError(
            f"is null but {key}[{j}].weight is set: give every corpus a weight, or none "
            "(null everywhere = size-proportional)",
            where=f"{key}[{i}].weight",
        )
    return entries


def read_corpora(
    corpora: Sequence[Mapping[str, Any]],
    name: str = "corpora",
    cache_dir: str | os.PathLike | None = None,
) -> ParallelCorpus:
    """Read every corpus of ``corpora`` and combine them into one namespaced, weighted corpus.

    ``corpora``: entries ``{name, reader, weight}`` (``reader`` a zero-argument corpus reader, a
    ``_partial_`` one in the config) or ``{name, path, weight}`` (a parallel JSONL file). ``weight``:
    null everywhere (size-proportional) or a positive number everywhere. ``corpus.meta["corpora"]``
    gives per corpus its rows, ids, languages, weight and expected share of the training pairs.
    """
    entries = check_corpora(corpora)
    parts = [e.read(f"{KEY}[{i}]") for i, e in enumerate(entries)]
    names = [e.name for e in entries]
    weights = {e.name: e.weight for e in entries} if entries[0].weight is not None else None
    ds = _combine(parts, names, cache_dir)
    corpus = ParallelCorpus.from_dataset(ds, name=name, corpus_weights=weights)
    corpus.meta["corpora"] = _describe(parts, names, weights)
    for n, d in corpus.meta["corpora"].items():
        log.info(
            "corpus '%s': %d rows, %d ids, langs %s, weight %s -> %.1f%% of the training pairs",
            n,
            d["rows"],
            d["ids"],
            d["langs"],
            d["weight"],
            100 * d["share"],
        )
    return corpus


def _describe(parts: list[ParallelCorpus], names: list[str], weights: dict | None) -> dict[str, dict]:
    """Per corpus: rows, ids, languages, weight, and its expected share of the drawn pairs."""
    ids = [p.num_ids for p in parts]
    mass = [weights[n] for n in names] if weights else ids
    return {
        n: {
            "rows": len(p),
            "ids": i,
            "langs": list(p.langs),
            "weight": None if weights is None else weights[n],
            "share": m / sum(mass),
        }
        for n, p, i, m in zip(names, parts, ids, mass)
    }


def _arrow(part: ParallelCorpus) -> pa.Table:
    ds = part.table
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return ds.data.table if hasattr(ds.data, "table") else ds.data


def _batches(parts: list[ParallelCorpus], names: list[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The parts' rows in order, ``id`` and ``group`` prefixed with the corpus name, plus ``corpus``."""
    for part, name in zip(parts, names):
        prefix = pa.scalar(f"{name}:")
        for batch in _arrow(part).to_batches(max_chunksize=_BATCH_ROWS):
            cols = []
            for c in COLUMNS:
                col = batch.column(c)
                if c in ("id", "group"):
                    col = pc.binary_join_element_wise(prefix, col.cast(pa.string()), pa.scalar(""))
                cols.append(col.cast(schema.field(c).type))
            cols.append(pa.repeat(pa.scalar(name), batch.num_rows))
            yield pa.record_batch(cols, schema=schema)


def _cache_key(parts: list[ParallelCorpus], names: list[str]) -> str | None:
    """A key for the combined file from the parts' own cache files; ``None`` if a part is in memory."""
    h = hashlib.sha256(_FORMAT_VERSION.encode())
    for part, name in zip(parts, names):
        files = [Path(f["filename"]) for f in getattr(part.table, "cache_files", None) or []]
        if not files or getattr(part.table, "_indices", None) is not None:
            return None
        h.update(f"\0{name}".encode())
        for f in files:
            st = f.stat()
            h.update(f"\0{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _combine(parts: list[ParallelCorpus], names: list[str], cache_dir: str | os.PathLike | None):
    """One ``datasets.Dataset`` of every part's rows (memory-mapped from the cache when possible)."""
    import datasets

    schema = corpus_features().arrow_schema.append(pa.field(CORPUS_COLUMN, pa.string()))
    key = _cache_key(parts, names)
    if key is None:
        return datasets.Dataset(pa.Table.from_batches(list(_batches(parts, names, schema)), schema=schema))
    cache = Path(cache_dir) if cache_dir is not None else Path(default_cache_dir()) / "corpora"
    out = cache / f"{'+'.join(names)[:80]}-{key}.arrow"
    if not out.is_file():
        with atomic_path(out) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for batch in _batches(parts, names, schema):
                    writer.write_batch(batch)
    return datasets.Dataset.from_file(str(out))
