"""Every command the README and docs show still works: train.py / eval.py overrides compose, and each
``python -m mlir...`` module answers ``--help``. Docs that drift from the code fail here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import mlir.core.config  # noqa: F401  (resolvers)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
START = re.compile(r"(?:srun\s+)?python (?:train\.py|eval\.py|-m mlir\.[\w.]+)")
PLACEHOLDER = re.compile(r"<[^>]+>")


def _commands() -> list[tuple[str, str]]:
    """(where, command) for every command line in code blocks and inline code of the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        fenced = False
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            for chunk in [line] if fenced else re.findall(r"`([^`]+)`", line):
                m = START.search(chunk)
                if m:
                    cmd = chunk[m.start() :].split(" #")[0].split("&&")[0].strip()
                    found.append((f"{doc.relative_to(ROOT)}:{lineno}", cmd))
    return sorted(set(found))


COMMANDS = _commands()
APPS = [(w, c) for w, c in COMMANDS if re.match(r"(srun )?python (train|eval)\.py", c)]
MODULES = sorted(
    {re.match(r"(?:srun )?python -m (mlir\.[\w.]+)", c).group(1) for _, c in COMMANDS if " -m mlir." in c}
)


def _overrides(cmd: str) -> tuple[str, list[str]]:
    """The config name and Hydra overrides of a doc command; placeholders become dummy values, a sweep's
    comma list its first value (composition checks keys and groups, not files)."""
    cmd = cmd.replace("<same overrides>", "").replace("$SLURM_JOB_ID", "1")
    args = shlex.split(PLACEHOLDER.sub("x", cmd))
    args = args[args.index("python") + 1 :]
    name = "train" if args[0] == "train.py" else "eval"
    out = []
    for a in args[1:]:
        if a in ("-m", "--multirun") or a.startswith("--"):
            continue
        key, _, val = a.partition("=")
        if "," in val and not val.startswith(("[", "{", "'", '"')) and "(" not in val:
            val = val.split(",")[0]
        out.append(f"{key}={val}" if _ else a)
    return name, out


def test_the_docs_show_commands():
    assert len(APPS) >= 20 and {
        "mlir.report",
        "mlir.show_split",
        "mlir.export",
        "mlir.preview_batches",
    } <= set(MODULES)


@pytest.mark.parametrize(("where", "cmd"), APPS, ids=[w for w, _ in APPS])
def test_documented_train_and_eval_commands_compose(where, cmd):
    name, overrides = _overrides(cmd)
    if any("submitit" in o for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if any("optuna" in o for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    assert cfg.task_name, where


@pytest.mark.parametrize("module", MODULES)
def test_documented_modules_answer_help(module):
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, f"python -m {module} --help: {res.stderr[-1500:]}"
    assert res.stdout.strip()
