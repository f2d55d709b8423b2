"""SLURM time limit under submitit: SIGUSR2 saves a fresh ``last.ckpt``, then submitit requeues.

Submitit ignores SIGTERM and, on its timeout signal SIGUSR2, requeues the job and exits rank 0 from the
signal handler. A wrapper installs such a handler before ``train.py`` runs (as submitit does before
calling the Hydra job); the run must save ``last.ckpt`` at the step it reached, then hand the signal on
(the "requeue" marker, exit status 255), and ``ckpt_path=last`` must continue from that step.
"""

from __future__ import annotations

import csv
import signal
import subprocess
from types import SimpleNamespace

import pytest
import torch
from _reliability import env, pause_wrapper, popen, train_cmd, train_overrides, wait_for_pause, write_corpus

TIMEOUT = 600

SUBMITIT_LIKE = """\
import runpy
import signal
import sys


def _bypass(signum, frame):  # submitit: "Bypassing signal SIGTERM"
    pass


def _requeue(signum, frame):  # submitit's checkpoint_and_try_requeue on rank 0: requeue, sys.exit(-1)
    import os  # runpy replaces this module's globals by the time the handler runs
    import signal
    import sys
    from pathlib import Path

    import torch

    last = Path(os.environ["MLIR_TEST_LAST"])
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"] if last.exists() else -1
    Path(os.environ["MLIR_TEST_REQUEUED"]).write_text(f"{signal.Signals(signum).name} {step}")
    sys.exit(-1)


signal.signal(signal.SIGTERM, _bypass)
signal.signal(signal.SIGUSR2, _requeue)
sys.argv = [{inner!r}] + sys.argv[1:]
runpy.run_path({inner!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_sigusr2_saves_fresh_last_ckpt_then_requeues_and_resumes(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    run_dir, marker, requeued = tmp_path / "run", tmp_path / "paused", tmp_path / "requeued"
    last = run_dir / "checkpoints" / "last.ckpt"
    script = tmp_path / "submitit_like.py"
    script.write_text(SUBMITIT_LIKE.replace("{inner!r}", repr(str(pause_wrapper(tmp_path)))))

    def overrides(*extra: str) -> list[str]:
        # periodic resume points every 100 steps: only the signal can have written step 3
        return train_overrides(
            corpus, tiny_model_dir, run_dir, "trainer.max_steps=5",
            "callbacks.resume_checkpoint.every_n_train_steps=100", *extra,
        )  # fmt: skip

    proc = popen(
        overrides(),
        tmp_path,
        script=script,
        MLIR_TEST_PAUSE_AT="2",
        MLIR_TEST_PAUSE_MARKER=str(marker),
        MLIR_TEST_LAST=str(last),
        MLIR_TEST_REQUEUED=str(requeued),
    )
    wait_for_pause(proc, marker, TIMEOUT)
    proc.send_signal(signal.SIGUSR2)  # submitit's timeout signal; the batch in flight (step 3) completes
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 255, err[-4000:]  # submitit's handler ran: sys.exit(-1)
    # submitit's handler ran after the save, and saw the fresh checkpoint
    assert requeued.read_text() == "SIGUSR2 3", err[-4000:]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and "rng_states" in ckpt
    assert not (run_dir / "metrics.json").exists()

    res = subprocess.run(  # the requeued job
        train_cmd(overrides("ckpt_path=last")),
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5
    # it continued from step 3: the second CSV log starts there, not at step 0
    steps = [
        int(r["step"]) for r in csv.DictReader((run_dir / "csv/version_1/metrics.csv").open()) if r["step"]
    ]
    assert steps and min(steps) >= 3, steps


def test_sigusr2_without_a_previous_handler_is_a_plain_save(tmp_path):
    """Outside submitit nothing is chained: SIGUSR2 acts as SIGTERM (the default handler is not re-raised)."""
    from mlir.training.last_checkpoint import LastCheckpoint

    cb = LastCheckpoint()
    assert [s.name for s in cb.signals] == ["SIGTERM", "SIGUSR2"]
    called: list[int] = []
    trainer = SimpleNamespace(loggers=[])
    cb._received = {signal.SIGUSR2: None}
    cb._chain(trainer, {signal.SIGUSR2: signal.SIG_DFL})
    cb._received = {signal.SIGUSR2: None}
    cb._chain(trainer, {signal.SIGUSR2: lambda s, f: called.append(s)})
    assert called == [signal.SIGUSR2] and not cb._received
