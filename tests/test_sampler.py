"""Properties of the hybrid X-X-mono / X-Y batch sampler (mlir.sampling: rule, index, dedup, cursor, hybrid).

Every check is computed from the raw corpus arrays, independently of the sampler's own index.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlir.core.errors import ConfigError
from mlir.data.corpus import ParallelCorpus
from mlir.preview_batches import preview_records
from mlir.sampling import HybridBatchSampler

LANGS = ("ar", "de", "en", "fr")
REPO = Path(__file__).resolve().parents[1]


def synth(
    n_ids: int = 300,
    langs: tuple[str, ...] = LANGS,
    drop: float = 0.3,
    shared: int = 0,
    seed: int = 0,
    lang_sizes: tuple[float, ...] | None = None,
) -> dict:
    """Raw corpus arrays: ids missing some languages, optionally passages shared between ids.

    ``lang_sizes`` gives each language's coverage probability (overrides ``drop``).
    """
    rng = np.random.default_rng(seed)
    cover = np.array(lang_sizes) if lang_sizes is not None else np.full(len(langs), 1 - drop)
    has = rng.random((n_ids, len(langs))) < cover
    if lang_sizes is None:  # every id in at least one language
        has[np.arange(n_ids), rng.integers(0, len(langs), n_ids)] = True
    pid, lang = np.nonzero(has)
    order = rng.permutation(len(pid))  # row order must not matter
    pid, lang = pid[order], lang[order]
    pas = rng.permutation(len(pid)) + 10
    for _ in range(shared):  # a passage text reused by another id (e.g. same paragraph)
        a, b = rng.choice(len(pid), 2, replace=False)
        pas[b] = pas[a]
    return {"pid": pid, "lang_idx": lang, "passage_idx": pas, "langs": list(langs)}


def all_batches(s: HybridBatchSampler, epoch: int = 0):
    return [s.global_batch(epoch, i) for i in range(s.steps_per_epoch)]


def binom_ok(k: int, n: int, p: float, z: float = 5.0) -> bool:
    """k successes in n trials is within z standard deviations of p (exact at p in {0, 1})."""
    if p in (0.0, 1.0):
        return k == n * p
    return abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.85, 1.0])
def test_mono_fraction_follows_alpha(alpha):
    data = synth(400, drop=0.2)
    s = HybridBatchSampler(data, 8, alpha=alpha, steps_per_epoch=1500, seed=3)
    kinds = [s.global_batch(0, i).kind for i in range(s.steps_per_epoch)]
    assert set(kinds) <= {"mono", "cross"}
    assert binom_ok(kinds.count("mono"), len(kinds), alpha)


def test_pairs_respect_languages_and_ids():
    data = synth(300, drop=0.5, seed=1)
    pid, lang = data["pid"], data["lang_idx"]
    langs_of = {}
    for p, lg in zip(pid.tolist(), lang.tolist()):
        langs_of.setdefault(p, set()).add(lg)
    s = HybridBatchSampler(data, 16, alpha=0.5, steps_per_epoch=300, seed=5)
    seen = {"mono": 0, "cross": 0}
    for gb in all_batches(s):
        seen[gb.kind] += 1
        assert (pid[gb.q_rows] == gb.pids).all() and (pid[gb.p_rows] == gb.pids).all()
        assert (lang[gb.q_rows] == gb.q_lang).all() and (lang[gb.p_rows] == gb.p_lang).all()
        if gb.kind == "mono":
            assert len(set(gb.q_lang.tolist())) == 1 and (gb.q_rows == gb.p_rows).all()
            assert gb.lang == gb.q_lang[0]
        else:
            assert gb.lang is None and (gb.q_lang != gb.p_lang).all()
            for i, x, y in zip(gb.pids.tolist(), gb.q_lang.tolist(), gb.p_lang.tolist()):
                assert {x, y} <= langs_of[i] and len(langs_of[i]) >= 2
    assert seen["mono"] > 50 and seen["cross"] > 50


def test_cross_pairs_cover_all_ordered_language_pairs_uniformly():
    data = synth(200, drop=0.0)
    s = HybridBatchSampler(data, 20, alpha=0.0, steps_per_epoch=500, seed=2)
    counts = {}
    for gb in all_batches(s):
        for x, y in zip(gb.q_lang.tolist(), gb.p_lang.tolist()):
            counts[(x, y)] = counts.get((x, y), 0) + 1
    n = sum(counts.values())
    assert len(counts) == 12  # 4 * 3 ordered pairs, X != Y
    assert all(binom_ok(c, n, 1 / 12) for c in counts.values())


def test_cross_pairs_follow_size_weights_without_replacement():
    # 300 ids in en/de/fr plus single-language ids that make en and de "bigger" for size sampling
    pid = np.concatenate([np.repeat(np.arange(300), 3), np.arange(300, 900), np.arange(900, 1050)])
    lang = np.concatenate([np.tile([0, 1, 2], 300), np.zeros(600, int), np.ones(150, int)])
    data = {"pid": pid, "lang_idx": lang, "passage_idx": np.arange(len(pid)), "langs": ["en", "de", "fr"]}
    s = HybridBatchSampler(data, 16, alpha=0.5, lang_sampling="size", steps_per_epoch=400, seed=3)
    w = np.array([900, 450, 300]) / 1650
    assert s.lang_probs == pytest.approx(w)
    counts = np.zeros((3, 3))
    for gb in all_batches(s):
        if gb.kind == "cross":
            np.add.at(counts, (gb.q_lang, gb.p_lang), 1)
    n = counts.sum()
    assert n > 2000 and np.trace(counts) == 0
    for a in range(3):
        for b in range(3):
            if a != b:  # P(X=a, Y=b) = w_a * w_b / (1 - w_a)
                assert binom_ok(int(counts[a, b]), int(n), w[a] * w[b] / (1 - w[a]))


def test_no_duplicate_ids_passages_or_translations_in_a_batch():
    data = synth(300, drop=0.3, shared=120, seed=4)
    pid, pas = data["pid"], data["passage_idx"]
    texts_of = {}
    for p, t in zip(pid.tolist(), pas.tolist()):
        texts_of.setdefault(p, set()).add(t)
    for alpha in (0.0, 0.5, 1.0):
        s = HybridBatchSampler(data, 16, alpha=alpha, steps_per_epoch=150, seed=7)
        for gb in all_batches(s):
            assert len(set(gb.pids.tolist())) == len(gb)
            assert len(set(pas[gb.p_rows].tolist())) == len(gb)
            # no id's positive (in any language) is the text of another in-batch id
            sets = [texts_of[i] for i in gb.pids.tolist()]
            assert len(set().union(*sets)) == sum(len(x) for x in sets)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_slices_partition_the_global_batch(world_size):
    data = synth(300, seed=6)
    B = 16
    ranks = [
        HybridBatchSampler(data, B, alpha=0.5, seed=11, world_size=world_size, rank=r)
        for r in range(world_size)
    ]
    lens = {len(s) for s in ranks}
    assert lens == {ranks[0].steps_per_epoch}
    per_rank = [list(iter(s)) for s in ranks]
    assert {len(b) for b in per_rank} == lens
    ref = HybridBatchSampler(data, B, alpha=0.5, seed=11)  # world size does not change global batches
    for step, parts in enumerate(zip(*per_rank)):
        assert all(len(p) == B // world_size for p in parts)
        assert [pair for p in parts for pair in p] == ref.global_batch(0, step).items()


def test_determinism_seed_and_epoch():
    data = synth(300, shared=20, seed=8)

    def seq(seed, epoch):
        s = HybridBatchSampler(data, 16, alpha=0.5, seed=seed)
        s.set_epoch(epoch)
        return list(iter(s))

    assert seq(1, 0) == seq(1, 0)
    assert seq(1, 0) != seq(2, 0)
    assert seq(1, 0) != seq(1, 1)
    # random access equals sequential iteration, in any order of queries
    s = HybridBatchSampler(data, 16, alpha=0.5, seed=1)
    seq10 = seq(1, 0)
    for step in [7, 2, 9, 0, 5]:
        assert s.global_batch(0, step).items() == seq10[step]


@pytest.mark.parametrize("k", [0, 1, 7, 18])
def test_resume_from_state_dict_continues_the_sequence(k):
    data = synth(300, drop=0.4, shared=30, seed=9)
    kw = dict(alpha=0.4, seed=13, world_size=2, rank=1)
    full = HybridBatchSampler(data, 8, **kw)
    n = full.steps_per_epoch
    assert n > 18
    full.set_epoch(2)
    expected = list(iter(full))
    full.set_epoch(3)
    expected_next = list(iter(full))

    a = HybridBatchSampler(data, 8, **kw)
    a.set_epoch(2)
    it = iter(a)
    got = [next(it) for _ in range(k)]
    state = a.state_dict()
    assert state["epoch"] == 2 and state["step"] == k

    b = HybridBatchSampler(data, 8, **kw)
    b.load_state_dict(state)
    b.set_epoch(2)  # Lightning re-sets the resumed epoch: must not rewind
    assert len(b) == n  # Lightning reads the length once for all epochs and skips restored batches itself
    rest = list(iter(b))
    assert len(rest) == n - k and got + rest == expected
    assert b.state_dict()["step"] == n
    b.set_epoch(3)
    assert len(b) == n and list(iter(b)) == expected_next


def test_state_at_matches_iteration_state():
    s = HybridBatchSampler(synth(200), 8, seed=1)
    it = iter(s)
    for _ in range(5):
        next(it)
    assert s.state_at(0, 5) == s.state_dict()


def test_epoch_covers_ids_without_replacement():
    data = synth(500, drop=0.0)  # every id in every language, no shared texts
    for alpha in (0.0, 0.5, 1.0):
        s = HybridBatchSampler(data, 20, alpha=alpha, seed=4)
        assert s.steps_per_epoch == 500 // 20
        ids = np.concatenate([gb.pids for gb in all_batches(s)])
        assert len(np.unique(ids)) == len(ids) == 500


def test_no_repeats_in_half_an_epoch_with_partial_coverage():
    data = synth(1000, drop=0.5, seed=12)
    s = HybridBatchSampler(data, 20, alpha=0.5, seed=4, steps_per_epoch=25)  # half an epoch's ids
    ids = np.concatenate([gb.pids for gb in all_batches(s)])
    assert len(np.unique(ids)) == len(ids)


def test_linear_schedule_moves_mono_fraction():
    data = synth(300, drop=0.2)
    s = HybridBatchSampler(
        data, 8, schedule="linear", alpha_start=0.9, alpha_end=0.1, steps_per_epoch=1500, max_epochs=2, seed=1
    )
    total = 3000
    assert s.schedule.total_steps == total
    assert s.schedule(0) == pytest.approx(0.9) and s.schedule(1 * 1500 + 1499) == pytest.approx(0.1)
    windows = {"early": (0, range(0, 600)), "late": (1, range(900, 1500))}
    fracs = {}
    for name, (epoch, steps) in windows.items():
        kinds = [s.global_batch(epoch, t).kind == "mono" for t in steps]
        g = epoch * 1500 + np.array(list(steps))
        expect = float(np.mean(0.9 + (0.1 - 0.9) * g / (total - 1)))
        assert binom_ok(sum(kinds), len(kinds), expect)
        fracs[name] = np.mean(kinds)
    assert fracs["early"] > fracs["late"] + 0.4


def test_size_based_language_sampling_with_temperature():
    sizes = (0.9, 0.45, 0.1)  # coverage per language: n_en > n_de > n_fr
    data = synth(2000, langs=("en", "de", "fr"), lang_sizes=sizes, seed=3)
    n_l = np.bincount(data["lang_idx"], minlength=3).astype(float)

    def freqs(**kw):
        s = HybridBatchSampler(data, 8, alpha=1.0, steps_per_epoch=1500, seed=2, **kw)
        langs = [s.corpus_langs[s.global_batch(0, i).lang] for i in range(s.steps_per_epoch)]
        return np.array([langs.count(x) for x in s.langs]) / len(langs), s

    got = {}
    for name, kw, target in [
        ("uniform", {"lang_sampling": "uniform"}, np.full(3, 1 / 3)),
        ("T=1", {"lang_sampling": "size", "temperature": 1.0}, n_l / n_l.sum()),
        ("T=2", {"lang_sampling": "size", "temperature": 2.0}, np.sqrt(n_l) / np.sqrt(n_l).sum()),
    ]:
        f, s = freqs(**kw)
        assert s.lang_probs == pytest.approx(target)
        assert all(binom_ok(round(fi * 1500), 1500, ti) for fi, ti in zip(f, target))
        got[name] = f
    hot, warm = got["T=1"], got["T=2"]
    assert hot[0] > warm[0] > 1 / 3 and hot[2] < warm[2] < 1 / 3


def test_langs_restricts_training_languages():
    data = synth(300, drop=0.2)
    s = HybridBatchSampler(data, 8, alpha=0.5, langs=["de", "fr"], seed=1)
    allowed = {LANGS.index("de"), LANGS.index("fr")}
    for gb in all_batches(s):
        assert set(gb.q_lang.tolist()) | set(gb.p_lang.tolist()) <= allowed


def test_single_language_ids_never_in_cross_batches():
    data = synth(400, drop=0.85, seed=2)  # most ids have one language
    langs_per_id = np.bincount(data["pid"])
    s = HybridBatchSampler(data, 8, alpha=0.3, seed=1)
    cross = [gb for gb in all_batches(s) if gb.kind == "cross"]
    assert cross and all((langs_per_id[gb.pids] >= 2).all() for gb in cross)
    assert (langs_per_id == 1).any()


def test_duplicate_rows_for_one_id_and_language_use_the_first():
    data = synth(100, drop=0.0)
    dup = {k: np.concatenate([v, v[:10]]) if k != "langs" else v for k, v in data.items()}
    s = HybridBatchSampler(dup, 8, alpha=1.0, seed=0)
    assert s.index.num_duplicate_rows == 10
    rows = np.concatenate([gb.q_rows for gb in all_batches(s)])
    assert rows.max() < len(data["pid"])


def test_iteration_matches_random_access_and_corpus_languages():
    data = synth(200, seed=5)
    lang = data["lang_idx"]
    s = HybridBatchSampler(data, 8, alpha=0.5, seed=3)
    for step, items in enumerate(iter(s)):
        gb = s.global_batch(0, step)
        assert gb.step == step and items == gb.items()
        q, p = np.asarray(items).T
        assert (lang[q] == gb.q_lang).all() and (lang[p] == gb.p_lang).all()
        if gb.kind == "mono":
            assert set(gb.q_lang.tolist()) == {gb.lang}
    fresh = HybridBatchSampler(data, 8, alpha=0.5, seed=3)  # a new replay gives the same batch
    a, b = fresh.global_batch(0, 3), s.global_batch(0, 3)
    assert a.kind == b.kind and a.items() == b.items() and (a.q_lang == b.q_lang).all()


def test_dataloader_uses_it_as_batch_sampler():
    data = synth(200, seed=1)
    s = HybridBatchSampler(data, 8, alpha=0.5, seed=1, world_size=2, rank=0)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(data["pid"])

        def __getitem__(self, item):
            q, p = item
            return torch.tensor([q, p])

    loader = torch.utils.data.DataLoader(Pairs(), batch_sampler=s)
    batches = list(loader)
    assert len(loader) == len(batches) == s.steps_per_epoch
    assert all(b.shape == (4, 2) for b in batches)
    assert batches[0].tolist() == [list(x) for x in s.global_batch(0, 0).items(0, 2)]


def test_epoch_reaches_the_sampler_the_way_lightning_sets_it():
    # Lightning (fabric.utilities.data._set_sampler_epoch) calls set_epoch on ``loader.sampler`` and
    # ``loader.batch_sampler.sampler``, never on the batch sampler itself; importing Lightning here
    # would dominate this file's run time, so the test follows that lookup by hand.
    s = HybridBatchSampler(synth(200), 8, alpha=0.5, seed=1)
    loader = torch.utils.data.DataLoader(list(range(10)), batch_sampler=s)
    first = list(loader.batch_sampler)
    for obj in (loader.sampler, loader.batch_sampler.sampler):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(1)
    assert s.epoch == 1 and list(loader.batch_sampler) != first


def test_parallel_corpus_input_and_preview_records():
    rows = []
    for i in range(40):
        for lang in ("de", "en", "fr")[: 1 + i % 3]:  # ids with 1, 2 or 3 languages
            para = f"paragraph {i // 2} in {lang}"  # two questions share each paragraph
            rows.append(
                {"id": f"q{i}", "lang": lang, "query": f"q{i} {lang}", "positive": para, "group": "g"}
            )
    corpus = ParallelCorpus.from_rows(rows)
    s = HybridBatchSampler(corpus, 4, alpha=0.5, seed=2)
    existing = {(r["id"], r["lang"]) for r in rows}
    recs = list(preview_records(s, corpus, 12, world_size=2))
    assert [r["step"] for r in recs] == list(range(12))
    for r in recs:
        assert set(r) == {"step", "kind", "pairs"} and r["kind"] in ("mono", "cross")
        assert [p["rank"] for p in r["pairs"]] == [0, 0, 1, 1]
        for p in r["pairs"]:
            assert set(p) == {"id", "q_lang", "p_lang", "rank"}
            assert (p["id"], p["q_lang"]) in existing and (p["id"], p["p_lang"]) in existing
            assert (p["q_lang"] == p["p_lang"]) == (r["kind"] == "mono")
        assert len({p["id"] for p in r["pairs"]}) == 4
        # two questions over one paragraph never share a batch (their passages are translations)
        assert len({int(p["id"][1:]) // 2 for p in r["pairs"]}) == 4
    with pytest.raises(ConfigError) as e:
        list(preview_records(s, corpus, 1, world_size=3))
    assert e.value.where == "data.batch_size"


def test_hydra_configs_instantiate(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    shutil.copytree(REPO / "conf" / "sampler", tmp_path / "sampler")
    (tmp_path / "top.yaml").write_text("defaults:\n  - sampler: hybrid\n  - _self_\n")
    data = synth(200)
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        for name, alpha in [("hybrid", 0.5), ("xx_mono", 1.0), ("xy", 0.0)]:
            cfg = compose(config_name="top", overrides=[f"sampler={name}"])
            assert cfg.sampler.alpha == alpha
            s = instantiate(cfg.sampler)(data, 8, seed=1, world_size=2, rank=1)
            assert isinstance(s, HybridBatchSampler) and s.schedule.start == alpha


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"alpha": -0.1}, "sampler.alpha"),
        ({"alpha": 1.5}, "sampler.alpha"),
        ({"alpha": float("nan")}, "sampler.alpha"),
        ({"alpha": "half"}, "sampler.alpha"),
        ({"schedule": "cosine"}, "sampler.schedule"),
        ({"schedule": "linear", "alpha_start": 1.0, "total_steps": 10}, "sampler.alpha_end"),
        (
            {"schedule": "linear", "alpha_start": 2.0, "alpha_end": 0.0, "total_steps": 10},
            "sampler.alpha_start",
        ),
        ({"schedule": "linear", "alpha_start": 1.0, "alpha_end": 0.0}, "sampler.total_steps"),
        ({"lang_sampling": "zipf"}, "sampler.lang_sampling"),
        ({"temperature": 0.0}, "sampler.temperature"),
        ({"langs": ["en", "xx"]}, "sampler.langs"),
        ({"world_size": 3}, "data.batch_size"),
        ({"world_size": 2, "rank": 2}, "trainer.devices"),
        ({"steps_per_epoch": 0}, "sampler.steps_per_epoch"),
    ],
)
def test_config_errors_name_their_key(kw, key):
    with pytest.raises(ConfigError) as e:
        HybridBatchSampler(synth(200), 8, **kw)
    assert e.value.where == key


@pytest.mark.parametrize("batch_size", [0, -4, 2.5, "many", True])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ConfigError) as e:
        HybridBatchSampler(synth(200), batch_size)
    assert e.value.where == "data.batch_size"


def test_requested_language_without_rows_is_an_error():
    data = synth(200)
    data["langs"] = [*LANGS, "sw"]  # declared, but no row is in Swahili
    HybridBatchSampler(data, 8)  # unused languages without rows are ignored
    for langs in (["en", "sw"], []):
        with pytest.raises(ConfigError) as e:
            HybridBatchSampler(data, 8, langs=langs)
        assert e.value.where == "sampler.langs"


def test_batch_too_large_for_a_language():
    data = synth(500, langs=("en", "sw"), lang_sizes=(1.0, 0.02), seed=1)
    n_sw = int((data["lang_idx"] == 1).sum())
    assert 0 < n_sw < 32
    with pytest.raises(ConfigError) as e:
        HybridBatchSampler(data, 32, alpha=0.5)
    assert e.value.where == "data.batch_size" and "'sw'" in e.value.message
    HybridBatchSampler(data, 32, alpha=1.0, langs=["en"])  # fine without sw
    HybridBatchSampler(data, min(n_sw, 8), alpha=1.0)  # fine with a smaller batch


def test_batch_too_large_for_distinct_passages_or_cross_ids():
    data = synth(40, langs=("en", "de"), drop=0.0)
    data["passage_idx"] = data["pid"] % 10  # only 10 distinct texts (shared across ids and languages)
    with pytest.raises(ConfigError) as e:
        HybridBatchSampler(data, 16, alpha=1.0)
    assert e.value.where == "data.batch_size"
    s = HybridBatchSampler(data, 8, alpha=0.5)
    for gb in all_batches(s):
        assert len(set(data["passage_idx"][gb.p_rows].tolist())) == 8

    mono_only = synth(100, drop=1.0)  # every id in exactly one language
    with pytest.raises(ConfigError) as e:
        HybridBatchSampler(mono_only, 8, alpha=0.5)
    assert e.value.where == "sampler.alpha"
    HybridBatchSampler(mono_only, 8, alpha=1.0)


def test_load_state_from_other_config_warns():
    a = HybridBatchSampler(synth(200), 8, seed=1)
    b = HybridBatchSampler(synth(200), 8, seed=2)
    with pytest.warns(UserWarning, match="different corpus or sampler config"):
        b.load_state_dict(a.state_at(0, 3))


@pytest.mark.parametrize("rounds", [1, 6])  # 1 round forces the scipy fallback on chains
def test_clusters_match_a_reference_union_find(rounds, monkeypatch):
    from mlir.sampling import index

    monkeypatch.setattr(index, "PROPAGATION_ROUNDS", rounds)

    rng = np.random.default_rng(0)
    for trial in range(20):
        n_ids = 60
        pid = np.repeat(np.arange(n_ids), 3)
        pas = np.arange(len(pid)) + 1000
        if trial % 2:  # a long chain: id i shares a text with id i + 1
            pas[3 * np.arange(n_ids - 1) + 2] = pas[3 * np.arange(1, n_ids)]
        for _ in range(rng.integers(0, 40)):
            a, b = rng.choice(len(pid), 2, replace=False)
            pas[b] = pas[a]
        parent = list(range(n_ids))

        def find(x, parent=parent):
            while parent[x] != x:
                x = parent[x]
            return x

        owner = {}
        for i, t in zip(pid.tolist(), pas.tolist()):
            j = owner.setdefault(t, i)
            parent[find(i)] = find(j)
        labels = index.clusters(pid, pas, n_ids)
        for i in range(n_ids):
            for j in range(n_ids):
                assert (labels[i] == labels[j]) == (find(i) == find(j))
