"""Generic parallel JSONL: one line per (parallel id, language), read into a memory-mapped corpus.

Line format (UTF-8, optionally gzip)::

    {"id": "q17", "lang": "de", "query": "...", "positive": "...", "negatives": ["..."], "group": "art3"}

``id``, ``lang``, ``query`` and ``positive`` are required; ``negatives`` (list of strings) and
``group`` are optional. Ids and groups may be strings or integers and are compared as strings. A
missing group defaults to the id, so translations of one question always fall on the same side of a
split. Unknown extra fields are ignored.

Language codes are brought to BCP-47 case (:func:`normalize_lang`: ``EN`` -> ``en``,
``zh-hans-cn`` -> ``zh-Hans-CN``; separators are kept, ``pt_br`` -> ``pt_BR``), so rows written as
``EN`` and ``en`` are one language, not two; ``corpus.meta["langs_renamed"]`` lists what changed.
Config language lists are compared with the normalised codes.

Why one pass that writes Arrow: the training corpora reach tens of millions of lines, so nothing may
be held as Python strings. The file is read once, line by line: every line is validated (errors name
``path:line``) and appended in small batches to an Arrow stream file in the cache directory, which
``datasets`` then memory-maps. The file is written under a temporary name and renamed only when the
whole input is valid, so an error never leaves a half-written cache entry. Duplicate detection keeps
a 64-bit hash and a line number per row (12 bytes/row), not the strings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlir.core.atomic import atomic_path, write_text
from mlir.core.errors import ConfigError, DataError
from mlir.core.paths import default_cache_dir
from mlir.data.corpus import ParallelCorpus, corpus_features
from mlir.data.io import iter_jsonl

log = logging.getLogger(__name__)
REQUIRED = ("id", "lang", "query", "positive")
_FORMAT_VERSION = "jsonl-arrow-2"  # bump when the cached layout or the validation rules change
_BATCH_ROWS = 8192
_LANG_SEP = re.compile(r"([-_])")


@functools.lru_cache(maxsize=4096)
def normalize_lang(code: str) -> str:
    """BCP-47 letter case of a language tag: ``EN`` -> ``en``, ``zh-hans-cn`` -> ``zh-Hans-CN``.

    Why: language codes are compared as strings (train/eval language lists, per-language batches), and
    ``EN``/``en`` in one file would otherwise be two languages. Case only (RFC 5646 2.1.1): the
    language subtag lower case, a 4-letter script Title case, a 2-letter or 3-digit region upper case,
    everything else (and everything after a singleton such as ``x-``) lower case; ``-`` and ``_``
    both separate subtags and are kept as written.
    """
    parts = _LANG_SEP.split(code)
    out = []
    lower_rest = False
    for i, tok in enumerate(parts):
        if i % 2:  # a separator
            out.append(tok)
            continue
        if i == 0 or lower_rest or not tok.isascii():
            lower_rest = lower_rest or len(tok) == 1
            out.append(tok.lower())
        elif len(tok) == 1:  # singleton: an extension or private use follows
            lower_rest = True
            out.append(tok.lower())
        elif len(tok) == 4 and tok.isalpha():
            out.append(tok.title())
        elif (len(tok) == 2 and tok.isalpha()) or (len(tok) == 3 and tok.isdigit()):
            out.append(tok.upper())
        else:
            out.append(tok.lower())
    return "".join(out)


def _key_field(obj: dict, field: str, where: str) -> str:
    v = obj[field]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise DataError(
            f"field '{field}' must be a string or an integer, got {type(v).__name__}", where=where
        )
    s = str(v)
    if _blank(s):
        raise DataError(f"field '{field}' is empty", where=where)
    return s


def _text_field(obj: dict, field: str, where: str) -> str:
    v = obj[field]
    if not isinstance(v, str):
        raise DataError(f"field '{field}' must be a string, got {type(v).__name__}", where=where)
    if _blank(v):
        raise DataError(f"field '{field}' is empty or whitespace-only", where=where)
    return v


def validate_record(obj: dict, where: str) -> tuple[str, str, str, str, list[str], str]:
    """Check one parsed line; return ``(id, lang, query, positive, negatives, group)``.

    ``lang`` comes back in BCP-47 case (:func:`normalize_lang`). Raises :class:`DataError` at
    ``where`` for a missing required field, a wrong type or an empty text.
    """
    missing = [f for f in REQUIRED if obj.get(f) is None]
    if missing:
        raise DataError(f"missing required field(s) {', '.join(repr(m) for m in missing)}", where=where)
    pid = _key_field(obj, "id", where)
    lang = _text_field(obj, "lang", where)
    if lang != lang.strip():
        raise DataError(f"field 'lang' has surrounding whitespace: {lang!r}", where=where)
    query = _text_field(obj, "query", where)
    positive = _text_field(obj, "positive", where)
    negs = obj.get("negatives")
    if negs is None:
        negs = []
    elif not isinstance(negs, list):
        raise DataError(
            f"field 'negatives' must be a list of strings, got {type(negs).__name__}", where=where
        )
    for i, n in enumerate(negs):
        if not isinstance(n, str) or _blank(n):
            raise DataError(f"negatives[{i}] must be a non-empty string", where=where)
    group = pid if obj.get("group") is None else _key_field(obj, "group", where)
    return pid, normalize_lang(lang), query, positive, negs, group


def _blank(s: str) -> bool:
    return not s or s.isspace()


def _fast_record(obj: dict) -> tuple | None:
    """The common all-valid line without per-field calls; ``None`` sends it to :func:`validate_record`."""
    pid, lang, query, pos = obj.get("id"), obj.get("lang"), obj.get("query"), obj.get("positive")
    if not (
        type(pid) is str
        and type(lang) is str
        and type(query) is str
        and type(pos) is str
        and not _blank(pid)
        and lang
        and lang == lang.strip()
        and not _blank(query)
        and not _blank(pos)
    ):
        return None
    negs = obj.get("negatives")
    if negs is None:
        negs = []
    elif type(negs) is not list or not all(type(n) is str and not _blank(n) for n in negs):
        return None
    group = obj.get("group")
    if group is None:
        group = pid
    elif type(group) is not str or _blank(group):
        return None
    return pid, normalize_lang(lang), query, pos, negs, group


def _cache_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{_FORMAT_VERSION}\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _first_duplicate(path: Path, hashes: array, lines: array) -> None:
    """Raise for the earliest line whose (id, lang) repeats an earlier line (hash hits are re-checked)."""
    if len(hashes) < 2:
        return
    h = np.frombuffer(hashes, dtype=np.int64)
    ln = np.frombuffer(lines, dtype=np.int64)
    order = np.argsort(h, kind="stable")  # stable: within equal hashes, file order
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1]) + 1
    if not len(same):
        return
    # candidate (earlier line, later line) pairs: every later row against the first row of its hash run
    run_start = np.searchsorted(hs, hs[same], side="left")
    later, earlier = ln[order[same]], ln[order[run_start]]
    by_later = np.argsort(later, kind="stable")[:10000]
    later, earlier = later[by_later], earlier[by_later]
    wanted = set(later.tolist()) | set(earlier.tolist())
    keys: dict[int, tuple[str, str]] = {}
    raw: dict[int, str] = {}
    for lineno, obj in iter_jsonl(path):
        if lineno in wanted:
            keys[lineno] = (str(obj["id"]), normalize_lang(obj["lang"]))
            raw[lineno] = obj["lang"]
    for a, b in zip(earlier.tolist(), later.tolist()):
        if keys.get(a) == keys.get(b):
            pid, lang = keys[b]
            case = (
                f" (language codes are compared in BCP-47 case: {raw[a]!r} and {raw[b]!r} are both {lang!r})"
                if raw[a] != raw[b]
                else ""
            )
            raise DataError(
                f"duplicate (id, lang) = ({pid!r}, {lang!r}); first seen on line {a}{case}",
                where=f"{path}:{b}",
            )


def _write_arrow(path: Path, out: Path) -> dict:
    """Validate ``path`` line by line and write the rows to the Arrow stream file ``out``."""
    schema = corpus_features().arrow_schema
    cols: dict[str, list] = {c: [] for c in schema.names}
    hashes, lines = array("q"), array("q")
    n_rows = 0
    renamed: dict[str, str] = {}

    def flush(writer) -> None:
        if cols["id"]:
            writer.write_batch(
                pa.record_batch(
                    [pa.array(cols[c], schema.field(c).type) for c in schema.names], schema=schema
                )
            )
            for c in cols.values():
                c.clear()

    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        appenders = [cols[c].append for c in schema.names]
        for lineno, obj in iter_jsonl(path):
            row = _fast_record(obj) or validate_record(obj, where=f"{path}:{lineno}")
            if row[1] != obj["lang"] and len(renamed) < 100:
                renamed.setdefault(obj["lang"], row[1])
            for append, v in zip(appenders, row):
                append(v)
            hashes.append(hash((row[0], row[1])))
            lines.append(lineno)
            n_rows += 1
            if len(cols["id"]) >= _BATCH_ROWS:
                flush(writer)
        flush(writer)
    if n_rows == 0:
        raise DataError("no records (the file is empty)", where=str(path))
    _first_duplicate(path, hashes, lines)
    return {"source": str(path), "rows": n_rows, "langs_renamed": dict(sorted(renamed.items()))}


def _describe(table: pa.Table, meta: dict) -> dict:
    """Row counts per language and the parallel ids that lack some languages (legitimate, but reported)."""
    langs = table.column("lang")
    vc = pc.value_counts(langs)
    rows_per_lang = {d["values"]: int(d["counts"]) for d in vc.to_pylist()}
    per_id = table.group_by("id").aggregate([("lang", "count")])
    counts = per_id.column("lang_count").to_numpy()
    n_langs = len(rows_per_lang)
    meta = dict(meta)
    meta.update(
        rows_per_lang=dict(sorted(rows_per_lang.items())),
        ids=len(counts),
        ids_missing_langs=int((counts < n_langs).sum()),
        langs_per_id_hist={int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True))},
    )
    return meta


def read_jsonl(
    path: str | os.PathLike,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ParallelCorpus:
    """Read a parallel JSONL (or ``.jsonl.gz``) file into a memory-mapped :class:`ParallelCorpus`.

    ``cache_dir`` (default ``<mlir cache>/jsonl``) holds the Arrow copy, keyed by the file's path, size
    and modification time, so a second read skips validation. ``corpus.meta`` reports ``rows``,
    ``rows_per_lang``, ``ids``, ``ids_missing_langs`` (ids present in fewer than all languages) and
    ``langs_per_id_hist``.
    """
    import datasets

    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))[:3]
        hint = f" (it contains {', '.join(found)})" if found else ""
        raise DataError(
            f"is a directory, expected a parallel JSON-lines file (.jsonl or .jsonl.gz) such as "
            f"data.corpus.path={path / (found[0] if found else 'train.jsonl')}{hint}",
            where=str(path),
        )
    if not path.is_file():
        raise DataError("file not found", where=str(path))
    cache = Path(cache_dir) if cache_dir is not None else Path(default_cache_dir()) / "jsonl"
    stem = path.name.split(".")[0] or "corpus"
    arrow_file = cache / f"{stem}-{_cache_key(path)}.arrow"
    meta_file = arrow_file.with_suffix(".meta.json")
    if arrow_file.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
    else:
        with atomic_path(arrow_file) as tmp:
            meta = _write_arrow(path, tmp)
            table = pa.ipc.open_stream(pa.memory_map(str(tmp))).read_all()
            meta = _describe(table, meta)
            del table
            write_text(meta_file, json.dumps(meta, indent=1))
    ds = datasets.Dataset.from_file(str(arrow_file))
    corpus = ParallelCorpus.from_dataset(ds, name=name or stem)
    corpus.meta.update(meta)
    if meta.get("langs_renamed"):
        log.info("%s: language codes normalised to BCP-47 case: %s", path, meta["langs_renamed"])
    return corpus


def check_negatives(
    corpus: ParallelCorpus,
    num_negatives: int,
    if_present: bool = False,
    where: str = "data.num_negatives",
) -> int:
    """The hard negatives per pair to use with ``corpus``: ``num_negatives``, or 0 when it has none.

    Why: the tokeniser takes *up to* ``num_negatives`` per row, so a corpus without any would train
    without hard negatives and without a word. That is refused (naming ``where``), unless
    ``if_present`` (``data.negatives_if_present``): then such a corpus uses 0, and the caller logs it.
    The reader cannot see the config, hence a separate check for the data module to call.
    """
    n = int(num_negatives)
    if n <= 0:
        return 0
    table = corpus.table.data.table if hasattr(corpus.table.data, "table") else corpus.table.data
    longest = pc.max(pc.list_value_length(table.column("negatives"))).as_py() if len(table) else None
    if longest:
        return n
    if if_present:
        return 0
    raise ConfigError(
        f"is {n} but no row of corpus '{corpus.name}' has 'negatives'; set data.num_negatives=0, "
        "data.negatives_if_present=true, or add a 'negatives' list of texts to the rows",
        where=where,
    )
