"""Progress bars of an evaluation: encoding (texts/s), searching (queries/s), scoring (views).

Why: evaluating the full XQuAD-R takes minutes on a CPU; at a terminal a bar says how far it is and
how fast it goes. Bars are drawn on stderr only when wanted: ``eval.progress`` is ``auto`` (the
default: only when stderr is a terminal, so CI, SLURM and redirected logs never get ``\\r`` noise),
``true`` (always) or ``false`` (never). The log lines (``encoding ...: n/N texts``) are written either
way; while bars are shown they are printed above them (:func:`console_above_bars`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from mlir.core.errors import ConfigError

#: ``eval.progress`` values: ``"auto"`` (a terminal decides), ``True``, ``False``.
AUTO = "auto"


def check_progress(value: Any, where: str = "eval.progress") -> str | bool:
    """``value`` if it is ``auto``, ``true`` or ``false`` (booleans or their names), else one-line error."""
    if isinstance(value, bool) or value == AUTO:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"must be auto, true or false, got {value!r}", where=where)


def progress_option(cfg: Any) -> str | bool:
    """``eval.progress`` of a config (``auto`` when absent: train.py's ``eval`` has no such key)."""
    ev = cfg.get("eval") or {}
    return check_progress(ev.get("progress", AUTO))


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def enabled(progress: str | bool | None) -> bool:
    """Whether to draw bars: ``True``, or ``auto`` with stderr a terminal (``None``/``False``: no)."""
    return progress is True or (progress == AUTO and _stderr_is_terminal())


def bar(show: bool, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (``disable=not show``: a disabled bar prints nothing and costs nothing).

    ``unit`` is plural and shown as the rate: ``unit="texts"`` gives ``123.4 texts/s``.
    """
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=f" {unit}",
        disable=not show,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


@contextlib.contextmanager
def console_above_bars(show: bool) -> Iterator[None]:
    """While bars are shown, console log records are printed above them instead of through them."""
    if not show:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
