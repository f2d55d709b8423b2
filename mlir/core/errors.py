"""User-facing errors.

A user's mistake (bad file, bad config key) must end in one readable line that names *where* the
problem is, never in a traceback. Library code raises :class:`MlirError`; the command-line entry
points wrap themselves in :func:`exit_on_user_error`, which prints the line and exits with code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class MlirError(Exception):
    """An error caused by the user's input or configuration, with a location.

    ``where`` is ``"path:line"``, ``"path"`` or a config key such as ``"sampler.alpha"``.
    """

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class DataError(MlirError):
    """Malformed or inconsistent data in an input file."""


class ConfigError(MlirError):
    """An invalid configuration value."""


def exit_on_user_error(fn: F) -> F:
    """Turn an :class:`MlirError` escaping ``fn`` into ``error: <where>: <message>`` and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlirError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def find_mlir_error(exc: BaseException | None) -> MlirError | None:
    """Return the MlirError in an exception's cause/context chain (Hydra and Lightning wrap them)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MlirError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
