"""Evaluate a checkpoint or a Hugging Face model: ``python eval.py [overrides]`` (see conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig

import mlir.core.config  # noqa: F401  (OmegaConf resolvers used by conf/)
from mlir.cli import hydra_entry, run_main


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from mlir.eval.app import evaluate_from_config

    # a user's mistake is one line on stderr and exit code 2, never a traceback (as in train.py)
    run_main(evaluate_from_config, cfg)


if __name__ == "__main__":
    hydra_entry(main, "eval")
