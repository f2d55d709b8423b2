"""Pinned LAReQA downloads (XQuAD-R, MLQA-R): served from a local HTTP server on 127.0.0.1 only.

The good files are the shared data's own copies (they are the files of the pinned commit); corrupted
ones differ by one byte. No test touches any other host.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from mlir.core.errors import DataError, MlirError, exit_on_user_error
from mlir.data import download
from mlir.data.download import LAREQA_COMMIT, LAREQA_SHA256, ensure_lareqa
from mlir.data.xquad_r import read_xquad_r_candidates

# the two smallest files of each dataset keep the tests fast
XQ_LANGS = ["de", "es"]


class _Server:
    """Serves ``root`` (``<dataset>/<lang>.json``) under ``/<commit>/``; records the requested paths."""

    def __init__(self, root: Path):
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                paths.append(path)
                prefix = f"/{LAREQA_COMMIT}/"
                rel = path[len(prefix) :] if path.startswith(prefix) else "__missing__"
                return str(root / rel)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{LAREQA_COMMIT}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        # bounded: the server stops by itself even if a test hangs or teardown never runs
        self.watchdog = threading.Timer(60, self.httpd.shutdown)
        self.watchdog.daemon = True

    def __enter__(self) -> _Server:
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def lareqa_files(data_dir, tmp_path) -> Path:
    """A server root with the good ``xquad-r/{de,es}.json`` and ``mlqa-r/{de,es}.json``."""
    root = tmp_path / "srv"
    for dataset in ("xquad-r", "mlqa-r"):
        (root / dataset).mkdir(parents=True)
        for lang in XQ_LANGS:
            src = data_dir / dataset / f"{lang}.json"
            if not src.is_file():
                pytest.skip(f"{src} not found")
            shutil.copyfile(src, root / dataset / f"{lang}.json")
    return root


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ pinning


def test_urls_are_pinned_to_a_full_commit_and_every_file_has_a_hash():
    assert re.fullmatch(r"[0-9a-f]{40}", LAREQA_COMMIT) and LAREQA_COMMIT.startswith("354d67d")
    for url in (download.XQUAD_R_URL, download.MLQA_R_URL):
        assert f"/{LAREQA_COMMIT}/" in url and "master" not in url
    assert sorted(LAREQA_SHA256["xquad-r"]) == sorted(f"{x}.json" for x in download.XQUAD_R_LANGS)
    assert sorted(LAREQA_SHA256["mlqa-r"]) == sorted(f"{x}.json" for x in download.MLQA_R_LANGS)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for t in LAREQA_SHA256.values() for h in t.values())


def test_pinned_hashes_match_the_shared_data(data_dir):
    sums = data_dir / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} not found")
    listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
    for dataset, table in LAREQA_SHA256.items():
        for name, digest in table.items():
            assert listed[f"{dataset}/{name}"] == digest, f"{dataset}/{name}"


# ------------------------------------------------------------------------------------ good download


@pytest.mark.parametrize("dataset", ["xquad-r", "mlqa-r"])
def test_good_files_are_installed_with_the_pinned_hash(lareqa_files, tmp_path, dataset):
    target = tmp_path / "data" / dataset
    with _Server(lareqa_files) as srv:
        out = ensure_lareqa(dataset, target, XQ_LANGS, base_url=srv.url, timeout=10)
    assert out == target
    assert sorted(p.name for p in target.iterdir()) == ["de.json", "es.json"]  # no temp files
    for lang in XQ_LANGS:
        assert _sha(target / f"{lang}.json") == LAREQA_SHA256[dataset][f"{lang}.json"]
    assert sorted(srv.paths) == [f"/{LAREQA_COMMIT}/{dataset}/{lang}.json" for lang in XQ_LANGS]
    assert len(read_xquad_r_candidates(target, ["de"])["de"]) > 0


def test_present_files_are_not_fetched_again(lareqa_files, tmp_path):
    target = tmp_path / "xquad-r"
    target.mkdir()
    (target / "de.json").write_text("my own copy")  # not hashed unless verify=True (documented)
    with _Server(lareqa_files) as srv:
        ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=srv.url, timeout=10)
    assert srv.paths == [f"/{LAREQA_COMMIT}/xquad-r/es.json"]
    assert (target / "de.json").read_text() == "my own copy"


# ------------------------------------------------------------------------------- corrupted download


def test_corrupted_download_is_refused_in_one_line_and_nothing_is_installed(lareqa_files, tmp_path, capsys):
    _corrupt(lareqa_files / "mlqa-r" / "es.json")
    target = tmp_path / "mlqa-r"
    with _Server(lareqa_files) as srv:
        run = exit_on_user_error(
            lambda: ensure_lareqa("mlqa-r", target, XQ_LANGS, base_url=srv.url, timeout=10)
        )
        with pytest.raises(SystemExit) as ei:
            run()
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {target / 'es.json'}: ")
    assert LAREQA_SHA256["mlqa-r"]["es.json"] in err and _sha(lareqa_files / "mlqa-r" / "es.json") in err
    assert "sha256 mismatch" in err and "not installed" in err
    assert sorted(p.name for p in target.iterdir()) == ["de.json"]  # de was good; es not installed, no temp


def test_corrupted_download_leaves_an_earlier_good_copy_untouched(lareqa_files, tmp_path):
    good = (lareqa_files / "xquad-r" / "de.json").read_bytes()
    dest = tmp_path / "xquad-r" / "de.json"
    dest.parent.mkdir()
    dest.write_bytes(good)
    _corrupt(lareqa_files / "xquad-r" / "de.json")
    with _Server(lareqa_files) as srv:
        with pytest.raises(DataError) as ei:
            download.download_file(
                f"{srv.url}/xquad-r/de.json", dest, sha256=LAREQA_SHA256["xquad-r"]["de.json"], timeout=10
            )
    assert ei.value.where == str(dest) and "\n" not in str(ei.value)
    assert f"expected {LAREQA_SHA256['xquad-r']['de.json']}, got " in ei.value.message
    assert dest.read_bytes() == good
    assert _leftovers(dest.parent) == []


# ---------------------------------------------------------------------------------- offline/missing


def _assert_offline_message(e: MlirError, target: Path, files: str) -> None:
    assert not isinstance(e, DataError)
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"{target}: ")
    assert f"file(s) {files} are missing and could not be downloaded" in msg
    assert "MLIR_DATA_DIR" in msg and LAREQA_COMMIT in msg


def test_unreachable_server_gives_the_one_line_offline_message(tmp_path):
    target = tmp_path / "xquad-r"
    url = f"http://127.0.0.1:{_closed_port()}/{LAREQA_COMMIT}"
    with pytest.raises(MlirError) as ei:
        ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=url, timeout=5)
    _assert_offline_message(ei.value, target, "de.json, es.json")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_file_missing_on_the_server_gives_the_offline_message(lareqa_files, tmp_path):
    (lareqa_files / "xquad-r" / "es.json").unlink()  # HTTP 404
    target = tmp_path / "xquad-r"
    with _Server(lareqa_files) as srv:
        with pytest.raises(MlirError) as ei:
            ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=srv.url, timeout=10)
    _assert_offline_message(ei.value, target, "es.json")
    assert sorted(p.name for p in target.iterdir()) == ["de.json"]


def test_ensure_xquad_r_and_mlqa_r_use_the_pinned_urls(tmp_path, monkeypatch):
    from urllib.error import URLError

    asked = []

    def offline(url, timeout=None):
        asked.append(url)
        raise URLError("no network")

    monkeypatch.setattr(download, "urlopen", offline)
    for fn, folder in ((download.ensure_xquad_r, "xquad-r"), (download.ensure_mlqa_r, "mlqa-r")):
        with pytest.raises(MlirError) as ei:
            fn(tmp_path, ["de", "en"])
        _assert_offline_message(ei.value, tmp_path / folder, "de.json, en.json")
    assert asked == [
        f"https://raw.githubusercontent.com/google-research-datasets/lareqa/{LAREQA_COMMIT}/xquad-r/de.json",
        f"https://raw.githubusercontent.com/google-research-datasets/lareqa/{LAREQA_COMMIT}/mlqa-r/de.json",
    ]


def test_language_without_a_pinned_file_is_one_line(tmp_path):
    with pytest.raises(MlirError) as ei:
        ensure_lareqa("mlqa-r", tmp_path / "mlqa-r", ["de", "ru"], base_url="http://127.0.0.1:9")
    assert "\n" not in str(ei.value) and "['ru']" in ei.value.message and "ar, de, en" in ei.value.message


# ----------------------------------------------------------------------------------- opt-in verify


def test_verify_checks_present_files_on_request(lareqa_files, tmp_path, capsys):
    target = tmp_path / "xquad-r"
    shutil.copytree(lareqa_files / "xquad-r", target)
    offline = "http://127.0.0.1:9"  # nothing is downloaded: both files are present
    assert ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=offline, verify=True) == target
    _corrupt(target / "es.json")
    before = (target / "es.json").read_bytes()
    ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=offline)  # default: present files not hashed
    with pytest.raises(DataError) as ei:
        ensure_lareqa("xquad-r", target, XQ_LANGS, base_url=offline, verify=True)
    assert ei.value.where == str(target / "es.json") and "\n" not in str(ei.value)
    assert "delete it to download" in ei.value.message
    assert (target / "es.json").read_bytes() == before  # reported, never deleted or replaced
    # the command line: same line, exit code 2
    with pytest.raises(SystemExit) as se:
        download.main(["xquad-r", "--data-dir", str(tmp_path), "--langs", "de", "es", "--verify"])
    assert se.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {target / 'es.json'}: sha256 mismatch")


def test_command_line_refuses_an_unknown_language_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as se:
        download.main(["mlqa-r", "--data-dir", str(tmp_path), "--langs", "th"])
    assert se.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no MLQA-R file for language(s) ['th']" in err
