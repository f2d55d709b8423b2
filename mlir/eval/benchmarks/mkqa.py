"""Type ``mkqa``: MKQA under the protocol of MTEB's ``MKQARetrieval``.

MTEB's task (``mteb/tasks/Retrieval/multilingual/MKQARetrieval.py``, built from ``apple/mkqa``): per
language L the queries are the examples' query strings in L; the corpus of L is the set of unique answer
``text`` strings in L; a query is (binary) relevant to the answer texts of its example in L. Only ``text``
is used, *not* the ``aliases`` (as MTEB). As in MTEB, identical query strings within a language are one
query whose relevant answers are the union. An example is dropped from L when its L query is missing or it
has no answer text in L (``unanswerable`` / ``long_answer``); the data reader
(:func:`mlir.data.mkqa.read_mkqa`) counts these drops per language. Deviations, all from reading through
:class:`~mlir.data.mkqa.MkqaData`: (1) a text-less entry in a list that also has texts is dropped alone,
where MTEB drops the example (MKQA's text-less answer types normally come alone, so the two agree);
(2) texts are stripped of surrounding whitespace; (3) an example takes part in L only with both a query and
answers in L, so the cross setting X→Y also needs answers in X (MTEB's pair variant needs only the X query
and Y answers; MKQA's answers exist in all languages or none).

:func:`mkqa_task` also serves MKQA-format records from other sets (:mod:`mlir.eval.benchmarks.lareqa_mkqa`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlir.core.errors import ConfigError
from mlir.data.mkqa import MkqaData, read_mkqa
from mlir.eval.benchmarks.config import BenchmarkConfig
from mlir.eval.benchmarks.registry import register_type
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask


@register_type("mkqa")
def load_mkqa(cfg: BenchmarkConfig) -> RetrievalTask:
    """The MKQA task of ``path`` (downloaded into its folder when missing and ``download`` is true)."""
    if cfg.split:
        raise ConfigError(
            "MKQA has no article groups to split on; remove split", where=f"benchmarks.{cfg.name}.split"
        )
    path = Path(cfg.path).expanduser() if cfg.path else None
    if path is None or (not path.exists() and cfg.download):
        from mlir.data.download import download_mkqa

        path = download_mkqa(path.parent if path is not None else None)
    return mkqa_task(read_mkqa(path, langs=cfg.langs), name=cfg.name)


def mkqa_task(data: MkqaData, langs: Sequence[str] | None = None, name: str = "mkqa") -> RetrievalTask:
    """The MKQA protocol (see the module doc) over :class:`mlir.data.mkqa.MkqaData`.

    ``MkqaData`` already holds, per example, only the languages with a query and answer texts (the
    drops are counted in ``data.dropped`` and copied to ``task.meta["skipped"]``); here every language
    gets its unique answer texts as corpus and each example's texts as its relevant documents.
    """
    langs = [str(x) for x in (langs if langs is not None else data.langs)]
    unknown = [x for x in langs if x not in data.langs]
    if unknown:
        raise ConfigError(
            f"unknown language(s) {unknown}; {name} has {data.langs}", where=f"benchmarks.{name}.langs"
        )
    examples = data.examples
    query_ids = [e.example_id for e in examples]
    queries, docs, rel = {}, {}, {}
    for lang in langs:
        ids, texts = [], []
        doc_index: dict[str, int] = {}
        lists: list[list[int]] = []
        for i, e in enumerate(examples):
            row: list[int] = []
            answers = e.answers.get(lang)
            if answers:
                for t in dict.fromkeys(a.text for a in answers):
                    j = doc_index.get(t)
                    if j is None:
                        j = doc_index[t] = len(doc_index)
                    row.append(j)
            q = e.queries.get(lang)
            if q is not None:
                ids.append(i)
                texts.append(q)
            lists.append(row)
        queries[lang] = LangQueries(np.asarray(ids, dtype=np.int64), texts)
        docs[lang] = list(doc_index)
        rel[lang] = Relevance.from_lists(lists)
    return RetrievalTask(
        name=name,
        langs=langs,
        query_ids=query_ids,
        queries=queries,
        docs=docs,
        rel=rel,
        merge_duplicate_queries=True,
        meta={
            "protocol": "mkqa",
            "source": getattr(data, "source", None),
            "examples": len(examples),
            "kept": {x: data.kept.get(x) for x in langs},
            "skipped": {x: dict(data.dropped.get(x, {})) for x in langs},
        },
    )
