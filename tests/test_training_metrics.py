"""Training-time metrics (torchmetrics through Lightning): what they average over, steps, kinds and ranks."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.models.module import RetrieverModule, _mean
from mlir.sampling.rule import CROSS, MONO

ROOT = Path(__file__).resolve().parents[1]


def _module(tmp_path: Path, tiny_model_dir: Path, cls: type = RetrieverModule) -> RetrieverModule:
    import hydra

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                "model=tiny_random",
                f"model.encoder.name_or_path={tiny_model_dir}",
                f"model.encoder.cache_dir={tmp_path / 'cache'}",
            ],
        )
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model, _target_=f"{cls.__module__}.{cls.__qualname__}")


def _batch(n: int, kind: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)

    def ids() -> list[int]:
        length = int(torch.randint(3, 12, (1,), generator=g))
        return torch.randint(5, 120, (length,), generator=g).tolist()

    langs = ["en"] * n
    return {
        "q_ids": [ids() for _ in range(n)],
        "p_ids": [ids() for _ in range(n)],
        "q_langs": langs,
        "p_langs": langs if kind == MONO else ["de"] * n,
        "kind": kind,
    }


# sizes differ on purpose: the means are weighted by batch size, not by batch
BATCHES = [_batch(4, MONO, 1), _batch(6, CROSS, 2), _batch(3, MONO, 3), _batch(5, CROSS, 4)]


def _loader(batches: list[dict]) -> DataLoader:
    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _losses(module: RetrieverModule, batches: list[dict]) -> list[tuple[float, float, int, str]]:
    out = []
    with torch.no_grad():
        for b in batches:
            loss, stats = module.loss_fn(*module.embed_batch(b))
            out.append((loss, stats["accuracy"], len(b["q_ids"]), b["kind"]))
    return out


def _weighted(rows) -> float:
    """sum(x_b * n_b) / sum(n_b), accumulated in float32 like Lightning's epoch means."""
    total, n = torch.tensor(0.0), 0
    for x, w in rows:
        total = total + x.float() * w
        n += w
    return float(total / n)


def test_mean_is_weighted_and_keeps_nan():
    m = _mean()
    m.update(torch.tensor(1.0), weight=3)
    m.update(torch.tensor(2.0), weight=1)
    assert float(m.compute()) == pytest.approx(1.25)  # not 1.5: the weights count
    loss = torch.tensor(float("nan"))
    m.update(loss.clone(), weight=2)
    assert torch.isnan(m.compute())  # a NaN validation loss is reported, not dropped


class _LightningTensorLogging(RetrieverModule):
    """validation_step as it was before torchmetrics: plain tensors, batch_size-weighted by Lightning."""

    def validation_step(self, batch, batch_idx):
        q, p, neg = self.embed_batch(batch)
        loss, stats = self.loss_fn(q, p, neg)
        n = len(batch["q_ids"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/accuracy", stats["accuracy"], on_epoch=True, batch_size=n, sync_dist=True)
        return loss


def test_val_loss_is_the_size_weighted_batch_mean_as_before(tmp_path, tiny_model_dir):
    module = _module(tmp_path, tiny_model_dir).eval()
    rows = _losses(module, BATCHES)
    got = _trainer().validate(module, dataloaders=_loader(BATCHES), verbose=False)[0]
    assert got["val/loss"] == pytest.approx(_weighted([(r[0], r[2]) for r in rows]), rel=1e-6)
    assert got["val/accuracy"] == pytest.approx(_weighted([(r[1], r[2]) for r in rows]), rel=1e-6)
    for kind, suffix in ((MONO, "mono"), (CROSS, "xy")):
        want = _weighted([(r[0], r[2]) for r in rows if r[3] == kind])
        assert got[f"val/loss_{suffix}"] == pytest.approx(want, rel=1e-6)
    # checkpoint selection (val/loss -> dev/val_loss_best) sees exactly the value Lightning's own
    # tensor logging gave: same batches, same weights, same float32 accumulation
    legacy = _module(tmp_path, tiny_model_dir, _LightningTensorLogging).eval()
    old = _trainer().validate(legacy, dataloaders=_loader(BATCHES), verbose=False)[0]
    assert got["val/loss"] == old["val/loss"] and got["val/accuracy"] == old["val/accuracy"]
    # a second validation starts from zero (Lightning resets logged metrics after each one)
    again = _trainer().validate(module, dataloaders=_loader(BATCHES[:1]), verbose=False)[0]
    assert again["val/loss"] == pytest.approx(float(rows[0][0]), rel=1e-6)


class _Record(L.Callback):
    def __init__(self):
        self.steps: list[tuple[torch.Tensor, int, str]] = []
        self.step_logged: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((outputs["loss"].detach(), len(batch["q_ids"]), batch["kind"]))
        self.step_logged.append(float(trainer.callback_metrics["train/loss_step"]))


def test_train_metrics_aggregate_over_steps_and_batch_kinds(tmp_path, tiny_model_dir):
    module = _module(tmp_path, tiny_model_dir)
    rec = _Record()
    trainer = _trainer(max_epochs=1, callbacks=[rec], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=_loader(BATCHES))
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert len(rec.steps) == len(BATCHES)
    # per step: that step's loss; per epoch: the size-weighted mean over the steps
    assert rec.step_logged == pytest.approx([float(s[0]) for s in rec.steps], rel=1e-6)
    assert m["train/loss_epoch"] == pytest.approx(_weighted([(s[0], s[1]) for s in rec.steps]), rel=1e-6)
    assert m["train/loss"] == m["train/loss_epoch"]
    for kind, suffix in ((MONO, "mono"), (CROSS, "xy")):
        want = _weighted([(s[0], s[1]) for s in rec.steps if s[2] == kind])
        assert m[f"train/loss_{suffix}"] == pytest.approx(want, rel=1e-6)
        assert 0.0 <= m[f"train/accuracy_{suffix}"] <= 1.0
    assert {"train/accuracy_step", "train/accuracy_epoch", "train/is_mono"} <= set(m)
    assert m["train/is_mono"] == 0.0  # the last batch is X-Y


def test_kind_without_batches_is_not_logged(tmp_path, tiny_model_dir):
    module = _module(tmp_path, tiny_model_dir)
    trainer = _trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=_loader([b for b in BATCHES if b["kind"] == MONO]))
    assert "train/loss_mono" in trainer.callback_metrics and "train/loss_xy" not in trainer.callback_metrics


def test_metric_state_is_not_in_checkpoints(tmp_path, tiny_model_dir):
    """Checkpoints keep the weights-only layout: older ones load, newer ones load in older code."""
    keys = _module(tmp_path, tiny_model_dir).state_dict().keys()
    assert not [k for k in keys if "metrics" in k]


def _ddp_worker(rank: int, world: int, init: str, q) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        epoch, step = _mean(), _mean(sync_on_step=True)
        # rank 0: slices of 3 and 1 pairs; rank 1: 2 and 2 (uneven slices, e.g. a global batch of 5)
        values = {0: [(1.0, 3), (5.0, 1)], 1: [(2.0, 2), (4.0, 2)]}[rank]
        step_values = [float(step(torch.tensor(v), weight=w)) for v, w in values]
        for v, w in values:
            epoch.update(torch.tensor(v), weight=w)
        q.put((rank, float(epoch.compute()), step_values))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_aggregate_to_the_global_weighted_mean(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    q = ctx.Queue()
    init = f"file://{tmp_path / 'pg'}"
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        procs = [ctx.Process(target=_ddp_worker, args=(r, 2, init, q)) for r in range(2)]
        for p in procs:
            p.start()
        results = dict((r, (e, s)) for r, e, s in (q.get(timeout=120) for _ in procs))
        for p in procs:
            p.join(timeout=60)
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    want = (1 * 3 + 5 * 1 + 2 * 2 + 4 * 2) / 8  # every pair of every step on every rank counts once
    for rank in (0, 1):
        assert results[rank][0] == pytest.approx(want)
        # a step's value: that global step over both ranks' slices
        assert results[rank][1] == pytest.approx([(1 * 3 + 2 * 2) / 5, (5 * 1 + 4 * 2) / 3])
