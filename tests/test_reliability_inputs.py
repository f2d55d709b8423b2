"""Input mistakes that used to be silent or misleading: language-code case, negatives the corpus does
not have, a directory as corpus path, broken checkpoint files, an export target that is a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from mlir.core.errors import ConfigError, DataError, MlirError
from mlir.data.corpus import ParallelCorpus
from mlir.data.io import iter_jsonl
from mlir.data.jsonl import check_negatives, normalize_lang, read_jsonl
from mlir.training.checkpoint import check_fits, load_checkpoint, load_module_weights


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(pid: str, lang: str, **extra) -> dict:
    return {"id": pid, "lang": lang, "query": f"q {pid} {lang}", "positive": f"p {pid} {lang}", **extra}


# ------------------------------------------------------------------------------- language codes


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("en", "en"),
        ("EN", "en"),
        ("zh-hans-cn", "zh-Hans-CN"),
        ("ZH-HANS-CN", "zh-Hans-CN"),
        ("pt-br", "pt-BR"),
        ("pt_br", "pt_BR"),  # separators kept
        ("es-419", "es-419"),
        ("sr-latn", "sr-Latn"),
        ("en-US-x-TWAIN", "en-US-x-twain"),  # after a singleton everything is lower case
        ("x-Klingon", "x-klingon"),
        ("de-CH-1996", "de-CH-1996"),
        ("zh_cn", "zh_CN"),
    ],
)
def test_normalize_lang_gives_bcp47_case(raw, norm):
    assert normalize_lang(raw) == norm


def test_mixed_case_language_codes_are_one_language(tmp_path):
    path = _write(
        tmp_path / "c.jsonl",
        [_row("1", "EN"), _row("1", "de"), _row("2", "en"), _row("2", "DE"), _row("3", "Zh-hans")],
    )
    corpus = read_jsonl(path, cache_dir=tmp_path / "cache")
    assert corpus.langs == ["de", "en", "zh-Hans"]
    assert corpus.meta["rows_per_lang"] == {"de": 2, "en": 2, "zh-Hans": 1}
    assert corpus.meta["langs_renamed"] == {"DE": "de", "EN": "en", "Zh-hans": "zh-Hans"}


def test_same_id_in_two_cases_of_one_language_is_a_duplicate(tmp_path):
    path = _write(tmp_path / "c.jsonl", [_row("1", "en"), _row("2", "en"), _row("1", "EN")])
    with pytest.raises(DataError) as ei:
        read_jsonl(path, cache_dir=tmp_path / "cache")
    assert ei.value.where == f"{path}:3" and "\n" not in str(ei.value)
    assert "first seen on line 1" in ei.value.message and "'en' and 'EN' are both 'en'" in ei.value.message


# ------------------------------------------------------------------------------------ negatives


def test_check_negatives_refuses_negatives_the_corpus_does_not_have(tmp_path):
    plain = read_jsonl(
        _write(tmp_path / "plain.jsonl", [_row("1", "en"), _row("2", "en")]), cache_dir=tmp_path
    )
    check_negatives(plain, 0)  # nothing asked, nothing to check
    with pytest.raises(ConfigError) as ei:
        check_negatives(plain, 2)
    assert ei.value.where == "data.num_negatives" and "\n" not in str(ei.value)
    assert "is 2 but no row of corpus 'plain' has 'negatives'" in ei.value.message
    some = read_jsonl(
        _write(tmp_path / "some.jsonl", [_row("1", "en", negatives=["n"]), _row("2", "en")]),
        cache_dir=tmp_path,
    )
    check_negatives(some, 2)  # at least one row has them
    check_negatives(ParallelCorpus.from_rows([_row("1", "en", negatives=["a", "b"])]), 1)


# ------------------------------------------------------------------------------ directory as path


def test_corpus_path_that_is_a_directory_says_so(tmp_path):
    d = tmp_path / "corpora"
    d.mkdir()
    with pytest.raises(DataError) as ei:
        read_jsonl(d, cache_dir=tmp_path / "cache")
    msg = ei.value.message
    assert ei.value.where == str(d) and "\n" not in str(ei.value)
    assert msg.startswith("is a directory") and ".jsonl or .jsonl.gz" in msg and "file not found" not in msg
    _write(d / "train.jsonl", [_row("1", "en")])
    with pytest.raises(DataError) as ei:
        read_jsonl(d, cache_dir=tmp_path / "cache")
    assert (
        f"data.corpus.path={d / 'train.jsonl'}" in ei.value.message
        and "(it contains train.jsonl)" in ei.value.message
    )
    with pytest.raises(DataError) as ei:  # the shared readers say the same
        list(iter_jsonl(d))
    assert ei.value.where == str(d) and ei.value.message == "is a directory, expected a file"


# ----------------------------------------------------------------------------------- checkpoints


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)


def _good_ckpt(path: Path, **kw) -> Path:
    torch.manual_seed(0)
    torch.save({"state_dict": _Tiny().state_dict(), "global_step": 3}, path, **kw)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the one-line message must say)."""
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    rnd = tmp_path / "random.ckpt"
    rnd.write_bytes(bytes(range(256)) * 20)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1)}, unsafe)
    tensor = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), tensor)
    return {
        "empty": (empty, "cannot read checkpoint: the file is empty (0 bytes)"),
        "truncated": (
            _truncate(_good_ckpt(tmp_path / "trunc.ckpt")),
            "cannot read checkpoint: truncated or corrupt",
        ),
        "truncated_legacy": (
            _truncate(_good_ckpt(tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)),
            "cannot read checkpoint: truncated or corrupt",
        ),
        "random": (rnd, "cannot read checkpoint: not a PyTorch checkpoint"),
        "text": (text, "cannot read checkpoint: not a PyTorch checkpoint"),
        "unsafe": (
            unsafe,
            "cannot read checkpoint: it holds Python objects that mlir will not load (argparse.Namespace)",
        ),
        "tensor": (tensor, "cannot read checkpoint: it holds a Tensor, not a dict"),
        "directory": (tmp_path, "is a directory, expected a checkpoint file"),
    }


@pytest.mark.parametrize("mmap", [False, True])
def test_broken_checkpoints_are_one_line_of_our_own(tmp_path, mmap):
    for name, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(MlirError) as ei:
            load_checkpoint(path, mmap=mmap)
        msg = str(ei.value)
        assert ei.value.where == str(path), name
        assert expected in ei.value.message, (name, msg)
        assert "\n" not in msg and "weights_only" not in msg and "Traceback" not in msg, (name, msg)


def test_good_checkpoints_still_load(tmp_path):
    for kw in ({}, {"_use_new_zipfile_serialization": False}):
        path = _good_ckpt(tmp_path / "good.ckpt", **kw)
        for mmap in (False, True):
            assert load_checkpoint(path, mmap=mmap)["global_step"] == 3
        module = _Tiny()
        check_fits(module, path)  # train.py ckpt_path=
        load_module_weights(module, path)  # eval.py, best-checkpoint reload


def test_train_and_eval_paths_report_a_broken_checkpoint_in_one_line(tmp_path):
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    for fn in (check_fits, load_module_weights):  # what train.py ckpt_path= and eval.py call
        with pytest.raises(MlirError) as ei:
            fn(_Tiny(), empty)
        assert ei.value.where == str(empty) and "empty (0 bytes)" in ei.value.message


# ---------------------------------------------------------------------------------------- export


def _export(argv: list[str], capsys) -> tuple[int, str]:
    from mlir.export import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def test_export_to_an_existing_file_is_one_line_exit_2(tmp_path, capsys):
    ckpt = _good_ckpt(tmp_path / "step.ckpt")
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    rc, err = _export([str(ckpt), str(target)], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert (
        err
        == f"error: {target}: exists and is not a directory; give a new directory for the exported model\n"
    )
    assert target.read_text() == "keep me"
    rc, err = _export([str(ckpt), str(target / "sub")], capsys)
    assert rc == 2 and err.count("\n") == 1 and f"{target} is a file, not a directory" in err


@pytest.mark.parametrize("name", ["empty", "truncated", "random", "unsafe"])
def test_export_of_a_broken_checkpoint_is_one_line_exit_2(tmp_path, capsys, name):
    path, expected = _bad_files(tmp_path)[name]
    rc, err = _export([str(path), str(tmp_path / "out")], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: ") and expected in err
    assert "weights_only" not in err and not (tmp_path / "out").exists()
