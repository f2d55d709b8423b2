"""RetrievalEvalCallback under DDP: 2 gloo ranks on CPU shard the encoding and log the same monitor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _eval_data import make_xquad_dir
from test_callback import _benchmarks, _loader, _module, _trainer

from mlir.eval.callback import RetrievalEvalCallback


@pytest.fixture(scope="module")
def xquad_dir(tmp_path_factory):
    return make_xquad_dir(tmp_path_factory.mktemp("xq") / "xquad-r", langs=("en", "de", "zh"), n_articles=2)


def _identity(batch):
    return batch


class _RankRecorder(RetrievalEvalCallback):
    """Writes, per rank, the monitor value it logged (all ranks must log the same)."""

    def run(self, trainer, pl_module, hook="manual"):
        metrics = super().run(trainer, pl_module, hook)
        value = float(trainer.callback_metrics[self.monitor_key])
        Path(self.output_dir, f"rank{trainer.global_rank}_step{trainer.global_step}.txt").write_text(
            repr(value)
        )
        return metrics


@pytest.mark.slow
def test_ddp_two_ranks_agree_and_write_once(tmp_path, tiny_model_dir, xquad_dir):
    from lightning.pytorch.strategies import DDPStrategy

    module = _module(tiny_model_dir)
    loader = _loader(module, 4)
    loader = torch.utils.data.DataLoader(list(loader.dataset), batch_size=None, collate_fn=_identity)
    cb = _RankRecorder(
        _benchmarks(xquad_dir, max_queries_per_lang=4), every_n_steps=1, output_dir=str(tmp_path)
    )
    trainer = _trainer(
        tmp_path,
        [cb],
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="spawn"),
        max_steps=2,
        logger=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    for step in (1, 2):
        values = {(tmp_path / f"rank{r}_step{step}.txt").read_text() for r in range(2)}
        assert len(values) == 1  # both ranks logged the same (broadcast) value
        record = json.loads((tmp_path / "retrieval_eval" / f"step_{step:07d}.json").read_text())
        assert float(values.pop()) == pytest.approx(record["metrics"]["toy/avg/ndcg@10"])
