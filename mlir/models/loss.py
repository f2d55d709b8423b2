"""InfoNCE with in-batch negatives (and optional hard and cross-device negatives).

Each query's positive is its own passage; every other passage in the (global) batch is a negative.
With ``gather_across_devices`` the passages of all DDP ranks are gathered *with gradients* and the
labels are offset by the rank, so N ranks with batch B/N see exactly the negatives of one batch B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlir.core.config import check_positive
from mlir.models.distributed import gather_with_grad


class InfoNCELoss(nn.Module):
    """Cross-entropy over scaled similarities ``q . p / temperature``.

    Args:
        temperature: softmax temperature (> 0). 0.05 is E5's and the paper's choice with cosine scores.
        symmetric: add the passage-to-query term (each passage must pick its query) and average.
        gather_across_devices: use all ranks' passages (and queries, if symmetric) as negatives.
    """

    def __init__(
        self, temperature: float = 0.05, symmetric: bool = False, gather_across_devices: bool = True
    ):
        super().__init__()
        self.temperature = check_positive(temperature, "model.loss.temperature")
        self.symmetric = symmetric
        self.gather_across_devices = gather_across_devices

    def forward(
        self, q: torch.Tensor, p: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the loss (mean over this rank's queries) and detached stats.

        Args:
            q: ``[b, D]`` query embeddings of this rank.
            p: ``[b, D]`` their positive passages (row i is the positive of query i).
            negatives: optional ``[m, D]`` hard negatives of this rank (added to every query's candidates).
        """
        b = q.shape[0]
        if self.gather_across_devices:
            all_p, offset = gather_with_grad(p)
            all_neg = gather_with_grad(negatives)[0] if negatives is not None else None
        else:
            all_p, offset, all_neg = p, 0, negatives
        cands = all_p if all_neg is None else torch.cat([all_p, all_neg])
        logits = q @ cands.T / self.temperature
        labels = torch.arange(b, device=q.device) + offset
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            all_q = gather_with_grad(q)[0] if self.gather_across_devices else q
            loss_p = F.cross_entropy(p @ all_q.T / self.temperature, labels)
            loss = (loss + loss_p) / 2
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"accuracy": acc, "num_candidates": torch.tensor(float(cands.shape[0]))}
