"""Fetch the public evaluation files when they are not already on disk.

Downloads are atomic (temporary file in the target directory, checked, then renamed), so an
interrupted or failed download never leaves a file that a later run would take for the real one, and
a refused download leaves any earlier copy as it was. When the machine is offline the error says
exactly where to put the files instead.

Pinning (why: a moving branch can change or lose files under a finished experiment — MLQA-R was
removed from LAReQA's ``master``). XQuAD-R and MLQA-R come from one fixed commit of
google-research-datasets/lareqa (:data:`LAREQA_COMMIT`) and every file must match the SHA-256 in
:data:`LAREQA_SHA256`; a mismatch is one :class:`DataError` (file, expected and actual hash) and
nothing is installed. Files already on disk are *not* hashed on every run (the shared directory is
read-only and users may keep their own copies); ``ensure_lareqa(..., verify=True)`` or
``python -m mlir.data.download {xquad-r,mlqa-r} --verify`` checks them on request.

MKQA: ``MKQA_SHA256`` is ``None`` because the file could not be fetched while this was written; set
it (or pass ``sha256=``) once you have verified a download, and every later download and
:func:`mlir.data.mkqa.read_mkqa` call can check against it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from mlir.core.atomic import atomic_path
from mlir.core.errors import DataError, MlirError, exit_on_user_error
from mlir.core.paths import default_cache_dir, default_data_dir
from mlir.data.io import iter_jsonl, verify_sha256

# "Changed mlqa-dev-r to mlqa-dev" (2020-04-24): the last commit with both xquad-r/ and mlqa-r/
# (b91469b removed MLQA-R; xquad-r/*.json are unchanged on master since).
LAREQA_COMMIT = "354d67d1cd066854cdfbf5ad0e6105528976141d"
LAREQA_BASE_URL = f"https://raw.githubusercontent.com/google-research-datasets/lareqa/{LAREQA_COMMIT}"
XQUAD_R_URL = LAREQA_BASE_URL + "/xquad-r/{lang}.json"
MLQA_R_URL = LAREQA_BASE_URL + "/mlqa-r/{lang}.json"
XQUAD_R_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA_R_LANGS = ("ar", "de", "en", "es", "hi", "vi", "zh")
# dataset folder -> file name -> sha256 of that file at LAREQA_COMMIT
LAREQA_SHA256: dict[str, dict[str, str]] = {
    "xquad-r": {
        "ar.json": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
        "de.json": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
        "el.json": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
        "en.json": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
        "es.json": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
        "hi.json": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
        "ru.json": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
        "th.json": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
        "tr.json": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
        "vi.json": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
        "zh.json": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
    },
    "mlqa-r": {
        "ar.json": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
        "de.json": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
        "en.json": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
        "es.json": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
        "hi.json": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
        "vi.json": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
        "zh.json": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
    },
}
_LAREQA_NAMES = {"xquad-r": "XQuAD-R", "mlqa-r": "MLQA-R"}
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
                    verify_sha256(tmp, sha256, advice="not installed; any earlier copy is unchanged")
                except DataError as e:
                    raise DataError(f"download from {url} refused: {e.message}", where=str(dest)) from None
            if validate is not None:
                validate(tmp)
    except PermissionError as e:
        raise MlirError(f"cannot write the download ({e})", where=str(dest.parent)) from None
    return dest


def ensure_lareqa(
    dataset: str,
    directory: str | os.PathLike,
    langs: Sequence[str] | None = None,
    *,
    base_url: str = LAREQA_BASE_URL,
    verify: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return ``directory``, downloading any missing ``{lang}.json`` of ``dataset`` at :data:`LAREQA_COMMIT`.

    ``dataset`` is ``"xquad-r"`` or ``"mlqa-r"``; ``langs=None`` means all of its languages. Every
    download must match :data:`LAREQA_SHA256` (else :class:`DataError`, nothing installed). Present
    files are left untouched and, unless ``verify``, not hashed. Offline, raises one
    :class:`MlirError` listing the missing files and how to provide them. ``base_url`` serves a
    mirror with the same layout (``<base_url>/<dataset>/<lang>.json``).
    """
    if dataset not in LAREQA_SHA256:
        raise MlirError(f"unknown LAReQA dataset {dataset!r}; use one of {sorted(LAREQA_SHA256)}")
    table, name = LAREQA_SHA256[dataset], _LAREQA_NAMES[dataset]
    target = Path(directory)
    wanted = list(dict.fromkeys(langs)) if langs is not None else [f.removesuffix(".json") for f in table]
    if verify:
        for lang in wanted:
            dest = target / f"{lang}.json"
            if dest.is_file() and f"{lang}.json" in table:
                verify_sha256(
                    dest,
                    table[f"{lang}.json"],
                    advice=f"not the {name} file of LAReQA commit {LAREQA_COMMIT[:7]}; "
                    "delete it to download that one",
                )
    missing = [lang for lang in wanted if not (target / f"{lang}.json").is_file()]
    unknown = [lang for lang in missing if f"{lang}.json" not in table]
    if unknown:
        raise MlirError(
            f"no {name} file for language(s) {unknown} here and LAReQA has none to download "
            f"({name} languages: {', '.join(f.removesuffix('.json') for f in table)})",
            where=str(target),
        )
    for i, lang in enumerate(missing):
        url = f"{base_url.rstrip('/')}/{dataset}/{lang}.json"
        try:
            download_file(url, target / f"{lang}.json", sha256=table[f"{lang}.json"], timeout=timeout)
        except DataError:
            raise
        except MlirError as e:
            todo = ", ".join(f"{m}.json" for m in missing[i:])
            raise MlirError(
                f"{name} file(s) {todo} are missing and could not be downloaded ({e.message}). "
                f"Place the LAReQA files (https://github.com/google-research-datasets/lareqa/tree/"
                f"{LAREQA_COMMIT}/{dataset}) at {target}/<lang>.json, or set MLIR_DATA_DIR to a directory "
                f"that contains {dataset}/",
                where=str(target),
            ) from None
    return target


def ensure_xquad_r(
    data_dir: str | os.PathLike | None = None,
    langs: Sequence[str] = XQUAD_R_LANGS,
    *,
    verify: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return ``data_dir/xquad-r`` with the given languages, fetched (pinned, checked) when missing.

    ``data_dir`` defaults to :func:`mlir.core.paths.default_data_dir`; see :func:`ensure_lareqa`.
    """
    root = Path(data_dir) if data_dir is not None else Path(default_data_dir())
    return ensure_lareqa("xquad-r", root / "xquad-r", langs, verify=verify, timeout=timeout)


def ensure_mlqa_r(
    data_dir: str | os.PathLike | None = None,
    langs: Sequence[str] = MLQA_R_LANGS,
    *,
    verify: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return ``data_dir/mlqa-r`` (MLQA-R is only on LAReQA's pinned commit, not on its ``master``)."""
    root = Path(data_dir) if data_dir is not None else Path(default_data_dir())
    return ensure_lareqa("mlqa-r", root / "mlqa-r", langs, verify=verify, timeout=timeout)


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


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlir.data.download {xquad-r,mlqa-r} [--data-dir D] [--langs ..] [--verify]``."""
    ap = argparse.ArgumentParser(
        prog="python -m mlir.data.download",
        description=f"Fetch XQuAD-R / MLQA-R at LAReQA commit {LAREQA_COMMIT[:7]} (sha256-checked).",
    )
    ap.add_argument("dataset", choices=sorted(LAREQA_SHA256))
    ap.add_argument("--data-dir", default=None, help="parent of <dataset>/ (default: MLIR_DATA_DIR)")
    ap.add_argument("--langs", nargs="+", default=None, help="default: every language of the dataset")
    ap.add_argument("--verify", action="store_true", help="also check the sha256 of files already present")
    args = ap.parse_args(argv)
    root = Path(args.data_dir) if args.data_dir else Path(default_data_dir())
    target = ensure_lareqa(args.dataset, root / args.dataset, args.langs, verify=args.verify)
    print(f"{_LAREQA_NAMES[args.dataset]} ready in {target}" + (" (sha256 verified)" if args.verify else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
