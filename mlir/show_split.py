"""Show what a training run's data split holds: ``python -m mlir.show_split [train.py overrides]``.

Prints one JSON object ``{"fold": k, "train": {"groups": [...], "ids": [...]}, "dev": {...},
"test": {...}}``: the groups (article titles for XQuAD-R) and the parallel question ids of each part,
for the configured data and ``data.split``. Train and dev are in ``data.train_langs``; test is what
the test benchmarks evaluate (every language of the data). Only the corpus is read: no model.

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
    """``{"fold", "train", "dev", "test"}`` of the configured data split."""
    from mlir.data.splits import PARTS, group_rows, plan_from_config

    if not cfg.data.get("split"):
        raise ConfigError("no split configured: everything is training data", where="data.split")
    corpus = hydra.utils.instantiate(cfg.data.corpus)()
    plan = plan_from_config(corpus.groups, cfg.data.split)
    train_langs = list(cfg.data.get("train_langs") or corpus.langs)
    record: dict[str, Any] = {"fold": plan.fold}
    for part in PARTS:
        rows = group_rows(corpus, plan.part(part), None if part == "test" else train_langs)
        ids = sorted(set(corpus.texts("id", rows))) if len(rows) else []
        record[part] = {"groups": plan.part(part), "ids": ids}
    return record


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
