"""Print the global batches a training run would draw, one JSON line each.

    python -m mlir.preview_batches [train.py overrides] preview.batches=5 preview.world_size=2

Only the corpus and the sampler are built (no model, no tokenisation), so it is instant; the
sequence is exactly the one ``train.py`` with the same overrides and seed would consume.
"""

from __future__ import annotations

import json
import sys

import hydra

from mlir.errors import ConfigError, exit_on_user_error, find_mlir_error
from mlir.show_split import compose_train_config


def preview(overrides: list[str], out=sys.stdout) -> int:
    """Write the preview for ``overrides`` (train.py syntax plus ``preview.*``); returns #batches."""
    n_batches, world_size, rest = 5, 1, []
    for o in overrides:
        key, _, val = o.partition("=")
        if key == "preview.batches":
            n_batches = int(val)
        elif key == "preview.world_size":
            world_size = int(val)
        else:
            rest.append(o)
    if n_batches < 0:
        raise ConfigError("must be >= 0", where="preview.batches")
    if world_size < 1:
        raise ConfigError("must be >= 1", where="preview.world_size")
    cfg = compose_train_config(rest)
    sampler_factory = hydra.utils.instantiate(cfg.sampler)
    dm = hydra.utils.instantiate(cfg.data, sampler=sampler_factory, encoder=None, seed=cfg.seed)
    dm.prepare_corpora()
    from mlir.sampling.hybrid import preview_records

    total = (
        int(cfg.trainer.max_steps) if cfg.trainer.get("max_steps", -1) and cfg.trainer.max_steps > 0 else None
    )
    sampler = sampler_factory(
        dm.train_corpus,
        batch_size=dm.batch_size,
        seed=cfg.seed,
        world_size=world_size,
        rank=0,
        total_steps=total,
    )
    count = 0
    for rec in preview_records(sampler, dm.train_corpus, n_batches, world_size):
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        count += 1
    return count


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    try:
        preview(list(sys.argv[1:] if argv is None else argv))
    except Exception as e:
        user = find_mlir_error(e)
        if user is None:
            raise
        raise user from None


if __name__ == "__main__":
    main()
