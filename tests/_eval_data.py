"""Synthetic evaluation data and encoders whose correct rankings are known by construction.

Texts carry a *key* (``k<number>``): parallel texts (the same question or sentence in several languages)
share it, and :class:`KeyEncoder` maps every text to the unit vector of its first key, so parallel texts
get *identical* embeddings (a perfectly language-agnostic encoder) and different keys near-orthogonal ones.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

KEY = re.compile(r"k\d+")


def key_vector(key: str, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


class KeyEncoder:
    """Each text -> the vector of its first key (a text without key gets its own random vector)."""

    def __init__(self, dim: int = 128):
        self.dim = dim
        self.calls: list[tuple[str, list[str]]] = []

    def _enc(self, texts: Sequence[str], side: str) -> torch.Tensor:
        self.calls.append((side, list(texts)))
        rows = []
        for t in texts:
            m = KEY.search(t)
            rows.append(key_vector(m.group(0) if m else "text:" + t, self.dim))
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, self.dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._enc(texts, "query")

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._enc(texts, "passage")


class TableEncoder:
    """Explicit text -> vector table (hand-computed examples)."""

    def __init__(self, table: Mapping[str, Sequence[float]]):
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}

    def _enc(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.table[t] for t in texts]))

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._enc(texts)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._enc(texts)


class HashingEncoder:
    """A model-free, deterministic encoder: hashed character n-gram counts, L2-normalised.

    Lexical overlap is all it sees, so it is a weak but instant encoder that needs no weights, for tests
    of the evaluation plumbing. Queries and passages share the space.
    """

    def __init__(self, dim: int = 256, ngram: tuple[int, ...] = (2, 3, 4)):
        self.dim = int(dim)
        self.ngram = tuple(ngram)
        self.calls: list[tuple[str, int]] = []  # (side, number of texts), for tests of deduplication

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        t = f" {text.lower()} "
        for n in self.ngram:
            for i in range(max(len(t) - n + 1, 1)):
                h = zlib.crc32(t[i : i + n].encode("utf-8"))
                v[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def _encode(self, texts: Sequence[str], side: str) -> torch.Tensor:
        self.calls.append((side, len(texts)))
        if not len(texts):
            return torch.zeros(0, self.dim)
        return torch.from_numpy(np.stack([self._one(t) for t in texts]))

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._encode(texts, "query")

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        return self._encode(texts, "passage")


def make_xquad_dir(
    root: Path,
    langs: Sequence[str] = ("en", "de", "zh"),
    n_articles: int = 4,
    paragraphs: int = 2,
    sentences: int = 3,
    questions: int = 2,
) -> Path:
    """LAReQA-format files ``root/{lang}.json``: parallel articles, sentence breaks, answer starts.

    Sentence ``s`` of paragraph ``p`` of article ``a`` has key ``k{a}{p}{s}`` (digits); question ``q`` of a
    paragraph asks about sentence ``q % sentences`` and carries that sentence's key, so a KeyEncoder
    ranks its relevant sentence first in every language. Titles are English in all files (as XQuAD-R).
    """
    root.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        data = []
        for a in range(n_articles):
            pars = []
            for p in range(paragraphs):
                sents = [f"{lang} sentence k{a}{p}{s}{9} of article {a}." for s in range(sentences)]
                context, breaks, pos = "", [], 0
                for s in sents:
                    if context:
                        context += " "
                        pos += 1
                    breaks.append([pos, pos + len(s)])
                    context += s
                    pos += len(s)
                qas = []
                for q in range(questions):
                    s = q % sentences
                    ans = f"k{a}{p}{s}9"
                    start = breaks[s][0] + sents[s].index(ans)
                    qas.append(
                        {
                            "id": f"q{a}-{p}-{q}",
                            "question": f"{lang} question about k{a}{p}{s}9 number {q}?",
                            "answers": [{"answer_start": start, "text": ans}],
                        }
                    )
                pars.append({"context": context, "sentences": sents, "sentence_breaks": breaks, "qas": qas})
            data.append({"title": f"Article_{a}", "paragraphs": pars})
        (root / f"{lang}.json").write_text(json.dumps({"data": data, "version": "test"}), encoding="utf-8")
    return root


def write_mkqa(path: Path, records: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
