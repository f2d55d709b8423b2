"""Differentiable all-gather for cross-device negatives.

``torch.distributed.nn.functional.all_gather`` relies on reduce-scatter in backward, which gloo lacks.
This version all-reduces the full gradient and keeps the local slice: it works on gloo (CPU tests,
``ddp_sim``) and NCCL alike, and gives every rank's passages the gradient of every rank's loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from all ranks (rank order), differentiably; also return this rank's offset.

    Every rank must pass the same number of rows (the sampler guarantees equal slices).
    """
    if not dist_ready():
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]
