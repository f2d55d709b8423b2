"""Benchmarks as :class:`~mlir.eval.tasks.RetrievalTask` s: MKQA, XQuAD-R / MLQA-R, and MKQA-format records.

**MKQA** follows MTEB's ``MKQARetrieval`` (``mteb/tasks/Retrieval/multilingual/MKQARetrieval.py``, built
from ``apple/mkqa``): per language L the queries are the examples' query strings in L; the corpus of L
is the set of unique answer ``text`` strings in L; a query is (binary) relevant to the answer texts of
its example in L. Only ``text`` is used, *not* the ``aliases`` (as MTEB). As in MTEB, identical query
strings within a language are one query whose relevant answers are the union. An example is dropped
from L when its L query is missing or it has no answer text in L (``unanswerable`` / ``long_answer``);
the data reader (:func:`mlir.data.mkqa.read_mkqa`) counts these drops per language. Deviations, all
from reading through :class:`~mlir.data.mkqa.MkqaData`: (1) a text-less entry in a list that also has
texts is dropped alone, where MTEB drops the example (MKQA's text-less answer types normally come alone,
so the two agree); (2) texts are stripped of surrounding whitespace; (3) an example takes part in L only
with both a query and answers in L, so the cross setting X→Y also needs answers in X (MTEB's pair
variant needs only the X query and Y answers; MKQA's answers exist in all languages or none).

**XQuAD-R / MLQA-R** (LAReQA, Roy et al. 2020): the candidates of language L are *all* sentences of all
paragraphs in L (``candidates: sentence``) or each sentence followed by its paragraph
(``sentence_with_paragraph``, the LAReQA "sentence + context" input); a question's relevant candidate in
L is the sentence of L holding its answer start. In the multilingual pool a question therefore has one
relevant sentence per language (11 in XQuAD-R).

**MKQA-format from other parallel QA sets** (``type: xquad_r_mkqa``): XQuAD-R turned into MKQA records by
:func:`mlir.data.mkqa.xquad_r_to_mkqa_records` and run through the MKQA protocol. Its report keys carry
the benchmark name (``xquad_r_mkqa``), never ``mkqa``.

Every benchmark takes a language subset, a *group* split (articles, chosen by
:func:`mlir.data.splits.plan_split` -- what training uses -- with the same parameters as ``data.split``,
so its test part is the one training and checkpoint selection never saw) and a seeded, parallel
query subsample (``max_queries_per_lang``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlir.errors import ConfigError
from mlir.eval.tasks import SETTINGS, LangQueries, Relevance, RetrievalTask

log = logging.getLogger(__name__)

TYPES = ("mkqa", "xquad_r", "mlqa_r", "xquad_r_mkqa", "mlqa_r_mkqa")
CANDIDATE_MODES = {
    "sentence": "sentence",
    "sentence_with_paragraph": "sentence_context",
    "paragraph": "paragraph",
}
DEFAULT_KS = (1, 5, 10, 100)


# --------------------------------------------------------------------------------------------- MKQA


def mkqa_task(data: Any, langs: Sequence[str] | None = None, name: str = "mkqa") -> RetrievalTask:
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


# ----------------------------------------------------------------------------------------- XQuAD-R


def lareqa_task(
    data: Any, candidates: str = "sentence", sep: str = " ", name: str = "xquad_r"
) -> RetrievalTask:
    """The LAReQA protocol over :class:`mlir.data.xquad_r.XquadR` (see the module doc)."""
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


# -------------------------------------------------------------------------------------- configuration


@dataclass
class BenchmarkConfig:
    """One entry of ``eval.benchmarks`` (``conf/benchmark/*.yaml``); see that folder for the fields."""

    name: str
    type: str
    path: str | None = None
    langs: list[str] | None = None
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    candidates: str = "sentence"
    candidate_sep: str = " "
    cross: dict = field(default_factory=dict)
    split: dict | None = None
    max_queries_per_lang: int | None = None
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    main_metric: str = "ndcg@10"
    download: bool = True

    @classmethod
    def from_mapping(
        cls, name: str, cfg: Mapping[str, Any] | None, seed: int | None = None
    ) -> BenchmarkConfig:
        cfg = _plain(cfg or {})
        where = f"benchmarks.{name}"
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}; known: {sorted(known)}", where=where)
        kind = cfg.get("type", name)
        if kind not in TYPES:
            raise ConfigError(
                f"unknown benchmark type {kind!r}; use one of {list(TYPES)}", where=f"{where}.type"
            )
        if kind != "mkqa" and name == "mkqa":
            raise ConfigError(
                f"a '{kind}' benchmark must not be reported as 'mkqa'; name it after its source (e.g. {kind})",
                where=where,
            )
        settings = cfg.get("settings") or list(SETTINGS)
        if isinstance(settings, str):
            settings = [settings]
        bad = [s for s in settings if s not in SETTINGS]
        if bad:
            raise ConfigError(f"unknown setting(s) {bad}; use {list(SETTINGS)}", where=f"{where}.settings")
        cross = cfg.get("cross") or {}
        bad_cross = sorted(set(cross) - {"pairs", "source", "target", "pair_keys"})
        if bad_cross:
            raise ConfigError(f"unknown key(s) {bad_cross}", where=f"{where}.cross")
        ks = tuple(int(k) for k in (cfg.get("ks") or DEFAULT_KS))
        if 10 not in ks:
            ks = tuple(sorted({*ks, 10}))
        mq = cfg.get("max_queries_per_lang")
        bench_seed = cfg.get("seed")
        out = cls(
            name=name,
            type=kind,
            path=cfg.get("path"),
            langs=[str(x) for x in cfg["langs"]] if cfg.get("langs") else None,
            settings=[s for s in SETTINGS if s in settings],
            candidates=cfg.get("candidates", "sentence"),
            candidate_sep=cfg.get("candidate_sep", " "),
            cross=dict(cross),
            split=dict(cfg["split"]) if cfg.get("split") else None,
            max_queries_per_lang=int(mq) if mq is not None else None,
            seed=int(bench_seed if bench_seed is not None else (seed if seed is not None else 0)),
            ks=ks,
            main_metric=cfg.get("main_metric", "ndcg@10"),
            download=bool(cfg.get("download", True)),
        )
        if out.candidates not in CANDIDATE_MODES:
            raise ConfigError(
                f"unknown candidates {out.candidates!r}; use one of {sorted(CANDIDATE_MODES)}",
                where=f"{where}.candidates",
            )
        return out


@dataclass
class Benchmark:
    """A configured benchmark with its (language-selected, split, subsampled) task."""

    config: BenchmarkConfig
    task: RetrievalTask

    @property
    def name(self) -> str:
        return self.config.name

    def cross_pairs(self) -> list[tuple[str, str]]:
        c = self.config.cross
        return self.task.cross_pairs(c.get("pairs"), c.get("source"), c.get("target"))

    def with_max_queries(self, max_queries_per_lang: int | None, seed: int | None = None) -> Benchmark:
        """A cheaper copy for periodic evaluation (``None`` = unchanged)."""
        if max_queries_per_lang is None:
            return self
        seed = self.config.seed if seed is None else int(seed)
        return Benchmark(self.config, self.task.subsample_queries(max_queries_per_lang, seed))


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def _require_path(cfg: BenchmarkConfig) -> Path:
    if not cfg.path:
        raise ConfigError("no path configured", where=f"benchmarks.{cfg.name}.path")
    return Path(cfg.path).expanduser()


def _read_lareqa(cfg: BenchmarkConfig, langs: Sequence[str] | None):
    from mlir.data.xquad_r import read_xquad_r_candidates

    path = _require_path(cfg)
    if cfg.download:  # the pinned LAReQA files (commit + sha256) when the directory is xquad-r/ or mlqa-r/
        from mlir.data.download import LAREQA_SHA256, ensure_lareqa

        if path.name in LAREQA_SHA256:
            ensure_lareqa(path.name, path, langs)
    return read_xquad_r_candidates(path, langs)


def _read_mkqa(cfg: BenchmarkConfig):
    from mlir.data.mkqa import read_mkqa

    path = Path(cfg.path).expanduser() if cfg.path else None
    if path is None or (not path.exists() and cfg.download):
        from mlir.data.download import download_mkqa

        path = download_mkqa(path.parent if path is not None else None)
    return read_mkqa(path, langs=cfg.langs)


def _eval_groups(cfg: BenchmarkConfig, groups: Sequence[str]) -> list[str]:
    """The groups to evaluate on: ``split.groups`` as given, else one part of the training split.

    :func:`mlir.data.splits.plan_split` is what training uses: it depends only on the set of groups and
    the split keys, so the same ``split`` values as ``data.split`` give exactly the test articles of that
    run (``split.part: test``, the default), its dev articles (``dev``) or its training articles
    (``train``, to measure fit).
    """
    from mlir.data.splits import PARTS, plan_from_config

    where = f"benchmarks.{cfg.name}.split"
    split = dict(cfg.split or {})
    part = split.pop("part", "test")
    if part not in PARTS:
        raise ConfigError(f"must be one of {list(PARTS)}, got {part!r}", where=f"{where}.part")
    if "groups" in split:
        held = [str(g) for g in split.pop("groups")]
        unknown = sorted(set(held) - set(groups))
        if unknown:
            raise ConfigError(
                f"unknown group(s) {unknown[:5]} (known e.g. {sorted(groups)[:3]})", where=f"{where}.groups"
            )
        return sorted(held) if part == "test" else sorted(set(groups) - set(held))
    return plan_from_config(groups, split, where=where).part(part)


def load_benchmark(name: str, cfg: Mapping[str, Any] | BenchmarkConfig, seed: int | None = None) -> Benchmark:
    """Read the data and build the task: languages, then group split, then query subsample."""
    if not isinstance(cfg, BenchmarkConfig):
        cfg = BenchmarkConfig.from_mapping(name, cfg, seed=seed)
    t0 = time.perf_counter()
    groups = None
    if cfg.type in ("xquad_r", "mlqa_r", "xquad_r_mkqa", "mlqa_r_mkqa"):
        # with a split, read every language as training does, so the group set is the same
        data = _read_lareqa(cfg, None if cfg.split else cfg.langs)
        if cfg.split:
            qgroups = sorted({g for x in data.langs for g in data[x].groups})
            groups = _eval_groups(cfg, qgroups)
            data = data.restrict_groups(groups)
        if cfg.type.endswith("_mkqa"):
            from mlir.data.mkqa import mkqa_from_records, xquad_r_to_mkqa_records

            records = xquad_r_to_mkqa_records(data)
            task = mkqa_task(mkqa_from_records(records, source=f"{cfg.type}:{data.directory}"), name=cfg.name)
        else:
            task = lareqa_task(data, cfg.candidates, cfg.candidate_sep, name=cfg.name)
    else:
        if cfg.split:
            raise ConfigError(
                "MKQA has no article groups to split on; remove split", where=f"benchmarks.{cfg.name}.split"
            )
        task = mkqa_task(_read_mkqa(cfg), name=cfg.name)
    task = task.select_langs(cfg.langs)
    if groups is not None:
        task.meta["groups"] = groups
    task = task.subsample_queries(cfg.max_queries_per_lang, cfg.seed)
    log.info(
        "benchmark %s (%s): %d langs, %d queries, %d candidates%s, built in %.1fs",
        cfg.name,
        cfg.type,
        len(task.langs),
        sum(len(task.queries[x].ids) for x in task.langs),
        sum(len(task.docs[x]) for x in task.langs),
        f", {len(groups)} groups" if groups is not None else "",
        time.perf_counter() - t0,
    )
    return Benchmark(cfg, task)


def load_benchmarks(
    benchmarks: Mapping[str, Any] | Sequence[Benchmark], seed: int | None = None
) -> list[Benchmark]:
    """Build every configured benchmark (``eval.benchmarks``: name -> config); Benchmarks pass through."""
    if isinstance(benchmarks, Sequence) and not isinstance(benchmarks, str):
        if all(isinstance(b, Benchmark) for b in benchmarks):
            return list(benchmarks)
        raise ConfigError("benchmarks must be a mapping name -> config", where="eval.benchmarks")
    out = []
    for name, cfg in _plain(benchmarks).items():
        if cfg is None:  # `~eval.benchmarks.x` or `x: null` disables one
            continue
        out.append(cfg if isinstance(cfg, Benchmark) else load_benchmark(str(name), cfg, seed=seed))
    return out
