"""The training pipeline (``train(cfg)``) and what keeps a run safe: weights-only checkpoint loading,
atomic checkpoint writes, exact resume, and done.json for resumable sweeps."""
