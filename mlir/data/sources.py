"""Config-facing corpus builders: locate (and if needed download) the data, then read it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mlir.data.corpus import ParallelCorpus


def xquad_r_corpus(
    data_dir: str | os.PathLike,
    langs: Sequence[str] | None = None,
    positive: str = "sentence",
    download: bool = True,
    name: str = "xquad_r",
) -> ParallelCorpus:
    """XQuAD-R from ``data_dir/xquad-r``, fetched from the LAReQA repository first when missing."""
    from mlir.data.download import XQUAD_R_LANGS, ensure_xquad_r
    from mlir.data.xquad_r import read_xquad_r

    directory = Path(data_dir) / "xquad-r"
    if download:
        directory = ensure_xquad_r(data_dir, list(langs or XQUAD_R_LANGS))
    return read_xquad_r(directory, langs=langs, positive=positive, name=name)
