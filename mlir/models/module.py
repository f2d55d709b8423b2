"""The LightningModule: a DualEncoder trained with InfoNCE on sampler-built batches.

Batches arrive as unpadded token-id lists (see ``mlir.data.datamodule``); the encoder pads each
length-sorted sub-batch to its own width. The optimiser is AdamW with linear warmup and decay, no
weight decay on biases and LayerNorms, and the fused CUDA kernel when the parameters live on a GPU.

With ``grad_cache.chunk_size`` set, the step is :class:`~mlir.models.grad_cache.GradCache` under
manual optimisation: several backward passes per step, DDP's all-reduce suspended for all but the
last, then clipping (by the module: Lightning refuses ``Trainer(gradient_clip_val)`` in manual
optimisation), the optimiser step and the scheduler step — one all-reduce per step, like the plain path.

Training-time metrics are ``torchmetrics`` means weighted by the rank's batch slice, so an epoch value
is the mean over every pair of every step on every rank (DDP: synced when computed), whatever the
slice sizes. Logged keys (the ``_step`` / ``_epoch`` suffixes are Lightning's):

* ``train/loss`` and ``train/accuracy`` (in-batch top-1): per step (synced over ranks) and per epoch;
* ``train/loss_mono``, ``train/accuracy_mono``, ``train/loss_xy``, ``train/accuracy_xy``: per epoch,
  over the X-X-mono or the X-Y batches only (a kind without batches in an epoch is not logged);
* ``train/is_mono``: 1.0 for an X-X-mono step, 0.0 for an X-Y step (per step);
* ``val/loss``, ``val/accuracy``: the mean over the validation batches weighted by their size (the
  checkpoint criterion); ``val/loss_mono`` / ``val/loss_xy`` the same over one kind of batch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from mlir.core.errors import ConfigError
from mlir.models.dual_encoder import DualEncoder
from mlir.models.grad_cache import GradCache
from mlir.models.loss import InfoNCELoss
from mlir.sampling.rule import CROSS, MONO

_GRAD_CACHE_KEYS = ("chunk_size", "rng_replay", "clip", "clip_algorithm")
KIND_SUFFIX = {MONO: "mono", CROSS: "xy"}  # batch kind -> metric key suffix (X-X-mono / X-Y)


def _mean(sync_on_step: bool = False) -> MeanMetric:
    """A weighted mean in which a NaN value makes the mean NaN, as Lightning's own logging did.

    Not the default ``nan_strategy="warn"`` (drops NaN values) and not ``"disable"``: torchmetrics
    1.7-1.9 replace every weight by 1 under ``"disable"`` (an unweighted mean). A float strategy
    writes that float over NaN inputs in place, hence the callers pass a copy.
    """
    return MeanMetric(nan_strategy=float("nan"), dist_sync_on_step=sync_on_step)


def _check_schedule_options(nan_policy: str, scheduler: str, warmup_ratio: float) -> None:
    """Reject bad ``model.nan_policy`` / ``model.scheduler`` / ``model.warmup_ratio`` before anything is built."""
    if nan_policy not in ("skip", "stop"):
        raise ConfigError(f"must be 'skip' or 'stop', got '{nan_policy}'", where="model.nan_policy")
    if scheduler not in ("linear", "constant"):
        raise ConfigError(f"must be 'linear' or 'constant', got '{scheduler}'", where="model.scheduler")
    if not 0 <= float(warmup_ratio) < 1:
        raise ConfigError(f"must be in [0, 1), got {warmup_ratio}", where="model.warmup_ratio")


def _train_metrics() -> torch.nn.ModuleDict:
    """``train/loss`` and ``train/accuracy`` (synced per step), plus per-kind epoch means (module docstring).

    torchmetrics states are not in ``state_dict`` (``persistent=False``): checkpoints are unchanged.
    """
    return torch.nn.ModuleDict(
        {"loss": _mean(sync_on_step=True), "accuracy": _mean(sync_on_step=True)}
        | {f"{m}_{k}": _mean() for k in KIND_SUFFIX.values() for m in ("loss", "accuracy")}
    )


def _val_metrics() -> torch.nn.ModuleDict:
    """``val/loss`` and ``val/accuracy`` (the checkpoint criterion) plus ``val/loss_<kind>``."""
    return torch.nn.ModuleDict(
        {"loss": _mean(), "accuracy": _mean()} | {f"loss_{k}": _mean() for k in KIND_SUFFIX.values()}
    )


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
        compile: ``torch.compile`` the encoder tower(s) in ``configure_model``.
        grad_cache: ``{chunk_size, rng_replay, clip, clip_algorithm}``. ``chunk_size`` (pairs per chunk,
            ``None`` = off) switches to GradCache under manual optimisation; ``clip`` is then the max
            gradient norm the module applies (``None``: :meth:`trainer_overrides` adopts
            ``trainer.gradient_clip_val``).
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
        weight_decay_exclude: tuple[str, ...] = (
            "bias",
            "LayerNorm.weight",
            "layer_norm.weight",
            "norm.weight",
        ),
        compile: bool = False,
        grad_cache: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        _check_schedule_options(nan_policy, scheduler, warmup_ratio)
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
        self.train_metrics, self.val_metrics = _train_metrics(), _val_metrics()
        gc = dict(grad_cache or {})
        grad_cache = gc  # plain dict in the saved hparams: checkpoints stay loadable with weights_only=True
        self._setup_grad_cache(gc)
        self.save_hyperparameters(ignore=["encoder", "loss", "optimizer"])

    def _setup_grad_cache(self, gc: Mapping[str, Any]) -> None:
        """Validate ``model.grad_cache`` and switch to GradCache under manual optimisation if enabled.

        Split from ``__init__`` for length; ``save_hyperparameters`` stays there, as it reads that frame.
        """
        unknown = sorted(set(gc) - set(_GRAD_CACHE_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown keys {unknown} (known: {list(_GRAD_CACHE_KEYS)})", where="model.grad_cache"
            )
        self.grad_cache: GradCache | None = None
        if gc.get("chunk_size") is not None:
            self.grad_cache = GradCache(
                self.encoder, self.loss_fn, gc["chunk_size"], rng_replay=gc.get("rng_replay", True)
            )
            self.automatic_optimization = False
        clip = gc.get("clip")
        if clip is not None and not float(clip) > 0:
            raise ConfigError(f"must be > 0 or null, got {clip}", where="model.grad_cache.clip")
        self.grad_clip: float | None = float(clip) if clip is not None else None
        self.grad_clip_algorithm: str = str(gc.get("clip_algorithm") or "norm")
        if self.grad_clip_algorithm not in ("norm", "value"):
            raise ConfigError(
                f"must be 'norm' or 'value', got '{self.grad_clip_algorithm}'",
                where="model.grad_cache.clip_algorithm",
            )

    def trainer_overrides(self, trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Trainer kwargs this module needs on top of ``trainer_cfg`` (``{}`` without GradCache).

        Under GradCache (manual optimisation) Lightning rejects ``gradient_clip_val`` and
        ``accumulate_grad_batches``: the module takes over the clip value (unless ``grad_cache.clip``
        sets a different one: a ConfigError) and the trainer gets ``gradient_clip_val=None``, so the
        same trainer configs serve both paths.
        """
        if self.grad_cache is None:
            return {}
        acc = trainer_cfg.get("accumulate_grad_batches", 1)
        if acc not in (None, 1):
            raise ConfigError(
                f"GradCache takes one optimiser step per global batch; got accumulate_grad_batches={acc}. "
                "Raise data.batch_size instead (GradCache keeps memory at one chunk)",
                where="trainer.accumulate_grad_batches",
            )
        clip = trainer_cfg.get("gradient_clip_val")
        if clip:
            if self.grad_clip is not None and float(clip) != self.grad_clip:
                raise ConfigError(
                    f"both model.grad_cache.clip={self.grad_clip} and trainer.gradient_clip_val={clip} are set; "
                    "under GradCache the module clips: set only one",
                    where="model.grad_cache.clip",
                )
            self.grad_clip = float(clip)
            self.grad_clip_algorithm = str(
                trainer_cfg.get("gradient_clip_algorithm") or self.grad_clip_algorithm
            )
        return {"gradient_clip_val": None}

    # ----------------------------------------------------------------- steps
    def embed_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        q = self.encoder.embed(batch["q_ids"], "query")
        p = self.encoder.embed(batch["p_ids"], "passage")
        neg = self.encoder.embed(batch["neg_ids"], "passage") if batch.get("neg_ids") else None
        return q, p, neg

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.grad_cache is not None:
            return self._grad_cache_step(batch)
        q, p, neg = self.embed_batch(batch)
        loss, stats = self.loss_fn(q, p, neg)
        # all ranks skip together: a rank skipping backward alone would leave DDP's all-reduce waiting
        if not self._all_finite(loss):
            self._non_finite(loss, batch)
            return None
        self._log_train(loss, stats, batch)
        return loss

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """True when the loss is finite on every rank (single process: just this one)."""
        finite = bool(torch.isfinite(loss))
        trainer = self._trainer
        return trainer.strategy.reduce_boolean_decision(finite, all=True) if trainer is not None else finite

    def _non_finite(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """The NaN policy: raise (``stop``) or count and log a skipped step (``skip``)."""
        if self.nan_policy == "stop":
            value = (
                f"{loss.item()}"
                if not torch.isfinite(loss)
                else f"{loss.item()} here, non-finite on another rank"
            )
            raise FloatingPointError(
                f"non-finite training loss ({value}) at global step {self.global_step}; "
                "the last good checkpoint is kept (set model.nan_policy=skip to skip such steps)"
            )
        self.skipped_steps += 1
        self.log(
            "train/skipped_steps", float(self.skipped_steps), on_step=True, batch_size=len(batch["q_ids"])
        )

    def _grad_cache_step(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """GradCache under manual optimisation: embed, loss, chunked backward, clip, step, schedule."""
        gc = self.grad_cache
        assert gc is not None
        opt = self.optimizers()
        cache = gc.embed(batch)
        loss, stats = gc.loss(cache)
        strategy = self.trainer.strategy
        # every rank must take the same branch (the backward passes hold collectives); a skipped batch
        # runs no optimiser or scheduler step, so it does not count toward trainer.max_steps
        if not strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            self._non_finite(loss, batch)
            return None
        grads = gc.embedding_grads(loss, cache)
        opt.zero_grad()
        # DDP: no all-reduce for the first chunks' backward passes, one for the last (complete) gradients
        no_sync = getattr(strategy, "block_backward_sync", None)
        gc.backward(batch, cache, grads, backward=self.manual_backward, no_sync=no_sync)
        opt.step()  # clipping happens in on_before_optimizer_step, after AMP unscaling
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        loss = loss.detach()
        self._log_train(loss, stats, batch)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Manual optimisation clips here: grads are complete, all-reduced and (fp16 AMP) unscaled."""
        if not self.automatic_optimization and self.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm=self.grad_clip_algorithm
            )

    def _log_train(self, loss: torch.Tensor, stats: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        n = len(batch["q_ids"])
        m = self.train_metrics
        # forward(): this step's value (synced over ranks) and the epoch's running weighted mean
        m["loss"](loss.detach().clone(), weight=n)
        m["accuracy"](stats["accuracy"].detach().clone(), weight=n)
        self.log("train/loss", m["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/accuracy", m["accuracy"], on_step=True, on_epoch=True, batch_size=n)
        kind = KIND_SUFFIX.get(batch.get("kind"))
        if kind is not None:  # every rank has the same kind (the global batch's), so the sync matches
            for name, value in (("loss", loss), ("accuracy", stats["accuracy"])):
                metric = m[f"{name}_{kind}"]
                metric.update(value.detach().clone(), weight=n)
                self.log(f"train/{name}_{kind}", metric, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/is_mono", float(batch.get("kind") == MONO), on_step=True, batch_size=n)
        for ql, pl in zip(batch.get("q_langs", ()), batch.get("p_langs", ())):
            self.pair_counts[f"{ql}-{pl}"] += 1

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        q, p, neg = self.embed_batch(batch)
        loss, stats = self.loss_fn(q, p, neg)
        n = len(batch["q_ids"])
        m = self.val_metrics
        # sum(loss_b * n_b) / sum(n_b) over the batches (and ranks): the value Lightning's own
        # batch_size-weighted epoch mean gave, bit for bit on one process
        m["loss"].update(loss.detach().clone(), weight=n)
        m["accuracy"].update(stats["accuracy"].detach().clone(), weight=n)
        self.log("val/loss", m["loss"], on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val/accuracy", m["accuracy"], on_epoch=True, batch_size=n)
        kind = KIND_SUFFIX.get(batch.get("kind"))
        if kind is not None:
            m[f"loss_{kind}"].update(loss.detach().clone(), weight=n)
            self.log(f"val/loss_{kind}", m[f"loss_{kind}"], on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.pair_counts:
            total = sum(self.pair_counts.values())
            mono = sum(v for k, v in self.pair_counts.items() if k.split("-")[0] == k.split("-")[1])
            self.log("train/mono_pair_fraction", mono / total, sync_dist=False, rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain ints/dicts: loadable with weights_only=True; counters survive a resume
        checkpoint["mlir_counters"] = {
            "skipped_steps": int(self.skipped_steps),
            "pair_counts": dict(self.pair_counts),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        counters = checkpoint.get("mlir_counters") or {}
        self.skipped_steps = int(counters.get("skipped_steps", 0))
        self.pair_counts = Counter({str(k): int(v) for k, v in (counters.get("pair_counts") or {}).items()})

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
        # fused CUDA AdamW, except under fp16 AMP: its GradScaler unscales inside a fused step, which
        # Lightning (rightly) refuses to combine with gradient clipping; bf16 has no scaler
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        if (
            self.device.type == "cuda"
            and getattr(factory, "func", factory) is torch.optim.AdamW
            and scaler is None
        ):
            extra["fused"] = True
        optimizer = factory(groups, **extra)
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self.trainer else 1
        warmup = (
            int(self.warmup_steps)
            if self.warmup_steps is not None
            else int(math.ceil(self.warmup_ratio * total))
        )
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
