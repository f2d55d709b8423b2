"""GradCache gives the gradients of the un-chunked loss; the manual-optimisation step trains like the plain one."""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import torch

from mlir.core.errors import ConfigError
from mlir.models.dual_encoder import DualEncoder
from mlir.models.grad_cache import GradCache, plan_chunks
from mlir.models.loss import InfoNCELoss
from mlir.models.module import RetrieverModule

pytestmark = pytest.mark.usefixtures("one_thread")


WORDS = "the panthers were founded in by who when where which how many of and is was die los пантеры 黑豹队".split()


def _texts(n: int, seed: int, lo: int = 2, hi: int = 14) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g)))
    return out


def _encoder(tiny_model_dir, dropout: float | None = 0.0, shared: bool = True) -> DualEncoder:
    return DualEncoder(
        str(tiny_model_dir), query_max_length=32, passage_max_length=64, dropout=dropout, shared=shared
    )


def _batch(enc: DualEncoder, n: int = 8, n_neg: int = 0) -> dict:
    batch = {
        "q_ids": enc.tokenize(_texts(n, 1), "query"),
        "p_ids": enc.tokenize(_texts(n, 2, 4, 30), "passage"),
    }
    if n_neg:
        batch["neg_ids"] = enc.tokenize(_texts(n_neg, 3, 4, 30), "passage")
    return batch


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _full_step(enc: DualEncoder, loss_fn: InfoNCELoss, batch: dict) -> torch.Tensor:
    """The un-chunked reference: one graph over the whole batch."""
    q = enc.embed(batch["q_ids"], "query")
    p = enc.embed(batch["p_ids"], "passage")
    neg = enc.embed(batch["neg_ids"], "passage") if batch.get("neg_ids") else None
    loss, _ = loss_fn(q, p, neg)
    loss.backward()
    return loss.detach()


def _chunked_graph_step(enc: DualEncoder, loss_fn: InfoNCELoss, batch: dict, chunk_size: int) -> torch.Tensor:
    """Chunk-by-chunk embedding (GradCache's order of RNG draws) but one graph kept for the whole batch."""
    parts: dict[str, list[torch.Tensor]] = {"q": [], "p": [], "n": []}
    neg_ids = batch.get("neg_ids") or []
    for c in plan_chunks(len(batch["q_ids"]), len(neg_ids), chunk_size):
        parts["q"].append(enc.embed(batch["q_ids"][c.pairs], "query"))
        parts["p"].append(enc.embed(batch["p_ids"][c.pairs], "passage"))
        if c.negatives.stop > c.negatives.start:
            parts["n"].append(enc.embed(neg_ids[c.negatives], "passage"))
    neg = torch.cat(parts["n"]) if parts["n"] else None
    loss, _ = loss_fn(torch.cat(parts["q"]), torch.cat(parts["p"]), neg)
    loss.backward()
    return loss.detach()


def test_plan_chunks_covers_pairs_and_negatives_once():
    chunks = plan_chunks(10, 7, 4)
    assert [(c.pairs.start, c.pairs.stop) for c in chunks] == [(0, 4), (4, 8), (8, 10)]
    covered = [i for c in chunks for i in range(7)[c.negatives]]
    assert covered == list(range(7))
    assert len(plan_chunks(3, 0, 8)) == 1


@pytest.mark.parametrize(
    ("chunk_size", "n_neg", "symmetric", "shared"),
    [(3, 0, False, True), (1, 5, False, True), (4, 3, True, False), (8, 0, False, True)],
)
def test_grad_cache_equals_full_batch_without_dropout(tiny_model_dir, chunk_size, n_neg, symmetric, shared):
    enc = _encoder(tiny_model_dir, dropout=0.0, shared=shared)
    loss_fn = InfoNCELoss(temperature=0.05, symmetric=symmetric)
    batch = _batch(enc, 8, n_neg)
    ref_loss = _full_step(enc, loss_fn, batch)
    ref = _grads(enc)
    enc.zero_grad(set_to_none=True)
    loss, stats = GradCache(enc, loss_fn, chunk_size).step(batch)
    got = _grads(enc)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert _max_diff(got, ref) <= 1e-5
    assert stats["num_candidates"].item() == 8 + n_neg
    # the tiny model's pooler is frozen: it would stall DDP's reducer (unused parameters)
    assert not any("pooler" in k for k in got)


def test_grad_cache_replays_dropout_rng(tiny_model_dir):
    enc = _encoder(tiny_model_dir, dropout=0.2)
    loss_fn = InfoNCELoss(temperature=0.05)
    batch = _batch(enc, 8, 3)
    torch.manual_seed(123)
    ref_loss = _chunked_graph_step(enc, loss_fn, batch, 3)
    ref = _grads(enc)

    enc.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss, _ = GradCache(enc, loss_fn, 3).step(batch)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    assert _max_diff(_grads(enc), ref) <= 1e-5

    # without replay the second pass draws other dropout masks: the gradients are wrong
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    GradCache(enc, loss_fn, 3, rng_replay=False).step(batch)
    assert _max_diff(_grads(enc), ref) > 1e-3


def test_one_chunk_with_dropout_equals_plain_step(tiny_model_dir):
    """chunk_size >= batch: same RNG draws as the plain training step, so identical gradients."""
    enc = _encoder(tiny_model_dir, dropout=0.2)
    loss_fn = InfoNCELoss(temperature=0.05)
    batch = _batch(enc, 6, 2)
    torch.manual_seed(7)
    _full_step(enc, loss_fn, batch)
    ref = _grads(enc)
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    GradCache(enc, loss_fn, 6).step(batch)
    assert _max_diff(_grads(enc), ref) <= 1e-5


def test_replay_leaves_the_outer_rng_stream_as_after_the_first_pass(tiny_model_dir):
    enc = _encoder(tiny_model_dir, dropout=0.2)
    gc = GradCache(enc, InfoNCELoss(), 3)
    batch = _batch(enc, 6)
    torch.manual_seed(0)
    cache = gc.embed(batch)
    after_first = torch.get_rng_state()
    loss, _ = gc.loss(cache)
    gc.backward(batch, cache, gc.embedding_grads(loss, cache))
    assert torch.equal(torch.get_rng_state(), after_first)


# ------------------------------------------------------------------ module configuration


def test_module_grad_cache_switches_to_manual_optimisation_and_adopts_clip(tiny_model_dir):
    enc = _encoder(tiny_model_dir)
    plain = RetrieverModule(enc)
    assert plain.automatic_optimization and plain.trainer_overrides({"gradient_clip_val": 1.0}) == {}
    m = RetrieverModule(enc, grad_cache={"chunk_size": 4, "clip": None})
    assert not m.automatic_optimization
    assert m.trainer_overrides({"gradient_clip_val": 0.5, "accumulate_grad_batches": 1}) == {
        "gradient_clip_val": None
    }
    assert m.grad_clip == 0.5 and m.grad_clip_algorithm == "norm"
    m = RetrieverModule(enc, grad_cache={"chunk_size": 4, "clip": 2.0})
    assert (
        m.trainer_overrides({"gradient_clip_val": None}) == {"gradient_clip_val": None} and m.grad_clip == 2.0
    )
    with pytest.raises(ConfigError, match="model.grad_cache.clip"):
        m.trainer_overrides({"gradient_clip_val": 1.0})
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        m.trainer_overrides({"accumulate_grad_batches": 4})
    with pytest.raises(ConfigError, match="model.grad_cache"):
        RetrieverModule(enc, grad_cache={"chunk": 4})
    with pytest.raises(ConfigError, match="chunk_size"):
        RetrieverModule(enc, grad_cache={"chunk_size": 0})
    assert RetrieverModule(enc, grad_cache={"chunk_size": None}).automatic_optimization


# ------------------------------------------------------------------ Lightning: manual == automatic


def _corpus(n_ids: int = 24, langs: tuple[str, ...] = ("en", "de", "es")):
    from mlir.data.corpus import ParallelCorpus

    rows = []
    for i in range(n_ids):
        q, p = _texts(1, 100 + i)[0], _texts(1, 500 + i, 4, 24)[0]
        for k, lang in enumerate(langs):
            rows.append(
                {"id": f"q{i}", "lang": lang, "query": f"{lang} {k} {q}", "positive": f"{p} {lang} {i}"}
            )
    return ParallelCorpus.from_rows(rows, name="synthetic")


def _fit(
    tiny_model_dir, tmp_path, grad_cache: dict | None, steps: int = 3, nan_policy: str = "skip", loss=None
):
    from mlir.data.datamodule import RetrievalDataModule
    from mlir.sampling.hybrid import HybridBatchSampler

    L.seed_everything(0)
    enc = _encoder(tiny_model_dir, dropout=0.0)
    opt = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    module = RetrieverModule(enc, loss=loss, optimizer=opt, grad_cache=grad_cache, nan_policy=nan_policy)
    trainer_cfg = {"gradient_clip_val": 0.5}
    trainer_cfg.update(module.trainer_overrides(trainer_cfg))
    corpus = _corpus()
    dm = RetrievalDataModule(
        lambda: corpus,
        functools.partial(HybridBatchSampler, alpha=0.5),
        encoder=enc,
        batch_size=8,
        val_batches=0,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **trainer_cfg,
    )
    trainer.fit(module, datamodule=dm)
    return module, trainer


def test_manual_grad_cache_fit_equals_automatic_fit(tiny_model_dir, tmp_path):
    """3 AdamW steps with clipping and the LR schedule: GradCache (manual) == plain (automatic)."""
    ref, ref_tr = _fit(tiny_model_dir, tmp_path / "a", None)
    got, got_tr = _fit(tiny_model_dir, tmp_path / "b", {"chunk_size": 3})
    assert ref_tr.global_step == got_tr.global_step == 3
    assert got.grad_clip == 0.5
    assert ref_tr.optimizers[0].param_groups[0]["lr"] == got_tr.optimizers[0].param_groups[0]["lr"]
    a, b = ref.state_dict(), got.state_dict()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    init = {f"encoder.{k}": v for k, v in _encoder(tiny_model_dir).state_dict().items()}
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    assert moved > 1e-3  # training did change the weights
    assert diff <= 1e-5, diff


class _NaNOnce(InfoNCELoss):
    """InfoNCE that returns NaN on its first call (the first training batch)."""

    calls = 0

    def forward(self, q, p, negatives=None):
        loss, stats = super().forward(q, p, negatives)
        type(self).calls += 1
        return (loss * float("nan"), stats) if type(self).calls == 1 else (loss, stats)


def test_grad_cache_nan_policy(tiny_model_dir, tmp_path):
    _NaNOnce.calls = 0
    module, trainer = _fit(tiny_model_dir, tmp_path / "skip", {"chunk_size": 4}, steps=2, loss=_NaNOnce())
    assert module.skipped_steps == 1 and trainer.global_step == 2  # the skipped batch is not a step
    _NaNOnce.calls = 0
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        _fit(
            tiny_model_dir, tmp_path / "stop", {"chunk_size": 4}, steps=2, nan_policy="stop", loss=_NaNOnce()
        )


def test_encoder_dropout_option(tiny_model_dir):
    enc = _encoder(tiny_model_dir, dropout=0.0)
    cfg = enc.query_model.config
    assert cfg.hidden_dropout_prob == 0.0 and cfg.attention_probs_dropout_prob == 0.0
    assert copy.deepcopy(_encoder(tiny_model_dir, dropout=None).query_model.config).hidden_dropout_prob > 0
    with pytest.raises(ConfigError, match="model.encoder.dropout"):
        _encoder(tiny_model_dir, dropout=1.5)
