"""Show what a training run's data split holds: ``python -m mlir.show_split [train.py overrides]``.

Prints one JSON object ``{"fold": k, "train": {"groups": [...], "ids": [...]}, "dev": {...},
"test": {...}}``: the groups (article titles for XQuAD-R) and the parallel question ids of each part,
for the configured data and ``data.split``. Train and dev are in ``data.train_langs`` (dev is
``data.val_corpus`` when that is set); test is what the test benchmarks evaluate (every language of
the data). Only the data is read: no model.

    python -m mlir.show_split data.split.fold=2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import mlir.core.config
from mlir.core.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_train_config(overrides: list[str]) -> DictConfig:
    """The config ``train.py`` would run with these overrides (no run directory is made)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    mlir.core.config.validate(cfg)
    return cfg


def split_record(cfg: DictConfig) -> dict[str, Any]:
    """``{"fold", "train", "dev", "test"}`` of the configured data split, as the datamodule makes it.

    Why the datamodule: its ``prepare_corpora`` is what a run trains and validates on (training
    languages, ``data.val_corpus``, the checks), so this cannot drift from it. With ``data.val_corpus``
    the dev part is that corpus (``"source": "data.val_corpus"``) and training has every non-test group.
    """
    from mlir.data.splits import group_rows

    if not cfg.data.get("split"):
        raise ConfigError("no split configured: everything is training data", where="data.split")
    dm = hydra.utils.instantiate(cfg.data, sampler=None, seed=cfg.seed)
    dm.prepare_corpora()
    plan = dm.plan
    full = dm.corpus_fn()
    test = full.select(group_rows(full, plan.part("test")))
    dev = _part(dm.val_corpus, plan.part("dev"))
    if dm.val_corpus_fn is not None:
        groups = sorted(dm.val_corpus.groups) if dm.val_corpus is not None else []
        dev = {"source": "data.val_corpus", **_part(dm.val_corpus, groups)}
    return {
        "fold": plan.fold,
        "train": _part(dm.train_corpus, plan.part("train")),
        "dev": dev,
        "test": _part(test, plan.part("test")),
    }


def _part(corpus: Any, groups: list[str]) -> dict[str, Any]:
    """A part's groups and the ids of its rows (none for an absent or empty part)."""
    ids = sorted(set(corpus.texts("id", range(len(corpus))))) if corpus is not None and len(corpus) else []
    return {"groups": list(groups), "ids": ids}


def main(argv: list[str] | None = None) -> None:
    """The command line: the output, or this module's doc for ``-h`` / ``--help``."""
    from mlir.cli import module_main

    module_main(
        lambda args: print(json.dumps(split_record(compose_train_config(args)), ensure_ascii=False)),
        __doc__,
        argv,
    )


if __name__ == "__main__":
    main()
