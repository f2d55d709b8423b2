"""The LightningModule: a DualEncoder trained with InfoNCE on sampler-built batches.

Batches arrive as unpadded token-id lists (see ``mlir.data.datamodule``); the encoder pads each
length-sorted sub-batch to its own width. The optimiser is AdamW with linear warmup and decay, no
weight decay on biases and LayerNorms, and the fused CUDA kernel when the parameters live on a GPU.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from mlir.errors import ConfigError
from mlir.models.dual_encoder import DualEncoder
from mlir.models.loss import InfoNCELoss


class RetrieverModule(L.LightningModule):
    """Train a :class:`DualEncoder`.

    Args:
        encoder: the dual encoder (instantiated from ``model.encoder``).
        loss: the contrastive loss (``model.loss``).
        optimizer: partial ``torch.optim`` constructor taking the parameter groups (``model.optimizer``).
        warmup_ratio / warmup_steps: linear warmup length (steps win over ratio); then linear decay to 0.
        scheduler: ``"linear"`` (warmup + decay) or ``"constant"`` (warmup then flat).
        nan_policy: ``"skip"`` a non-finite loss (counted in ``train/skipped_steps``) or ``"stop"`` with a
            clear error, leaving the last good checkpoint untouched.
        weight_decay_exclude: parameter-name fragments exempt from weight decay.
    """

    def __init__(
        self,
        encoder: DualEncoder,
        loss: InfoNCELoss | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        warmup_ratio: float = 0.1,
        warmup_steps: int | None = None,
        scheduler: str = "linear",
        nan_policy: str = "skip",
        weight_decay_exclude: tuple[str, ...] = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight"),
        compile: bool = False,
    ):
        super().__init__()
        if nan_policy not in ("skip", "stop"):
            raise ConfigError(f"must be 'skip' or 'stop', got '{nan_policy}'", where="model.nan_policy")
        if scheduler not in ("linear", "constant"):
            raise ConfigError(f"must be 'linear' or 'constant', got '{scheduler}'", where="model.scheduler")
        if not 0 <= float(warmup_ratio) < 1:
            raise ConfigError(f"must be in [0, 1), got {warmup_ratio}", where="model.warmup_ratio")
        self.encoder = encoder
        self.loss_fn = loss if loss is not None else InfoNCELoss()
        self.optimizer_factory = optimizer
        self.warmup_ratio = float(warmup_ratio)
        self.warmup_steps = warmup_steps
        self.scheduler_kind = scheduler
        self.nan_policy = nan_policy
        self.weight_decay_exclude = tuple(weight_decay_exclude)
        self.compile = compile
        self.skipped_steps = 0
        self.pair_counts: Counter[str] = Counter()
        self.save_hyperparameters(ignore=["encoder", "loss", "optimizer"])

    # ----------------------------------------------------------------- steps
    def embed_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        q = self.encoder.embed(batch["q_ids"], "query")
        p = self.encoder.embed(batch["p_ids"], "passage")
        neg = self.encoder.embed(batch["neg_ids"], "passage") if batch.get("neg_ids") else None
        return q, p, neg

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        q, p, neg = self.embed_batch(batch)
        loss, stats = self.loss_fn(q, p, neg)
        if not torch.isfinite(loss):
            if self.nan_policy == "stop":
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at global step {self.global_step}; "
                    "the last good checkpoint is kept (set model.nan_policy=skip to skip such steps)"
                )
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, batch_size=len(batch["q_ids"]))
            return None
        n = len(batch["q_ids"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/accuracy", stats["accuracy"], on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/is_mono", float(batch.get("kind") == "mono"), on_step=True, batch_size=n)
        if "alpha" in batch:
            self.log("train/alpha", float(batch["alpha"]), on_step=True, batch_size=n)
        for ql, pl in zip(batch.get("q_langs", ()), batch.get("p_langs", ())):
            self.pair_counts[f"{ql}-{pl}"] += 1
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        q, p, neg = self.embed_batch(batch)
        loss, stats = self.loss_fn(q, p, neg)
        n = len(batch["q_ids"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/accuracy", stats["accuracy"], on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.pair_counts:
            total = sum(self.pair_counts.values())
            mono = sum(v for k, v in self.pair_counts.items() if k.split("-")[0] == k.split("-")[1])
            self.log("train/mono_pair_fraction", mono / total, sync_dist=False, rank_zero_only=True)

    # ----------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if any(x in name for x in self.weight_decay_exclude) else decay).append(param)
        factory = self.optimizer_factory or torch.optim.AdamW
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        extra = {}
        if self.device.type == "cuda" and getattr(factory, "func", factory) is torch.optim.AdamW:
            extra["fused"] = True
        optimizer = factory(groups, **extra)
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self.trainer else 1
        warmup = int(self.warmup_steps) if self.warmup_steps is not None else int(math.ceil(self.warmup_ratio * total))
        kind = self.scheduler_kind

        def lr_lambda(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if kind == "constant":
                return 1.0
            return max(0.0, (total - step) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_model(self) -> None:
        if self.compile and not getattr(self, "_compiled", False):
            self._compiled = True
            self.encoder.query_model = torch.compile(self.encoder.query_model)
            if self.encoder.shared:
                self.encoder.passage_model = self.encoder.query_model
            else:
                self.encoder.passage_model = torch.compile(self.encoder.passage_model)
