"""The mono-batch probability ``alpha`` as a function of the global training step.

Hybrid batch training draws each global batch as X-X-mono with probability ``alpha`` and as X-Y
otherwise. ``alpha`` can be constant or move linearly (e.g. from mostly-monolingual early training to
mostly-cross-lingual late training); keeping the schedule a pure function of the global step is what
lets every DDP rank, and a resumed run, agree on each batch's kind without communicating.

This module is also the one place that checks the ``sampler.alpha*`` keys and derives the length of
a linear schedule (:func:`schedule_length`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlir.core.errors import ConfigError

SCHEDULES = ("constant", "linear")


def check_probability(value: float | None, key: str) -> float:
    """A probability from the config, or a ConfigError naming ``key``."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number in [0, 1], got {value!r}", where=key) from None
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ConfigError(f"must be in [0, 1], got {value!r}", where=key)
    return v


def alpha_endpoints(
    alpha: float, schedule: str, alpha_start: float | None, alpha_end: float | None
) -> tuple[float, float]:
    """Validated (first, last) alpha of a schedule; known before the number of steps is."""
    a = check_probability(alpha, "sampler.alpha")
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}", "sampler.schedule"
        )
    if schedule == "constant":
        return a, a
    if alpha_start is None or alpha_end is None:
        key = "sampler.alpha_start" if alpha_start is None else "sampler.alpha_end"
        raise ConfigError("the linear schedule needs both alpha_start and alpha_end", where=key)
    return check_probability(alpha_start, "sampler.alpha_start"), check_probability(
        alpha_end, "sampler.alpha_end"
    )


def schedule_length(
    steps_per_epoch: int,
    total_steps: int | None = None,
    max_epochs: int | None = None,
    trainer_max_steps: int | None = None,
    trainer_max_epochs: int | None = None,
) -> int | None:
    """The training steps a schedule spans: the first of ``sampler.total_steps``,
    ``sampler.max_epochs * steps_per_epoch``, the trainer's ``max_steps`` (when > 0) and the trainer's
    ``max_epochs * steps_per_epoch``; ``None`` when none is set.

    Why here: configured values must win over the trainer's (a value passed at call time used to
    override ``sampler.total_steps`` silently), and only the sampler knows ``steps_per_epoch``.
    """
    if total_steps is not None:
        return total_steps
    if max_epochs is not None:
        return int(max_epochs) * steps_per_epoch
    if trainer_max_steps is not None and int(trainer_max_steps) > 0:
        return int(trainer_max_steps)
    if trainer_max_epochs is not None and int(trainer_max_epochs) > 0:
        return int(trainer_max_epochs) * steps_per_epoch
    return None


@dataclass(frozen=True)
class AlphaSchedule:
    """``alpha(t)`` for global step ``t`` (0-based).

    ``constant``: ``alpha`` at every step. ``linear``: ``alpha_start`` at step 0 to ``alpha_end`` at
    step ``total_steps - 1``, held at ``alpha_end`` afterwards.
    """

    kind: str
    start: float
    end: float
    total_steps: int | None = None

    @classmethod
    def from_endpoints(
        cls, kind: str, endpoints: tuple[float, float], total_steps: int | None
    ) -> AlphaSchedule:
        """A schedule from :func:`alpha_endpoints`' result; a linear one needs ``total_steps >= 1``."""
        start, end = endpoints
        if kind == "constant":
            return cls("constant", start, end, total_steps)
        if total_steps is None:
            raise ConfigError(
                "the linear schedule needs the number of training steps "
                "(set sampler.total_steps, sampler.max_epochs, trainer.max_steps or trainer.max_epochs)",
                where="sampler.total_steps",
            )
        if int(total_steps) < 1:
            raise ConfigError(f"must be >= 1, got {total_steps!r}", where="sampler.total_steps")
        return cls("linear", start, end, int(total_steps))

    @property
    def max_alpha(self) -> float:
        """Largest alpha ever used: > 0 means X-X-mono batches can occur."""
        return max(self.start, self.end)

    def __call__(self, steps: np.ndarray | int) -> np.ndarray:
        """alpha at the given global step(s), as float64 (vectorised so an epoch's plan is one call)."""
        t = np.asarray(steps, dtype=np.float64)
        if self.kind == "constant":
            return np.full(t.shape, self.start)
        denom = max(1, (self.total_steps or 1) - 1)
        frac = np.clip(t / denom, 0.0, 1.0)
        return self.start + (self.end - self.start) * frac
