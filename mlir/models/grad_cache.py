"""GradCache: the contrastive loss of a large batch with the activation memory of one chunk.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup". InfoNCE
couples every query with every passage of the (global) batch, so gradient accumulation over
micro-batches would change the negatives. GradCache keeps the batch and splits the *encoder* work:

1. embed every chunk of pairs without autograd (only the ``[N, D]`` embeddings are kept);
2. compute the loss on the full embeddings (the loss module gathers other ranks' passages with
   gradients) and its gradient w.r.t. the embeddings — ``N x D`` numbers, no activations;
3. re-embed chunk by chunk with autograd and backpropagate the cached embedding gradients.

The loss depends on the parameters only through the embeddings, so by the chain rule step 3 yields
exactly the gradients of the un-chunked loss. Dropout would draw new masks in the second pass, so the
RNG state (CPU and the encoder's CUDA device) saved before each chunk's first pass is replayed in its
second. Autocast is whatever the caller has active (Lightning's ``train_step_context``): both passes
run under the same context, so they compute the same function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlir.core.errors import ConfigError


@dataclass(frozen=True)
class RngState:
    """Generator states to replay one chunk's dropout masks: CPU always, CUDA for a CUDA encoder."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None = None
    device: torch.device | None = None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        if device.type == "cuda":
            return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device), device)
        return cls(torch.get_rng_state())

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; the outer RNG streams continue as if it had not run."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass(frozen=True)
class Chunk:
    """One chunk: a contiguous slice of the pairs and its share of the hard negatives."""

    pairs: slice
    negatives: slice


def plan_chunks(num_pairs: int, num_negatives: int, chunk_size: int) -> list[Chunk]:
    """Split ``num_pairs`` pairs into chunks of at most ``chunk_size``; spread negatives evenly.

    Hard negatives arrive as one flat list (a pair may have fewer than ``num_negatives``), so they are
    not tied to pairs here: each chunk takes the next ``ceil(num_negatives / chunks)`` of them.
    """
    n_chunks = max(1, -(-num_pairs // chunk_size))
    per_neg = -(-num_negatives // n_chunks) if num_negatives else 0
    return [
        Chunk(
            slice(i * chunk_size, min((i + 1) * chunk_size, num_pairs)),
            slice(min(i * per_neg, num_negatives), min((i + 1) * per_neg, num_negatives)),
        )
        for i in range(n_chunks)
    ]


@dataclass
class ChunkEmbeddings:
    """Step 1's output: detached embeddings of the whole (local) batch and each chunk's RNG state.

    (Not a cache of texts: that is :class:`mlir.eval.encode.EmbeddingCache`, used by evaluation.)
    """

    chunks: list[Chunk]
    q: torch.Tensor
    p: torch.Tensor
    neg: torch.Tensor | None
    rng: list[RngState | None] = field(default_factory=list)

    def leaves(self) -> dict[str, torch.Tensor]:
        """The embeddings by side (``query``, ``passage``, ``negative``), skipping absent negatives."""
        out = {"query": self.q, "passage": self.p}
        if self.neg is not None:
            out["negative"] = self.neg
        return out


def _sides(batch: dict[str, Any], chunk: Chunk) -> list[tuple[str, Sequence[Sequence[int]]]]:
    """(side, token ids) to embed for one chunk, in a fixed order: queries, passages, negatives."""
    out = [("query", batch["q_ids"][chunk.pairs]), ("passage", batch["p_ids"][chunk.pairs])]
    neg = batch.get("neg_ids") or []
    if neg and chunk.negatives.stop > chunk.negatives.start:
        out.append(("negative", neg[chunk.negatives]))
    return out


class GradCache:
    """Chunked contrastive step for a :class:`~mlir.models.dual_encoder.DualEncoder` and a loss module.

    Args:
        encoder: provides ``embed(token_ids, side)`` (``side`` is ``"query"`` or ``"passage"``).
        loss_fn: ``loss_fn(q, p, negatives) -> (loss, stats)`` (e.g. :class:`InfoNCELoss`).
        chunk_size: pairs per chunk (this rank's batch is split into ``ceil(b / chunk_size)`` chunks).
        rng_replay: replay each chunk's RNG state in the second pass (needed for exactness with dropout).
    """

    def __init__(self, encoder: nn.Module, loss_fn: nn.Module, chunk_size: int, rng_replay: bool = True):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(
                f"must be a positive integer or null, got {chunk_size!r}", where="model.grad_cache.chunk_size"
            )
        self.encoder = encoder
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.rng_replay = bool(rng_replay)

    def _device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _embed(self, ids: Sequence[Sequence[int]], side: str) -> torch.Tensor:
        return self.encoder.embed(ids, "passage" if side == "negative" else side)

    # ------------------------------------------------------------------ step 1
    @torch.no_grad()
    def embed(self, batch: dict[str, Any]) -> ChunkEmbeddings:
        """Embed all chunks without autograd, recording the RNG state before each chunk."""
        n_neg = len(batch.get("neg_ids") or [])
        chunks = plan_chunks(len(batch["q_ids"]), n_neg, self.chunk_size)
        device = self._device()
        parts: dict[str, list[torch.Tensor]] = {"query": [], "passage": [], "negative": []}
        rng: list[RngState | None] = []
        for chunk in chunks:
            rng.append(RngState.capture(device) if self.rng_replay else None)
            for side, ids in _sides(batch, chunk):
                parts[side].append(self._embed(ids, side))
        neg = torch.cat(parts["negative"]) if parts["negative"] else None
        return ChunkEmbeddings(chunks, torch.cat(parts["query"]), torch.cat(parts["passage"]), neg, rng)

    # ------------------------------------------------------------------ step 2
    def loss(self, cache: ChunkEmbeddings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on the cached embeddings, differentiable w.r.t. them (not the parameters)."""
        for t in cache.leaves().values():
            t.requires_grad_(True)
        with torch.enable_grad():
            return self.loss_fn(cache.q, cache.p, cache.neg)

    @staticmethod
    def embedding_grads(loss: torch.Tensor, cache: ChunkEmbeddings) -> dict[str, torch.Tensor]:
        """d loss / d embeddings by side (under DDP the gather's backward all-reduces across ranks)."""
        leaves = cache.leaves()
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return {k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(leaves.items(), grads)}

    # ------------------------------------------------------------------ step 3
    def backward(
        self,
        batch: dict[str, Any],
        cache: ChunkEmbeddings,
        grads: dict[str, torch.Tensor],
        backward: Callable[[torch.Tensor], None] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        """Re-embed each chunk with autograd and backpropagate its slice of the cached gradients.

        Args:
            backward: runs backward on a scalar (default ``Tensor.backward``; Lightning passes
                ``manual_backward`` so precision plugins and DDP's reducer see it).
            no_sync: context that suspends DDP's gradient all-reduce; entered for every chunk but the
                last, so gradients are all-reduced once per step, after they are complete.
        """
        backward = backward or torch.Tensor.backward
        for i, (chunk, rng) in enumerate(zip(cache.chunks, cache.rng)):
            last = i == len(cache.chunks) - 1
            ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
            with ctx:
                with rng.replay() if rng is not None else contextlib.nullcontext():
                    embs = [(side, self._embed(ids, side)) for side, ids in _sides(batch, chunk)]
                # sum(e * g) has gradient g w.r.t. e: one scalar backward == e.backward(g) for all sides
                surrogate = sum(
                    (e * grads[side][chunk.negatives if side == "negative" else chunk.pairs]).sum()
                    for side, e in embs
                )
                backward(surrogate)

    # ------------------------------------------------------------------ all steps
    def step(
        self,
        batch: dict[str, Any],
        backward: Callable[[torch.Tensor], None] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Steps 1-3: accumulate the batch's parameter gradients; return the (detached) loss and stats."""
        cache = self.embed(batch)
        loss, stats = self.loss(cache)
        self.backward(batch, cache, self.embedding_grads(loss, cache), backward, no_sync)
        return loss.detach(), stats
