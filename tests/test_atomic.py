"""mlir.core.atomic: every file mlir writes appears whole or not at all, readable as the umask allows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlir.core.atomic import atomic_dir, atomic_path, open_atomic, write_bytes, write_json, write_text


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _write_per_query(path: Path) -> None:
    from mlir.eval.per_query import write_per_query

    write_per_query(path, [{"benchmark": "b", "setting": "mono", "q_lang": "en", "d_lang": "en",
                            "qid": ["q0"], "metrics": {"ndcg@10": np.array([1.0])}}])  # fmt: skip


def _write_jsonl(path: Path) -> None:
    from mlir.data.io import write_jsonl

    write_jsonl(path, [{"a": 1}])


def _save_checkpoint(path: Path) -> None:
    import torch

    from mlir.training.checkpoint_io import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, path)


def _library_writes_0600(path: Path) -> None:
    """A library that (re)creates its output 0600, as tempfile.mkstemp and safetensors do."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x")
        os.close(fd)


WRITERS = {
    "write_text": lambda p: write_text(p, "hello\n"),
    "write_bytes": lambda p: write_bytes(p, b"\0\1"),
    "write_json": lambda p: write_json(p, {"a": np.float32(1.5)}),
    "library_0600": _library_writes_0600,
    "per_query.npz": _write_per_query,
    "jsonl.gz": _write_jsonl,
    "checkpoint": _save_checkpoint,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_written_files_are_readable_as_the_umask_allows(tmp_path, umask, writer):
    path = tmp_path / "sub" / f"out.{writer}"
    WRITERS[writer](path)
    assert _mode(path) == 0o666 & ~umask  # 0o644 under umask 022, 0o664 under 002 (never mkstemp's 0600)
    assert _names(path.parent) == [path.name]  # no temp file left


def test_write_json_round_trips_and_refuses_nan(tmp_path):
    path = write_json(tmp_path / "m.json", {"b": 1, "a": np.float64(0.5), "v": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 1, "v": [0, 1]}
    with pytest.raises(ValueError):
        write_json(path, {"x": float("nan")})
    assert json.loads(path.read_text())["b"] == 1  # the refused write changed nothing
    assert _names(tmp_path) == ["m.json"]


def test_an_error_mid_write_leaves_no_file_and_no_temp_file(tmp_path):
    path = tmp_path / "new.txt"
    with pytest.raises(RuntimeError), open_atomic(path) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_an_error_mid_write_keeps_the_old_file_intact(tmp_path):
    path = write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("new, half written")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["metrics.json"]


def test_the_destination_changes_only_when_the_block_ends(tmp_path):
    path = write_text(tmp_path / "f.txt", "old")
    with open_atomic(path) as f:
        f.write("new")
        f.flush()
        assert path.read_text() == "old"  # readers see the old file until the rename
    assert path.read_text() == "new"


def test_a_dead_writers_temp_file_is_removed_by_the_next_write_a_live_ones_is_kept(tmp_path):
    from mlir.core import atomic

    path = tmp_path / "last.ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.ckpt.{atomic._HOST}.{dead_pid}.abcd1234.tmp"
    live = tmp_path / f".last.ckpt.{atomic._HOST}.{os.getppid()}.abcd1234.tmp"
    other = tmp_path / ".other.ckpt.x.1.abcd1234.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    write_bytes(path, b"ckpt")
    assert _names(tmp_path) == sorted(["last.ckpt", live.name, other.name])


def test_atomic_dir_appears_whole_with_the_umask_modes(tmp_path, umask):
    out = tmp_path / "export"
    out.mkdir()  # an empty directory may be replaced
    with atomic_dir(out) as tmp:
        assert not any(out.iterdir())
        (tmp / "sub").mkdir(mode=0o700)
        fd = os.open(tmp / "sub" / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert _mode(out / "sub") == 0o777 & ~umask
    assert _mode(out / "sub" / "model.safetensors") == 0o666 & ~umask
    assert _names(tmp_path) == ["export"]


def test_atomic_dir_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "export") as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_collected_records_keep_their_time_and_get_the_umask_mode(tmp_path, umask):
    from mlir.study.collect import collect

    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("a: 1\n")
    for name in ("done.json", "metrics.json"):
        (job / name).write_text("{}")
        os.chmod(job / name, 0o600)  # as an older mlir wrote them
    os.utime(job / "metrics.json", (1_000_000_000, 1_000_000_000))
    copied, unfinished = collect(tmp_path / "sweep", tmp_path / "out")
    assert copied == [job] and unfinished == []
    got = tmp_path / "out" / "0" / "metrics.json"
    assert got.read_text() == "{}" and _mode(got) == 0o666 & ~umask
    assert got.stat().st_mtime == 1_000_000_000
    assert _names(got.parent) == sorted([".hydra", "done.json", "metrics.json"])
