"""On-disk embeddings (corpora larger than memory): the store, the streamed search, the evaluation.

The streamed search must give exactly what the in-memory search gives: same ids, same order, same
scores. With exactly representable (quantised) embeddings every score is exact whatever the block
shape, so any shard size must match the in-memory search and a naive argsort bit for bit, ties
included; with continuous float32 data the same shard size as the in-memory ``d_chunk`` must match
bit for bit (same GEMMs), and another one up to GEMM rounding of a different block width.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mlir.core.errors import ConfigError, DataError
from mlir.eval import encode as encode_mod
from mlir.eval import search
from mlir.eval.benchmarks import load_benchmark
from mlir.eval.embedding_store import EmbeddingStore, OnDiskCorpus, StoreWriter
from mlir.eval.encode import DistInfo, encode_texts, encode_to_store
from mlir.eval.runner import evaluate, evaluate_options
from mlir.eval.search import relevant_ranks, topk
from mlir.eval.trec import RunFiles
from tests._eval_data import HashingEncoder, make_xquad_dir

pytestmark = pytest.mark.usefixtures("one_thread")


N_DOCS = 301
# shard sizes that do not divide 301 (7 * 43), one that does, one row, and more than the corpus
SHARDS = [1, 7, 13, 64, 300, 301, 1000]


def quantised(rng: np.random.Generator, n: int, dim: int, levels: int) -> np.ndarray:
    """Entries k/levels (levels a power of two, small dim): every float32 GEMM is exact, in any order."""
    return (rng.integers(-levels, levels + 1, (n, dim)) / levels).astype(np.float32)


def write_store(path: Path, d: np.ndarray, block: int = 37) -> EmbeddingStore:
    """Write ``d`` in blocks of ``block`` rows (not a divisor of the size) and open it."""
    with StoreWriter(path, *d.shape) as w:
        for a in range(0, len(d), block):
            w.write(a, d[a : a + block])
    return w.store()


def naive_order(q: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference ranking per query: score descending (float64, exact for quantised data), ties by
    lower index; returns (sorted scores, indices)."""
    s = q.astype(np.float64) @ d.astype(np.float64).T
    idx = np.broadcast_to(np.arange(d.shape[0]), s.shape)
    order = np.lexsort((idx, -s), axis=-1)
    return np.take_along_axis(s, order, 1), order


# ------------------------------------------------------------------------------------------ store


def test_store_round_trip_slices_gather_and_one_reused_buffer(tmp_path):
    d = np.random.default_rng(0).standard_normal((N_DOCS, 5)).astype(np.float32)
    store = write_store(tmp_path / "d.npy", d)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), d)  # a standard .npy
    assert store.shape == (N_DOCS, 5) and store.nbytes == d.nbytes
    idx = np.array([300, 0, 5, 6, 7, 5, 299, 300])  # unsorted, repeats, runs
    np.testing.assert_array_equal(store.gather(idx), d[idx])
    sub = store.slice(100, 250)
    np.testing.assert_array_equal(sub.read(0, len(sub)), d[100:250])
    np.testing.assert_array_equal(sub.gather(np.array([149, 0])), d[[249, 100]])
    blocks = list(store.shards(64))
    assert [(a, b) for a, b, _ in blocks][-1] == (256, 301)
    # every block is read into the same buffer: the working set is one shard
    assert all(np.shares_memory(blocks[0][2], blk) for _, _, blk in blocks)
    got = np.concatenate([blk.copy() for _, _, blk in store.shards(64)])
    np.testing.assert_array_equal(got, d)
    skipped = [(a, b) for a, b, _ in store.shards(100, want=lambda a, b: a != 100)]
    assert skipped == [(0, 100), (200, 300), (300, 301)]


def test_writer_is_atomic_and_checks_rows(tmp_path):
    path = tmp_path / "d.npy"
    with pytest.raises(RuntimeError, match="never written"), StoreWriter(path, 10, 3) as w:
        w.write(0, np.zeros((9, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"), StoreWriter(path, 2, 3) as w:
        w.write(0, np.array([[0, 1, np.nan], [0, 0, 0]], np.float32))
    assert not path.exists() and list(tmp_path.iterdir()) == []  # no partial file, no temp left
    np.save(tmp_path / "f64.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="float32"):
        EmbeddingStore(tmp_path / "f64.npy")


def test_search_rejects_non_finite_rows_of_a_foreign_store(tmp_path):
    d = np.ones((20, 3), np.float32)
    d[13, 1] = np.inf
    np.save(tmp_path / "bad.npy", d)  # not written by a StoreWriter: checked as it is read
    with pytest.raises(ValueError, match="NaN or inf"):
        topk(np.ones((2, 3), np.float32), EmbeddingStore(tmp_path / "bad.npy", shard_size=8), 3)


# ------------------------------------------------------------------------------ identical results


@pytest.mark.parametrize("levels", [1, 1024])
def test_sharded_topk_and_ranks_equal_in_memory_and_naive_with_ties(tmp_path, levels):
    # levels=1: entries in {-1, 0, 1} at dim 6, so almost every score is tied with others
    rng = np.random.default_rng(levels)
    q, d = quantised(rng, 23, 6, levels), quantised(rng, N_DOCS, 6, levels)
    rel = [rng.choice(N_DOCS, size=rng.integers(0, 6), replace=False) for _ in range(23)]
    store = write_store(tmp_path / "d.npy", d)
    ref_s, ref_i = naive_order(q, d)
    ranks_ref = np.argsort(ref_i, axis=1) + 1  # rank of every doc per query
    mem_s, mem_i = topk(q, d, 40)
    mem_ranks = relevant_ranks(q, d, rel)
    for shard in SHARDS:
        s, i = topk(q, store, 40, d_chunk=shard, q_chunk=10)
        np.testing.assert_array_equal(i, ref_i[:, :40], err_msg=f"shard {shard}")
        np.testing.assert_array_equal(s, ref_s[:, :40].astype(np.float32))
        np.testing.assert_array_equal(i, mem_i)
        assert s.tobytes() == mem_s.tobytes()  # bitwise
        got = relevant_ranks(q, store, rel, d_chunk=shard, q_chunk=10)
        for qi, r in enumerate(rel):
            np.testing.assert_array_equal(got[qi], ranks_ref[qi, r])
            np.testing.assert_array_equal(got[qi], mem_ranks[qi])
    if levels == 1:
        assert all(len(np.unique(row)) < len(row) for row in q @ d.T)  # ties really are exercised


def test_sharded_search_on_float32_is_bitwise_equal_at_the_same_block_size(tmp_path):
    rng = np.random.default_rng(7)
    d = rng.standard_normal((N_DOCS, 32)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = d[rng.choice(N_DOCS, 17)] + 0.3 * rng.standard_normal((17, 32)).astype(np.float32)
    rel = [rng.choice(N_DOCS, size=3, replace=False) for _ in range(17)]
    store = write_store(tmp_path / "d.npy", d)
    for shard in (13, 64, N_DOCS):
        s, i = topk(q, store, 25, d_chunk=shard)
        ms, mi = topk(q, d, 25, d_chunk=shard)
        np.testing.assert_array_equal(i, mi)
        assert s.tobytes() == ms.tobytes()
        got, mem = relevant_ranks(q, store, rel, d_chunk=shard), relevant_ranks(q, d, rel, d_chunk=shard)
        assert all(np.array_equal(a, b) for a, b in zip(got, mem))
        # against the default in-memory block (all 301 rows at once) only GEMM rounding may differ:
        # scores within a few float32 ulps of 1, and no pair of documents that close here
        ds, di = topk(q, d, 25)
        np.testing.assert_array_equal(i, di)
        np.testing.assert_allclose(s, ds, rtol=0, atol=1e-6)
    # a store's own shard_size is the default block
    s, i = topk(q, EmbeddingStore(tmp_path / "d.npy", shard_size=13), 25)
    ms, mi = topk(q, d, 25, d_chunk=13)
    assert s.tobytes() == ms.tobytes() and np.array_equal(i, mi)


def test_two_pass_recount_reads_only_the_needed_shards_and_stays_exact(tmp_path, monkeypatch):
    """Thresholds one ulp off force every query into the two-pass mode, whose first pass reads only
    the shards holding relevant documents; the ranks must still equal the naive ones."""
    real = search._provisional_scores
    monkeypatch.setattr(
        search,
        "_provisional_scores",
        lambda qc, d, R: torch.nextafter(real(qc, d, R), torch.tensor(float("inf"))),
    )
    rng = np.random.default_rng(3)
    q, d = quantised(rng, 30, 6, 2), quantised(rng, N_DOCS, 6, 2)
    rel = [rng.choice(50, size=2, replace=False) for _ in range(30)]  # all in rows 0-49
    store = write_store(tmp_path / "d.npy", d)
    reads: list[tuple[int, int]] = []
    read = EmbeddingStore.read
    monkeypatch.setattr(
        EmbeddingStore, "read", lambda self, a, b, out=None: reads.append((a, b)) or read(self, a, b, out)
    )
    got = relevant_ranks(q, store, rel, d_chunk=64, q_chunk=7)
    ranks_ref = np.argsort(naive_order(q, d)[1], axis=1) + 1
    for qi, r in enumerate(rel):
        np.testing.assert_array_equal(got[qi], ranks_ref[qi, r])
    whole = {(0, 64), (64, 128), (128, 192), (192, 256), (256, 301)}
    # per query chunk: one-pass count (5 shards), own scores (shard 0 only), two-pass count (5 shards)
    assert set(reads) >= whole and reads.count((0, 64)) > reads.count((64, 128))


def test_faiss_backend_refuses_a_store(tmp_path):
    store = write_store(tmp_path / "d.npy", np.eye(4, dtype=np.float32))
    with pytest.raises(ConfigError, match="in memory"):
        topk(np.eye(4, dtype=np.float32), store, 2, backend="faiss")


# ----------------------------------------------------------------------------- encoding to disk


def test_encode_to_store_equals_encode_texts_with_repeats(tmp_path, monkeypatch):
    monkeypatch.setattr(encode_mod, "PROGRESS_CHUNK", 3)  # several chunks, rows written out of order
    texts = ["a k1", "b", "a k1", "c k2", "b", "d", "e", "c k2", "f", "a k1", "g"]
    enc = HashingEncoder(dim=16)
    store = encode_to_store(enc, texts, "passage", tmp_path / "p.npy", shard_size=2)
    assert store.shape == (len(texts), 16) and store.shard_size == 2
    encoded = [n for side, n in enc.calls]
    assert sum(encoded) == len(set(texts))  # each distinct text once
    ref = encode_texts(HashingEncoder(dim=16), texts, "passage")
    np.testing.assert_array_equal(store.read(0, len(texts)), ref.numpy())
    empty = encode_to_store(enc, [], "passage", tmp_path / "e.npy")
    assert empty.shape == (0, 0)


def _run_ranks(world: int, texts: list[str], path: Path) -> list:
    """encode_to_store on ``world`` ranks as threads, all_gather replaced by an exchange between them."""
    barrier, box, rank_of, results = threading.Barrier(world), [None] * world, {}, [None] * world

    def fake_all_gather(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        r = rank_of[threading.get_ident()]
        box[r] = local.clone()
        barrier.wait()
        assert [len(b) for b in box] == list(sizes)  # every rank agrees on the round's sizes
        out = torch.cat(list(box))
        barrier.wait()
        return out

    def rank(r: int) -> None:
        rank_of[threading.get_ident()] = r
        try:
            dist = DistInfo(r, world)
            results[r] = encode_to_store(HashingEncoder(dim=16), texts, "passage", path, dist=dist)
        except BaseException as e:  # reported by the test
            results[r] = e
            barrier.abort()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encode_mod, "all_gather_rows", fake_all_gather)
        threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    return results


def test_encode_to_store_under_ddp_gathers_chunk_by_chunk(tmp_path, monkeypatch):
    """3 ranks, 2 texts per chunk: uneven slices (3, 3, 2 distinct texts), so a rank sits out the last
    round; then fewer distinct texts than ranks (a rank never encodes). Rank 0 writes, others get None."""
    monkeypatch.setattr(encode_mod, "PROGRESS_CHUNK", 2)
    for name, texts in (
        ("uneven", ["a", "b", "a", "c", "d", "e", "b", "f", "g", "h", "a"]),
        ("few", ["x", "y", "x"]),
    ):
        path = tmp_path / f"{name}.npy"
        results = _run_ranks(3, texts, path)
        assert results[1] is None and results[2] is None, results
        ref = encode_texts(HashingEncoder(dim=16), texts, "passage")
        np.testing.assert_array_equal(results[0].read(0, len(texts)), ref.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npy", "uneven.npy"]


# ---------------------------------------------------------------------------------- evaluation


def _evaluate_both(tmp_path: Path, name: str, shard_size: int) -> tuple[dict, dict, Path, Path]:
    """The same evaluation in memory and on disk, each writing TREC runs of the mono and multi views."""
    xq = tmp_path / "xq"
    if not xq.exists():
        make_xquad_dir(xq, langs=("en", "de", "zh"), n_articles=3)
    cfg = {"type": "xquad_r", "path": str(xq), "download": False}
    enc = HashingEncoder(dim=64)  # a weak encoder: ranks spread out, MRC / PEER / rank distance vary
    out = []
    for mode in ("mem", "disk"):
        on_disk = OnDiskCorpus(str(tmp_path / name / "emb"), shard_size) if mode == "disk" else None
        runs = RunFiles(str(tmp_path / name / mode), 20, ("mono", "multi"))
        out.append(evaluate(enc, [load_benchmark("xq", cfg)], runs=runs, on_disk=on_disk))
    return out[0], out[1], tmp_path / name / "mem", tmp_path / name / "disk"


def _assert_same_runs(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*.trec"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.trec"))
    for rel in files:
        assert (a / rel).read_text() == (b / rel).read_text(), rel


@pytest.mark.parametrize("shard_size", [None, 5])
def test_evaluation_on_disk_gives_the_same_metrics_and_runs(tmp_path, monkeypatch, shard_size):
    """Default shard size = the in-memory block (65536 rows); 5 rows (not a divisor of the pools) is
    compared with an in-memory search in 5-row blocks too, so both do the same GEMMs: equal metrics."""
    if shard_size is not None:
        monkeypatch.setattr(search, "D_CHUNK", shard_size)
    mem, disk, runs_mem, runs_disk = _evaluate_both(tmp_path, "e", shard_size or OnDiskCorpus.shard_size)
    assert mem.keys() == disk.keys() and len(mem) > 50
    assert {k: (v, disk[k]) for k, v in mem.items() if v != disk[k]} == {}
    assert any(0 < v < 1 for k, v in mem.items() if "ndcg@10" in k)  # not a trivial ranking
    assert any(0 < v < 1 for k, v in mem.items() if "mrc@10" in k)
    task = load_benchmark("xq", {"type": "xquad_r", "path": str(tmp_path / "xq"), "download": False}).task
    n_docs = sum(len(task.docs[x]) for x in task.langs)
    assert EmbeddingStore(tmp_path / "e" / "emb" / "xq.passages.npy").shape == (n_docs, 64)
    _assert_same_runs(runs_mem, runs_disk)


def test_eval_options_on_disk_keys(tmp_path):
    assert "on_disk" not in evaluate_options(OmegaConf.create({"eval": {}}))
    opts = evaluate_options(OmegaConf.create({"eval": {"embeddings_dir": str(tmp_path), "shard_size": 1000}}))
    assert opts["on_disk"] == OnDiskCorpus(str(tmp_path), 1000)
    assert (
        evaluate_options(OmegaConf.create({"eval": {"embeddings_dir": "e"}}))["on_disk"].shard_size == 65536
    )
    (tmp_path / "file").write_text("x")
    for bad, key in (
        ({"shard_size": 0}, "eval.shard_size"),
        ({"shard_size": "big"}, "eval.shard_size"),
        ({"shard_size": True}, "eval.shard_size"),
        ({"shard_size": 2**24 + 1}, "eval.shard_size"),
        ({"embeddings_dir": ""}, "eval.embeddings_dir"),
        ({"embeddings_dir": str(tmp_path / "file")}, "eval.embeddings_dir"),
    ):
        with pytest.raises(ConfigError) as e:
            evaluate_options(OmegaConf.create({"eval": bad}))
        assert e.value.where == key and "\n" not in str(e.value)
