"""Experiment loggers that never take training down with them."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)
_warned: set[str] = set()

_SECRET_KEYS = ("api_key", "apikey", "token", "password", "secret")


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def wandb_logged_in() -> bool:
    """True when credentials exist (env or ~/.netrc); we never read or print the key itself."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    try:
        with open(netrc) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


def make_wandb_logger(mode: str = "auto", **kwargs: Any):
    """A ``WandbLogger`` whose mode is ``online`` only when logged in; ``None`` if W&B is unusable.

    ``mode=auto`` picks online with credentials, offline otherwise; an explicit ``WANDB_MODE`` wins.
    Failure to import or start W&B is reported once and training continues without it.
    """
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    if mode == "disabled":
        return None
    try:
        from lightning.pytorch.loggers import WandbLogger

        save_dir = kwargs.get("save_dir")
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
        kwargs.setdefault("settings", None)
        settings = kwargs.pop("settings")
        if settings is None:
            import wandb

            settings = wandb.Settings(init_timeout=60, silent=True)
        return WandbLogger(mode=mode, settings=settings, **kwargs)
    except Exception as e:  # W&B must never block training
        warn_once("wandb", f"W&B logger unavailable ({type(e).__name__}: {e}); continuing without it")
        return None


def redact(obj: Any) -> Any:
    """Copy of a (nested) config dict with credential-looking values replaced, for logs and reports."""
    if isinstance(obj, dict):
        return {
            k: ("***" if any(s in str(k).lower() for s in _SECRET_KEYS) and v else redact(v)) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
