"""Chunked counting ranks and chunked top-k against a naive full-matrix argsort reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlir.core.errors import ConfigError
from mlir.eval import search
from mlir.eval.search import relevant_ranks, relevant_ranks_flat, resolve_device, topk

pytestmark = pytest.mark.usefixtures("one_thread")


CHUNKS = [(10_000, 10_000), (7, 13), (1, 301), (53, 1), (16, 64), (5, 1000), (32, 300)]


def quantised(rng: np.random.Generator, n: int, dim: int, levels: int) -> np.ndarray:
    """Entries k/levels with levels a power of two: every product is a multiple of 1/levels**2 and every
    partial sum stays below 2**24 / levels**2, so float32 GEMMs compute all scores exactly in any order.
    Scores -- and, crucially, their ties -- then do not depend on the BLAS kernel or the chunking."""
    assert levels & (levels - 1) == 0 and dim * levels**2 < 2**24
    return (rng.integers(-levels, levels + 1, (n, dim)) / levels).astype(np.float32)


def naive_rank_matrix(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Full argsort reference: rank[i, j] of doc j for query i, score descending, ties by lower index."""
    s = q.astype(np.float64) @ d.astype(np.float64).T
    idx = np.broadcast_to(np.arange(d.shape[0]), s.shape)
    order = np.lexsort((idx, -s), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, d.shape[0] + 1)[None].repeat(len(q), 0), axis=1)
    return ranks


def random_rel(rng: np.random.Generator, n_q: int, n_docs: int, lo: int = 0, hi: int = 5) -> list[np.ndarray]:
    return [rng.choice(n_docs, size=rng.integers(lo, hi + 1), replace=False) for _ in range(n_q)]


def assert_ranks_equal(got: list[np.ndarray], ref: np.ndarray, rel: list[np.ndarray]) -> None:
    assert len(got) == len(rel)
    for i, (g, r) in enumerate(zip(got, rel)):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, ref[i, r], err_msg=f"query {i}")


@pytest.mark.parametrize("levels", [1, 4, 1024])
def test_relevant_ranks_match_naive_argsort_for_all_chunkings(levels):
    # levels=1 -> entries in {-1, 0, 1}, dim 6: massive ties; 1024 -> almost no ties
    rng = np.random.default_rng(levels)
    q, d = quantised(rng, 53, 6, levels), quantised(rng, 301, 6, levels)
    rel = random_rel(rng, 53, 301)
    ref = naive_rank_matrix(q, d)
    n_ties = sum(len(np.unique(row)) < len(row) for row in q @ d.T)
    assert levels > 4 or n_ties == 53  # the tie cases really are exercised
    for qc, dc in CHUNKS:
        assert_ranks_equal(relevant_ranks(q, d, rel, q_chunk=qc, d_chunk=dc), ref, rel)


def test_relevant_ranks_float64_gaussian_and_torch_inputs():
    rng = np.random.default_rng(1)
    q, d = rng.standard_normal((40, 16)), rng.standard_normal((257, 16))
    rel = random_rel(rng, 40, 257, 1, 4)
    ref = naive_rank_matrix(q, d)
    for qc, dc in [(40, 257), (9, 31)]:
        got = relevant_ranks(torch.from_numpy(q), torch.from_numpy(d), rel, q_chunk=qc, d_chunk=dc)
        assert_ranks_equal(got, ref, rel)


def test_mismatching_thresholds_are_recounted_exactly(monkeypatch):
    """If a separately computed relevant score differs from its block score in the last bit (as it does
    for most pairs with e.g. (q * d).sum(-1)), the query must be recounted, not mis-ranked."""
    real = search._provisional_scores

    def off_by_one_ulp(qc, d, R):
        thr = real(qc, d, R)
        return torch.nextafter(thr, torch.full_like(thr, float("inf")))

    monkeypatch.setattr(search, "_provisional_scores", off_by_one_ulp)
    rng = np.random.default_rng(2)
    q, d = quantised(rng, 60, 6, 2), quantised(rng, 200, 6, 2)
    rel = random_rel(rng, 60, 200, 1, 5)
    ref = naive_rank_matrix(q, d)
    # q_chunk=7: the first chunk is all mismatches, switching to two-pass mode for the rest
    for qc, dc in [(7, 13), (60, 200)]:
        assert_ranks_equal(relevant_ranks(q, d, rel, q_chunk=qc, d_chunk=dc), ref, rel)


def test_relevant_ranks_agree_with_topk_positions_on_continuous_float32():
    """Both functions rank the same block scores, so on continuous float32 embeddings (no exact ties,
    rounding differs from any float64 reference) the rank of a relevant doc is its position in the
    full top-k list. Includes identical document vectors, which tie in the block scores."""
    gen = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(70, 32, generator=gen), dim=1)
    d = torch.nn.functional.normalize(torch.randn(500, 32, generator=gen), dim=1)
    d[400] = d[17]
    d[401] = d[17]
    rng = np.random.default_rng(3)
    rel = [
        np.concatenate([[401, 17, 400], rng.choice(np.arange(18, 400), 2, replace=False)]) for _ in range(70)
    ]
    for qc, dc in [(70, 500), (16, 128), (3, 401)]:
        got = relevant_ranks(q, d, rel, q_chunk=qc, d_chunk=dc)
        _, idx = topk(q, d, k=500, q_chunk=qc, d_chunk=dc)
        pos = np.argsort(idx, axis=1) + 1
        for i, (g, r) in enumerate(zip(got, rel)):
            np.testing.assert_array_equal(g, pos[i, r], err_msg=f"query {i}, chunks {qc}x{dc}")


def test_empty_relevance_and_flat_api():
    rng = np.random.default_rng(4)
    q, d = quantised(rng, 5, 4, 2), quantised(rng, 20, 4, 2)
    rel = [np.array([], dtype=np.int64), np.array([3]), [], np.array([0, 19]), np.array([], dtype=np.int64)]
    got = relevant_ranks(q, d, rel)
    ref = naive_rank_matrix(q, d)
    assert [len(g) for g in got] == [0, 1, 0, 2, 0]
    assert got[1][0] == ref[1, 3] and list(got[3]) == [ref[3, 0], ref[3, 19]]
    assert [len(g) for g in relevant_ranks(q, d, [[]] * 5)] == [0] * 5
    flat = relevant_ranks_flat(q, d, np.array([3, 0, 19]), np.array([0, 0, 1, 1, 3, 3]))
    np.testing.assert_array_equal(flat, [ref[1, 3], ref[3, 0], ref[3, 19]])


def test_relevant_ranks_validation():
    q, d = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="outside"):
        relevant_ranks(q, d, [np.array([4]), np.array([0])])
    with pytest.raises(ValueError, match="twice"):
        relevant_ranks(q, d, [np.array([1, 1]), np.array([0])])
    with pytest.raises(ValueError, match="2 queries"):
        relevant_ranks(q, d, [np.array([1])])
    with pytest.raises(ValueError, match="dim"):
        relevant_ranks(q, np.zeros((4, 2), np.float32), [[0], [1]])
    with pytest.raises(ValueError, match="NaN"):
        relevant_ranks(np.full((2, 3), np.nan, np.float32), d, [[0], [1]])


def test_user_matmul_precision_is_ignored_then_restored():
    """TF32 / bf16 GEMMs would manufacture ties; the search forces full fp32 and restores the setting."""
    rng = np.random.default_rng(5)
    q, d = quantised(rng, 30, 8, 64), quantised(rng, 90, 8, 64)
    rel = random_rel(rng, 30, 90, 1, 3)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        got = relevant_ranks(q, d, rel, q_chunk=8, d_chunk=32)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert_ranks_equal(got, naive_rank_matrix(q, d), rel)


# ------------------------------------------------------------------------------------------- topk


@pytest.mark.parametrize("levels", [1, 8])
def test_topk_torch_is_chunk_invariant_and_follows_the_tie_rule(levels):
    rng = np.random.default_rng(10 + levels)
    q, d = quantised(rng, 41, 6, levels), quantised(rng, 333, 6, levels)
    ref = naive_rank_matrix(q, d)
    full_order = np.argsort(ref, axis=1)  # doc indices by rank
    scores_ref = (q.astype(np.float64) @ d.astype(np.float64).T)[np.arange(41)[:, None], full_order]
    for k in (1, 10, 100, 333):
        for qc, dc in [(1000, 1000), (7, 13), (41, 1), (5, 100)]:
            s, i = topk(q, d, k, q_chunk=qc, d_chunk=dc)
            assert s.shape == i.shape == (41, k) and s.dtype == np.float32 and i.dtype == np.int64
            np.testing.assert_array_equal(i, full_order[:, :k])
            np.testing.assert_array_equal(s, scores_ref[:, :k])


def test_topk_torch_and_faiss_agree():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(20)
    q = rng.standard_normal((64, 24)).astype(np.float32)
    d = rng.standard_normal((700, 24)).astype(np.float32)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for k in (1, 20, 300):
            st, it = topk(q, d, k, backend="torch", q_chunk=16, d_chunk=100)
            sf, i_f = topk(q, d, k, backend="faiss", q_chunk=16)
            np.testing.assert_allclose(st, sf, rtol=0, atol=1e-5)
            # indices must agree wherever the score is not (nearly) tied with a neighbour
            gap = np.full(st.shape, np.inf)
            diffs = np.abs(np.diff(st, axis=1))
            gap[:, 1:] = np.minimum(gap[:, 1:], diffs)
            gap[:, :-1] = np.minimum(gap[:, :-1], diffs)
            clear = gap > 1e-5
            assert clear.mean() > 0.9
            np.testing.assert_array_equal(it[clear], i_f[clear])
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_topk_k_larger_than_corpus_is_clamped(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(30)
    q, d = quantised(rng, 6, 5, 16), quantised(rng, 11, 5, 16)
    s, i = topk(q, d, 50, backend=backend)
    assert s.shape == i.shape == (6, 11)
    assert (np.sort(i, axis=1) == np.arange(11)).all()  # the whole corpus, each doc once
    assert (np.diff(s, axis=1) <= 0).all()


def test_topk_argument_errors():
    q, d = np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError):
        topk(q, d, 0)
    with pytest.raises(ConfigError):
        topk(q, d, 1, backend="annoy")


def test_resolve_device():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_match_cpu_reference():
    rng = np.random.default_rng(40)
    q, d = quantised(rng, 300, 16, 4), quantised(rng, 3000, 16, 4)
    rel = random_rel(rng, 300, 3000, 0, 6)
    ref = naive_rank_matrix(q, d)
    assert_ranks_equal(relevant_ranks(q, d, rel, q_chunk=64, d_chunk=1000, device="cuda"), ref, rel)
    s_cpu, i_cpu = topk(q, d, 100)
    s_gpu, i_gpu = topk(q, d, 100, device="cuda", q_chunk=64, d_chunk=1000)
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_array_equal(s_gpu, s_cpu)
    if search._faiss_gpu_available():
        s_f, _ = topk(q, d, 2500, backend="faiss", device="cuda")  # > FAISS GPU limit: torch fallback
        assert s_f.shape == (300, 2500)
