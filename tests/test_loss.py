"""InfoNCE against a hand computation, and its guards."""

import math

import pytest
import torch
import torch.nn.functional as F

from mlir.core.errors import ConfigError
from mlir.models.loss import InfoNCELoss


def _hand_infonce(q, p, t):
    """Per-query -log softmax of the diagonal, written with explicit sums."""
    losses = []
    for i in range(q.shape[0]):
        scores = [float(q[i] @ p[j]) / t for j in range(p.shape[0])]
        m = max(scores)
        lse = m + math.log(sum(math.exp(s - m) for s in scores))
        losses.append(lse - scores[i])
    return sum(losses) / len(losses)


def test_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    p = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    loss, stats = InfoNCELoss(temperature=0.05)(q, p)
    assert loss.item() == pytest.approx(_hand_infonce(q, p, 0.05), rel=1e-5)
    expected_acc = float(((q @ p.T).argmax(1) == torch.arange(5)).float().mean())
    assert stats["accuracy"].item() == pytest.approx(expected_acc)


def test_two_by_two_closed_form():
    # q0 = p0 = e0, q1 = p1 = e1: each query scores 1/t on its positive and 0 on the other.
    q = torch.eye(2)
    t = 0.5
    loss, stats = InfoNCELoss(temperature=t)(q, q.clone())
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1 / t)), rel=1e-6)
    assert stats["accuracy"].item() == 1.0


def test_hard_negatives_extend_candidates():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    p = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    n = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    loss, stats = InfoNCELoss(temperature=0.1)(q, p, n)
    cands = torch.cat([p, n])
    assert loss.item() == pytest.approx(F.cross_entropy(q @ cands.T / 0.1, torch.arange(3)).item(), rel=1e-6)
    assert stats["num_candidates"].item() == 9
    assert loss.item() > InfoNCELoss(temperature=0.1)(q, p)[0].item()  # more negatives, more loss


def test_symmetric_averages_both_directions():
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    p = F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    loss, _ = InfoNCELoss(temperature=0.05, symmetric=True)(q, p)
    fwd = _hand_infonce(q, p, 0.05)
    bwd = _hand_infonce(p, q, 0.05)
    assert loss.item() == pytest.approx((fwd + bwd) / 2, rel=1e-5)


@pytest.mark.parametrize("t", [0, -0.1])
def test_rejects_non_positive_temperature(t):
    with pytest.raises(ConfigError, match="model.loss.temperature"):
        InfoNCELoss(temperature=t)
