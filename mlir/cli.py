"""What every command-line entry point shares: ``run_main`` and the console it runs in.

Why apart from training: ``eval.py`` needs the same error handling, console routing and secret
scrubbing as ``train.py`` but none of the training pipeline (:mod:`mlir.training.pipeline`).

* A user's mistake is one ``error: <where>: <message>`` line on stderr and exit code 2, never a
  traceback (:func:`user_error` decides what counts as one).
* stderr is kept for that line: warnings and Lightning's records go to the configured log handlers.
* Credentials given as overrides are scrubbed from ``sys.argv`` and the run's ``.hydra/*.yaml``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlir.core.atomic import write_text
from mlir.core.errors import ConfigError, MlirError, find_mlir_error
from mlir.core.logging import redact, redact_text


def run_main(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``fn(cfg)``; a user error becomes one line on stderr and exit code 2, never a traceback."""
    _quiet_console()
    scrub_secrets()
    try:
        return fn(cfg)
    except Exception as e:  # noqa: BLE001 - we re-raise anything that is not the user's mistake
        user = user_error(e)
        if user is None:
            raise
        print("error: " + " ".join(str(user).splitlines()), file=sys.stderr)
        sys.exit(2)


def module_main(fn: Callable[[list[str]], Any], doc: str, argv: list[str] | None = None) -> None:
    """``python -m mlir.<module> [train.py overrides]``: ``-h``/``--help`` prints ``doc``; a user error
    anywhere in ``fn``'s chain is one line and exit 2 (Hydra and Lightning wrap mlir's errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(doc)
        return
    try:
        fn(args)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the user's mistake
        user = find_mlir_error(e)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        sys.exit(2)


def hydra_entry(main: Callable[[], Any], config_name: str, args: list[str] | None = None) -> Any:
    """Run a ``@hydra.main`` function after checking the command line's overrides.

    Why: Hydra composes the config before the task function (and :func:`run_main`) runs, and reports
    a typo (``sampler=hybird``, ``data.batchsize=8``) or a ``hydra.run.dir`` that is a file in several
    lines (or a traceback) with exit code 1. :func:`check_overrides` turns them into one line, exit 2.
    """
    try:
        check_overrides(config_name, sys.argv[1:] if args is None else args)
    except MlirError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
    return main()


def check_overrides(config_name: str, args: list[str], config_dir: Path | None = None) -> None:
    """Compose ``config_name`` with ``args`` as Hydra will; a ConfigError for a typo or a bad run dir.

    Skipped with any flag (``--help``, ``--cfg``, ``-m``, ...: Hydra's own business) and with
    ``HYDRA_FULL_ERROR=1``; any other composition problem is left to Hydra to report.
    """
    if any(a.startswith("-") for a in args) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    from hydra.errors import ConfigCompositionException, MissingConfigException

    conf = config_dir or Path(__file__).resolve().parents[1] / "conf"
    try:
        cfg = _compose(conf, config_name, args)
    except MissingConfigException as e:
        group, _, name = str(getattr(e, "missing_cfg_file", "") or "").rpartition("/")
        options = [str(o) for o in getattr(e, "options", None) or []]
        if not group or not options:
            return
        raise ConfigError(
            f"no option '{name}'{_did_you_mean(name, options)} (options: {', '.join(options)})", where=group
        ) from None
    except ConfigCompositionException as e:
        key = getattr(e.__cause__, "full_key", None)
        if not key or "Could not override" not in str(e):
            return
        parent, _, leaf = str(key).rpartition(".")
        rest = [a for a in args if a.split("=", 1)[0].lstrip("+~") != key]
        try:
            node = _compose(conf, config_name, rest) if rest != args else None
            keys = (
                list((OmegaConf.select(node, parent) if parent else node) or {}) if node is not None else []
            )
        except Exception:  # noqa: BLE001 - only for the suggestion
            keys = []
        raise ConfigError(
            f"no such key{_did_you_mean(leaf, keys, parent + '.' if parent else '')} (to add a new key: +{key}=...)",
            where=key,
        ) from None
    except Exception:  # noqa: BLE001 - anything else: Hydra reports it as it always has
        return
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", default=None, throw_on_resolution_failure=False)
    from mlir.core.config import check_output_dir

    check_output_dir(run_dir, "hydra.run.dir")


def _compose(conf: Path, config_name: str, args: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name, overrides=args, return_hydra_config=True)


def _did_you_mean(name: str, options: list[str], prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def user_error(exc: BaseException) -> MlirError | None:
    """The user-facing error behind ``exc``: an MlirError in its chain, a NaN stop, or a config error.

    OmegaConf errors (a missing ``???`` value, a bad interpolation) and Lightning's
    ``MisconfigurationException`` are configuration mistakes too; ``HYDRA_FULL_ERROR=1`` shows their
    traceback instead (they can also come from a bug).
    """
    user = find_mlir_error(exc)
    if user is not None:
        return user
    if isinstance(exc, FloatingPointError):
        return MlirError(str(exc), where="training")
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    from omegaconf.errors import OmegaConfBaseException

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OmegaConfBaseException):
            msg = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
            return ConfigError(msg, where=getattr(e, "full_key", None) or None)
        if type(e).__name__ == "MisconfigurationException":
            return ConfigError(str(e).strip().splitlines()[0], where="trainer")
        e = e.__cause__ or e.__context__
    return None


def _quiet_console() -> None:
    """Keep stderr for errors: Python warnings go to the app's log handlers (Hydra: stdout and
    ``<run dir>/<task>.log``); model-loading progress bars are dropped when stderr is not a terminal
    (CI, SLURM logs), where they are only noise. Lightning's records: :func:`route_lightning_logs`.
    """
    if logging.getLogger().handlers:
        logging.captureWarnings(True)
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def route_lightning_logs() -> None:
    """Send Lightning's records to the configured handlers instead of its own stderr handlers.

    ``import lightning`` attaches stderr handlers (``INFO: ...``) to its loggers; once Hydra (or anyone)
    has configured the root logger, they only duplicate its output and bury the one-line errors.
    Call it after importing Lightning.
    """
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)
        lg.propagate = True


def scrub_secrets() -> None:
    """Remove credentials that came in as overrides from ``sys.argv`` and the run's ``.hydra/*.yaml``.

    Hydra writes the composed config and the overrides into the run directory before the task starts,
    and W&B records ``sys.argv``; ``logger.wandb.api_key=...`` must not end up in either. Files are
    rewritten (atomically) only when they hold such a value.
    """
    import yaml
    from hydra.core.hydra_config import HydraConfig

    sys.argv[1:] = [redact_text(a) for a in sys.argv[1:]]
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    out, sub = OmegaConf.select(hc, "runtime.output_dir"), OmegaConf.select(hc, "output_subdir")
    if not out or not sub:  # composed without a run (tests), or .hydra output switched off
        return
    for f in (Path(out) / str(sub)).glob("*.yaml"):
        try:
            data = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            continue
        clean = redact(data)
        if clean != data:
            write_text(f, yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))
