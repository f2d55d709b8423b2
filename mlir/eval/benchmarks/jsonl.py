"""Type ``jsonl``: your own parallel corpus (``data=jsonl``'s format, or any corpus reader) as a benchmark.

Why: ``python train.py data=... `` holds out test groups of its corpus (``data.split``); this type
evaluates exactly those groups (``conf/benchmark/jsonl_test.yaml``: ``corpus`` is ``data.corpus``, the
reader training used, and the split keys are ``data.split``, so :func:`mlir.data.splits.plan_split`
gives the same groups), so a user's own data is scored on its own held-out part, never on a benchmark
it was not asked for. Through the reader, ``data=corpora`` is split over its namespaced groups and
``data=tevatron`` over its records' ids, exactly as in training. ``path`` (read with
:func:`mlir.data.jsonl.read_jsonl`) names a parallel JSONL file instead, and wins when set (``eval.py``
has no ``data.corpus``). With ``split: null`` the whole corpus is evaluated (a separate test file).

The protocol is LAReQA's (as ``xquad_r``), with the file's rows in place of sentences:

* queries of language L: the ``query`` of every row in L; the lines with the same ``id`` are one
  parallel query id (the same question in every language it is written in);
* candidates of L: the distinct ``positive`` texts of the evaluated rows in L (``candidates: positive``),
  or those plus the rows' ``negatives`` in L (``positive_and_negatives``: harder, closer to a real
  index). One text is one candidate, whatever the number of rows that share it;
* relevance: query id q is relevant, in document language L, to the ``positive`` of its row (q, L) only.
  An id without a row in L has nothing relevant in L: its cross queries to L are left out (counted as
  dropped), as are queries whose ids exist in one language only from the rank distance.

So ``mono`` is L -> L, ``cross`` X -> Y and ``multi`` X -> the pool of every language, and
``multi/rank_distance`` is the language bias between the translations of one positive.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks.config import BenchmarkConfig, check_jsonl_source
from mlir.eval.benchmarks.registry import register_type
from mlir.eval.benchmarks.split import eval_groups
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask

if TYPE_CHECKING:
    from mlir.data.corpus import ParallelCorpus

log = logging.getLogger("mlir.eval.benchmarks")

#: fewer parallel ids than this in an evaluated part gets a warning: its scores are noise
FEW_IDS = 100


@register_type("jsonl")
def load_jsonl(cfg: BenchmarkConfig) -> RetrievalTask:
    """The task of the configured corpus's evaluated groups (all of them when ``split`` is null)."""
    from mlir.data.jsonl import normalize_lang
    from mlir.data.splits import group_rows

    where = f"benchmarks.{cfg.name}"
    corpus, source = read_source(cfg)
    if cfg.langs:  # config languages are compared in the reader's BCP-47 case ("EN" is "en")
        cfg.langs = [normalize_lang(str(x)) for x in cfg.langs]
    groups = None
    rows = np.arange(len(corpus), dtype=np.int64)
    part = (cfg.split or {}).get("part", "test")
    if cfg.split:
        groups = eval_groups(cfg, corpus.groups)
        rows = group_rows(corpus, groups)
        if not len(rows):
            raise ConfigError(
                f"the {part} part of {source} is empty (data.split gives it no groups)",
                where=f"{where}.split",
            )
    # "sentence" is BenchmarkConfig's LAReQA default (a Python-built config): here a row's positive
    candidates = "positive" if cfg.candidates == "sentence" else cfg.candidates
    task = jsonl_task(corpus, rows, candidates, name=cfg.name)
    task.meta["source"] = source
    if groups is not None:
        task.meta["groups"] = groups
        n_ids = len(task.query_ids)
        if n_ids < FEW_IDS:
            log.warning(
                "benchmark %s: the %s part of %s has only %d ids in %d groups; its scores are noisy "
                "(hold out more with data.split.n_%s_groups or data.split.%s_fraction)",
                cfg.name,
                part,
                source,
                n_ids,
                len(groups),
                part,
                part,
            )
    return task


def read_source(cfg: BenchmarkConfig) -> tuple[ParallelCorpus, str]:
    """The corpus to evaluate and a name for messages: ``path`` when set, else the ``corpus`` reader.

    ``corpus`` is a reader config with ``_partial_: true`` (``data.corpus`` itself in ``jsonl_test``),
    or the callable Hydra made of it (a benchmark config instantiated recursively, as the retrieval
    callback's is): called once, it gives exactly the corpus training read, ids and groups included.
    """
    from mlir.data.corpus import ParallelCorpus

    check_jsonl_source(cfg)
    if cfg.path not in (None, ""):
        from mlir.data.jsonl import read_jsonl

        return read_jsonl(Path(cfg.path).expanduser()), str(cfg.path)
    reader = cfg.corpus
    if not callable(reader):
        import hydra.utils

        reader = hydra.utils.instantiate(reader)
    corpus = reader() if callable(reader) else reader  # a config without _partial_ is read at once
    if not isinstance(corpus, ParallelCorpus):
        raise ConfigError(
            f"the reader returned {type(corpus).__name__}, not a corpus (is _partial_: true set?)",
            where=f"benchmarks.{cfg.name}.corpus",
        )
    return corpus, f"corpus '{corpus.name}'"


def jsonl_task(corpus, rows: np.ndarray, candidates: str = "positive", name: str = "jsonl") -> RetrievalTask:
    """The retrieval task of some rows of a :class:`~mlir.data.corpus.ParallelCorpus` (see the module doc)."""
    if candidates not in ("positive", "positive_and_negatives"):
        raise ConfigError(
            f"unknown candidates {candidates!r}; use 'positive' or 'positive_and_negatives'",
            where=f"benchmarks.{name}.candidates",
        )
    cols = ["id", "lang", "query", "positive", "group"] + (["negatives"] if candidates != "positive" else [])
    table = corpus.table.select(np.asarray(rows, dtype=np.int64)).with_format("arrow")[:]
    data = {c: table.column(c).to_pylist() for c in cols}
    query_ids = sorted(set(data["id"]))
    qpos = {q: i for i, q in enumerate(query_ids)}
    langs = sorted(set(data["lang"]))
    query_groups = [""] * len(query_ids)
    texts: dict[str, dict[str, int]] = {x: {} for x in langs}  # per language: text -> candidate index
    doc_groups: dict[str, list[str]] = {x: [] for x in langs}
    q_ids: dict[str, list[int]] = {x: [] for x in langs}
    q_texts: dict[str, list[str]] = {x: [] for x in langs}
    rel: dict[str, list[list[int]]] = {x: [[] for _ in query_ids] for x in langs}

    def candidate(lang: str, text: str, group: str) -> int:
        index = texts[lang].setdefault(text, len(texts[lang]))
        if index == len(doc_groups[lang]):
            doc_groups[lang].append(group)
        return index

    for pid, lang, query, positive, group in zip(
        data["id"], data["lang"], data["query"], data["positive"], data["group"]
    ):
        q = qpos[pid]
        query_groups[q] = group
        q_ids[lang].append(q)
        q_texts[lang].append(query)
        rel[lang][q] = [candidate(lang, positive, group)]
    if "negatives" in data:  # after every positive: a text that is some row's positive stays relevant to it
        for lang, negatives, group in zip(data["lang"], data["negatives"], data["group"]):
            for text in negatives or []:
                candidate(lang, text, group)
    return RetrievalTask(
        name=name,
        langs=langs,
        query_ids=query_ids,
        queries={x: LangQueries(np.asarray(q_ids[x], dtype=np.int64), q_texts[x]) for x in langs},
        docs={x: list(texts[x]) for x in langs},
        rel={x: Relevance.from_lists(rel[x]) for x in langs},
        query_groups=query_groups,
        doc_groups=doc_groups,
        merge_duplicate_queries=False,
        meta={"protocol": "jsonl", "candidates": candidates},
    )
