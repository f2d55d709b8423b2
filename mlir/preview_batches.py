"""Print the global batches a training run would draw, one JSON line each.

    python -m mlir.preview_batches [train.py overrides] preview.batches=5 preview.world_size=2

Only the corpus and the sampler are built (no model, no tokenisation), so it is instant; the
sampler is the DataModule's training sampler, built as ``train.py`` builds it, so the sequence is
exactly the one ``train.py`` with the same overrides and seed would consume.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import hydra

from mlir.core.errors import ConfigError
from mlir.sampling.options import per_rank
from mlir.show_split import compose_train_config


def preview_records(
    sampler: Any, corpus: Any, n_batches: int, world_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """The first ``n_batches`` global batches from the sampler's current epoch, as JSON-ready dicts.

    Each record is ``{"step": i, "kind": "mono"|"cross", "pairs": [{"id", "q_lang", "p_lang", "rank"}]}``;
    ``rank`` is the DDP rank whose slice holds the pair under ``world_size`` (default: the sampler's).
    Parallel id strings come from ``corpus.texts("id", rows)`` when available, else the integer pid.
    """
    per = per_rank(sampler.batch_size, int(world_size) if world_size is not None else sampler.world_size)
    codes = sampler.corpus_langs
    texts = getattr(corpus, "texts", None)
    spe = sampler.steps_per_epoch
    for i in range(int(n_batches)):
        gb = sampler.global_batch(sampler.epoch + i // spe, i % spe)
        ids = texts("id", gb.q_rows) if texts is not None else [str(x) for x in gb.pids.tolist()]
        pairs = [
            {"id": str(pid), "q_lang": codes[q], "p_lang": codes[p], "rank": j // per}
            for j, (pid, q, p) in enumerate(zip(ids, gb.q_lang.tolist(), gb.p_lang.tolist()))
        ]
        yield {"step": i, "kind": gb.kind, "pairs": pairs}


def preview(overrides: list[str], out: IO[str] = sys.stdout) -> int:
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
    dm = hydra.utils.instantiate(
        cfg.data, sampler=hydra.utils.instantiate(cfg.sampler), encoder=None, seed=cfg.seed
    )
    sampler = dm.train_sampler(cfg.trainer)
    count = 0
    for rec in preview_records(sampler, dm.train_corpus, n_batches, world_size):
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    """The command line: the output, or this module's doc for ``-h`` / ``--help``."""
    from mlir.cli import module_main

    module_main(preview, __doc__, argv)


if __name__ == "__main__":
    main()
