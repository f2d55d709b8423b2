"""Copy a sweep's records into a results directory: ``python -m mlir.study.collect <sweep> <out>``.

Why: ``results/`` must hold exactly what a report is built from (each job's resolved config,
``metrics.json``, ``per_query.npz``, ``done.json`` and log, and the sweep's ``multirun.yaml``) and
nothing heavy (no checkpoints, no weights, no logger folders), so the report can be regenerated from
the committed files alone. Unfinished jobs (no ``done.json``) are left out and listed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from mlir.core.atomic import atomic_path
from mlir.training.completed import MARKER

RECORD_FILES = ("metrics.json", "per_query.npz", MARKER, "multirun.yaml")
RECORD_GLOBS = (".hydra/config.yaml", ".hydra/overrides.yaml", "*.log")


def _copy(src: Path, dest: Path) -> None:
    """Copy a record atomically, keeping its modification time; the mode is the umask's (a record
    written as 0600 by an older mlir becomes readable by the group, as the results directory must be)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))


def collect(sweep: Path, out: Path) -> tuple[list[Path], list[Path]]:
    """Copy the finished jobs' records; returns (copied job dirs, unfinished job dirs)."""
    copied, unfinished = [], []
    for top in sorted(sweep.rglob("multirun.yaml")):
        _copy(top, out / top.relative_to(sweep))
    for cfg in sorted(sweep.rglob(".hydra/config.yaml")):
        job = cfg.parent.parent
        if ".submitit" in job.parts:
            continue
        if not (job / MARKER).is_file():
            unfinished.append(job)
            continue
        files = [job / f for f in RECORD_FILES if (job / f).is_file()]
        files += [f for g in RECORD_GLOBS for f in job.glob(g)]
        for f in files:
            _copy(f, out / f.relative_to(sweep))
        copied.append(job)
    return copied, unfinished


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlir.study.collect", description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"error: {args.sweep}: not a directory", file=sys.stderr)
        return 2
    copied, unfinished = collect(args.sweep, args.out)
    print(f"{len(copied)} finished jobs copied to {args.out}; {len(unfinished)} unfinished left out")
    for job in unfinished:
        print(f"  unfinished: {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
