"""Rank-based metrics against trec_eval (pytrec_eval), hand-computed cases and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlir.eval.metrics import (
    FlatRanks,
    average_precision,
    compute_metrics,
    defined_counts,
    macro_average,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    rank_distance,
    recall_at_k,
)
from mlir.eval.search import relevant_ranks

pytrec_eval = pytest.importorskip("pytrec_eval")


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ hand-computed cases


def test_ndcg_hand_computed():
    # relevant at ranks 1 and 4:  DCG = 1/log2(2) + 1/log2(5) = 1 + 0.430677 = 1.430677
    #                            IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.630930 = 1.630930  -> 0.877215
    # relevant at rank 3 only:    DCG = 1/log2(4) = 0.5, IDCG = 1                        -> 0.5
    # relevant at ranks 11, 12:   nothing in the top 10                                   -> 0
    # 12 relevant at ranks 1..12: the ideal has min(12, 10) = 10 positions, all filled    -> 1
    # relevant at ranks 1 and 20: DCG = 1, IDCG = 1.630930 (the rank-20 doc still counts) -> 0.613147
    ranks = [np.array([4, 1]), np.array([3]), np.array([11, 12]), np.arange(1, 13), np.array([20, 1])]
    got = ndcg_at_k(ranks, k=10)
    np.testing.assert_allclose(got, [0.877215, 0.5, 0.0, 1.0, 0.613147], atol=1e-6)
    assert got[0] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)), abs=1e-15)


def test_ap_recall_mrr_rank_distance_hand_computed():
    ranks = [
        np.array([6, 1, 3]),
        np.array([12, 15]),
        np.array([3, 1, 7]),
        np.array([5]),
        np.array([], np.int64),
    ]
    # AP of ranks {1, 3, 6}: (1/1 + 2/3 + 3/6) / 3 = 0.722222; of {12, 15}: (1/12 + 2/15) / 2 = 0.108333
    # of {1, 3, 7}: (1 + 2/3 + 3/7) / 3 = 0.698413; of {5}: 0.2
    np.testing.assert_allclose(average_precision(ranks)[:4], [0.722222, 0.108333, 0.698413, 0.2], atol=1e-6)
    np.testing.assert_allclose(recall_at_k(ranks, 5)[:4], [2 / 3, 0, 2 / 3, 1])
    np.testing.assert_allclose(mrr_at_k(ranks, 10)[:4], [1, 0, 1, 1 / 5])
    np.testing.assert_allclose(mrr_at_k(ranks, None)[:4], [1, 1 / 12, 1, 1 / 5])
    # max - min rank: [3, 1, 7] -> 7 - 1 = 6; one relevant doc -> undefined (NaN)
    np.testing.assert_array_equal(rank_distance(ranks), [5, 3, 6, np.nan, np.nan])
    # a query without relevant docs is undefined for every metric
    for v in compute_metrics(ranks, rank_distance=True).values():
        assert np.isnan(v[4])


def test_average_precision_cut_at_a_run_depth():
    """AP of a run holding only the top k (trec_eval ``map`` of a depth-k run, ir_measures ``AP@k``):
    relevant documents below k add no precision but still count: {1, 3, 1200} at k = 1000 gives
    (1/1 + 2/3 + 0) / 3; with k past every rank it is the full-ranking AP."""
    ranks = [np.array([1200, 1, 3]), np.array([1001]), np.array([], np.int64)]
    got = average_precision(ranks, k=1000)
    np.testing.assert_allclose(got[:2], [(1 + 2 / 3) / 3, 0.0])
    assert np.isnan(got[2])
    np.testing.assert_array_equal(average_precision(ranks, k=5000), average_precision(ranks))
    with pytest.raises(ValueError):
        average_precision(ranks, k=0)


def test_average_precision_cut_matches_pytrec_eval_map_cut():
    rng = np.random.default_rng(5)
    q = (rng.integers(-2, 3, (60, 8)) / 2).astype(np.float32)
    d = (rng.integers(-2, 3, (300, 8)) / 2).astype(np.float32)
    rel = [rng.choice(300, size=rng.integers(1, 8), replace=False) for _ in range(60)]
    scores = q.astype(np.float64) @ d.astype(np.float64).T
    names = [docno(j, 300) for j in range(300)]
    qrels = {f"q{i}": {names[r]: 1 for r in rs} for i, rs in enumerate(rel)}
    run = {f"q{i}": dict(zip(names, map(float, scores[i]))) for i in range(60)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map_cut.20"}).evaluate(run)
    ours = average_precision(relevant_ranks(q, d, rel), k=20)
    np.testing.assert_allclose(ours, [trec[f"q{i}"]["map_cut_20"] for i in range(60)], rtol=0, atol=1e-6)


def test_compute_metrics_names_and_flat_input():
    ranks = [np.array([2, 9]), np.array([1])]
    m = compute_metrics(ranks, rank_distance=True)
    assert list(m) == [
        "ndcg@10",
        "map",
        "recall@1",
        "recall@5",
        "recall@10",
        "recall@100",
        "mrr@10",
        "rank_distance",
    ]
    assert "rank_distance" not in compute_metrics(ranks)
    flat = compute_metrics(FlatRanks(np.array([2, 9, 1]), np.array([0, 2, 3])), rank_distance=True)
    for k in m:
        np.testing.assert_array_equal(m[k], flat[k])
    with pytest.raises(ValueError):
        compute_metrics([np.array([0])])


def test_means_and_macro_average():
    per_lang = {
        "en": {"ndcg@10": np.array([1.0, 0.0, np.nan]), "rank_distance": np.array([np.nan, np.nan, np.nan])},
        "de": {"ndcg@10": np.array([0.2]), "rank_distance": np.array([4.0])},
        "fr": {"ndcg@10": np.array([0.6, 0.4])},
    }
    assert mean_metrics(per_lang["en"])["ndcg@10"] == pytest.approx(0.5)
    assert np.isnan(mean_metrics(per_lang["en"])["rank_distance"])
    assert defined_counts(per_lang["en"]) == {"ndcg@10": 2, "rank_distance": 0}
    macro = macro_average(per_lang)
    assert macro["ndcg@10"] == pytest.approx((0.5 + 0.2 + 0.5) / 3)  # per language first, then equally
    assert macro["rank_distance"] == pytest.approx(4.0)  # en undefined everywhere, fr lacks it


def test_vectorised_metrics_match_a_per_query_loop():
    rng = np.random.default_rng(0)
    ranks = [rng.choice(np.arange(1, 300), size=rng.integers(0, 8), replace=False) for _ in range(500)]
    got = compute_metrics(ranks, rank_distance=True)
    for i, r in enumerate(ranks):
        if len(r) == 0:
            assert all(np.isnan(v[i]) for v in got.values())
            continue
        s = np.sort(r)
        assert got["map"][i] == pytest.approx(np.mean(np.arange(1, len(s) + 1) / s))
        assert got["recall@100"][i] == pytest.approx(np.mean(s <= 100))
        assert got["mrr@10"][i] == pytest.approx(1 / s[0] if s[0] <= 10 else 0.0)
        assert got["rank_distance"][i] == (s[-1] - s[0] if len(s) > 1 else pytest.approx(np.nan, nan_ok=True))


# ------------------------------------------------------------------------------ trec_eval agreement


def docno(i: int, n_docs: int) -> str:
    """trec_eval breaks score ties by docno *descending* (strcmp); this fixed-width docno descends as
    the index ascends, so trec_eval's order is exactly ours (ties -> lower index first)."""
    return f"{n_docs - 1 - i:06d}"


def trec_eval_measures(scores: np.ndarray, rel: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """pytrec_eval on the full ranking (every doc in the run), so map/recip_rank are not truncated."""
    n_q, n_docs = scores.shape
    names = [docno(j, n_docs) for j in range(n_docs)]
    qrels = {f"q{i}": {names[r]: 1 for r in rs} for i, rs in enumerate(rel) if len(rs)}
    run = {f"q{i}": dict(zip(names, map(float, scores[i]))) for i in range(n_q)}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map", "recall.1,5,10,100", "recip_rank"})
    return ev.evaluate(run)


@pytest.mark.parametrize(
    "levels,seed",
    [(1, 0), (2, 1), (8, 2), (None, 3)],  # None: float64 Gaussian embeddings, no ties
)
def test_metrics_match_pytrec_eval_including_ties(levels, seed):
    """End to end: chunked relevant_ranks + our metrics vs trec_eval on the full score matrix.

    Tied scores are produced on purpose by quantising embeddings to k/levels (levels=1: entries in
    {-1, 0, 1}, dim 5 -> only a handful of distinct scores per query). Those dot products are exact
    in float32, so the scores trec_eval sees equal ours bit for bit, and the docno mapping makes its
    tie order (docno descending) coincide with ours (index ascending): agreement must be exact.
    """
    rng = np.random.default_rng(seed)
    n_q, n_docs, dim = 150, 500, 5 if levels == 1 else 12
    if levels is None:
        q, d = rng.standard_normal((n_q, dim)), rng.standard_normal((n_docs, dim))
    else:
        q = (rng.integers(-levels, levels + 1, (n_q, dim)) / levels).astype(np.float32)
        d = (rng.integers(-levels, levels + 1, (n_docs, dim)) / levels).astype(np.float32)
    rel = [rng.choice(n_docs, size=rng.integers(1, 6), replace=False) for _ in range(n_q)]
    scores = q.astype(np.float64) @ d.astype(np.float64).T
    if levels is not None:  # most relevant docs share their score with another doc: ties decide ranks
        tied = [np.sum(scores[i] == scores[i, r]) > 1 for i, rs in enumerate(rel) for r in rs]
        assert np.mean(tied) > 0.5

    ours = compute_metrics(relevant_ranks(q, d, rel, q_chunk=64, d_chunk=128), ks=(1, 5, 10, 100))
    trec = trec_eval_measures(scores, rel)
    pairs = {
        "ndcg@10": "ndcg_cut_10",
        "map": "map",
        "recall@1": "recall_1",
        "recall@5": "recall_5",
        "recall@10": "recall_10",
        "recall@100": "recall_100",
    }
    for ours_name, trec_name in pairs.items():
        ref = np.array([trec[f"q{i}"][trec_name] for i in range(n_q)])
        np.testing.assert_allclose(ours[ours_name], ref, rtol=0, atol=1e-6, err_msg=ours_name)
    rr = np.array([trec[f"q{i}"]["recip_rank"] for i in range(n_q)])
    np.testing.assert_allclose(mrr_at_k(relevant_ranks(q, d, rel), None), rr, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["mrr@10"], np.where(rr >= 0.1 - 1e-12, rr, 0.0), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ torchmetrics


def test_torchmetrics_ndcg_on_topk_lists_is_not_trec_ndcg():
    """Why we do not use torchmetrics' RetrievalNormalizedDCG: it builds the ideal DCG only from the
    documents it is given. Query with relevant docs at ranks 1 and 20, fed the top-10 list: it sees one
    relevant doc and reports 1.0, while trec_eval's ideal holds both: 1 / (1 + 1/log2(3)) = 0.613147."""
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    preds = torch.linspace(1.0, 0.1, 10)
    target = torch.zeros(10, dtype=torch.long)
    target[0] = 1
    tm_topk = RetrievalNormalizedDCG(top_k=10)(preds, target, indexes=torch.zeros(10, dtype=torch.long))
    assert tm_topk.item() == pytest.approx(1.0)
    ours = ndcg_at_k([np.array([1, 20])], k=10)[0]
    assert ours == pytest.approx(0.613147, abs=1e-6)
    # given the full ranking (both relevant docs present), torchmetrics agrees with trec_eval
    preds = torch.linspace(1.0, 0.05, 20)
    target = torch.zeros(20, dtype=torch.long)
    target[[0, 19]] = 1
    tm_full = RetrievalNormalizedDCG(top_k=10)(preds, target, indexes=torch.zeros(20, dtype=torch.long))
    assert tm_full.item() == pytest.approx(ours, abs=1e-6)


# ------------------------------------------------------------------------------ graded relevance


def test_graded_ndcg_hand_computed_and_binary_unchanged():
    """Grades 3 at rank 2 and 1 at rank 1: DCG = 1 + 3/log2(3); ideal = 3 + 1/log2(3)."""
    ours = ndcg_at_k([np.array([2, 1])], k=10, gains=[np.array([3.0, 1.0])])[0]
    assert ours == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)), abs=1e-12)
    # a grade beyond the cut still counts in the ideal: grade 2 at rank 3 with k=2 -> DCG 1, ideal 2 + 1/log2(3)
    ours = ndcg_at_k([np.array([1, 3])], k=2, gains=[np.array([1.0, 2.0])])[0]
    assert ours == pytest.approx(1 / (2 + 1 / math.log2(3)), abs=1e-12)
    # all-ones gains are the binary metric, bit for bit; a flat gain array works like per-query ones
    rng = np.random.default_rng(0)
    ranks = [rng.choice(300, size=rng.integers(0, 6), replace=False) + 1 for _ in range(200)]
    ones = [np.ones(len(r)) for r in ranks]
    for k in (1, 5, 10, 100):
        np.testing.assert_array_equal(ndcg_at_k(ranks, k, gains=ones), ndcg_at_k(ranks, k))
    gains = [rng.integers(1, 4, len(r)).astype(float) for r in ranks]
    flat = np.concatenate(gains)
    np.testing.assert_array_equal(ndcg_at_k(ranks, 10, gains=flat), ndcg_at_k(ranks, 10, gains=gains))
    # only nDCG is graded
    graded, binary = compute_metrics(ranks, gains=gains), compute_metrics(ranks)
    assert not np.allclose(graded["ndcg@10"], binary["ndcg@10"], equal_nan=True)
    for name in binary:
        if name != "ndcg@10":
            np.testing.assert_array_equal(graded[name], binary[name])
    with pytest.raises(ValueError, match="gains"):
        ndcg_at_k(ranks, 10, gains=gains[:-1])


@pytest.mark.parametrize("levels,seed", [(1, 0), (2, 1), (None, 2)])
def test_graded_metrics_match_pytrec_eval_including_ties(levels, seed):
    """Randomised graded qrels (grades 0..3, several 0-grade judgements per query) on tied scores:
    nDCG@k with gain = grade (trec_eval ``ndcg_cut``), map / recall with grade > 0 relevant.

    Our relevance lists only the grade > 0 documents (a 0 judgement is non-relevant, trec_eval's
    ``relevance_level`` 1); trec_eval gets every judgement, 0s included, and must agree to 1e-6.
    """
    rng = np.random.default_rng(seed)
    n_q, n_docs, dim = 120, 400, 5 if levels == 1 else 12
    if levels is None:
        q, d = rng.standard_normal((n_q, dim)), rng.standard_normal((n_docs, dim))
    else:
        q = (rng.integers(-levels, levels + 1, (n_q, dim)) / levels).astype(np.float32)
        d = (rng.integers(-levels, levels + 1, (n_docs, dim)) / levels).astype(np.float32)
    judged = [rng.choice(n_docs, size=rng.integers(2, 9), replace=False) for _ in range(n_q)]
    grades = [rng.integers(0, 4, len(j)) for j in judged]
    for g in grades:
        g[0] = max(g[0], 1)  # every query has a relevant doc (ours leaves the others out)
    rel = [j[g > 0] for j, g in zip(judged, grades)]
    gains = [g[g > 0].astype(np.float64) for g in grades]
    scores = q.astype(np.float64) @ d.astype(np.float64).T
    if levels is not None:
        tied = [np.sum(scores[i] == scores[i, r]) > 1 for i, rs in enumerate(rel) for r in rs]
        assert np.mean(tied) > 0.5

    ranks = relevant_ranks(q, d, rel, q_chunk=32, d_chunk=128)
    ours = compute_metrics(ranks, ks=(1, 5, 10, 100), gains=gains)
    names = [docno(j, n_docs) for j in range(n_docs)]
    qrels = {
        f"q{i}": {names[j]: int(x) for j, x in zip(js, gs)} for i, (js, gs) in enumerate(zip(judged, grades))
    }
    run = {f"q{i}": dict(zip(names, map(float, scores[i]))) for i in range(n_q)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "map", "recall.1,5,10,100"}).evaluate(run)
    pairs = {"ndcg@10": "ndcg_cut_10", "map": "map", "recall@1": "recall_1", "recall@5": "recall_5"}
    pairs.update({"recall@10": "recall_10", "recall@100": "recall_100"})
    for ours_name, trec_name in pairs.items():
        ref = np.array([trec[f"q{i}"][trec_name] for i in range(n_q)])
        np.testing.assert_allclose(ours[ours_name], ref, rtol=0, atol=1e-6, err_msg=ours_name)
    ref5 = np.array([trec[f"q{i}"]["ndcg_cut_5"] for i in range(n_q)])
    np.testing.assert_allclose(ndcg_at_k(ranks, 5, gains=gains), ref5, rtol=0, atol=1e-6)
    # the grades matter here: the binary nDCG differs from trec_eval's graded one
    assert np.abs(ndcg_at_k(ranks, 10) - ours["ndcg@10"]).max() > 1e-3
