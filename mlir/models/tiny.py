"""A tiny random BERT + byte-level tokenizer, built locally in well under a second.

For tests, smoke runs and sweeps on machines without any model download: ``model=tiny_random``.
Byte-level BPE covers every script, so multilingual data never hits an unknown token.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: ``model.name_or_path`` alias for the tiny random model.
TINY_RANDOM = "tiny-random-bert"

_CORPUS = [
    "query: passage: what who when where which how many the of and in to a is was",
    "Die Panthers wurden gegründet. Los Panthers fueron fundados. Пантеры были основаны.",
    "パンサーズは設立された。黑豹队成立于。 كان الفهود تأسست. पैंथर्स की स्थापना हुई थी।",
    "Οι Πάνθηρες ιδρύθηκαν. Panthers kuruldu. Đội Panthers được thành lập. แพนเทอร์สก่อตั้งขึ้น",
]


def _byte_level_tokenizer(vocab_size: int):
    """A BERT-style fast tokenizer (``[CLS] ... [SEP]``) over byte-level BPE trained on ``_CORPUS``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


@contextlib.contextmanager
def _private_rng(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator (and python/numpy ``random``) for the block, then restore them.

    Building runs after a training run has set its seed: consuming or reseeding the global RNG here made
    the first (building) run differ from later (cached) runs. ``torch.manual_seed`` is avoided on purpose:
    it also reseeds the CUDA generators, which ``fork_rng(devices=[])`` would not restore.
    """
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def build_tiny_model(
    out_dir: str | os.PathLike,
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 600,
    seed: int = 0,
) -> Path:
    """Write a random ``BertModel`` and a fast tokenizer to ``out_dir`` (atomically) and return it.

    The weights depend on ``seed`` only; the caller's global RNG state (torch, CUDA, numpy, python) is
    left untouched, so a seeded run gives the same numbers whether it builds the model or reads the cache.
    """
    from transformers import BertConfig, BertModel

    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out.parent))
    fast = _byte_level_tokenizer(vocab_size)
    fast.save_pretrained(tmp)
    config = BertConfig(
        vocab_size=fast.backend_tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        pad_token_id=fast.backend_tokenizer.token_to_id("[PAD]"),
    )
    with _private_rng(seed):
        model = BertModel(config)
    model.save_pretrained(tmp)
    (tmp / "mlir_tiny.json").write_text(json.dumps({"seed": seed, "hidden_size": hidden_size}))
    try:
        os.replace(tmp, out)
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
