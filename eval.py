"""Evaluate a checkpoint or a Hugging Face model: ``python eval.py [overrides]`` (see conf/eval.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

import mlir.config  # noqa: F401  (OmegaConf resolvers used by conf/)
from mlir.errors import find_mlir_error


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from mlir.eval.app import evaluate_from_config

    try:
        evaluate_from_config(cfg)
    except Exception as e:  # a user's mistake is one line on stderr and exit code 2, never a traceback
        user = find_mlir_error(e)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
