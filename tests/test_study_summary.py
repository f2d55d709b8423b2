"""summary.md (mlir.study.summary): the README's block of the study's answer, and splicing it in.

The synthetic study of tests/_study_data.py has known effects, so each setting's verdict is known; and
every number the summary prints must be one report.md prints, which is what lets a README be checked
against the report number for number.
"""

from __future__ import annotations

import re
import shutil

import pytest
from _study_data import make_sweep

from mlir.report import build_report, write_report
from mlir.study.summary import END, START, main, splice

NUMBER = re.compile(r"[-+]?\d+\.\d+")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The synthetic study's report files (4 folds x alpha 0 / 0.5 / 1 x seeds 1, 2 + untrained)."""
    root = tmp_path_factory.mktemp("summary")
    sweep = make_sweep(root / "sweep", seeds=(1, 2))
    paths = write_report(build_report(sweep), root / "out")
    return paths["summary"].read_text(), paths["md"].read_text()


def _row(summary: str, bench: str, setting: str) -> str:
    return next(line for line in summary.splitlines() if line.startswith(f"| {bench} | {setting}"))


def test_each_setting_gets_the_verdict_built_into_the_data(written):
    summary, _ = written
    for bench in ("xq", "ml"):
        assert "**yes**: better than both baselines" in _row(summary, bench, "mono map")
        assert "**no detectable difference** from either baseline" in _row(summary, bench, "cross map")
        assert "**mixed**: better than X-X-mono; worse than X-Y" in _row(summary, bench, "multi map")
        assert "**yes**" in _row(summary, bench, "language bias")
    mono = _row(summary, "xq", "mono map").split(" | ")
    # hybrid is +0.10 above both baselines and +0.40 above the untrained backbone by construction
    assert [float(NUMBER.findall(c)[0]) for c in mono[3:6]] == pytest.approx([0.10, 0.10, 0.40], abs=0.01)
    assert "24 trained runs (seeds 1, 2 of every arm on folds 0, 1, 2, 3) and 4 untrained jobs" in summary


def test_an_interim_sweep_says_which_folds_have_which_seeds(tmp_path):
    sweep = make_sweep(tmp_path / "s", seeds=(1, 2))
    for job in sweep.glob("fold1_alpha*_seed2"):
        shutil.rmtree(job)
    summary = write_report(build_report(sweep), tmp_path / "out")["summary"].read_text()
    assert (
        "21 trained runs (seeds 1, 2 of every arm on folds 0, 2, 3; seed 1 of every arm on fold 1)" in summary
    )


def test_headline_counts_the_detected_and_bounds_the_rest(written):
    summary, _ = written
    head = next(line for line in summary.splitlines() if line.startswith("Hybrid batches (alpha=0.5)"))
    # per benchmark: mono and bias better than both baselines (4), multi better than X-X-mono and
    # worse than X-Y (2), cross no difference from either (2): 2 x 6 detected, 2 x 2 not
    assert "16 primary comparisons" in head
    assert "a detectable difference in 12:" in head and "no detectable difference in the other 4" in head
    assert head.count("worse for hybrid") == 2 and head.count("better for hybrid") == 10
    assert "the minimum detectable effects there: " in head and "rank positions" not in head


def test_every_number_in_the_summary_is_one_in_report_md(written):
    summary, report = written
    numbers = NUMBER.findall(summary)
    assert len(numbers) > 100
    missing = sorted({n for n in numbers if n not in report})
    assert not missing, missing


def test_splice_replaces_only_the_marked_block_and_is_idempotent():
    readme = f"# T\n\nbefore\n{START}\nold text 0.1234\n{END}\nafter\n"
    once = splice(readme, "new 0.5\n")
    assert once == f"# T\n\nbefore\n{START}\nnew 0.5\n{END}\nafter\n"
    assert splice(once, "new 0.5\n") == once


@pytest.mark.parametrize("bad", ["no markers\n", f"{START}\n{START}\n{END}\n", f"{END}\n{START}\n"])
def test_splice_needs_one_ordered_pair_of_markers(tmp_path, capsys, bad):
    readme, summary = tmp_path / "README.md", tmp_path / "summary.md"
    readme.write_text(bad)
    summary.write_text("x\n")
    assert main([str(readme), str(summary)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {readme}: needs exactly one") and "\n" not in err
    assert readme.read_text() == bad  # nothing lost


def test_cli_writes_then_check_passes_and_catches_a_stale_readme(tmp_path, capsys):
    readme, summary = tmp_path / "README.md", tmp_path / "summary.md"
    readme.write_text(f"intro\n{START}\n{END}\nrest\n")
    summary.write_text("| a | 0.1234 |\n")
    assert main([str(readme), str(summary), "--check"]) == 1
    assert main([str(readme), str(summary)]) == 0
    assert main([str(readme), str(summary), "--check"]) == 0
    summary.write_text("| a | 0.1235 |\n")  # the report changed, the README did not
    assert main([str(readme), str(summary), "--check"]) == 1
    assert "differs from" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.md"), str(summary)]) == 2
    assert "nope.md: cannot read" in capsys.readouterr().err
