"""Hard-negative mining for a parallel corpus: the rules (:func:`mine_corpus`); the command is :mod:`mlir.mine`.

Every row's query is searched against the corpus's own positive passages (each distinct text once;
pool ``same_lang``: the row's language, ``all``: every language) and the best-scoring candidates that
are *not* correct answers become its negatives. Excluded, in this order, and counted: the row's own
``positive``; a ``translation`` (a positive of the same parallel id in another language: in a
parallel corpus it answers the query as well as the positive does, so it is a false negative); a
``same_text`` passage (equal to the positive after NFKC, case folding and whitespace collapsing); a
``shared_positive`` (a positive of another id that has this row's positive text: two questions about
one sentence; not transitive). See :mod:`mlir.mine` for the options and the output.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlir.core.errors import ConfigError

log = logging.getLogger(__name__)
#: exclusion categories, in the order they are tested (a candidate counts in the first that matches)
EXCLUDED = ("positive", "translation", "same_text", "shared_positive")
POOLS = ("same_lang", "all")
QUERY_CHUNK = 16384  # queries encoded and searched at a time (bounds memory on large corpora)


@dataclass(frozen=True)
class MineSettings:
    """How many negatives, from how deep a search, in which pool."""

    num_negatives: int = 7
    depth: int = 50
    skip_top: int = 0
    pool: str = "same_lang"
    batch_size: int | None = None
    device: str = "auto"
    backend: str = "auto"  # auto (faiss when importable) | faiss | torch

    def check(self) -> None:
        """One ConfigError naming the option for an impossible combination."""
        if self.num_negatives < 1:
            raise ConfigError(f"must be >= 1, got {self.num_negatives}", where="--num-negatives")
        if self.skip_top < 0:
            raise ConfigError(f"must be >= 0, got {self.skip_top}", where="--skip-top")
        if self.depth < self.skip_top + self.num_negatives:
            raise ConfigError(
                f"{self.depth} is less than --skip-top + --num-negatives "
                f"({self.skip_top} + {self.num_negatives}): the search cannot reach the negatives",
                where="--depth",
            )
        if self.pool not in POOLS:
            raise ConfigError(f"unknown pool {self.pool!r}; use one of {POOLS}", where="--pool")
        if self.backend not in ("auto", "faiss", "torch"):
            raise ConfigError(
                f"unknown backend {self.backend!r}; use auto, faiss or torch", where="--backend"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.batch_size}", where="--batch-size")


@dataclass
class MineResult:
    """Per row, the passage indices of its negatives (``-1`` pads a short row), and the counts."""

    negatives: np.ndarray  # int64 [rows, num_negatives]
    passages: list[str]  # passage index -> text (the corpus's distinct positives)
    counts: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# the candidate pool and what is excluded from it


def normalized_text(text: str) -> str:
    """The key for ``same_text``: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class PassageTable:
    """The distinct positives of a corpus with what the exclusions compare, as sorted integer keys."""

    texts: list[str]
    owner_keys: np.ndarray  # passage * n_ids + pid over all rows: "id owns passage"
    shared_keys: np.ndarray  # norm * n_passages + passage: "an id with a positive of this norm owns it"
    norm: np.ndarray  # per passage, the index of its normalized text
    n_ids: int

    @classmethod
    def of(cls, corpus: Any) -> PassageTable:
        pid, pas = np.asarray(corpus.pid, np.int64), np.asarray(corpus.passage_idx, np.int64)
        n_ids = int(pid.max()) + 1
        _, first = np.unique(pas, return_index=True)  # passage_idx is dense: 0..P-1
        texts = corpus.texts("positive", first)
        keys: dict[str, int] = {}
        norm = np.fromiter(
            (keys.setdefault(normalized_text(t), len(keys)) for t in texts), np.int64, len(texts)
        )
        shared = _shared_keys(pid, pas, norm[pas], n_ids, len(texts))
        return cls(texts, np.unique(pas * n_ids + pid), shared, norm, n_ids)


def _shared_keys(pid: np.ndarray, pas: np.ndarray, g: np.ndarray, n_ids: int, n_pas: int) -> np.ndarray:
    """``g * n_pas + p`` for every normalized text ``g`` that is a positive of two or more ids and
    every passage ``p`` of those ids (only such ids: the keys stay few on large corpora)."""
    pairs = np.unique(g * n_ids + pid)  # (text, id)
    pg, pj = pairs // n_ids, pairs % n_ids
    multi = np.bincount(pg)[pg] > 1
    pg, pj = pg[multi], pj[multi]
    by_id = np.argsort(pid, kind="stable")
    counts = np.bincount(pid, minlength=n_ids)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cnt = counts[pj]
    within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    rows = by_id[np.repeat(offsets[pj], cnt) + within]
    return np.unique(np.repeat(pg, cnt) * n_pas + pas[rows])


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(keys.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def exclusion_masks(
    idx: np.ndarray, rows: np.ndarray, corpus: Any, pt: PassageTable
) -> dict[str, np.ndarray]:
    """Boolean ``[len(rows), depth]`` masks of the ranked candidates ``idx`` (-1: none), one per
    category of :data:`EXCLUDED`, disjoint (first matching category wins)."""
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    own = np.asarray(corpus.passage_idx, np.int64)[rows][:, None]
    pid = np.asarray(corpus.pid, np.int64)[rows][:, None]
    raw = {
        "positive": safe == own,
        "translation": _member(pt.owner_keys, safe * pt.n_ids + pid),
        "same_text": pt.norm[safe] == pt.norm[own],
        "shared_positive": _member(pt.shared_keys, pt.norm[own] * len(pt.texts) + safe),
    }
    taken = ~valid
    out = {}
    for name in EXCLUDED:
        out[name] = raw[name] & ~taken
        taken = taken | out[name]
    return out


def select_negatives(
    idx: np.ndarray, masks: dict[str, np.ndarray], settings: MineSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The kept candidates ``skip_top+1 .. skip_top+num_negatives`` per row (``-1`` pads), and per
    category the exclusions ranked above the row's last negative (all searched ones for a short row)."""
    n, skip = settings.num_negatives, settings.skip_top
    excluded = np.zeros(idx.shape, bool)
    for m in masks.values():
        excluded |= m
    keep = (idx >= 0) & ~excluded
    rank = np.cumsum(keep, axis=1)
    chosen = keep & (rank > skip) & (rank <= skip + n)
    order = np.argsort(~chosen, axis=1, kind="stable")[:, :n]
    neg = np.take_along_axis(idx, order, 1)
    neg[~np.take_along_axis(chosen, order, 1)] = -1
    if neg.shape[1] < n:  # a pool smaller than the number of negatives
        neg = np.pad(neg, ((0, 0), (0, n - neg.shape[1])), constant_values=-1)
    full = keep & (rank == skip + n)
    last = np.where(full.any(1), np.argmax(full, axis=1), idx.shape[1] - 1)
    window = np.arange(idx.shape[1])[None, :] <= last[:, None]
    return neg, {k: m & window for k, m in masks.items()}


# --------------------------------------------------------------------------------------------------
# encoding and search


def search_backend(requested: str) -> str:
    """``faiss`` when asked for or importable (auto), else ``torch`` (one log line: faiss is an extra)."""
    if requested == "torch":
        return "torch"
    if importlib.util.find_spec("faiss") is not None:
        return "faiss"
    if requested == "faiss":
        raise ConfigError('needs FAISS: pip install -e ".[faiss]"', where="--backend")
    log.info("faiss is not installed (the optional `faiss` extra): exact search with mlir.eval.search.topk")
    return "torch"


def _pool_groups(corpus: Any, pool: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, query rows, pool passages): one group per language, or one group of everything."""
    pas = np.asarray(corpus.passage_idx, np.int64)
    if pool == "all":
        yield "all", np.arange(len(pas)), np.unique(pas)
        return
    lang = np.asarray(corpus.lang_idx)
    for li, name in enumerate(corpus.langs):
        rows = np.flatnonzero(lang == li)
        if len(rows):
            yield name, rows, np.unique(pas[rows])


def mine_corpus(corpus: Any, encoder: Any, settings: MineSettings) -> MineResult:
    """Negatives for every row of ``corpus`` (a ParallelCorpus) with ``encoder`` (the eval contract)."""
    import torch

    from mlir.eval.encode import encode_texts
    from mlir.eval.search import topk

    settings.check()
    backend = search_backend(settings.backend)
    pt = PassageTable.of(corpus)
    t0 = time.perf_counter()
    p_emb = encode_texts(encoder, pt.texts, "passage", batch_size=settings.batch_size)
    log.info("encoded %d distinct passages in %.0fs", len(pt.texts), time.perf_counter() - t0)
    negatives = np.full((len(corpus), settings.num_negatives), -1, np.int64)
    tallies = Tallies(corpus.langs)
    for name, rows, pool in _pool_groups(corpus, settings.pool):
        pool_emb = p_emb[torch.from_numpy(pool)]
        for a in range(0, len(rows), QUERY_CHUNK):
            chunk = rows[a : a + QUERY_CHUNK]
            q_emb = encode_texts(
                encoder, corpus.texts("query", chunk), "query", batch_size=settings.batch_size
            )
            _, loc = topk(q_emb, pool_emb, settings.depth, backend=backend, device=settings.device)
            idx = np.where(loc >= 0, pool[np.maximum(loc, 0)], -1)
            masks = exclusion_masks(idx, chunk, corpus, pt)
            negatives[chunk], above = select_negatives(idx, masks, settings)
            tallies.add(np.asarray(corpus.lang_idx)[chunk], negatives[chunk], masks, above)
        log.info("pool %s: %d queries searched (%.0fs)", name, len(rows), time.perf_counter() - t0)
    counts = tallies.summary()
    counts.update(search_backend=backend, passages=len(pt.texts), seconds=round(time.perf_counter() - t0, 1))
    return MineResult(negatives, pt.texts, counts)


class Tallies:
    """Running counts: rows, negatives written, exclusions (searched / above the last negative)."""

    def __init__(self, langs: Sequence[str]):
        self.langs = list(langs)
        zeros = dict.fromkeys(EXCLUDED, 0)
        self.rows = np.zeros(len(langs), np.int64)
        self.written = np.zeros(len(langs), np.int64)
        self.short = 0
        self.searched, self.above = dict(zeros), dict(zeros)
        self.translations_above = np.zeros(len(langs), np.int64)

    def add(self, lang: np.ndarray, neg: np.ndarray, masks: dict, above: dict) -> None:
        per_row = (neg >= 0).sum(1)
        np.add.at(self.rows, lang, 1)
        np.add.at(self.written, lang, per_row)
        self.short += int((per_row < neg.shape[1]).sum())
        for k in EXCLUDED:
            self.searched[k] += int(masks[k].sum())
            self.above[k] += int(above[k].sum())
        np.add.at(self.translations_above, lang, above["translation"].sum(1))

    def summary(self) -> dict[str, Any]:
        return {
            "rows": int(self.rows.sum()),
            "negatives_written": int(self.written.sum()),
            "rows_with_fewer_than_num_negatives": self.short,
            "excluded_above_last_negative": dict(self.above),
            "excluded_in_searched_depth": dict(self.searched),
            "per_lang": {
                lang: {
                    "rows": int(self.rows[i]),
                    "negatives_written": int(self.written[i]),
                    "translations_excluded_above_last_negative": int(self.translations_above[i]),
                }
                for i, lang in enumerate(self.langs)
                if self.rows[i]
            },
        }
