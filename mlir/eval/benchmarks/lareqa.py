"""Types ``xquad_r`` and ``mlqa_r``: XQuAD-R / MLQA-R under the LAReQA protocol (Roy et al. 2020).

The candidates of language L are *all* sentences of all paragraphs in L (``candidates: sentence``) or each
sentence followed by its paragraph (``sentence_with_paragraph``, the LAReQA "sentence + context" input);
a question's relevant candidate in L is the sentence of L holding its answer start. In the multilingual
pool a question therefore has one relevant sentence per language (11 in XQuAD-R).

The data is split by article (``split``) before the task is built, so a held-out task has only the
questions *and* candidates of its articles. :func:`read_lareqa` is shared with the MKQA-format view
(:mod:`mlir.eval.benchmarks.lareqa_mkqa`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlir.core.errors import ConfigError
from mlir.data.xquad_r import XquadR, read_xquad_r_candidates
from mlir.eval.benchmarks.config import CANDIDATE_MODES, BenchmarkConfig
from mlir.eval.benchmarks.registry import register_type
from mlir.eval.benchmarks.split import eval_groups
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask


@register_type("xquad_r", "mlqa_r")
def load_lareqa(cfg: BenchmarkConfig) -> RetrievalTask:
    """The LAReQA task of the configured directory and articles (all languages when split)."""
    data, groups = read_lareqa(cfg)
    task = lareqa_task(data, cfg.candidates, cfg.candidate_sep, name=cfg.name)
    if groups is not None:
        task.meta["groups"] = groups
    return task


def read_lareqa(cfg: BenchmarkConfig) -> tuple[XquadR, list[str] | None]:
    """The directory's data restricted to the evaluated articles, and those articles (``None``: no split).

    With a split every language is read, as training does, so the set of groups (and the split) is the
    same whichever languages are evaluated.
    """
    data = _read_lareqa(cfg, None if cfg.split else cfg.langs)
    if not cfg.split:
        return data, None
    groups = eval_groups(cfg, sorted({g for x in data.langs for g in data[x].groups}))
    return data.restrict_groups(groups), groups


def _read_lareqa(cfg: BenchmarkConfig, langs: Sequence[str] | None) -> XquadR:
    path = _require_path(cfg)
    if cfg.download:  # the pinned LAReQA files (commit + sha256) when the directory is xquad-r/ or mlqa-r/
        from mlir.data.download import LAREQA_SHA256, ensure_lareqa

        if path.name in LAREQA_SHA256:
            ensure_lareqa(path.name, path, langs)
    return read_xquad_r_candidates(path, langs)


def _require_path(cfg: BenchmarkConfig) -> Path:
    if not cfg.path:
        raise ConfigError("no path configured", where=f"benchmarks.{cfg.name}.path")
    return Path(cfg.path).expanduser()


def lareqa_task(
    data: XquadR, candidates: str = "sentence", sep: str = " ", name: str = "xquad_r"
) -> RetrievalTask:
    """The LAReQA protocol (see the module doc) over :class:`mlir.data.xquad_r.XquadR`."""
    if candidates not in CANDIDATE_MODES:
        raise ConfigError(
            f"unknown candidates {candidates!r}; use one of {sorted(CANDIDATE_MODES)}",
            where=f"benchmarks.{name}.candidates",
        )
    mode = CANDIDATE_MODES[candidates]
    query_ids = data.ids()
    pos = {q: i for i, q in enumerate(query_ids)}
    query_groups: list[str | None] = [None] * len(query_ids)
    queries, docs, rel, doc_groups = {}, {}, {}, {}
    for lang in data.langs:
        d = data[lang]
        ids = np.asarray([pos[q] for q in d.ids], dtype=np.int64)
        queries[lang] = LangQueries(ids, list(d.questions))
        docs[lang] = d.candidate_texts(mode, sep=sep)
        doc_groups[lang] = list(d.candidate_groups)
        lists: list[list[int]] = [[] for _ in query_ids]
        for k, (qid, g) in enumerate(zip(ids.tolist(), d.groups)):
            lists[qid] = [int(d.relevant[k])]
            if query_groups[qid] is None:
                query_groups[qid] = g
        rel[lang] = Relevance.from_lists(lists)
    return RetrievalTask(
        name=name,
        langs=list(data.langs),
        query_ids=query_ids,
        queries=queries,
        docs=docs,
        rel=rel,
        query_groups=[g or "" for g in query_groups],
        doc_groups=doc_groups,
        merge_duplicate_queries=False,
        meta={"protocol": "lareqa", "candidates": candidates, "source": getattr(data, "directory", None)},
    )
