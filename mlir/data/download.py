"""Fetch the public evaluation files when they are not already on disk.

Downloads are atomic (temporary file in the target directory, checked, then renamed), so an
interrupted or failed download never leaves a file that a later run would take for the real one.
When the machine is offline the error says exactly where to put the files instead.

Checksums: ``MKQA_SHA256`` is ``None`` because the file could not be fetched while this was written;
set it (or pass ``sha256=``) once you have verified a download, and every later download and
:func:`mlir.data.mkqa.read_mkqa` call can check against it. XQuAD-R files are checked for structure
(valid JSON with a ``data`` list); pass ``sha256={lang: hex}`` to pin them too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from mlir.data.io import atomic_path, iter_jsonl, read_json_file, verify_sha256
from mlir.errors import DataError, MlirError
from mlir.paths import default_cache_dir, default_data_dir

LAREQA_BASE_URL = "https://github.com/google-research-datasets/lareqa/raw/master"
XQUAD_R_URL = LAREQA_BASE_URL + "/xquad-r/{lang}.json"
XQUAD_R_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MKQA_URL = "https://github.com/apple/ml-mkqa/raw/main/dataset/mkqa.jsonl.gz"
MKQA_FILENAME = "mkqa.jsonl.gz"
# sha256 of the official mkqa.jsonl.gz. Unknown here (no network when written): None skips the check.
MKQA_SHA256: str | None = None


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    validate: Callable[[Path], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically; verify ``sha256`` and run ``validate(tmp_path)`` first.

    Network failures raise :class:`MlirError` (``where`` = the destination); a checksum or validation
    failure raises :class:`DataError`. ``dest`` only ever appears complete and checked.
    """
    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp:
            try:
                with urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            except (URLError, OSError, ValueError) as e:
                raise MlirError(f"could not download {url} ({e})", where=str(dest)) from None
            if sha256:
                try:
                    verify_sha256(tmp, sha256)
                except DataError as e:
                    raise DataError(f"download from {url}: {e.message}", where=str(dest)) from None
            if validate is not None:
                validate(tmp)
    except PermissionError as e:
        raise MlirError(f"cannot write the download ({e})", where=str(dest.parent)) from None
    return dest


def _validate_squad(url: str, dest: Path) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        try:
            doc = read_json_file(tmp)
        except DataError as e:
            raise DataError(f"download from {url} is not valid JSON ({e.message})", where=str(dest)) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise DataError(f"download from {url} is not a SQuAD-format file", where=str(dest))

    return check


def ensure_xquad_r(
    data_dir: str | os.PathLike | None = None,
    langs: Sequence[str] = XQUAD_R_LANGS,
    *,
    sha256: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return ``data_dir/xquad-r``, downloading any missing ``{lang}.json`` from the LAReQA repository.

    ``data_dir`` defaults to :func:`mlir.paths.default_data_dir`. Existing files are left untouched
    (the shared data directory is read-only). Offline, raises one :class:`MlirError` listing the
    missing files and how to provide them.
    """
    root = Path(data_dir) if data_dir is not None else Path(default_data_dir())
    target = root / "xquad-r"
    missing = [lang for lang in dict.fromkeys(langs) if not (target / f"{lang}.json").is_file()]
    for i, lang in enumerate(missing):
        url = XQUAD_R_URL.format(lang=lang)
        dest = target / f"{lang}.json"
        try:
            download_file(
                url,
                dest,
                sha256=(sha256 or {}).get(lang),
                validate=_validate_squad(url, dest),
                timeout=timeout,
            )
        except DataError:
            raise
        except MlirError as e:
            todo = ", ".join(f"{m}.json" for m in missing[i:])
            raise MlirError(
                f"XQuAD-R file(s) {todo} are missing and could not be downloaded ({e.message}). "
                f"Place the LAReQA files (https://github.com/google-research-datasets/lareqa, folder "
                f"xquad-r/) at {target}/<lang>.json, or set MLIR_DATA_DIR to a directory that contains "
                "xquad-r/",
                where=str(target),
            ) from None
    return target


def download_mkqa(
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = MKQA_URL,
    sha256: str | None = MKQA_SHA256,
    timeout: float = 120.0,
) -> Path:
    """Return the path of ``mkqa.jsonl.gz`` in ``cache_dir`` (default ``<mlir cache>/mkqa``), fetching it once.

    An existing file is re-used after its checksum is verified (when one is known).
    """
    cache = Path(cache_dir) if cache_dir is not None else Path(default_cache_dir()) / "mkqa"
    dest = cache / MKQA_FILENAME
    if dest.is_file():
        verify_sha256(dest, sha256)
        return dest
    try:
        return download_file(url, dest, sha256=sha256, validate=_validate_jsonl(url, dest), timeout=timeout)
    except DataError:
        raise
    except MlirError as e:
        raise MlirError(
            f"MKQA is missing and could not be downloaded ({e.message}). Download {url} elsewhere and "
            f"place it at {dest}, or pass its path to read_mkqa()",
            where=str(dest),
        ) from None


def _validate_jsonl(url: str, dest: Path) -> Callable[[Path], None]:
    """A complete (gzip) JSON-lines file: catches truncated downloads when no checksum is pinned."""

    def check(tmp: Path) -> None:
        try:
            for _ in iter_jsonl(tmp):
                pass
        except DataError as e:
            line = e.where.rsplit(":", 1)[-1] if e.where else "?"
            raise DataError(
                f"download from {url} is damaged at line {line}: {e.message}", where=str(dest)
            ) from None

    return check
