"""The paper's rule: each global batch is X-X-mono with probability alpha, else X-Y.

Hybrid batch training (Elmahdy, Lin, Ahmad 2024, arXiv 2408.10536), as this project implements it:

    For every training batch draw u ~ U(0, 1). If u < alpha the batch is **X-X-mono**: one language
    X for the whole batch, every query and its positive passage in X. Otherwise it is **X-Y**: every
    pair gets its own query language X and passage language Y, with X != Y. alpha = 1 is X-X-mono
    training, alpha = 0 is X-Y training; the paper reports alpha = 0.5 as the best mix.

Languages are drawn uniformly, or with ``p_L ∝ n_L^(1/T)`` (``lang_sampling="size"``); X-Y pairs use
the same weights. Everything here is a pure function of ``(seed, epoch, step)``: that is how every DDP
rank, and a resumed run, agree on each batch without communicating. *Which* parallel ids fill a batch
is not part of the rule (:mod:`mlir.sampling.dedup`, :mod:`mlir.sampling.cursor`).
"""

from __future__ import annotations

import numpy as np

from mlir.sampling.schedule import AlphaSchedule

MONO = "mono"  # X-X-mono: one language for every query and passage of the batch
CROSS = "cross"  # X-Y: query language != passage language in every pair
PLAN_STREAM, PAIR_STREAM, ORDER_STREAM = 0, 1, 2  # independent random streams of an epoch
CORPUS_STREAM = 3  # weighted corpora: each pass's quotas and each corpus's id order (mlir.sampling.mix)


def epoch_rng(seed: int, epoch: int, stream: int, *more: int) -> np.random.Generator:
    """Random stream ``stream`` of ``epoch`` (the seed is taken modulo 2**64, so negative seeds work)."""
    return np.random.default_rng([int(seed) & 0xFFFF_FFFF_FFFF_FFFF, epoch, stream, *more])


def language_probs(ids_per_lang: np.ndarray, lang_sampling: str, temperature: float) -> np.ndarray:
    """P(language): uniform over languages with ids, or ``n_L^(1/T)`` normalised (``"size"``)."""
    n = np.asarray(ids_per_lang)
    if lang_sampling == "uniform":
        p = (n > 0).astype(np.float64)
    else:
        with np.errstate(divide="ignore"):
            logp = np.log(n.astype(np.float64)) / temperature
        p = np.exp(logp - logp[np.isfinite(logp)].max()) if np.isfinite(logp).any() else logp * 0
    return p / p.sum() if p.sum() > 0 else p


def plan_batches(
    seed: int, epoch: int, steps: int, schedule: AlphaSchedule, lang_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per step of ``epoch`` (``steps`` per epoch): is the batch X-X-mono (u < alpha), and its language.

    The language is drawn for every step (so it does not depend on alpha) and used only by X-X-mono
    batches; when alpha is 0 throughout there is none to draw.
    """
    rng = epoch_rng(seed, epoch, PLAN_STREAM)
    u = rng.random(steps)
    if schedule.max_alpha > 0:
        lang = rng.choice(len(lang_probs), size=steps, p=lang_probs)
    else:
        lang = np.zeros(steps, dtype=np.int64)
    return u < schedule(epoch * steps + np.arange(steps)), lang


def pair_languages(
    rng: np.random.Generator, has: np.ndarray, lang_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """X-Y languages: per pair ``i``, an ordered pair ``x != y`` among its languages ``has[i]``.

    Weighted sampling without replacement with the language weights (Efraimidis-Spirakis: the top two
    keys ``log(u) / w``), so uniform weights give every ordered pair the same chance.
    """
    keys = rng.random(size=has.shape)
    pos = lang_probs > 0
    if pos.any() and not np.allclose(lang_probs[pos], lang_probs[pos][0]):
        keys = np.log(keys) * np.where(pos, 1.0 / np.where(pos, lang_probs, 1.0), 0.0)
    keys[~has] = -np.inf
    x = keys.argmax(axis=1)
    keys[np.arange(len(keys)), x] = -np.inf
    return x, keys.argmax(axis=1)
