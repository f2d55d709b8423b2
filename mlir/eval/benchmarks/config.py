"""What one entry of ``eval.benchmarks`` says (``conf/benchmark/*.yaml``), checked once, before any data is read.

The keys are the same for every benchmark type, so a config error is found before a download starts;
the ``type`` must be registered (:mod:`mlir.eval.benchmarks.registry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks.registry import get_type
from mlir.eval.tasks import SETTINGS

CANDIDATE_MODES = {  # config value -> XquadRLang.candidate_texts mode
    "sentence": "sentence",
    "sentence_with_paragraph": "sentence_context",
    "paragraph": "paragraph",
}
DEFAULT_KS = (1, 5, 10, 100)
#: types whose candidates are not LAReQA sentences: their allowed ``candidates`` values, the default first
TYPE_CANDIDATES = {"jsonl": ("positive", "positive_and_negatives"), "beir": ("title_text", "text")}
#: types whose settings default to mono only (their queries are not parallel across languages)
TYPE_SETTINGS = {"beir": ["mono"]}
#: keys of one type only: key -> (type, default)
TYPE_KEYS = {"qrels_split": ("beir", "dev"), "parallel_queries": ("beir", False), "corpus": ("jsonl", None)}
#: the split keys that choose the held-out groups; a split without any of them holds out nothing
HOLD_OUT_KEYS = ("n_folds", "n_test_groups", "test_fraction", "groups")


@dataclass
class BenchmarkConfig:
    """One entry of ``eval.benchmarks`` (``conf/benchmark/*.yaml``); see that folder for the fields."""

    name: str
    type: str
    path: str | None = None
    corpus: Any = None  # type jsonl: a corpus reader (``_partial_`` config or callable), e.g. data.corpus
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
    qrels_split: str = "dev"
    parallel_queries: bool = False

    @classmethod
    def from_mapping(
        cls, name: str, cfg: Mapping[str, Any] | None, seed: int | None = None
    ) -> BenchmarkConfig:
        cfg = plain(cfg or {})
        where = f"benchmarks.{name}"
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}; known: {sorted(known)}", where=where)
        kind = cfg.get("type", name)
        get_type(kind, where=f"{where}.type")
        if kind != "mkqa" and name == "mkqa":
            raise ConfigError(
                f"a '{kind}' benchmark must not be reported as 'mkqa'; name it after its source (e.g. {kind})",
                where=where,
            )
        for key, (owner, _) in TYPE_KEYS.items():
            if cfg.get(key) is not None and kind != owner:
                raise ConfigError(f"only a type '{owner}' benchmark has this key", where=f"{where}.{key}")
        settings = _checked_settings(cfg.get("settings") or TYPE_SETTINGS.get(kind), where)
        cross = cfg.get("cross") or {}
        bad_cross = sorted(set(cross) - {"pairs", "source", "target", "pair_keys"})
        if bad_cross:
            raise ConfigError(f"unknown key(s) {bad_cross}", where=f"{where}.cross")
        ks = tuple(int(k) for k in (cfg.get("ks") or DEFAULT_KS))
        if 10 not in ks:
            ks = tuple(sorted({*ks, 10}))
        modes = TYPE_CANDIDATES.get(kind) or tuple(CANDIDATE_MODES)
        split = _checked_split(cfg.get("split"), where)
        mq = cfg.get("max_queries_per_lang")
        bench_seed = cfg.get("seed")
        out = cls(
            name=name,
            type=kind,
            path=cfg.get("path"),
            corpus=cfg.get("corpus"),
            langs=[str(x) for x in cfg["langs"]] if cfg.get("langs") else None,
            settings=settings,
            candidates=cfg.get("candidates") or modes[0],
            candidate_sep=cfg.get("candidate_sep", " "),
            cross=dict(cross),
            split=split,
            max_queries_per_lang=int(mq) if mq is not None else None,
            seed=int(bench_seed if bench_seed is not None else (seed if seed is not None else 0)),
            ks=ks,
            main_metric=cfg.get("main_metric", "ndcg@10"),
            download=bool(cfg.get("download", True)),
            qrels_split=_checked_qrels_split(cfg.get("qrels_split"), f"{where}.qrels_split"),
            parallel_queries=bool(cfg.get("parallel_queries") or False),
        )
        if kind == "beir":
            check_beir_settings(out)
        if kind == "jsonl":
            check_jsonl_source(out)
        if out.candidates not in modes:
            raise ConfigError(
                f"unknown candidates {out.candidates!r}; use one of {sorted(modes)}",
                where=f"{where}.candidates",
            )
        return out


def _checked_settings(settings: Any, where: str) -> list[str]:
    """The configured settings in canonical order (all of them when none are given)."""
    settings = settings or list(SETTINGS)
    if isinstance(settings, str):
        settings = [settings]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise ConfigError(f"unknown setting(s) {bad}; use {list(SETTINGS)}", where=f"{where}.settings")
    return [s for s in SETTINGS if s in settings]


def _checked_qrels_split(value: Any, where: str) -> str:
    """A qrels file name (``qrels/{value}.tsv``): a plain name, no path."""
    value = TYPE_KEYS["qrels_split"][1] if value is None else str(value)
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise ConfigError(f"must be a file name such as dev or test (qrels/<name>.tsv), got {value!r}", where)
    return value


def check_beir_settings(cfg: BenchmarkConfig) -> None:
    """``cross`` needs parallel queries: a BEIR query id means one question only in its own language."""
    if "cross" in cfg.settings and not cfg.parallel_queries:
        raise ConfigError(
            "cross needs parallel_queries: true (the same query _id in two languages is the same question); "
            "otherwise use settings: [mono] or [mono, multi]",
            where=f"benchmarks.{cfg.name}.settings",
        )


def check_jsonl_source(cfg: BenchmarkConfig) -> None:
    """Type ``jsonl`` reads ``path`` (a parallel JSONL file) when set, else ``corpus`` (a corpus reader).

    Why both: ``corpus`` (``data.corpus`` in ``jsonl_test`` / ``jsonl_dev``) is exactly what training
    read, whatever the reader (``data=corpora``, ``data=tevatron``), with the same ids and groups, so its
    split is training's; ``path`` names a file instead (``eval.py``, a separate test file).
    """
    where = f"benchmarks.{cfg.name}"
    if cfg.path not in (None, "") and not isinstance(cfg.path, (str, os.PathLike)):
        raise ConfigError(
            f"must be the path of a parallel JSONL file, got {cfg.path!r:.80}", where=f"{where}.path"
        )
    if cfg.path in (None, "") and cfg.corpus is None:
        raise ConfigError(
            "neither path (a parallel JSONL file) nor corpus (a corpus reader config; jsonl_test and "
            "jsonl_dev default to data.corpus) is set: set path=FILE",
            where=f"{where}.path",
        )
    if cfg.path in (None, "") and not (callable(cfg.corpus) or _is_reader_config(cfg.corpus)):
        raise ConfigError(
            f"must be a corpus reader with _target_ and _partial_: true (e.g. data.corpus), got "
            f"{cfg.corpus!r:.80}",
            where=f"{where}.corpus",
        )


def _is_reader_config(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("_target_"), str)


def _checked_split(split: Any, where: str) -> dict[str, Any] | None:
    """The split keys, refused when they hold nothing out (the evaluation would score training data)."""
    split = dict(split) if split else None
    if split is not None and all(split.get(k) is None for k in HOLD_OUT_KEYS):
        raise ConfigError(
            "chooses no held-out groups: give split.test_fraction, n_test_groups, n_folds or groups, "
            "or split=null for all of the data (is data.split null? then training used every group)",
            where=f"{where}.split",
        )
    return split


def plain(cfg: Any) -> Any:
    """A plain dict / list from an OmegaConf node (resolved), so Hydra and Python callers look alike."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg) if isinstance(cfg, Mapping) else cfg
