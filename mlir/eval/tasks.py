"""A language-independent description of a multilingual retrieval benchmark.

Every benchmark (MKQA, XQuAD-R, MLQA-R, MKQA-format records from other parallel QA sets) becomes one
:class:`RetrievalTask`: parallel *query ids* (one id = one question, asked in several languages), per
language the query texts and the candidate documents, and relevance that depends only on the query id
and the *document's* language (the answers of question 7 in German are the same whichever language the
question is asked in). The three settings are then views of the same task:

* ``mono``  L:   queries in L against the documents of L;
* ``cross`` X→Y: queries in X against the documents of Y (X ≠ Y);
* ``multi`` X:   queries in X against ONE pool holding the documents of every task language; a query's
  relevant documents are its relevant documents in every language.

A query with no relevant document in the searched documents is left out of that setting (and counted).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mlir.core.errors import ConfigError

#: Retrieval settings (which documents a query searches); not the sampler's batch kinds
#: (:data:`mlir.sampling.MONO` / :data:`mlir.sampling.CROSS`: how a training batch pairs languages).
SETTINGS = ("mono", "cross", "multi")


@dataclass
class Relevance:
    """CSR relevance for one document language: ``indices[indptr[i]:indptr[i+1]]`` are query id i's docs.

    ``grades``: the graded relevance (a positive number) of each entry of ``indices``, or ``None`` for
    binary relevance (every listed document has grade 1; the MKQA / LAReQA / jsonl benchmarks). Only
    nDCG uses the grades (trec_eval ``ndcg_cut``: gain = grade); every listed document is relevant for
    AP, recall and MRR. A judgement of grade <= 0 is not relevant and is not listed at all.
    """

    indptr: np.ndarray
    indices: np.ndarray
    grades: np.ndarray | None = None

    @classmethod
    def from_lists(
        cls, rel: Sequence[Sequence[int]], grades: Sequence[Sequence[float]] | None = None
    ) -> Relevance:
        lens = np.fromiter((len(r) for r in rel), dtype=np.int64, count=len(rel))
        indptr = np.zeros(len(rel) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        flat = [int(i) for r in rel for i in r]
        g = None
        if grades is not None:
            g = np.asarray([float(x) for r in grades for x in r], dtype=np.float64)
            if len(grades) != len(rel) or len(g) != len(flat):
                raise ValueError("grades must have one value per relevant document")
        return cls(indptr, np.asarray(flat, dtype=np.int64), g)

    def of(self, qid: int) -> np.ndarray:
        return self.indices[self.indptr[qid] : self.indptr[qid + 1]]

    def grades_of(self, qid: int) -> np.ndarray:
        """The grades of :meth:`of` (ones for binary relevance)."""
        if self.grades is None:
            return np.ones(self.indptr[qid + 1] - self.indptr[qid], dtype=np.float64)
        return self.grades[self.indptr[qid] : self.indptr[qid + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)


@dataclass
class LangQueries:
    """The queries of one language: ``ids[i]`` is the query id (index into ``task.query_ids``) of ``texts[i]``."""

    ids: np.ndarray
    texts: list[str]


@dataclass
class SettingQueries:
    """The queries of one (query language, searched document languages) view, ready for ranking.

    ``rows`` index ``task.queries[q_lang]`` (and so the query embeddings of that language); ``rel[i]``
    indexes the concatenation of the searched languages' documents; ``rel_lang[i]`` gives, per relevant
    document, the position of its language in ``doc_langs``; ``gains[i]`` its relevance grade, or
    ``gains`` is ``None`` when every searched language has binary relevance (all grades 1).
    """

    q_lang: str
    doc_langs: list[str]
    rows: np.ndarray
    qids: np.ndarray
    rel: list[np.ndarray]
    rel_lang: list[np.ndarray]
    offsets: np.ndarray
    dropped: int = 0
    merged: int = 0
    gains: list[np.ndarray] | None = None


@dataclass
class RetrievalTask:
    """Parallel queries, per-language candidates and query-id × doc-language relevance.

    Attributes:
        name: the report name (``mkqa``, ``xquad_r``, ``xquad_r_mkqa``...).
        langs: task languages, in report order.
        query_ids: the parallel query ids (strings from the source data).
        queries: per language, which query ids are asked in it and how.
        docs: per language, the candidate texts (a candidate is the pair (language, index)).
        rel: per document language, the relevant documents of every query id (CSR over ``query_ids``).
        query_groups: per query id, its group (article) id, or ``None`` when the data has no groups.
        doc_groups: per language, the group id of every candidate, or ``None``.
        merge_duplicate_queries: within one language, identical query texts are one query whose
            relevant documents are the union (MTEB's MKQARetrieval keys queries by their text).
        meta: provenance and skip counts, reported with the results.
        doc_ids: per language, a stable id of every candidate (the TREC run files' docnos are
            ``{lang}:{id}``, see :mod:`mlir.eval.trec`). ``None``: each candidate's position in the
            task as built, kept through :meth:`restrict_groups`, so a document has the same id in every
            fold and subsample.
    """

    name: str
    langs: list[str]
    query_ids: list[str]
    queries: dict[str, LangQueries]
    docs: dict[str, list[str]]
    rel: dict[str, Relevance]
    query_groups: list[str] | None = None
    doc_groups: dict[str, list[str]] | None = None
    merge_duplicate_queries: bool = False
    meta: dict = field(default_factory=dict)
    doc_ids: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        if self.doc_ids is None:
            self.doc_ids = {x: [str(i) for i in range(len(d))] for x, d in self.docs.items()}
        for lang in self.langs:
            if lang not in self.queries or lang not in self.docs or lang not in self.rel:
                raise ValueError(f"{self.name}: language '{lang}' lacks queries, docs or relevance")
            q = self.queries[lang]
            if len(q.ids) != len(q.texts):
                raise ValueError(f"{self.name}/{lang}: {len(q.ids)} query ids but {len(q.texts)} texts")
            r = self.rel[lang]
            if len(r.indptr) != len(self.query_ids) + 1:
                raise ValueError(
                    f"{self.name}/{lang}: relevance covers {len(r.indptr) - 1} of {len(self.query_ids)} ids"
                )
            if len(r.indices) and (r.indices.min() < 0 or r.indices.max() >= len(self.docs[lang])):
                raise ValueError(f"{self.name}/{lang}: relevant document index out of range")
            if r.grades is not None and (len(r.grades) != len(r.indices) or (r.grades <= 0).any()):
                raise ValueError(f"{self.name}/{lang}: grades must be positive, one per relevant document")
            if len(self.doc_ids.get(lang, ())) != len(self.docs[lang]):
                raise ValueError(f"{self.name}/{lang}: doc_ids do not match the documents")

    # ------------------------------------------------------------------ restrictions
    def select_langs(self, langs: Sequence[str] | None) -> RetrievalTask:
        """Keep only ``langs`` (in the given order); ``None`` keeps all. Unknown languages are an error."""
        if langs is None:
            return self
        langs = [str(x) for x in langs]
        unknown = [x for x in langs if x not in self.langs]
        if unknown:
            raise ConfigError(
                f"unknown language(s) {unknown}; {self.name} has {self.langs}",
                where=f"benchmarks.{self.name}.langs",
            )
        if not langs:
            raise ConfigError("empty language list", where=f"benchmarks.{self.name}.langs")
        return replace(
            self,
            langs=list(langs),
            queries={x: self.queries[x] for x in langs},
            docs={x: self.docs[x] for x in langs},
            rel={x: self.rel[x] for x in langs},
            doc_groups={x: self.doc_groups[x] for x in langs} if self.doc_groups is not None else None,
            doc_ids={x: self.doc_ids[x] for x in langs},
        )

    def restrict_groups(self, groups: Collection[str]) -> RetrievalTask:
        """Keep only queries *and candidates* of the given groups (e.g. the held-out articles)."""
        if self.query_groups is None or self.doc_groups is None:
            raise ConfigError(
                f"{self.name} has no group ids to split on", where=f"benchmarks.{self.name}.split"
            )
        keep_groups = {str(g) for g in groups}
        qkeep = np.fromiter(
            (g in keep_groups for g in self.query_groups), dtype=bool, count=len(self.query_groups)
        )
        queries, docs, rel, doc_groups, doc_ids = {}, {}, {}, {}, {}
        for lang in self.langs:
            q = self.queries[lang]
            m = qkeep[q.ids]
            queries[lang] = LangQueries(q.ids[m], [t for t, k in zip(q.texts, m) if k])
            dkeep = np.fromiter(
                (g in keep_groups for g in self.doc_groups[lang]), dtype=bool, count=len(self.docs[lang])
            )
            new_index = np.cumsum(dkeep) - 1
            docs[lang] = [t for t, k in zip(self.docs[lang], dkeep) if k]
            doc_groups[lang] = [g for g, k in zip(self.doc_groups[lang], dkeep) if k]
            doc_ids[lang] = [d for d, k in zip(self.doc_ids[lang], dkeep) if k]
            r = self.rel[lang]
            lists, grades = [], []
            for qid in range(len(self.query_ids)):
                idx, g = r.of(qid), r.grades_of(qid)
                keep = dkeep[idx] if qkeep[qid] else np.zeros(len(idx), dtype=bool)
                lists.append(new_index[idx[keep]])
                grades.append(g[keep])
            rel[lang] = Relevance.from_lists(lists, grades if r.grades is not None else None)
        meta = dict(self.meta, groups=sorted(keep_groups))
        return replace(
            self, queries=queries, docs=docs, rel=rel, doc_groups=doc_groups, doc_ids=doc_ids, meta=meta
        )

    def subsample_queries(self, max_per_lang: int | None, seed: int = 0) -> RetrievalTask:
        """At most ``max_per_lang`` queries per language, chosen reproducibly and *parallel* across languages.

        One seeded permutation of all query ids is shared by the languages; each language keeps the
        first ids of that order it has. Languages therefore share their queries wherever they can (mono,
        cross and multi stay comparable), and the same seed always gives the same queries. Candidates are
        never subsampled: the difficulty of a query depends on the full candidate set.
        """
        if max_per_lang is None:
            return self
        if int(max_per_lang) < 1:
            raise ConfigError(
                f"must be >= 1 or null, got {max_per_lang}",
                where=f"benchmarks.{self.name}.max_queries_per_lang",
            )
        order = np.random.default_rng(int(seed)).permutation(len(self.query_ids))
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        queries = {}
        for lang in self.langs:
            q = self.queries[lang]
            chosen = np.sort(np.argsort(position[q.ids], kind="stable")[: int(max_per_lang)])
            queries[lang] = LangQueries(q.ids[chosen], [q.texts[i] for i in chosen])
        return replace(
            self,
            queries=queries,
            meta=dict(self.meta, max_queries_per_lang=int(max_per_lang), seed=int(seed)),
        )

    # ------------------------------------------------------------------ views
    def view(self, q_lang: str, doc_langs: Sequence[str]) -> SettingQueries:
        """Queries of ``q_lang`` against the concatenated documents of ``doc_langs`` (see the module doc)."""
        doc_langs = list(doc_langs)
        sizes = [len(self.docs[x]) for x in doc_langs]
        offsets = np.zeros(len(doc_langs) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        q = self.queries[q_lang]
        graded = any(self.rel[x].grades is not None for x in doc_langs)
        pos_a, docs_a, lang_a, grade_a = self._gather_relevant(q, doc_langs, offsets, graded)
        n_rel = np.bincount(pos_a, minlength=len(q.ids))
        split_at = np.cumsum(n_rel)[:-1]
        all_rel = np.split(docs_a, split_at)
        all_lang = np.split(lang_a, split_at)
        all_gain = np.split(grade_a, split_at) if grade_a is not None else None
        dropped = int((n_rel == 0).sum())
        rows, rel, rel_lang, gains, merged = self._keep_rows(q, n_rel, all_rel, all_lang, all_gain)
        rows_a = np.asarray(rows, dtype=np.int64)
        qids = q.ids[rows_a] if len(rows_a) else np.zeros(0, np.int64)
        return SettingQueries(
            q_lang=q_lang,
            doc_langs=doc_langs,
            rows=rows_a,
            qids=qids,
            rel=rel,
            rel_lang=rel_lang,
            offsets=offsets,
            dropped=dropped,
            merged=merged,
            gains=gains if graded else None,
        )

    def _gather_relevant(
        self, q: LangQueries, doc_langs: list[str], offsets: np.ndarray, graded: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Every (query row, doc language, doc) triple of ``q``, sorted by row, languages in order within one.

        Array ops rather than a per-query loop, since a view is built per setting and language pair. The
        documents are indices into the pool (``offsets`` added); with ``graded``, an ungraded language's
        documents get grade 1. Returns (row, pooled doc, language index, grade or None), aligned.
        """
        pos, lang_of, docs, grade = [], [], [], []
        for i, x in enumerate(doc_langs):
            r = self.rel[x]
            starts, counts = r.indptr[q.ids], r.indptr[q.ids + 1] - r.indptr[q.ids]
            total = int(counts.sum())
            within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            at = np.repeat(starts, counts) + within
            docs.append(r.indices[at] + offsets[i])
            pos.append(np.repeat(np.arange(len(q.ids), dtype=np.int64), counts))
            lang_of.append(np.full(total, i, dtype=np.int64))
            if graded:
                grade.append(r.grades[at] if r.grades is not None else np.ones(total, dtype=np.float64))
        pos_a = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        order = np.argsort(
            pos_a, kind="stable"
        )  # languages were appended in order: stays sorted within a row
        pos_a = pos_a[order]
        docs_a = np.concatenate(docs)[order] if docs else pos_a
        lang_a = np.concatenate(lang_of)[order] if lang_of else pos_a
        grade_a = np.concatenate(grade)[order] if graded else None
        return pos_a, docs_a, lang_a, grade_a

    def _keep_rows(
        self,
        q: LangQueries,
        n_rel: np.ndarray,
        all_rel: list[np.ndarray],
        all_lang: list[np.ndarray],
        all_gain: list[np.ndarray] | None,
    ) -> tuple[list[int], list[np.ndarray], list[np.ndarray], list[np.ndarray | None], int]:
        """The query rows to score: those with a relevant document, duplicates merged when configured.

        A row without relevant documents cannot be scored (the caller counts it as dropped). With
        ``merge_duplicate_queries``, a row whose text an earlier kept row has is folded into that row, so
        the same question is scored once. Returns (rows, relevant, their languages, gains, merged count).
        """
        rows, rel, rel_lang, gains = [], [], [], []
        first_of_text: dict[str, int] = {}
        merged = 0
        for row in np.flatnonzero(n_rel).tolist():
            r, rl = all_rel[row], all_lang[row]
            g = all_gain[row] if all_gain is not None else None
            if self.merge_duplicate_queries:
                k = first_of_text.get(q.texts[row])
                if k is not None:
                    rel[k], rel_lang[k], gains[k] = _union_relevant(rel[k], rel_lang[k], gains[k], r, rl, g)
                    merged += 1
                    continue
                first_of_text[q.texts[row]] = len(rows)
            rows.append(row)
            rel.append(r)
            rel_lang.append(rl)
            gains.append(g)
        return rows, rel, rel_lang, gains, merged

    def cross_pairs(
        self,
        pairs: Sequence[Sequence[str]] | None = None,
        source: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
    ) -> list[tuple[str, str]]:
        """The cross-lingual (query, document) language pairs to run.

        ``pairs`` lists them explicitly; otherwise every ordered pair X ≠ Y of task languages, optionally
        restricted to sources ``source`` and/or targets ``target`` (e.g. ``target: en``).
        """
        where = f"benchmarks.{self.name}.cross"
        if pairs is not None:
            out = []
            for p in pairs:
                if len(p) != 2:
                    raise ConfigError(
                        f"a pair must be [query_lang, doc_lang], got {list(p)}", where=f"{where}.pairs"
                    )
                x, y = str(p[0]), str(p[1])
                for lang in (x, y):
                    if lang not in self.langs:
                        raise ConfigError(
                            f"language '{lang}' is not evaluated (langs: {self.langs})",
                            where=f"{where}.pairs",
                        )
                if x == y:
                    raise ConfigError(
                        f"[{x}, {y}] is monolingual (use the mono setting)", where=f"{where}.pairs"
                    )
                out.append((x, y))
            return list(dict.fromkeys(out))
        src = _as_list(source) or self.langs
        tgt = _as_list(target) or self.langs
        for key, group in (("source", src), ("target", tgt)):
            bad = [x for x in group if x not in self.langs]
            if bad:
                raise ConfigError(
                    f"language(s) {bad} not evaluated (langs: {self.langs})", where=f"{where}.{key}"
                )
        return [(x, y) for x in src for y in tgt if x != y]

    def summary(self) -> dict:
        """Counts for logs and reports."""
        return {
            "name": self.name,
            "langs": list(self.langs),
            "queries": {x: len(self.queries[x].ids) for x in self.langs},
            "docs": {x: len(self.docs[x]) for x in self.langs},
            **{k: v for k, v in self.meta.items() if k not in ("groups",)},
        }


def _union_relevant(
    rel: np.ndarray,
    lang: np.ndarray,
    gain: np.ndarray | None,
    more: np.ndarray,
    more_lang: np.ndarray,
    more_gain: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The union of two rows' relevant documents (sorted, each once), for merging duplicate queries.

    A document relevant to both keeps its highest grade, so merging never lowers a gain: the documents
    are ordered by grade before ``np.unique`` keeps each one's first occurrence.
    """
    both_g = np.concatenate([gain, more_gain]) if more_gain is not None else None
    cat = np.concatenate([rel, more])
    by = np.argsort(-both_g, kind="stable") if both_g is not None else np.arange(len(cat))
    both, first = np.unique(cat[by], return_index=True)
    both_lang = np.concatenate([lang, more_lang])[by][first]
    return both, both_lang, (both_g[by][first] if both_g is not None else gain)


def _as_list(x: str | Sequence[str] | None) -> list[str] | None:
    if x is None:
        return None
    if isinstance(x, str):
        return [x]
    return [str(v) for v in x]


def language_rank_distance(
    ranks: Sequence[np.ndarray],
    rel_lang: Sequence[np.ndarray],
    rel_scores: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per query: the best rank of its relevant documents in each language, then max − min over languages.

    This is the "maximum rank distance" between parallel relevant documents in different languages
    (0 = no language bias). Precisely, for a query with relevant documents ``r`` (ranks ``rank_r`` in the
    multilingual pool, languages ``lang_r``):

    1. relevant documents with *equal scores* share the best rank among them (``rel_scores`` given). The
       ranking breaks exact ties by document index, so without this step two identical vectors — the
       same answer string "2017" in German and Dutch, or a perfectly language-agnostic encoder — would
       be "10 ranks apart" merely because of where their languages sit in the pool;
    2. per language, the best (smallest) rank of its relevant documents: MKQA answers with several
       texts (a year and a full date) must not count a worse second text as language bias;
    3. ``max − min`` over the languages. NaN when fewer than two languages have a relevant document.
    """
    out = np.full(len(ranks), np.nan)
    for i, (r, rl) in enumerate(zip(ranks, rel_lang)):
        r = np.asarray(r, dtype=np.int64)
        rl = np.asarray(rl)
        langs = np.unique(rl)
        if len(r) == 0 or len(langs) < 2:
            continue
        if rel_scores is not None:
            s = np.asarray(rel_scores[i])
            r = r.copy()
            for v in np.unique(s):
                tied = s == v
                if tied.sum() > 1:
                    r[tied] = r[tied].min()
        best = np.array([r[rl == g].min() for g in langs])
        out[i] = float(best.max() - best.min())
    return out
