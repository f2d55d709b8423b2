"""Several corpora in one run (issue 13): ``data=corpora`` reads three JSONL corpora into one namespaced
corpus; the hybrid sampler's batches keep the paper's X-X-mono / X-Y definitions whatever corpora they
draw from; each corpus's share of the drawn pairs follows its weight (size-proportional without
weights); resume is exact; a training run composes and fits; config mistakes are one line.

The three corpora reuse the raw ids "1", "2", ... and group names, have different language sets
(gamma alone has es, beta lacks fr) and different sizes. Expected values are computed here from
``LANGS``, ``SIZES`` and the weights, never read from the implementation.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _fast_run import FAST_DEV_RUN
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

import mlir.core.config  # noqa: F401  (resolvers)
from mlir.core.errors import ConfigError
from mlir.data.corpora import check_corpora, read_corpora
from mlir.data.corpus import ParallelCorpus
from mlir.data.jsonl import read_jsonl
from mlir.sampling import MONO, HybridBatchSampler

ROOT = Path(__file__).resolve().parents[1]
LANGS = {"alpha": ("en", "de", "fr"), "beta": ("en", "de"), "gamma": ("en", "fr", "es")}
SIZES = {"alpha": 40, "beta": 24, "gamma": 64}  # ids per corpus; 128 in all
B = 8


def _write(path: Path, name: str) -> Path:
    lines = [
        json.dumps(
            {
                "id": str(i + 1),  # "1", "2", ... in every corpus
                "lang": lang,
                "query": f"{name} question {i + 1} in {lang}",
                "positive": f"{name} passage {i + 1} in {lang}",
                "group": f"g{i // 4}",  # g0, g1, ... in every corpus
            }
        )
        for i in range(SIZES[name])
        for lang in LANGS[name]
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("MLIR_CACHE_DIR", str(tmp_path / "cache"))
    return {name: _write(tmp_path / f"{name}.jsonl", name) for name in LANGS}


def _entries(files, weights=None) -> list[dict]:
    return [
        {
            "name": n,
            "reader": functools.partial(read_jsonl, p),
            "weight": None if weights is None else weights[n],
        }
        for n, p in files.items()
    ]


def _rows(corpus: ParallelCorpus) -> dict[str, np.ndarray]:
    """Per row, its id, language and corpus strings, read from the table (not the index arrays)."""
    t = corpus.table.with_format("arrow")[:]
    return {c: np.array(t.column(c).to_pylist(), dtype=object) for c in ("id", "lang", "group", "corpus")}


def _batches(sampler: HybridBatchSampler, epochs: int):
    for epoch in range(epochs):
        for step in range(sampler.steps_per_epoch):
            yield sampler.global_batch(epoch, step)


# ------------------------------------------------------------------------------ (a) the combined corpus


def test_ids_and_groups_are_namespaced_and_translations_stay_in_their_corpus(files):
    corpus = read_corpora(_entries(files))
    rows = _rows(corpus)
    expected = {
        (f"{n}:{r['id']}", r["lang"]): (f"{n}:{r['group']}", n, r["query"])
        for n, p in files.items()
        for r in map(json.loads, p.read_text().splitlines())
    }
    t = corpus.table.with_format("arrow")[:]
    got = {
        (i, lang): (g, c, q)
        for i, lang, g, c, q in zip(
            rows["id"], rows["lang"], rows["group"], rows["corpus"], t.column("query").to_pylist()
        )
    }
    assert got == expected
    assert corpus.num_ids == sum(SIZES.values())  # raw id "1" is three parallel ids, one per corpus
    assert len({corpus.pid[r] for r in np.flatnonzero(np.char.endswith(rows["id"].astype(str), ":1"))}) == 3
    for pid in range(corpus.num_ids):  # every parallel id's rows (its translations) are of one corpus
        assert len(set(rows["corpus"][corpus.pid == pid])) == 1
    assert corpus.corpora == sorted(LANGS)
    assert [corpus.corpora[i] for i in corpus.corpus_idx] == list(rows["corpus"])
    assert corpus.langs == ["de", "en", "es", "fr"]
    assert len(corpus.groups) == sum(math.ceil(n / 4) for n in SIZES.values())  # g0 of each corpus differs


def test_the_combined_file_is_cached_and_memory_mapped_and_in_memory_readers_work(files, tmp_path):
    first = read_corpora(_entries(files))
    again = read_corpora(_entries(files))
    assert first.table.cache_files and first.table.cache_files == again.table.cache_files
    assert str(tmp_path / "cache") in first.table.cache_files[0]["filename"]
    # a corpus given by path, and one built in memory (no cache file: combined in memory)
    mem = ParallelCorpus.from_rows(
        [{"id": "1", "lang": x, "query": f"q {x}", "positive": f"p {x}"} for x in ("en", "de")]
    )
    mixed = read_corpora(
        [{"name": "alpha", "path": str(files["alpha"])}, {"name": "m", "reader": lambda: mem}]
    )
    assert mixed.num_ids == SIZES["alpha"] + 1 and not mixed.table.cache_files
    assert sorted(set(_rows(mixed)["id"])) == sorted(
        [f"alpha:{i + 1}" for i in range(SIZES["alpha"])] + ["m:1"]
    )


# ------------------------------------------------------------------------------ (b) batch definitions


@pytest.mark.parametrize("weights", [None, {"alpha": 1.0, "beta": 3.0, "gamma": 1.0}])
def test_batches_keep_the_mono_and_xy_definitions_across_corpora(files, weights):
    corpus = read_corpora(_entries(files, weights))
    rows = _rows(corpus)
    sampler = HybridBatchSampler(corpus, B, alpha=0.5, seed=3)
    kinds, mono_corpora = Counter(), {}
    for gb in _batches(sampler, epochs=12):
        q, p = gb.q_rows, gb.p_rows
        assert list(rows["id"][q]) == list(rows["id"][p])  # each pair: one namespaced id...
        assert list(rows["corpus"][q]) == list(rows["corpus"][p])  # ...of one corpus
        assert len(set(rows["id"][q])) == B  # no id twice in a batch
        if gb.kind == MONO:
            (lang,) = set(rows["lang"][q]) | set(rows["lang"][p])  # one language for the whole batch
            assert lang == corpus.langs[gb.lang]
            assert all(lang in LANGS[c] for c in rows["corpus"][q])  # only corpora that have it
            mono_corpora.setdefault(lang, set()).update(rows["corpus"][q])
        else:
            assert all(a != b for a, b in zip(rows["lang"][q], rows["lang"][p]))
        kinds[gb.kind] += 1
    assert min(kinds.values()) > 20
    assert mono_corpora["es"] == {"gamma"} and "gamma" not in mono_corpora["de"]
    assert mono_corpora["en"] == set(LANGS)  # a language every corpus has mixes them all


# ------------------------------------------------------------------------------ (c) shares


def _shares(corpus: ParallelCorpus, sampler: HybridBatchSampler, epochs: int) -> tuple[dict, int]:
    names = _rows(corpus)["corpus"]
    counts = Counter(c for gb in _batches(sampler, epochs) for c in names[gb.q_rows])
    n = sum(counts.values())
    return {c: counts[c] / n for c in LANGS}, n


@pytest.mark.parametrize(
    "weights",
    [None, {"alpha": 1.0, "beta": 2.0, "gamma": 1.0}, {"alpha": 5.0, "beta": 1.0, "gamma": 0.5}],
    ids=["size", "beta_x2", "skewed"],
)
def test_each_corpus_share_of_the_pairs_follows_its_weight(files, weights):
    """X-Y batches only (alpha 0): every id (all have >= 2 languages) fits every batch, so the drawn
    pairs are the weighted stream itself; the share of corpus c must be w_c / sum(w), or its share of
    the ids without weights, within 4 binomial standard deviations (a conservative bound: each epoch
    draws without replacement within a corpus's pass)."""
    corpus = read_corpora(_entries(files, weights))
    sampler = HybridBatchSampler(corpus, B, alpha=0.0, seed=5)
    assert sampler.steps_per_epoch == sum(SIZES.values()) // B  # an epoch is as long as without weights
    mass = weights or SIZES
    expected = {c: mass[c] / sum(mass.values()) for c in LANGS}
    shares, n = _shares(corpus, sampler, epochs=60)
    for c in LANGS:
        sd = math.sqrt(expected[c] * (1 - expected[c]) / n)
        assert abs(shares[c] - expected[c]) < 4 * sd, (c, shares[c], expected[c], sd)


def test_size_language_sampling_counts_the_languages_of_the_weighted_stream(files):
    """``lang_sampling=size`` with weights: n_L is the ids in L per pass of the weighted stream (corpus c
    fills 128 * w_c / sum(w) slots, every id of c in each of LANGS[c]), not the ids in the files; the
    X-X-mono batches' languages follow those probabilities (within 4 binomial SDs)."""
    weights = {"alpha": 1.0, "beta": 6.0, "gamma": 1.0}
    corpus = read_corpora(_entries(files, weights))
    sampler = HybridBatchSampler(corpus, B, alpha=1.0, lang_sampling="size", seed=3)
    slots = {c: sum(SIZES.values()) * w / sum(weights.values()) for c, w in weights.items()}
    n_lang = {x: sum(slots[c] for c in LANGS if x in LANGS[c]) for x in sampler.langs}
    assert n_lang == {"de": 112.0, "en": 128.0, "es": 16.0, "fr": 32.0}
    expected = {x: n / sum(n_lang.values()) for x, n in n_lang.items()}
    assert dict(zip(sampler.langs, sampler.lang_probs)) == pytest.approx(expected)
    langs = _rows(corpus)["lang"]
    counts = Counter()
    for gb in _batches(sampler, epochs=60):
        (lang,) = set(langs[gb.q_rows]) | set(langs[gb.p_rows])
        counts[lang] += 1
    n = sum(counts.values())
    for x, p in expected.items():
        assert abs(counts[x] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (x, counts[x] / n, p)
    unweighted = HybridBatchSampler(read_corpora(_entries(files)), B, alpha=1.0, lang_sampling="size")
    assert dict(zip(unweighted.langs, unweighted.lang_probs)) == pytest.approx(
        {"de": 64 / 360, "en": 128 / 360, "es": 64 / 360, "fr": 104 / 360}
    )


def test_every_pass_of_the_stream_gives_each_corpus_its_weighted_count(files):
    """The stream the batches read: per pass of N = 128 ids, corpus c fills N * w_c / sum(w) rounded
    down or up, exact on average (mean within 4 SD of the rounding's Bernoulli), and each corpus's ids
    come without replacement until all of them came (blocks of its size hold distinct ids)."""
    weights = {"alpha": 5.0, "beta": 1.0, "gamma": 0.5}
    corpus = read_corpora(_entries(files, weights))
    rows = _rows(corpus)
    corpus_of_pid = dict(zip(corpus.pid.tolist(), rows["corpus"]))
    mix = HybridBatchSampler(corpus, B, alpha=0.0, seed=4).mix
    n, passes = sum(SIZES.values()), 200
    streams = {c: [] for c in LANGS}
    counts = {c: [] for c in LANGS}
    for p in range(passes):
        order = mix.order(4, 0, p).tolist()
        assert len(order) == n
        for c in LANGS:
            ids = [i for i in order if corpus_of_pid[i] == c]
            counts[c].append(len(ids))
            streams[c] += ids
    for c in LANGS:
        expected = n * weights[c] / sum(weights.values())
        assert set(counts[c]) <= {math.floor(expected), math.ceil(expected)}
        frac = expected - math.floor(expected)
        assert abs(np.mean(counts[c]) - expected) < 4 * math.sqrt(frac * (1 - frac) / passes) + 1e-9
        k = SIZES[c]
        blocks = [streams[c][j : j + k] for j in range(0, len(streams[c]) - k + 1, k)]
        assert all(len(set(b)) == k for b in blocks)


def test_size_proportional_corpora_are_sampled_exactly_as_one_corpus(files):
    """Null weights change nothing: the batches are those of the same rows without the corpus column."""
    corpus = read_corpora(_entries(files))
    plain = {k: getattr(corpus, k) for k in ("pid", "lang_idx", "passage_idx", "langs")}
    a, b = (HybridBatchSampler(c, B, alpha=0.5, seed=1) for c in (corpus, plain))
    assert a.mix is None
    for x, y in zip(_batches(a, 3), _batches(b, 3)):
        assert x.kind == y.kind and (x.q_rows == y.q_rows).all() and (x.p_rows == y.p_rows).all()


def test_up_weighted_corpus_repeats_within_an_epoch_down_weighted_gives_new_subsets(files):
    corpus = read_corpora(_entries(files, {"alpha": 5.0, "beta": 1.0, "gamma": 0.5}))
    ids = _rows(corpus)["id"]
    sampler = HybridBatchSampler(corpus, B, alpha=0.0, seed=2)
    seen_gamma, per_epoch_gamma = set(), []
    for epoch in range(40):
        drawn = [
            ids[r] for s in range(sampler.steps_per_epoch) for r in sampler.global_batch(epoch, s).q_rows
        ]
        counts = Counter(i for i in drawn if i.startswith("alpha:"))
        # alpha's share (5 / 6.5 of 128 pairs ~ 98) exceeds its 40 ids: every id twice, some a third
        # time (its ids are drawn without replacement within each of its own passes)
        assert min(counts.values()) >= 2 and len(counts) == SIZES["alpha"]
        assert max(counts.values()) <= 3
        gamma = {i for i in drawn if i.startswith("gamma:")}
        per_epoch_gamma.append(gamma)
        seen_gamma |= gamma
    assert all(len(g) < SIZES["gamma"] / 2 for g in per_epoch_gamma)  # ~10 of 64 per epoch
    assert len(seen_gamma) == SIZES["gamma"]  # a different subset each epoch: all of them over 40
    assert len({frozenset(g) for g in per_epoch_gamma}) == len(per_epoch_gamma)


# ------------------------------------------------------------------------------ (d) determinism


def test_resume_and_ranks_continue_the_same_weighted_batches(files):
    weights = {"alpha": 1.0, "beta": 3.0, "gamma": 1.0}
    corpus = read_corpora(_entries(files, weights))

    def sampler(**kw):
        return HybridBatchSampler(corpus, B, alpha=0.5, seed=9, **kw)

    ref = sampler()
    ref.set_epoch(2)
    full = list(ref)
    assert full == [ref.global_batch(2, s).items() for s in range(ref.steps_per_epoch)]
    resumed = sampler()
    resumed.load_state_dict(ref.state_at(2, 5))
    resumed.set_epoch(2)
    assert list(resumed) == full[5:]
    partial = sampler()
    partial.set_epoch(2)
    it = iter(partial)
    head = [next(it) for _ in range(7)]
    later = sampler()
    later.load_state_dict(partial.state_dict())
    later.set_epoch(2)
    assert head + list(later) == full
    # two DDP ranks: their slices concatenated are the global batches
    r0, r1 = sampler(world_size=2, rank=0), sampler(world_size=2, rank=1)
    for s in (r0, r1):
        s.set_epoch(2)
    assert [a + b for a, b in zip(r0, r1)] == full
    # a re-read corpus (from the cache) gives the same sequence; other weights another fingerprint
    again = HybridBatchSampler(read_corpora(_entries(files, weights)), B, alpha=0.5, seed=9)
    again.set_epoch(2)
    assert list(again) == full and again.fingerprint == ref.fingerprint
    other = HybridBatchSampler(read_corpora(_entries(files, {**weights, "beta": 2.0})), B, alpha=0.5, seed=9)
    assert other.fingerprint != ref.fingerprint
    with pytest.warns(UserWarning, match="different corpus or sampler config"):
        other.load_state_dict(ref.state_at(2, 5))


def test_the_split_and_the_training_part_keep_the_corpora_and_weights(files):
    from mlir.data.datamodule import RetrievalDataModule

    weights = {"alpha": 1.0, "beta": 3.0, "gamma": 1.0}
    dm = RetrievalDataModule(
        corpus=functools.partial(read_corpora, _entries(files, weights)),
        sampler=functools.partial(HybridBatchSampler, alpha=0.5),
        split={"n_test_groups": 3, "n_dev_groups": 3, "seed": 0},
        batch_size=B,
    )
    dm.prepare_corpora()
    train, dev = dm.train_corpus, dm.val_corpus
    assert train.corpus_weights == weights and dev.corpus_weights == weights
    assert set(train.corpora) == set(LANGS)
    for part in (train, dev):  # the corpus column and its index still agree after the selection
        assert [part.corpora[i] for i in part.corpus_idx] == list(_rows(part)["corpus"])
    assert not set(train.groups) & set(dev.groups)
    assert dm.train_sampler().mix.names == tuple(sorted(LANGS))


# ------------------------------------------------------------------------------ (e) training


def _compose(tmp_path, files, *extra):
    GlobalHydra.instance().clear()
    overrides = [
        "data=corpora",
        *(f"data.corpus.corpora.{i}.reader.path={p}" for i, p in enumerate(files.values())),
        *(f"data.corpus.corpora.{i}.name={n}" for i, n in enumerate(files)),
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.eval.output_file = str(tmp_path / "metrics.json")
    return cfg


def test_fast_dev_run_trains_on_three_weighted_corpora(files, tmp_path, tiny_model_dir):
    from mlir.training.pipeline import train

    cfg = _compose(
        tmp_path,
        files,
        "model=tiny_random",
        f"model.encoder.name_or_path={tiny_model_dir}",
        *(f"data.corpus.corpora.{i}.weight={w}" for i, w in enumerate((1, 3, 1))),
        "~data.split.test_fraction",
        "~data.split.dev_fraction",
        "+data.split.n_test_groups=3",
        "+data.split.n_dev_groups=3",
        *FAST_DEV_RUN,  # batch 4: 3 dev groups of 4 ids, and a validation X-X-mono batch in es needs 4
    )
    assert list(cfg.eval.benchmarks) == ["jsonl"]
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and "eval/jsonl/avg/ndcg@10" in metrics


# ------------------------------------------------------------------------------ (f) config mistakes


def _reader():
    return None


BAD = [
    ([], "data.corpus.corpora"),
    ({"name": "a", "path": "x"}, "data.corpus.corpora"),
    ([{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], "data.corpus.corpora[1].name"),
    ([{"name": "a:b", "path": "x"}], "data.corpus.corpora[0].name"),
    ([{"name": "", "path": "x"}], "data.corpus.corpora[0].name"),
    ([{"name": "a"}], "data.corpus.corpora[0].reader"),
    ([{"name": "a", "path": "x", "reader": _reader}], "data.corpus.corpora[0].path"),
    ([{"name": "a", "reader": 5}], "data.corpus.corpora[0].reader"),
    ([{"name": "a", "path": "x", "wieght": 1}], "data.corpus.corpora[0].wieght"),
    (["a.jsonl"], "data.corpus.corpora[0]"),
    *(
        (
            [{"name": "a", "path": "x", "weight": 1}, {"name": "b", "path": "y", "weight": w}],
            "data.corpus.corpora[1].weight",
        )
        for w in (0, -1, float("inf"), float("nan"), "heavy", True)
    ),
    ([{"name": "a", "path": "x", "weight": 2}, {"name": "b", "path": "y"}], "data.corpus.corpora[1].weight"),
    ([{"name": "a", "path": "x"}, {"name": "b", "path": "y", "weight": 2}], "data.corpus.corpora[0].weight"),
]


@pytest.mark.parametrize("corpora, where", BAD)
def test_config_mistakes_are_one_line_naming_the_key(corpora, where):
    with pytest.raises(ConfigError) as ei:
        check_corpora(corpora)
    assert ei.value.where == where and "\n" not in str(ei.value)
    with pytest.raises(ConfigError) as ei:  # the reader checks the same, before reading anything
        read_corpora(corpora)
    assert ei.value.where == where


def test_a_reader_that_returns_no_corpus_is_named(files):
    with pytest.raises(ConfigError) as ei:
        read_corpora([{"name": "a", "path": str(files["alpha"])}, {"name": "b", "reader": _reader}])
    assert ei.value.where == "data.corpus.corpora[1].reader" and "NoneType" in ei.value.message


def test_a_bad_weight_on_the_command_line_is_one_line_naming_it(files, tmp_path):
    cfg = _compose(tmp_path, files, "data.corpus.corpora.1.weight=-2", "data.corpus.corpora.0.weight=1")
    with pytest.raises(ConfigError) as pre:  # a preflight on the composed config: nothing instantiated
        check_corpora(cfg.data.corpus.corpora)
    assert pre.value.where == "data.corpus.corpora[1].weight"
    with pytest.raises(ConfigError) as ei:
        instantiate(cfg.data.corpus)()
    assert str(ei.value).startswith("data.corpus.corpora[1].weight: must be a finite number > 0")
    assert "\n" not in str(ei.value)
