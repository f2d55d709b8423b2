"""Progress bars of an evaluation: silent when stderr is not a terminal, drawn at one or when forced."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _eval_data import KeyEncoder
from omegaconf import OmegaConf

from mlir.core.errors import ConfigError
from mlir.eval.benchmarks import Benchmark, BenchmarkConfig
from mlir.eval.progress import check_progress, enabled, progress_option
from mlir.eval.runner import evaluate
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask
from mlir.eval.trec import RunFiles

LANGS = ("en", "de", "fr")


def _bench() -> Benchmark:
    """Four parallel questions in three languages, one relevant sentence per question and language."""
    n = 4
    task = RetrievalTask(
        name="toy",
        langs=list(LANGS),
        query_ids=[f"q{i}" for i in range(n)],
        queries={x: LangQueries(np.arange(n), [f"{x} question k{i}" for i in range(n)]) for x in LANGS},
        docs={x: [f"{x} answer k{i}" for i in range(n)] for x in LANGS},
        rel={x: Relevance.from_lists([[i] for i in range(n)]) for x in LANGS},
    )
    return Benchmark(BenchmarkConfig.from_mapping("toy", {"type": "xquad_r"}), task)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_printed_when_stderr_is_not_a_terminal(capsys):
    m = evaluate(KeyEncoder(), [_bench()])  # progress="auto", the default
    out = capsys.readouterr()
    assert m["toy/mono/ndcg@10"] == pytest.approx(1.0)
    assert out.err == "" and out.out == ""


def test_bars_are_drawn_when_forced_with_the_rate_in_texts_per_second(capsys, tmp_path):
    quiet = evaluate(KeyEncoder(), [_bench()], progress=False)
    assert capsys.readouterr().err == ""
    m = evaluate(KeyEncoder(), [_bench()], progress=True, runs=RunFiles(str(tmp_path), 10, ("mono",)))
    err = capsys.readouterr().err
    assert m == quiet  # bars change nothing else
    for what in ("encoding query", "encoding passage", "searching toy", "scoring toy", "writing runs of toy"):
        assert what in err, what
    assert "texts/s" in err and "queries/s" in err


def test_auto_draws_bars_at_a_terminal(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert enabled("auto") and enabled(True) and not enabled(False)
    evaluate(KeyEncoder(), [_bench()])
    assert "encoding query" in term.getvalue() and "texts/s" in term.getvalue()


def test_only_rank_zero_draws_bars(capsys):
    from mlir.eval.encode import DistInfo

    class _Rank1(DistInfo):
        def broadcast_object(self, obj, src=0):
            return ({}, {})  # what rank 0 would send; rank 1 never scores

    evaluate(KeyEncoder(), [_bench()], progress=True, dist=_Rank1(rank=1, world_size=1))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value, want", [("auto", "auto"), (True, True), (False, False), ("false", False)])
def test_config_values(value, want):
    assert check_progress(value) == want
    assert progress_option(OmegaConf.create({"eval": {"progress": value}})) == want


def test_absent_key_means_auto_and_a_wrong_value_is_one_line():
    assert progress_option(OmegaConf.create({"eval": {}})) == "auto"  # train.py's eval has no such key
    with pytest.raises(ConfigError) as e:
        progress_option(OmegaConf.create({"eval": {"progress": "sometimes"}}))
    assert e.value.where == "eval.progress" and "auto, true or false" in e.value.message
