"""``eval.py``'s body: build the encoder (HF model or train.py checkpoint), evaluate, print, write JSON."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from mlir.core.errors import ConfigError

log = logging.getLogger(__name__)


def _run_config(ckpt: Path) -> DictConfig | None:
    """The ``.hydra/config.yaml`` of the train.py run a checkpoint belongs to (``RUN/checkpoints/x.ckpt``)."""
    for parent in list(ckpt.resolve().parents)[:3]:
        f = parent / ".hydra" / "config.yaml"
        if f.is_file():
            cfg = OmegaConf.load(f)
            return cfg if isinstance(cfg, DictConfig) and "model" in cfg else None
    return None


def eval_checkpoint(ckpt: Any) -> Path:
    """The checkpoint file ``ckpt_path`` names; a train.py run directory means its best checkpoint.

    Why: ``train.py ckpt_path=<run dir>`` accepts a run directory, so ``eval.py`` does too. For
    evaluation the best checkpoint by dev loss is wanted: the newest ``step_*.ckpt`` that
    ModelCheckpoint kept, else ``last.ckpt`` (the log says which).
    """
    path = Path(str(ckpt)).expanduser()
    if path.is_dir():
        for d in (path / "checkpoints", path):
            best = sorted(d.glob("step_*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name))
            if best:
                log.info("ckpt_path=%s: evaluating the best checkpoint %s", path, best[-1].name)
                return best[-1]
            if (d / "last.ckpt").is_file():
                log.info("ckpt_path=%s: no step_*.ckpt, evaluating %s", path, d / "last.ckpt")
                return d / "last.ckpt"
        raise ConfigError(f"no step_*.ckpt or last.ckpt in '{path}' or its checkpoints/", where="ckpt_path")
    if not path.is_file():
        raise ConfigError(f"checkpoint '{ckpt}' does not exist", where="ckpt_path")
    return path


def build_encoder(cfg: DictConfig) -> tuple[Any, str]:
    """The encoder to evaluate and a description of where its weights come from.

    With ``ckpt_path`` the whole ``RetrieverModule`` is instantiated from the model config (the
    checkpoint's own run config when it has one and ``eval.model_from_run``) and its weights are loaded
    with ``torch.load(weights_only=True)`` (:func:`mlir.training.checkpoint.load_module_weights`): a checkpoint
    cannot run code, and a model/config mismatch is one readable error. Without it, ``model.encoder`` is
    instantiated directly (a hub name, a local HF directory, or the offline/tiny aliases).
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null"):
        if "encoder" not in cfg.model:
            raise ConfigError("no model.encoder configured", where="model")
        return hydra.utils.instantiate(cfg.model.encoder), str(cfg.model.encoder.get("name_or_path"))
    path = eval_checkpoint(ckpt)
    model_cfg = cfg.model
    if cfg.eval.get("model_from_run", True):
        run_cfg = _run_config(path)
        if run_cfg is not None:
            log.info("model config taken from the checkpoint's run (%s)", path.parent.parent / ".hydra")
            model_cfg = run_cfg.model
    from mlir.training.checkpoint import load_module_weights

    module = hydra.utils.instantiate(model_cfg)
    load_module_weights(module, path)
    return module.encoder, str(path)


def restrict_to_run_split(cfg: DictConfig) -> str | None:
    """Evaluate a run's checkpoint on the articles that run never saw, unless a split is given.

    Why: ``eval.py ckpt_path=RUN/checkpoints/x.ckpt`` with the plain ``xquad_r`` benchmark would score
    all 48 XQuAD-R articles, 32 of which the run trained on. When the checkpoint's run trained on
    XQuAD-R with a ``data.split``, every XQuAD-R benchmark without its own ``split`` gets that split
    (its test part). Returns a line for the printed table's title, or ``None`` when nothing changed.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null") or not cfg.eval.get("model_from_run", True):
        return None
    run_cfg = _run_config(Path(str(ckpt)).expanduser())
    split = OmegaConf.select(run_cfg, "data.split") if run_cfg is not None else None
    target = str(OmegaConf.select(run_cfg, "data.corpus._target_", default="")) if run_cfg is not None else ""
    if not split or not target.endswith("xquad_r_corpus"):
        return None
    changed = []
    for name, bench in cfg.eval.benchmarks.items():
        if bench is not None and str(bench.get("type", "")).startswith("xquad_r") and not bench.get("split"):
            bench.split = OmegaConf.to_container(split, resolve=True)
            changed.append(str(name))
    if not changed:
        return None
    fold = OmegaConf.select(run_cfg, "data.split.fold", default=None)
    return (
        f"{', '.join(changed)}: the test articles of the checkpoint's run"
        + (f" (fold {fold})" if fold is not None else "")
        + "; set eval.benchmarks.<name>.split to override"
    )


SELECTING = ("n_folds", "n_test_groups", "test_fraction", "groups")  # split keys that choose groups


def restrict_to_run_data(cfg: DictConfig) -> str | None:
    """A ``jsonl`` benchmark without data evaluates the held-out groups of the checkpoint's run data.

    Why: a run on ``data=jsonl``, ``data=corpora`` or ``data=tevatron`` holds out test groups of its
    own corpus; in ``train.py`` ``jsonl_test`` reads them through ``data.corpus``, which ``eval.py`` does
    not have. With ``ckpt_path`` from such a run, every ``jsonl`` benchmark with neither ``path`` nor
    ``corpus`` gets the run's ``data.corpus`` and, unless its ``split`` already chooses groups, the
    run's ``data.split`` (keeping its ``part``), so it scores exactly the groups that run never saw,
    whatever reader the run used. Returns a line for the printed table's title, or ``None``.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null") or not cfg.eval.get("model_from_run", True):
        return None
    run_cfg = _run_config(Path(str(ckpt)).expanduser())
    corpus = OmegaConf.select(run_cfg, "data.corpus") if run_cfg is not None else None
    if corpus is None:
        return None
    split = OmegaConf.select(run_cfg, "data.split")
    changed = []
    for name, bench in cfg.eval.benchmarks.items():
        if bench is None or bench.get("type") != "jsonl" or bench.get("path") or bench.get("corpus"):
            continue
        with open_dict(bench):
            bench.corpus = OmegaConf.to_container(corpus, resolve=True)
            own = bench.get("split") or {}
            if split is not None and not any(own.get(k) is not None for k in SELECTING):
                bench.split = {**OmegaConf.to_container(split, resolve=True), "part": own.get("part", "test")}
        changed.append(str(name))
    if not changed:
        return None
    return f"{', '.join(changed)}: the checkpoint's run data ({corpus.get('_target_')}) and its split"


def evaluate_from_config(cfg: DictConfig) -> dict[str, float]:
    """Evaluate per ``conf/eval.yaml``; prints the table and writes ``eval.output_file``."""
    benchmarks = cfg.get("eval", {}).get("benchmarks")
    if not benchmarks:
        raise ConfigError(
            "no benchmarks configured (add one: +benchmark@eval.benchmarks.xquad_r=xquad_r)",
            where="eval.benchmarks",
        )
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "", "null"):  # before the slow imports; a run directory -> its checkpoint
        with open_dict(cfg):
            cfg.ckpt_path = str(eval_checkpoint(ckpt))

    from mlir.core.atomic import write_json
    from mlir.eval.metric_table import format_table
    from mlir.eval.progress import progress_option
    from mlir.eval.runner import evaluate, evaluate_options
    from mlir.eval.search import resolve_device

    options = evaluate_options(cfg)  # a bad value fails before the model loads
    progress = progress_option(cfg)  # eval.progress: bars on stderr (auto: only at a terminal)

    device = resolve_device(cfg.eval.get("device", "auto"))
    split_note = "; ".join(n for n in (restrict_to_run_split(cfg), restrict_to_run_data(cfg)) if n)
    if split_note:
        log.info("evaluating on %s", split_note)
    t0 = time.perf_counter()
    encoder, source = build_encoder(cfg)
    if hasattr(encoder, "to"):
        encoder = encoder.to(device)
    log.info("evaluating %s on %s (model loaded in %.1fs)", source, device, time.perf_counter() - t0)
    details: dict[str, Any] = {}
    metrics = evaluate(
        encoder,
        benchmarks,
        batch_size=cfg.eval.get("batch_size"),
        device=device,
        seed=cfg.get("seed"),
        details=details,
        progress=progress,
        **options,
    )
    seconds = time.perf_counter() - t0
    columns = [tuple(c) for c in cfg.eval.get("table_columns") or []] or None
    table = format_table(metrics, columns=columns) if columns else format_table(metrics)
    if split_note:
        print(f"Evaluated on {split_note}", flush=True)
    print(table, flush=True)
    print(f"\n{source}: {len(metrics)} metrics in {seconds:.1f}s", flush=True)
    out = cfg.eval.get("output_file")
    if out:
        write_json(out, metrics)
        print(f"metrics written to {out}", flush=True)
    if options["runs"] is not None:
        print(f"TREC runs and qrels written to {options['runs'].dir}", flush=True)
    if cfg.eval.get("details_file"):
        write_json(
            cfg.eval.details_file, {"source": source, "seconds": round(seconds, 3), "benchmarks": details}
        )
    return metrics
