"""The sampler's batch sequence, pinned: a sha256 of the first 1,000 global batches.

Why: the sampler's pieces (the paper's rule, the index, the put-back queues, the epoch cursor) can be
rearranged, but a finished study must stay reproducible; any change to which rows a run trains on,
in which order, with which languages and batch kinds, changes these digests. The expected values were
computed on the sampler before it was split into modules (commit af86b5c). If a change is *meant* to
alter the sequence, say so in its commit and update the constants
(``python tests/test_sampler_sequence.py`` prints them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pytest

from mlir.data.corpus import ParallelCorpus
from mlir.sampling import HybridBatchSampler

N_BATCHES = 1000
BATCH_SIZE = 8
LANGS = ("ar", "de", "en", "fr", "zh")

CASES = {
    "constant": dict(alpha=0.5, seed=7),
    "linear_size": dict(
        schedule="linear",
        alpha_start=0.9,
        alpha_end=0.1,
        total_steps=N_BATCHES,
        lang_sampling="size",
        temperature=2.0,
        max_deferred=12,  # small: the queues' cap drops ids (164 in these 1,000 batches), pinned too
        seed=11,
    ),
}

EXPECTED = {
    ("constant", 1, 0): "d503d5f3733f9fb7b465faaecacd4a9434e8aafa808dfd1b961221d2e806f711",
    ("constant", 2, 1): "59112fdd2d83a738e9e0c008c799edb8aaecc9ee29b589e86918eb7d3255d81f",
    ("linear_size", 1, 0): "a2b9b3634f01542ffd02b09e68957dd8b9469b6743f6d07a11d51ada75bf4361",
    ("linear_size", 2, 1): "67276adc2bb488c3e29ab184a00e9644214ed5c0697ebd719ea3b39f9dece349",
}


def corpus() -> ParallelCorpus:
    """240 questions in up to 5 languages: some ids lack languages, every tenth has only one, and
    pairs of questions share a paragraph (so in-batch deduplication and put-back queues matter)."""
    rng = np.random.default_rng(2024)
    rows = []
    for i in range(240):
        has = rng.random(len(LANGS)) < 0.7
        has[rng.integers(len(LANGS))] = True
        if i % 10 == 0:  # a single-language id
            has[:] = False
            has[i % len(LANGS)] = True
        para = i // 2 if i % 4 < 2 else 1000 + i  # ids 4k and 4k+1 share their paragraph
        for lang in np.array(LANGS)[has].tolist():
            # every 17th id has one text for all its languages (a name, a number)
            positive = f"paragraph {para}" if i % 17 == 0 else f"paragraph {para} in {lang}"
            rows.append({"id": f"q{i:03d}", "lang": lang, "query": f"q{i} {lang}", "positive": positive})
    return ParallelCorpus.from_rows(rows)


def _record(kind: str, q_langs: list[str], p_langs: list[str], q_rows: list[int], p_rows: list[int]) -> bytes:
    return json.dumps([kind, q_langs, p_langs, q_rows, p_rows]).encode()


def _global_batches(s: HybridBatchSampler) -> Iterator[bytes]:
    """World size 1, by random access: ``global_batch(epoch, step)`` in order."""
    codes = s.corpus_langs
    for i in range(N_BATCHES):
        gb = s.global_batch(i // s.steps_per_epoch, i % s.steps_per_epoch)
        yield _record(
            gb.kind,
            [codes[x] for x in gb.q_lang.tolist()],
            [codes[x] for x in gb.p_lang.tolist()],
            gb.q_rows.tolist(),
            gb.p_rows.tolist(),
        )


def _rank_slices(s: HybridBatchSampler, lang_idx: np.ndarray) -> Iterator[bytes]:
    """One rank's slices, the way a DataLoader reads them: ``set_epoch`` then ``iter`` per epoch."""
    codes = s.corpus_langs
    n, epoch = 0, 0
    while n < N_BATCHES:
        s.set_epoch(epoch)
        for step, items in enumerate(s):
            if n == N_BATCHES:
                break
            q_rows = [q for q, _ in items]
            p_rows = [p for _, p in items]
            yield _record(
                s.global_batch(epoch, step).kind,
                [codes[x] for x in lang_idx[q_rows].tolist()],
                [codes[x] for x in lang_idx[p_rows].tolist()],
                q_rows,
                p_rows,
            )
            n += 1
        epoch += 1


def sequence_digest(data: ParallelCorpus, case: str, world_size: int, rank: int) -> str:
    """sha256 over kind, languages, q_rows and p_rows of each of the first N_BATCHES batches."""
    s = HybridBatchSampler(data, BATCH_SIZE, world_size=world_size, rank=rank, **CASES[case])
    records = _global_batches(s) if world_size == 1 else _rank_slices(s, np.asarray(data.lang_idx))
    h = hashlib.sha256()
    for rec in records:
        h.update(rec)
        h.update(b"\n")
    return h.hexdigest()


@pytest.fixture(scope="module")
def data() -> ParallelCorpus:
    return corpus()


def test_corpus_exercises_the_queues(data):
    """The fixture is what the digests claim to cover: missing languages, single-language ids, shared texts."""
    per_id = np.bincount(data.pid)
    assert (per_id == 1).any() and (per_id < len(LANGS)).mean() > 0.5
    assert len(np.unique(data.passage_idx)) < len(data.passage_idx)
    s = HybridBatchSampler(data, BATCH_SIZE, **CASES["constant"])
    assert s.num_clusters < s.num_ids and s.steps_per_epoch < N_BATCHES  # several epochs are covered


@pytest.mark.parametrize("case, world_size, rank", sorted(EXPECTED))
def test_first_thousand_batches_are_pinned(data, case, world_size, rank):
    assert sequence_digest(data, case, world_size, rank) == EXPECTED[(case, world_size, rank)]


if __name__ == "__main__":  # print the digests (to update EXPECTED after an intended change)
    d = corpus()
    for key in sorted(EXPECTED):
        print(f"    {key!r}: {sequence_digest(d, *key)!r},")
