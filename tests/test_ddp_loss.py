"""Cross-device negatives: 2 gloo processes with batch B/2 each == 1 process with batch B."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mlir.models.loss import InfoNCELoss


def _data(seed=0, b=8, d=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.randn(d, d, generator=g)


def _step(xq, xp, w, loss_fn):
    w = w.clone().requires_grad_(True)
    q = F.normalize(xq @ w, dim=-1)
    p = F.normalize(xp @ w, dim=-1)
    loss, _ = loss_fn(q, p)
    loss.backward()
    return loss.detach(), w.grad


def _worker(rank, world, init_file, out_dir, symmetric):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    xq, xp, w = _data()
    b = xq.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    loss, grad = _step(xq[sl], xp[sl], w, InfoNCELoss(temperature=0.05, symmetric=symmetric))
    dist.all_reduce(loss)
    dist.all_reduce(grad)  # DDP averages gradients over ranks
    torch.save({"loss": loss / world, "grad": grad / world}, os.path.join(out_dir, f"r{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("symmetric", [False, True])
def test_two_process_gather_equals_single_process(tmp_path, symmetric):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), symmetric), nprocs=2, join=True)
    xq, xp, w = _data()
    ref_loss, ref_grad = _step(xq, xp, w, InfoNCELoss(temperature=0.05, symmetric=symmetric))
    for r in range(2):
        got = torch.load(tmp_path / f"r{r}.pt")
        torch.testing.assert_close(got["loss"], ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["grad"], ref_grad, rtol=1e-5, atol=1e-6)


def test_without_gather_ranks_see_fewer_negatives(tmp_path):
    """Sanity check that the test above can fail: local-only negatives give a different loss."""
    xq, xp, w = _data()
    full, _ = _step(xq, xp, w, InfoNCELoss(temperature=0.05))
    halves = [_step(xq[s], xp[s], w, InfoNCELoss(temperature=0.05))[0] for s in (slice(0, 4), slice(4, 8))]
    assert abs(float(sum(halves) / 2) - float(full)) > 1e-3
