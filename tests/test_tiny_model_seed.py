"""Building the tiny random model must not touch the caller's RNG, and its weights depend on the seed only.

A seeded ``model=tiny_random`` run builds the model on first use and reads the cache afterwards; a build
that consumed or reseeded the global RNG made the first run's numbers differ from the later ones.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mlir.models.tiny import build_tiny_model


def _weights(model_dir):
    return load_file(model_dir / "model.safetensors")


def test_build_leaves_global_rng_untouched(tmp_path, monkeypatch):
    def no_cuda_reseed(*_args, **_kwargs):
        raise AssertionError("building the tiny model reseeded the CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_cuda_reseed)
    torch.default_generator.manual_seed(1234)  # not torch.manual_seed: it calls the patched function
    random.seed(1234)
    np.random.seed(1234)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()

    build_tiny_model(tmp_path / "tiny")

    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


def test_builds_are_deterministic_per_seed(tmp_path):
    torch.default_generator.manual_seed(1)
    first = _weights(build_tiny_model(tmp_path / "a"))
    torch.default_generator.manual_seed(2)  # a different caller state must not matter
    second = _weights(build_tiny_model(tmp_path / "b"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name

    other = _weights(build_tiny_model(tmp_path / "c", seed=1))
    assert any(not torch.equal(first[n], other[n]) for n in first)


@pytest.mark.parametrize("cached", [False, True])
def test_seeded_draws_same_whether_built_or_cached(tmp_path, cached):
    expected = torch.rand(4, generator=torch.Generator().manual_seed(7))
    if cached:
        build_tiny_model(tmp_path / "tiny")
    torch.default_generator.manual_seed(7)  # the run's seed, set before the model is resolved
    build_tiny_model(tmp_path / "tiny")
    assert torch.equal(torch.rand(4), expected)
