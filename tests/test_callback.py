"""RetrievalEvalCallback inside short Lightning fits with a tiny random model."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from _eval_data import make_xquad_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from mlir.eval.callback import RetrievalEvalCallback
from mlir.models.dual_encoder import DualEncoder
from mlir.models.module import RetrieverModule

LANGS = ("en", "de", "zh")
MONITOR = "eval/toy/avg/ndcg@10"


@pytest.fixture(scope="module")
def xquad_dir(tmp_path_factory):
    return make_xquad_dir(tmp_path_factory.mktemp("xq") / "xquad-r", langs=LANGS, n_articles=2)


def _benchmarks(xquad_dir, **extra):
    return {"toy": {"type": "xquad_r", "path": str(xquad_dir), "download": False, **extra}}


def _module(tiny_model_dir) -> RetrieverModule:
    enc = DualEncoder(str(tiny_model_dir), query_max_length=32, passage_max_length=64, token_budget=2048)
    return RetrieverModule(encoder=enc, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))


def _loader(module: RetrieverModule, n: int):
    enc = module.encoder
    batches = [
        {
            "q_ids": enc.tokenize([f"question {i} a", f"question {i} b"], "query"),
            "p_ids": enc.tokenize([f"passage {i} a", f"passage {i} b"], "passage"),
        }
        for i in range(n)
    ]
    return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


def _trainer(tmp_path, callbacks, **kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    args.update(kw)
    return L.Trainer(**args)


def test_fit_evaluates_every_n_steps_logs_monitor_and_writes_json(tmp_path, tiny_model_dir, xquad_dir):
    module = _module(tiny_model_dir)
    cb = RetrievalEvalCallback(_benchmarks(xquad_dir, max_queries_per_lang=4), every_n_steps=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=MONITOR, mode="max", save_top_k=1)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = _trainer(tmp_path, [cb, ckpt], max_epochs=1, limit_val_batches=1, logger=logger)
    trainer.fit(module, train_dataloaders=_loader(module, 4), val_dataloaders=_loader(module, 1))

    assert cb.monitor_key == MONITOR
    out = Path(logger.log_dir) / "retrieval_eval"
    # steps 2 and 4; the validation/train epoch ends at step 4 do not evaluate the same weights again
    assert sorted(p.name for p in out.glob("step_*.json")) == ["step_0000002.json", "step_0000004.json"]
    latest = json.loads((out / "latest.json").read_text())
    assert latest["step"] == 4
    metrics = latest["metrics"]
    for setting in ("mono", "cross", "multi"):
        for lang in LANGS:
            assert f"toy/{setting}/ndcg@10/{lang}" in metrics
    assert f"toy/multi/rank_distance/{LANGS[0]}" in metrics
    assert latest["details"]["toy"]["task"]["queries"] == {lang: 4 for lang in LANGS}

    value = metrics["toy/avg/ndcg@10"]
    assert float(trainer.callback_metrics[MONITOR]) == pytest.approx(value)
    assert float(ckpt.best_model_score) == pytest.approx(value)
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    logged = [r for r in rows if r.get("eval/toy/mono/ndcg@10")]
    assert [int(r["step"]) for r in logged] == [2, 4]
    assert "eval/toy/cross/map/de" in rows[0]


def test_fast_dev_run_writes_json_at_epoch_end(tmp_path, tiny_model_dir, xquad_dir):
    module = _module(tiny_model_dir)
    cb = RetrievalEvalCallback(_benchmarks(xquad_dir, langs=["de", "zh"], settings=["mono", "multi"]))
    trainer = _trainer(tmp_path, [cb], fast_dev_run=2)
    trainer.fit(module, train_dataloaders=_loader(module, 3), val_dataloaders=_loader(module, 1))
    latest = json.loads((tmp_path / "retrieval_eval" / "latest.json").read_text())
    assert latest["hook"] == "validation_epoch_end"
    assert set(latest["metrics"]) >= {"toy/mono/map/de", "toy/multi/ndcg@10/zh", "toy/avg/ndcg@10"}
    assert not any("/cross/" in k for k in latest["metrics"])
    assert MONITOR in trainer.callback_metrics


def test_run_restores_train_and_eval_modes(tmp_path, tiny_model_dir, xquad_dir):
    module = _module(tiny_model_dir)
    module.train()
    frozen = module.encoder.query_model.embeddings
    frozen.eval()  # a submodule deliberately kept in eval mode must stay so
    before = {name: m.training for name, m in module.named_modules()}
    cb = RetrievalEvalCallback(_benchmarks(xquad_dir, settings=["mono"]), output_dir=str(tmp_path))
    trainer = _trainer(tmp_path, [cb], max_steps=1, logger=False)
    trainer.strategy.connect(module)
    seen = {}
    real = module.encoder.encode

    def spy(*a, **kw):
        seen["training"] = module.training
        return real(*a, **kw)

    module.encoder.encode = spy
    metrics = cb.run(trainer, module)
    assert seen["training"] is False
    assert {name: m.training for name, m in module.named_modules()} == before
    assert metrics["toy/mono/ndcg@10"] > 0
    assert (tmp_path / "retrieval_eval" / "step_0000000.json").is_file()


class WandbLogger(Logger):
    """Stands in for lightning's WandbLogger (the callback checks the class name); records the calls."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, dict]] = []

    name = "wandb"
    version = "0"

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", {"metrics": metrics, "step": step}))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        import wandb

        wandb.Table(columns=columns, data=data)  # the real constructor accepts our rows
        self.calls.append(("table", {"key": key, "columns": columns, "data": data}))

    def log_image(self, key, images, step=None, **kwargs):
        import wandb

        for im in images:
            wandb.Image(im)
        self.calls.append(("image", {"key": key, "n": len(images)}))


def test_wandb_table_and_heatmap(tmp_path, tiny_model_dir, xquad_dir):
    module = _module(tiny_model_dir)
    cb = RetrievalEvalCallback(_benchmarks(xquad_dir, max_queries_per_lang=4), output_dir=str(tmp_path))
    lg = WandbLogger()
    trainer = _trainer(tmp_path, [cb], max_steps=1, logger=lg)
    trainer.strategy.connect(module)
    cb.run(trainer, module)
    kinds = [c[0] for c in lg.calls]
    assert kinds == ["metrics", "table", "image"]
    table = lg.calls[1][1]
    assert table["key"] == "eval/toy/per_language"
    assert table["columns"][:2] == ["lang", "setting"]
    assert {(r[0], r[1]) for r in table["data"]} >= {
        (lang, s) for lang in LANGS for s in ("mono", "cross", "multi")
    }
    assert lg.calls[2][1]["key"] == "eval/toy/heatmap"


def test_callback_config_composes_with_train_yaml():
    import hydra
    from hydra import compose, initialize_config_dir

    import mlir.core.config  # noqa: F401  (resolvers)

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["callbacks=[default,retrieval_eval]", "data.split.seed=5"]
        )
    assert "model_checkpoint" in cfg.callbacks
    cb = hydra.utils.instantiate(cfg.callbacks.retrieval_eval)
    assert isinstance(cb, RetrievalEvalCallback)
    assert cb.prefix == "dev/" and cb.monitor_key is None  # -> dev/xquad_r_dev/avg/ndcg@10 at setup
    bench = dict(cb.benchmarks_cfg)["xquad_r_dev"]  # curves come from the dev articles, never test
    assert bench["split"]["seed"] == 5 and bench["split"]["part"] == "dev"  # they follow data.split
