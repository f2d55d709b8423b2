"""The parallel corpus every reader produces and every sampler consumes.

One row per (parallel id, language): the query in that language, its positive passage, optional hard
negatives and a group id (the article) so that splits never leak. Texts stay in an Arrow-backed
``datasets.Dataset`` (memory-mapped when read from disk); samplers only ever see the integer arrays
``pid``, ``lang_idx``, ``passage_idx`` and ``group_idx``, so 40M pairs never become Python strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ("id", "lang", "query", "positive", "negatives", "group")
#: optional column: which of several corpora a row comes from (:func:`mlir.data.corpora.read_corpora`)
CORPUS_COLUMN = "corpus"


def corpus_features():
    """The Arrow schema of a corpus table (shared by every reader)."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "lang": datasets.Value("string"),
            "query": datasets.Value("string"),
            "positive": datasets.Value("string"),
            "negatives": datasets.Sequence(datasets.Value("string")),
            "group": datasets.Value("string"),
        }
    )


def _encode(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode a string column: (integer codes per row, sorted unique values)."""
    uniq = pc.unique(col)
    uniq = pc.array_sort_indices(uniq).to_numpy() if len(uniq) else np.zeros(0, np.int64)
    values = pc.unique(col).take(pa.array(uniq)) if len(uniq) else pa.array([], pa.string())
    codes = pc.index_in(col, value_set=values)
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64), values.to_pylist()


@dataclass
class ParallelCorpus:
    """Arrow table of rows plus integer index arrays derived from it.

    Attributes:
        table: ``datasets.Dataset`` with columns ``id, lang, query, positive, negatives, group``.
        langs: sorted language codes; ``lang_idx`` indexes into it.
        pid: per row, the index of its parallel id (rows of one question share it across languages).
        lang_idx: per row, the index of its language in ``langs``.
        passage_idx: per row, the index of its positive text among all unique positive texts, so that
            "the same passage at most once per batch" is an integer comparison.
        group_idx: per row, the index of its group id in ``groups``.
        name: where the corpus came from (for messages and reports).
        corpora: the names of the corpora combined here (sorted), from the optional ``corpus`` column;
            empty for a single corpus.
        corpus_idx: per row, the index of its corpus in ``corpora`` (``None`` for a single corpus).
        corpus_weights: per corpus name, its sampling weight (``None``: size-proportional). Kept by
            :meth:`select`, so the training part of a split samples with the configured weights.
    """

    table: object  # datasets.Dataset
    langs: list[str]
    pid: np.ndarray
    lang_idx: np.ndarray
    passage_idx: np.ndarray
    group_idx: np.ndarray
    groups: list[str]
    name: str = "corpus"
    meta: dict = field(default_factory=dict)
    corpora: list[str] = field(default_factory=list)
    corpus_idx: np.ndarray | None = None
    corpus_weights: dict[str, float] | None = None

    @classmethod
    def from_dataset(
        cls, ds, name: str = "corpus", corpus_weights: dict[str, float] | None = None
    ) -> ParallelCorpus:
        """Build the index arrays for a ``datasets.Dataset`` with the standard columns (and ``corpus``)."""
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise ValueError(f"{name}: dataset lacks columns {missing}")
        if getattr(ds, "_indices", None) is not None:
            # ``Dataset.select`` keeps the full table plus an indices mapping; ``ds.data`` would be the
            # full table. Flatten (written next to the source's cache files, so still memory-mapped).
            ds = ds.flatten_indices()
        arrow = ds.data.table if hasattr(ds.data, "table") else ds.data
        pid, _ = _encode(arrow.column("id"))
        lang_idx, langs = _encode(arrow.column("lang"))
        passage_idx, _ = _encode(arrow.column("positive"))
        group_idx, groups = _encode(arrow.column("group"))
        corpus_idx, corpora = None, []
        if CORPUS_COLUMN in arrow.column_names:
            corpus_idx, corpora = _encode(arrow.column(CORPUS_COLUMN))
            corpus_idx = corpus_idx.astype(np.int32)
        return cls(
            table=ds,
            langs=langs,
            pid=pid,
            lang_idx=lang_idx.astype(np.int16),
            passage_idx=passage_idx,
            group_idx=group_idx.astype(np.int32),
            groups=groups,
            name=name,
            corpora=corpora,
            corpus_idx=corpus_idx,
            corpus_weights=dict(corpus_weights) if corpus_weights else None,
        )

    @classmethod
    def from_rows(cls, rows: Sequence[dict], name: str = "corpus") -> ParallelCorpus:
        """Small corpora (tests, adapters): rows are dicts with the standard columns."""
        import datasets

        cols = {c: [] for c in COLUMNS}
        for r in rows:
            for c in COLUMNS:
                v = r.get(c)
                if c == "negatives":
                    v = list(v or [])
                elif c == "group":
                    v = "" if v is None else str(v)
                cols[c].append(v)
        return cls.from_dataset(datasets.Dataset.from_dict(cols, features=corpus_features()), name=name)

    def __len__(self) -> int:
        return len(self.pid)

    @property
    def num_ids(self) -> int:
        return int(self.pid.max()) + 1 if len(self.pid) else 0

    def select(self, rows: np.ndarray, name: str | None = None) -> ParallelCorpus:
        """A sub-corpus of the given rows (indices re-derived so they stay dense; corpus weights kept)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ParallelCorpus.from_dataset(
            self.table.select(rows), name=name or self.name, corpus_weights=self.corpus_weights
        )

    def rows_in_langs(self, langs: Sequence[str]) -> np.ndarray:
        keep = [self.langs.index(lang) for lang in langs if lang in self.langs]
        return np.flatnonzero(np.isin(self.lang_idx, keep))

    def texts(self, column: str, rows: np.ndarray | Sequence[int]) -> list[str]:
        """Fetch one text column for some rows (the only place strings are materialised)."""
        sub = self.table.select(np.asarray(rows, dtype=np.int64))
        # ``sub.data`` ignores the indices mapping that ``select`` creates; the arrow view applies it.
        return sub.with_format("arrow")[:].column(column).to_pylist()
