"""Bad input, config part: ``python train.py`` / ``python eval.py`` with a mistake end in exactly one
stderr line ``error: <config key or file>: ...``, exit code 2, no traceback and no output files.

Data-file problems are tabled in test_bad_input.py; here they only check the plumbing end to end.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _reliability import ROOT, env, train_overrides, write_corpus

# (id, overrides after the base job, expected start of the `where` part, fragment of the message)
# `{corpus}`, `{tmp}`, `{ckpt32}`, `{tiny48}`, `{bad_jsonl}` are filled in per test.
CASES = [
    ("unknown-train-lang", ["data.train_langs=[en,xx]"], "data.train_langs", "['xx']"),
    ("alpha-above-1", ["sampler.alpha=1.5"], "sampler.alpha", "[0, 1]"),
    ("alpha-below-0", ["sampler.alpha=-0.1"], "sampler.alpha", "[0, 1]"),
    (
        "alpha-end-above-1",
        ["sampler.schedule=linear", "sampler.alpha_start=1", "sampler.alpha_end=2"],
        "sampler.alpha_end",
        "[0, 1]",
    ),
    ("batch-over-mono-ids", ["sampler=xx_mono", "data.batch_size=64"], "data.batch_size", "X-X-mono"),
    ("batch-size-zero", ["data.batch_size=0"], "data.batch_size", "positive"),
    ("lang-sampling-unknown", ["sampler.lang_sampling=bogus"], "sampler.lang_sampling", "bogus"),
    (
        "missing-model-dir",
        ["model.encoder.name_or_path=/nonexistent/model"],
        "model.encoder.name_or_path",
        "does not exist",
    ),
    ("hub-model-offline", ["model.encoder.name_or_path=xlm-roberta-base"], "model.", "xlm-roberta-base"),
    (
        "mandatory-value-missing",
        ["model.encoder.name_or_path=???"],
        "model.encoder.name_or_path",
        "Missing mandatory value",
    ),
    ("temperature-zero", ["model.loss.temperature=0"], "model.loss.temperature", "> 0"),
    ("temperature-negative", ["model.loss.temperature=-0.05"], "model.loss.temperature", "> 0"),
    ("grad-clip-negative", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val", ">= 0"),
    ("grad-clip-nan", ["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val", ""),
    ("grad-clip-not-a-number", ["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val", "number"),
    ("temperature-not-a-number", ["model.loss.temperature=abc"], "model.loss.temperature", "number"),
    ("lr-negative", ["model.optimizer.lr=-1e-3"], "model.optimizer.lr", "> 0"),
    ("weight-decay-negative", ["model.optimizer.weight_decay=-0.1"], "model.optimizer.weight_decay", ">= 0"),
    ("max-steps-zero", ["trainer.max_steps=0"], "trainer.max_steps", "-1 (no limit) or > 0"),
    ("output-dir-is-a-file", ["paths.output_dir={bad_jsonl}"], "paths.output_dir", "not a directory"),
    ("nan-policy-unknown", ["model.nan_policy=sometimes"], "model.nan_policy", "'skip' or 'stop'"),
    ("ckpt-missing", ["ckpt_path={tmp}/nope.ckpt"], "ckpt_path", "does not exist"),
    ("ckpt-dir-without-last", ["ckpt_path={tmp}"], "ckpt_path", "no last.ckpt"),
    (
        "ckpt-other-hidden-size",
        ["ckpt_path={ckpt32}", "model.encoder.name_or_path={tiny48}"],
        "{ckpt32}",
        "does not fit",
    ),
    ("ckpt-not-a-checkpoint", ["ckpt_path={bad_jsonl}"], "{bad_jsonl}", "cannot read checkpoint"),
    ("corpus-missing", ["data.corpus.path={tmp}/missing.jsonl"], "{tmp}/missing.jsonl", "not found"),
    ("corpus-malformed-line", ["data.corpus.path={bad_jsonl}"], "{bad_jsonl}:2", "malformed JSON"),
    (
        "unknown-signal",
        ["callbacks.last_checkpoint.signals=[SIGFOO]"],
        "callbacks.last_checkpoint.signals",
        "SIGFOO",
    ),
]

#: what Hydra itself leaves in a run directory before the task function runs
HYDRA_FILES = {".hydra", "train.log", "eval.log"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    """Corpus, a hidden-32 checkpoint of the tiny model, a hidden-48 tiny model, a malformed JSONL."""
    from mlir.models.dual_encoder import DualEncoder
    from mlir.models.module import RetrieverModule
    from mlir.models.tiny import build_tiny_model

    d = tmp_path_factory.mktemp("cfg-errors")
    corpus = write_corpus(d / "corpus.jsonl")
    module = RetrieverModule(
        DualEncoder(str(tiny_model_dir), query_max_length=32, passage_max_length=64, token_budget=2048)
    )
    ckpt32 = d / "hidden32.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 3}, ckpt32)
    bad = d / "bad.jsonl"
    bad.write_text(corpus.read_text().splitlines()[0] + "\n{oops\n")
    return {
        "corpus": corpus,
        "ckpt32": ckpt32,
        "tiny48": build_tiny_model(d / "tiny48", hidden_size=48),
        "bad_jsonl": bad,
    }


def _fill(s: str, values: dict) -> str:
    for k, v in values.items():
        s = s.replace("{" + k + "}", str(v))
    return s


def _assert_one_clean_error(
    res: subprocess.CompletedProcess, where: str, fragment: str, run_dir: Path
) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith(f"error: {where}"), lines[0]
    assert fragment in lines[0], lines[0]
    # nothing half-written: only what Hydra creates before the job starts
    left = {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()
    assert left <= HYDRA_FILES, left


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_train_config_error_is_one_line(case, inputs, tiny_model_dir, tmp_path):
    _, extra, where, fragment = case
    values = {**inputs, "tmp": tmp_path}
    run_dir = tmp_path / "run"
    overrides = train_overrides(inputs["corpus"], tiny_model_dir, run_dir, "trainer.max_steps=2")
    overrides += [_fill(o, values) for o in extra]
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _assert_one_clean_error(res, _fill(where, values), fragment, run_dir)


def test_eval_checkpoint_of_another_model_is_one_line(inputs, tmp_path):
    run_dir = tmp_path / "run"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval.py"),
            "model=tiny_random",
            f"model.encoder.name_or_path={inputs['tiny48']}",
            f"ckpt_path={inputs['ckpt32']}",
            "eval.model_from_run=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _assert_one_clean_error(res, str(inputs["ckpt32"]), "does not fit", run_dir)
