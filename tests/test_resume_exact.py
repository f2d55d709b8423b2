"""Exact resume at every kill point, on 1 process and with ``trainer=ddp_sim``; another configuration is refused.

The job (``_reliability.train_overrides``): 36 training ids, batch 8, so 4 steps per epoch, a validation
after each epoch, ``trainer.max_steps=8``, a resume point after every step. One uninterrupted reference
run per layout carries :class:`ResumeProbe`, which records every training batch (its ids, loss, logged
step), every validation loss, and at the end the weights, optimiser state and RNG states of each rank;
at each kill point it copies ``last.ckpt``: what a SIGKILL at that moment leaves behind (checkpoints are
written atomically, so a kill leaves the previous file; ``tests/test_resume.py`` kills real processes).
A case puts that copy into a new run directory, resumes it with ``ckpt_path=last`` and must reproduce
the reference bit for bit from the resume point on.

Kill points and the ``last.ckpt`` they leave:

* ``first_step_of_epoch``: during step 5; written in the epoch-end hooks of epoch 0 after its validation
  (Lightning's own restart counted that epoch twice: the sampler got epoch 2's batches, the logged step
  moved by one; issue 15);
* ``last_step_of_epoch``: during step 4; written after step 3, so the resumed run ends epoch 0;
* ``mid_epoch``: during step 7; written after step 6;
* ``during_validation``: in the validation after step 4; written after step 4, before that validation
  (Lightning's restart skipped the validation);
* ``during_final_validation``: in the validation after the last step (Lightning's restart saw
  ``max_steps`` reached and did nothing: no validation, no checkpoint selection).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch

try:
    from _reliability import env, train_cmd, train_overrides, write_corpus
except ModuleNotFoundError:  # imported by train.py for the probe callback (PYTHONPATH = repository root)
    from tests._reliability import env, train_cmd, train_overrides, write_corpus

TIMEOUT = 900
COMMON = ("trainer.max_steps=8", "callbacks.resume_checkpoint.every_n_train_steps=1")
LAYOUTS = {"1proc": (), "ddp_sim": ("trainer=ddp_sim",)}
KILL_POINTS = {
    "first_step_of_epoch": "kill_step5",
    "last_step_of_epoch": "kill_step4",
    "mid_epoch": "kill_step7",
    "during_validation": "kill_val4",
    "during_final_validation": "kill_val8",
}


class ResumeProbe(L.Callback):
    """What a run trained on and where a kill would leave it (added on the command line).

    * per training batch: the global step it becomes, epoch, batch index, the batch's ``q_rows`` /
      ``p_rows``, the loss and the logged step (``_batches_that_stepped``);
    * per validation batch: its loss;
    * with ``snapshots``: a copy of ``last.ckpt`` at the start of every training batch
      (``kill_step<N>.ckpt``: what a SIGKILL during global step N leaves) and of the first batch of
      every validation (``kill_val<N>.ckpt``: a SIGKILL in the validation after step N);
    * at the end of training: ``rank<r>.pt`` with all of that, the final weights, optimiser state and
      RNG states of the rank.
    """

    def __init__(self, out_dir: str, ckpt_dir: str, snapshots: bool = False, sigterm_at: int | None = None):
        self.out_dir, self.ckpt_dir, self.snapshots = Path(out_dir), Path(ckpt_dir), bool(snapshots)
        self.sigterm_at = sigterm_at
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []

    def _snapshot(self, trainer: L.Trainer, name: str) -> None:
        last = self.ckpt_dir / "last.ckpt"
        if self.snapshots and trainer.is_global_zero and last.is_file():
            (self.out_dir / "snap").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last, self.out_dir / "snap" / name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._snapshot(trainer, f"kill_step{trainer.global_step + 1}.ckpt")
        if self.sigterm_at == trainer.global_step + 1 and trainer.is_global_zero:
            os.kill(os.getpid(), signal.SIGTERM)  # the batch completes, then LastCheckpoint saves
        self.train.append(
            {
                "step": trainer.global_step + 1,
                "epoch": trainer.current_epoch,
                "batch_idx": batch_idx,
                "q_rows": batch["q_rows"].cpu().clone(),
                "p_rows": batch["p_rows"].cpu().clone(),
            }
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.train[-1]["loss"] = None if loss is None else loss.detach().cpu().clone()
        self.train[-1]["log_step"] = trainer.fit_loop.epoch_loop._batches_that_stepped

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and batch_idx == 0:
            self._snapshot(trainer, f"kill_val{trainer.global_step}.ckpt")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.append({"step": trainer.global_step, "loss": outputs.detach().cpu().clone()})

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        from mlir.training.resume import collect_rng_states

        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "global_step": trainer.global_step,
                "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                "optimizer": trainer.optimizers[0].state_dict(),
                "rng": collect_rng_states(),
                "train": self.train,
                "val": self.val,
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )


# --------------------------------------------------------------------------- runs


def _probe(run_dir: Path, snapshots: bool = False) -> list[str]:
    return [
        "+callbacks.probe._target_=tests.test_resume_exact.ResumeProbe",
        f"+callbacks.probe.out_dir={run_dir / 'probe'}",
        f"+callbacks.probe.ckpt_dir={run_dir / 'checkpoints'}",
        f"+callbacks.probe.snapshots={str(snapshots).lower()}",
    ]


def _run(job, run_dir: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    res = subprocess.run(
        train_cmd(job.overrides(run_dir, *extra)),
        cwd=job.dir,
        env=env(job.dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    res.seconds = time.perf_counter() - t0
    if ok:
        assert res.returncode == 0, f"{run_dir.name} failed ({res.returncode}):\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("resume_exact")
    corpus = write_corpus(d / "corpus.jsonl")

    def overrides(run_dir: Path, *extra: str) -> list[str]:
        return train_overrides(corpus, tiny_model_dir, run_dir, *COMMON, *extra)

    refs: dict[str, Path] = {}

    def reference(layout: str) -> Path:
        """The uninterrupted run of ``layout`` with its kill-point snapshots (made on first use)."""
        if layout not in refs:
            run_dir = d / f"reference_{layout}"
            res = _run(
                SimpleNamespace(dir=d, overrides=overrides), run_dir, *LAYOUTS[layout], *_probe(run_dir, True)
            )
            print(f"\nreference {layout}: {res.seconds:.0f} s")
            refs[layout] = run_dir
        return refs[layout]

    return SimpleNamespace(dir=d, overrides=overrides, reference=reference)


def _killed_at(job, layout: str, kill: str, name: str) -> Path:
    """A run directory whose ``last.ckpt`` is what a kill at ``kill`` leaves."""
    snap = job.reference(layout) / "probe" / "snap" / f"{KILL_POINTS[kill]}.ckpt"
    run_dir = job.dir / name
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copyfile(snap, run_dir / "checkpoints" / "last.ckpt")
    return run_dir


# --------------------------------------------------------------------------- comparisons


def _bitwise(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` are the same nested structure with bitwise-equal tensors and equal values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _bitwise(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _bitwise(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, where


def _same_as_reference(ref_dir: Path, run_dir: Path, first_step: int, val_pending: bool = False) -> None:
    """Every rank's final state, and every batch and validation from the resume point on, bitwise.

    ``first_step``: the first global step the resumed run trains; ``val_pending``: the kill interrupted
    the validation after the step before it, so the resumed run runs that validation again.
    """
    ranks = sorted(p.name for p in (ref_dir / "probe").glob("rank*.pt"))
    assert ranks and ranks == sorted(p.name for p in (run_dir / "probe").glob("rank*.pt"))
    for name in ranks:
        want = torch.load(ref_dir / "probe" / name, weights_only=True)
        have = torch.load(run_dir / "probe" / name, weights_only=True)
        assert have["global_step"] == want["global_step"] == 8
        for key in ("state_dict", "optimizer", "rng"):
            _bitwise(want[key], have[key], f"{name}:{key}")
        # the batches: ids, loss, the step the loggers label them with
        steps = [r["step"] for r in want["train"] if r["step"] >= first_step]
        assert [r["step"] for r in have["train"]] == steps, name
        by_step = {r["step"]: r for r in want["train"]}
        for r in have["train"]:
            _bitwise(by_step[r["step"]], r, f"{name}:step {r['step']}")
        # the validations from the resume point on (a validation the kill interrupted runs again)
        first_val = first_step - 1 if val_pending else first_step
        _bitwise([v for v in want["val"] if v["step"] >= first_val], have["val"], f"{name}:val")
    # the checkpoint selection and the final last.ckpt (written by the resumed run)
    want_m = json.loads((ref_dir / "metrics.json").read_text())
    have_m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("dev/val_loss_best", "dev/best_step", "val/loss"):
        assert have_m[key] == want_m[key], key
    want_c = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    have_c = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers", "RetrievalDataModule"):
        _bitwise(want_c[key], have_c[key], f"last.ckpt:{key}")
    _bitwise(want_c["rng_states"], have_c["rng_states"], "last.ckpt:rng_states")


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kill", list(KILL_POINTS))
def test_resume_after_a_kill_equals_the_uninterrupted_run(job, layout, kill):
    run_dir = _killed_at(job, layout, kill, f"{layout}_{kill}")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    first_step, pending = ckpt["global_step"] + 1, ckpt["mlir_resume_point"]["val_pending"]
    assert pending == kill.startswith("during")
    res = _run(job, run_dir, *LAYOUTS[layout], *_probe(run_dir), "ckpt_path=last")
    print(f"\n{layout} {kill}: resumed at step {first_step} in {res.seconds:.0f} s")
    assert not res.stderr.strip(), res.stderr[-4000:]
    # mlir's sampler state makes a mid-epoch resume exact: Lightning's warning that it is not is silenced
    assert "dataloader is not resumable" not in res.stdout + (run_dir / "train.log").read_text()
    _same_as_reference(job.reference(layout), run_dir, first_step, pending)


@pytest.mark.slow
def test_sigterm_in_the_last_step_of_an_epoch_resumes_exactly(job):
    """SIGTERM in the epoch's last step saves once the epoch is over: another resume point (after the epoch)."""
    run_dir = job.dir / "sigterm_step4"
    _run(job, run_dir, *_probe(run_dir), "+callbacks.probe.sigterm_at=4")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["mlir_resume_point"]["moment"] == "after_epoch"
    sampler = ckpt["RetrievalDataModule"]["sampler"]
    assert (sampler["epoch"], sampler["step"]) == (1, 0)
    for p in (run_dir / "probe").glob("rank*.pt"):
        p.unlink()
    _run(job, run_dir, *_probe(run_dir), "ckpt_path=last")
    _same_as_reference(job.reference("1proc"), run_dir, 5)


@pytest.mark.slow
def test_resuming_with_another_configuration_is_refused_in_one_line(job):
    run_dir = _killed_at(job, "1proc", "mid_epoch", "changed_refused")
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    res = _run(job, run_dir, "data.batch_size=4", "sampler.alpha=0.9", "ckpt_path=last", ok=False)
    assert res.returncode == 2, res.stderr[-4000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path: "), res.stderr[-4000:]
    assert "data.batch_size 8 -> 4" in lines[0] and "sampler.alpha 0.5 -> 0.9" in lines[0]
    assert "+resume.allow_config_change=true" in lines[0]
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing trained


@pytest.mark.slow
def test_allow_config_change_resumes_with_a_warning_naming_the_changes(job):
    run_dir = _killed_at(job, "1proc", "mid_epoch", "changed_allowed")
    res = _run(job, run_dir, "sampler.alpha=0.9", "+resume.allow_config_change=true", "ckpt_path=last")
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: "), res.stderr[-4000:]
    assert "sampler.alpha 0.5 -> 0.9" in lines[0]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


# --------------------------------------------------------------------------- fast, in-process


def test_config_check_names_each_changed_key_or_warns_when_allowed(tmp_path, capsys):
    from omegaconf import OmegaConf

    from mlir.core.errors import ConfigError
    from mlir.training.resume_guard import CONFIG_KEY, check_resume_config, resume_config

    base = {
        "seed": 7,
        "data": {"batch_size": 8, "num_workers": 0, "corpus": {"path": "a.jsonl"}},
        "sampler": {"alpha": 0.5, "schedule": "constant"},
        "model": {"optimizer": {"lr": 1e-3}},
        "trainer": {"max_steps": 8, "accumulate_grad_batches": 1},
    }
    ckpt = tmp_path / "last.ckpt"
    values = resume_config(OmegaConf.create(base))
    torch.save(
        {"state_dict": {}, CONFIG_KEY: values, "RetrievalDataModule": {"sampler": {"fingerprint": "f1"}}},
        ckpt,
    )
    sampler = SimpleNamespace(fingerprint="f1")
    assert check_resume_config(OmegaConf.create(base), str(ckpt), sampler) == []
    # data.num_workers only changes the speed
    same = OmegaConf.merge(base, {"data": {"num_workers": 4}})
    assert check_resume_config(same, str(ckpt), sampler) == []

    changed = OmegaConf.merge(
        base, {"data": {"batch_size": 4}, "sampler": {"alpha": 0.9}, "model": {"optimizer": {"lr": 2e-3}}}
    )
    with pytest.raises(ConfigError) as e:
        check_resume_config(changed, str(ckpt), SimpleNamespace(fingerprint="f2"))
    msg = str(e.value)
    assert e.value.where == "ckpt_path" and "\n" not in msg
    for part in ("data.batch_size 8 -> 4", "sampler.alpha 0.5 -> 0.9", "model.optimizer.lr 0.001 -> 0.002"):
        assert part in msg
    assert "fingerprint" not in msg  # the config keys already explain it

    # same config, other corpus content: the sampler fingerprint tells
    with pytest.raises(ConfigError, match=r"training data \(sampler fingerprint\) f1 -> f2"):
        check_resume_config(OmegaConf.create(base), str(ckpt), SimpleNamespace(fingerprint="f2"))

    allowed = OmegaConf.merge(changed, {"resume": {"allow_config_change": True}})
    changes = check_resume_config(allowed, str(ckpt), sampler)
    assert [k for k, *_ in changes] == ["data.batch_size", "model.optimizer.lr", "sampler.alpha"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "sampler.alpha 0.5 -> 0.9" in err[0]


def test_a_resumed_sampler_start_survives_a_second_iter_before_reading():
    """A DataLoader with workers calls iter() on its batch sampler twice and reads the second iterator."""
    from _reliability import two_language_sampler

    s = two_language_sampler()
    full = [list(b) for b in s]
    s.load_state_dict(s.state_at(0, 3))
    s.set_epoch(0)
    iter(s)  # the iterator's __init__; never read
    assert [list(b) for b in s] == full[3:]
    assert [list(b) for b in s] == full  # once read from, the resumed start is spent


def test_loop_normalisation_of_an_epoch_end_checkpoint():
    """The reported checkpoint: epoch 0 in its end hooks, sampler at epoch 1 step 0 -> "epoch 0 done"."""
    from mlir.training.resume import NEXT_EPOCH, normalize_loops

    def tracker(r, s, p, c):
        return {"ready": r, "started": s, "processed": p, "completed": c}

    loops = {
        "epoch_progress": {"total": tracker(1, 1, 1, 0), "current": tracker(1, 1, 1, 0)},
        "epoch_loop.batch_progress": {
            "total": tracker(4, 4, 4, 4),
            "current": tracker(4, 4, 4, 4),
            "is_last_batch": True,
        },
        "epoch_loop.state_dict": {"_batches_that_stepped": 4},
        "epoch_loop.val_loop.batch_progress": {
            "total": tracker(1, 1, 1, 1),
            "current": tracker(1, 1, 1, 1),
            "is_last_batch": True,
        },
    }
    ckpt = {"loops": {"fit_loop": loops}}
    assert normalize_loops(ckpt) == NEXT_EPOCH  # inferred from the counters (an older checkpoint)
    assert loops["epoch_progress"]["current"] == tracker(1, 1, 1, 1)
    assert loops["epoch_loop.batch_progress"]["current"] == tracker(0, 0, 0, 0)
    assert loops["epoch_loop.state_dict"]["_batches_that_stepped"] == 4
