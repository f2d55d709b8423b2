"""Train a multilingual dual encoder: ``python train.py [overrides]`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

import mlir.core.config  # noqa: F401  (OmegaConf resolvers used by conf/)
from mlir.cli import hydra_entry, run_main
from mlir.training.pipeline import optimized_value, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_main(train, cfg)
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    hydra_entry(main, "train")
