"""Language-fairness measures of the multi setting: PEER@k and MRC@k (mlir.eval.fairness), by hand.

PEER: the Kruskal-Wallis p-value of the relevant documents' ranks grouped by language (Yang, Jänich,
Mayfield, Lawrie, SIGIR 2024; reference implementation hltcoe/peer_measure). The artificial ranked
lists are the paper's kind: relevant documents of two or three languages, interleaved or in blocks.
The expected values are closed forms (chi2 survival: 1 df ``erfc(sqrt(H / 2))``, 2 df ``exp(-H / 2)``)
and equal, to 1e-12, what the reference implementation's ``kruskal`` returns for the same lists when
every relevant document is retrieved (checked with peer_measure 0.0.1; the package itself is not a
dependency and does not load with ir_measures 0.4). Where relevant documents fall below the cutoff,
mlir ties them right after it (docs/evaluation.md says how the reference differs).

MRC: Spearman's rho of top-k lists over their union, missing documents tied after the list (Yang,
Jiang, Baldwin, MRL 2024), averaged over a question's other languages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from _eval_data import KeyEncoder, TableEncoder, make_xquad_dir
from scipy import stats

from mlir.eval.benchmarks import Benchmark, BenchmarkConfig, load_benchmark
from mlir.eval.fairness import kruskal_wallis, mrc_at_k, peer_at_k, topk_spearman
from mlir.eval.per_query import to_columns
from mlir.eval.runner import evaluate
from mlir.eval.tasks import LangQueries, Relevance, RetrievalTask


def _sf1(h: float) -> float:
    """chi2 survival function, 1 degree of freedom."""
    return math.erfc(math.sqrt(h / 2.0))


def _list(pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and languages of a ranked list of relevant documents: ``"ABAB"`` = A at 1, B at 2..."""
    return np.arange(1, len(pattern) + 1), np.array(list(pattern))


# ------------------------------------------------------------------------------------------- PEER


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        # 5 + 5, alternating: group means 5 and 6 around 5.5; SS_between 2.5, SS_total 82.5
        ("ABABABABAB", _sf1(9 * 2.5 / 82.5)),
        # 5 + 5 in blocks: means 3 and 8; SS_between 62.5 -> H = 9 * 62.5 / 82.5 = 6.818
        ("AAAAABBBBB", _sf1(9 * 62.5 / 82.5)),
        # three languages round robin: means 4, 5, 6; SS_between 6, SS_total 60 -> H = 8 * 6 / 60
        ("ABCABCABC", math.exp(-0.8 / 2)),
        # 4 + 6, A mostly first (A at 1, 2, 4, 7: computed below)
        ("AABABBABBB", None),
    ],
)
def test_peer_on_artificial_ranked_lists(pattern, expected):
    ranks, langs = _list(pattern)
    if expected is None:  # A at 1, 2, 4, 7; B at 3, 5, 6, 8, 9, 10
        a, b = np.array([1, 2, 4, 7]), np.array([3, 5, 6, 8, 9, 10])
        between = 4 * (a.mean() - 5.5) ** 2 + 6 * (b.mean() - 5.5) ** 2
        expected = _sf1(9 * between / 82.5)
    for k in (len(pattern), 100):  # every relevant document retrieved: the cutoff changes nothing
        assert peer_at_k([ranks], [langs], k=k)[0] == pytest.approx(expected, abs=1e-12)
    # the reference values (peer_measure's kruskal on the same lists)
    reference = {
        "ABABABABAB": 0.6015081344405899,
        "AAAAABBBBB": 0.009023438818080326,
        "ABCABCABC": 0.6703200460356394,
        "AABABBABBB": 0.0880815116621905,
    }
    assert peer_at_k([ranks], [langs], k=100)[0] == pytest.approx(reference[pattern], abs=1e-12)


def test_peer_ranks_are_list_positions_not_ranks_among_relevant():
    """The values tested are positions in the whole list (non-relevant documents in between count),
    as in the reference implementation: H = (N - 1) * SS_between / SS_total of those positions."""
    ranks, langs = np.array([1, 3, 5, 7, 9]), np.array(list("ABABA"))
    assert peer_at_k([ranks], [langs], k=10)[0] == pytest.approx(1.0)  # both means are 5: H = 0
    ranks, langs = np.array([1, 2, 5, 9, 10]), np.array(list("AABBB"))
    mean, a, b = 27 / 5, 1.5, 8.0
    total = float(((ranks - mean) ** 2).sum())
    h = 4 * (2 * (a - mean) ** 2 + 3 * (b - mean) ** 2) / total
    assert peer_at_k([ranks], [langs], k=10)[0] == pytest.approx(_sf1(h), abs=1e-12)


def test_peer_unretrieved_documents_tie_right_after_the_cutoff():
    """Blocks of 5 + 5 at k = 5: B's five documents are beyond the cutoff and share the mean of
    positions 6..10 = 8: A {1..5}, B {8 x 5}; SS_between 62.5, SS_total 41.25 + 31.25 = 72.5."""
    ranks, langs = _list("AAAAABBBBB")
    assert peer_at_k([ranks], [langs], k=5)[0] == pytest.approx(_sf1(9 * 62.5 / 72.5), abs=1e-12)
    # B beyond the cutoff anywhere (rank 6 or 900): the same value
    far = np.array([1, 2, 3, 4, 5, 600, 700, 800, 900, 1000])
    assert peer_at_k([far], [langs], k=5)[0] == pytest.approx(_sf1(9 * 62.5 / 72.5), abs=1e-12)
    # nothing retrieved: all tied, equal expected rank -> 1
    assert peer_at_k([far + 10], [langs], k=5)[0] == 1.0


def test_peer_ties_undefined_and_vectorised():
    ranks, langs = np.array([1, 2]), np.array(["de", "en"])
    # bit-identical scores (the same vector in two languages) share their ranks: no preference
    assert peer_at_k([ranks], [langs], k=10, rel_scores=[np.array([0.5, 0.5])])[0] == 1.0
    assert peer_at_k([ranks], [langs], k=10)[0] == pytest.approx(_sf1(1.0))  # two singletons: H = N - 1
    # relevant documents in fewer than two languages: undefined (like the rank distance)
    assert np.isnan(peer_at_k([np.array([1, 4])], [np.array(["en", "en"])], k=10)[0])
    assert np.isnan(peer_at_k([np.zeros(0, np.int64)], [np.zeros(0, str)], k=10)[0])
    # many queries at once = one query at a time (kruskal_wallis on the cut ranks)
    rng = np.random.default_rng(0)
    ranks, langs = [], []
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ranks.append(rng.choice(np.arange(1, 40), size=n, replace=False))
        langs.append(rng.choice(np.array(["a", "b", "c"]), size=n))
    got = peer_at_k(ranks, langs, k=15)
    for i, (r, g) in enumerate(zip(ranks, langs)):
        r = r.astype(float)
        r[r > 15] = 15 + ((r > 15).sum() + 1) / 2
        assert got[i] == pytest.approx(kruskal_wallis(r, g)[1], abs=1e-12, nan_ok=True)


def test_peer_is_constant_with_one_relevant_document_per_language():
    """XQuAD-R / MLQA-R: one relevant document per language, so every group is a singleton and
    H = N - 1 for ANY ranking (docs/evaluation.md): 11 languages give P(chi2_10 >= 10) = 0.4405."""
    rng = np.random.default_rng(3)
    langs = np.array(list("abcdefghijk"))
    ranks = [rng.choice(np.arange(1, 500), size=11, replace=False) for _ in range(20)]
    got = peer_at_k(ranks, [langs] * 20, k=1000)
    np.testing.assert_allclose(got, stats.chi2.sf(10, 10), rtol=1e-12)
    assert stats.chi2.sf(10, 10) == pytest.approx(0.44049, abs=1e-5)


def test_kruskal_wallis_matches_the_textbook_test_with_ties():
    """On mid-ranks (1..N with ties averaged) the general form is scipy's tie-corrected H."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = rng.integers(0, 6, size=20).astype(float)
        g = rng.integers(0, 3, size=20)
        if len(np.unique(g)) < 2 or len(np.unique(x)) < 2:
            continue
        h, p = kruskal_wallis(stats.rankdata(x), g)
        ref = stats.kruskal(*[x[g == v] for v in np.unique(g)])
        assert h == pytest.approx(ref.statistic, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-9)


# -------------------------------------------------------------------------------------------- MRC


def test_topk_spearman_hand_computed():
    rho = topk_spearman(np.array([[1, 2, 3], [2, 1, 4], [3, 2, 1], [7, 8, 9]]))
    assert np.allclose(np.diag(rho), 1.0) and np.allclose(rho, rho.T)
    # a vs b: U = {1, 2, 3, 4}; ranks in a (1, 2, 3, 4*), in b (2, 1, 4*, 3) (* missing: mid-rank 4)
    # d = (-1, 1, -1, 1): rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert rho[0, 1] == pytest.approx(0.6)
    assert rho[0, 2] == pytest.approx(-1.0)  # the same three documents in reverse order
    # disjoint lists of 3: U = 6, missing documents share mid-rank 5: x = (1, 2, 3, 5, 5, 5),
    # y = (5, 5, 5, 1, 2, 3); centred at 3.5: cov sum = 2 * (-2.5 * 1.5 - 1.5 * 1.5 - 0.5 * 1.5) = -13.5, var sum = 8.75 + 3 * 2.25 = 15.5
    x = np.array([1, 2, 3, 5, 5, 5.0])
    y = np.array([5, 5, 5, 1, 2, 3.0])
    assert rho[0, 3] == pytest.approx(np.corrcoef(x, y)[0, 1]) == pytest.approx(-13.5 / 15.5)
    assert topk_spearman(np.array([[4], [4]]))[0, 1] == 1.0  # one shared document: identical lists
    assert topk_spearman(np.array([[4], [5]]))[0, 1] == pytest.approx(-1.0)


def test_topk_spearman_matches_scipy():
    rng = np.random.default_rng(2)
    for _ in range(300):
        k = int(rng.integers(2, 8))
        a, b = rng.permutation(20)[:k], rng.permutation(20)[:k]
        union = list(dict.fromkeys([*a.tolist(), *b.tolist()]))
        ra = [a.tolist().index(d) + 1 if d in a else 10**6 for d in union]  # missing: one tied rank
        rb = [b.tolist().index(d) + 1 if d in b else 10**6 for d in union]
        want = stats.spearmanr(ra, rb).statistic
        assert topk_spearman(np.stack([a, b]))[0, 1] == pytest.approx(want, abs=1e-12)


def test_mrc_averages_a_question_over_its_other_languages():
    tops = {
        "en": (np.array([0, 1]), np.array([[1, 2, 3], [5, 6, 7]])),
        "de": (np.array([0]), np.array([[2, 1, 4]])),  # question 1 is not asked in German
        "zh": (np.array([0, 1]), np.array([[3, 2, 1], [5, 6, 7]])),
    }
    out = mrc_at_k(tops)
    rho = topk_spearman(np.array([[1, 2, 3], [2, 1, 4], [3, 2, 1]]))
    assert out["en"][0] == pytest.approx((rho[0, 1] + rho[0, 2]) / 2)  # (0.6 - 1) / 2
    assert out["de"][0] == pytest.approx((rho[1, 0] + rho[1, 2]) / 2)
    assert out["en"][1] == out["zh"][1] == 1.0  # the same list in both languages
    only = mrc_at_k({"en": (np.array([3]), np.array([[1, 2]])), "de": (np.array([4]), np.array([[1, 2]]))})
    assert np.isnan(only["en"][0]) and np.isnan(only["de"][0])  # no other language asks it


# ----------------------------------------------------------------------------------------- runner


def _vec(score: float) -> list[float]:
    return [score, math.sqrt(1.0 - score * score)]


def test_runner_reports_fairness_keys_per_language_and_macro():
    """Question q0 in a and b over a pool of a, b, c; hand-placed scores give the lists and ranks."""
    table = {
        "qa": [1.0, 0.0],
        "qb": _vec(0.8),
        **{
            t: _vec(s)
            for t, s in {"a_rel": 0.9, "a_d1": 0.85, "b_rel": 0.5, "b_d1": 0.6, "c_rel": 0.7}.items()
        },
    }
    task = RetrievalTask(
        name="toy",
        langs=["a", "b", "c"],
        query_ids=["q0"],
        queries={
            "a": LangQueries(np.array([0]), ["qa"]),
            "b": LangQueries(np.array([0]), ["qb"]),
            "c": LangQueries(np.zeros(0, np.int64), []),
        },
        docs={"a": ["a_rel", "a_d1"], "b": ["b_rel", "b_d1"], "c": ["c_rel"]},
        rel={x: Relevance.from_lists([[0]]) for x in "abc"},
    )
    bench = Benchmark(BenchmarkConfig.from_mapping("toy", {"type": "xquad_r", "settings": ["multi"]}), task)
    pq: list = []
    m = evaluate(TableEncoder(table), [bench], per_query=pq)
    # qa ranks the pool a_rel .9, a_d1 .85, c_rel .7, b_d1 .6, b_rel .5: relevant a 1, c 3, b 5
    # three singleton groups: SS_between = SS_total, H = N - 1 = 2 on 2 df
    assert m["toy/multi/peer@10/a"] == pytest.approx(math.exp(-1.0))
    assert {"toy/multi/mrc@10", "toy/multi/mrc@10/a", "toy/multi/mrc@10/b", "toy/multi/peer@10"} <= set(m)
    assert m["toy/multi/mrc@10/a"] == pytest.approx(m["toy/multi/mrc@10/b"])  # one pair, symmetric
    assert not any(k.startswith("toy/avg/") and ("mrc" in k or "peer" in k) for k in m)
    cols = to_columns(pq)
    assert {"mrc@10", "peer@10"} <= set(cols)
    off = evaluate(TableEncoder(table), [bench], fairness_k=None)
    assert not any("mrc@" in k or "peer@" in k for k in off)


def test_language_agnostic_encoder_is_perfectly_fair(tmp_path: Path):
    """Parallel texts share one vector (KeyEncoder): every language gets the same list (MRC 1) and
    its relevant documents tie, so no language ranks ahead (PEER 1, rank distance 0)."""
    d = make_xquad_dir(tmp_path / "xq", langs=("en", "de", "zh"), n_articles=2)
    bench = load_benchmark("xq", {"type": "xquad_r", "path": str(d), "download": False})
    m = evaluate(KeyEncoder(), [bench])
    for lang in ("en", "de", "zh"):
        assert m[f"xq/multi/mrc@10/{lang}"] == pytest.approx(1.0)
        assert m[f"xq/multi/peer@10/{lang}"] == pytest.approx(1.0)
        assert m[f"xq/multi/rank_distance/{lang}"] == 0.0
