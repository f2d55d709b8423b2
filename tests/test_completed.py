"""done.json fingerprints: what a job computes, not where or how it is launched."""

from __future__ import annotations

from omegaconf import OmegaConf

from mlir.training.completed import fingerprint


def _cfg(**changes):
    base = {
        "seed": 1,
        "sampler": {"alpha": 0.5},
        "paths": {"output_dir": "/a"},
        "ckpt_path": None,
        "callbacks": {
            "last_checkpoint": {"signals": ["SIGTERM"]},
            "model_checkpoint": {"monitor": "val/loss"},
        },
    }
    cfg = OmegaConf.create(base)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_fingerprint_ignores_launch_settings_and_sees_the_computation():
    ref = fingerprint(_cfg())
    for launch in (
        {"paths.output_dir": "/b"},
        {"ckpt_path": "last"},
        {"callbacks.last_checkpoint.signals": ["SIGUSR2"]},
    ):
        assert fingerprint(_cfg(**launch)) == ref, launch
    for change in ({"sampler.alpha": 1.0}, {"seed": 2}, {"callbacks.model_checkpoint.monitor": "dev/x"}):
        assert fingerprint(_cfg(**change)) != ref, change
