"""LightningDataModule: corpus -> group split -> tokenised once -> hybrid batch sampler -> batches.

Texts are tokenised once, up front, into Arrow columns (``q_ids``, ``p_ids``, ``neg_ids``), so
workers only slice integer lists; the encoder pads each length-sorted sub-batch itself. The batch
sampler yields this rank's slice of every global batch, so Lightning must not add a
DistributedSampler (``trainer.use_distributed_sampler=false``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from mlir.core.errors import ConfigError
from mlir.data.corpus import ParallelCorpus
from mlir.data.jsonl import check_negatives, normalize_lang
from mlir.sampling import CROSS, MONO
from mlir.sampling.options import positive_int

log = logging.getLogger(__name__)

VAL_SEED = 1_000_003  # validation batches: one fixed draw, for every arm and training seed


def tokenize_corpus(
    corpus: ParallelCorpus, encoder: Any, num_negatives: int = 0, num_proc: int | None = None
):
    """Add ``q_ids``/``p_ids``(/``neg_ids``) token columns to the corpus table (batched, Arrow-backed)."""

    def fn(batch: dict[str, list]) -> dict[str, list]:
        out = {
            "q_ids": encoder.tokenize(batch["query"], "query"),
            "p_ids": encoder.tokenize(batch["positive"], "passage"),
        }
        if num_negatives:
            flat, counts = [], []
            for negs in batch["negatives"]:
                negs = list(negs or [])[:num_negatives]
                flat.extend(negs)
                counts.append(len(negs))
            ids = encoder.tokenize(flat, "passage") if flat else []
            it = iter(ids)
            out["neg_ids"] = [[next(it) for _ in range(c)] for c in counts]
        return out

    cols = ["query", "positive"] + (["negatives"] if num_negatives else [])
    return corpus.table.select_columns(cols).map(
        fn, batched=True, batch_size=1000, remove_columns=cols, num_proc=num_proc, desc="tokenising"
    )


class PairDataset(Dataset):
    """Maps sampler items ``(q_row, p_row)`` to token ids; fetches a whole batch with one Arrow take."""

    def __init__(self, corpus: ParallelCorpus, tokens: Any, num_negatives: int = 0):
        self.langs = corpus.langs
        self.lang_idx = corpus.lang_idx
        table = tokens.data.table if hasattr(tokens.data, "table") else tokens.data
        self.q_col = table.column("q_ids")
        self.p_col = table.column("p_ids")
        self.neg_col = table.column("neg_ids") if num_negatives else None
        self.num_negatives = num_negatives

    def __len__(self) -> int:
        return len(self.lang_idx)

    def __getitem__(self, item: Sequence[int]) -> dict[str, Any]:
        return self.__getitems__([item])

    def __getitems__(self, items: Sequence[Sequence[int]]) -> dict[str, Any]:
        pairs = np.asarray([(int(q), int(p)) for q, p in items], dtype=np.int64).reshape(-1, 2)
        q_rows, p_rows = pairs[:, 0], pairs[:, 1]
        batch = {
            "q_ids": self.q_col.take(q_rows).to_pylist(),
            "p_ids": self.p_col.take(p_rows).to_pylist(),
            "q_langs": [self.langs[i] for i in self.lang_idx[q_rows]],
            "p_langs": [self.langs[i] for i in self.lang_idx[p_rows]],
            "q_rows": torch.as_tensor(q_rows),
            "p_rows": torch.as_tensor(p_rows),
        }
        if self.neg_col is not None:
            batch["neg_ids"] = [ids for negs in self.neg_col.take(p_rows).to_pylist() for ids in negs]
        batch["kind"] = MONO if all(a == b for a, b in zip(batch["q_langs"], batch["p_langs"])) else CROSS
        return batch


class FixedBatches:
    """A batch sampler that yields the same precomputed batches every time (validation)."""

    def __init__(self, batches: list[list[tuple[int, int]]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _identity(batch: Any) -> Any:
    return batch


def _limit(trainer: Any, key: str) -> int | None:
    """``max_steps`` / ``max_epochs`` of a Trainer or of its config (``None`` when absent)."""
    if trainer is None:
        return None
    value = trainer.get(key) if isinstance(trainer, Mapping) else getattr(trainer, key, None)
    return None if value is None else int(value)


def _check_val_corpus(reader: Any) -> Callable[[], ParallelCorpus] | None:
    """``data.val_corpus``: null, or a corpus reader with ``_partial_: true`` (instantiated to a callable)."""
    if reader is None or callable(reader):
        return reader
    raise ConfigError(
        f"must be null or a corpus reader with _target_ and _partial_: true (like data.corpus, e.g. "
        f"+data/val_corpus=squad data.val_corpus.path=FILE), got {type(reader).__name__} {reader!r:.80}",
        where="data.val_corpus",
    )


def _check_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", where=key)
    return value


def _non_negative_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"must be an integer >= 0, got {value!r}", where=key)
    return value


def _check_no_dev_groups(split: Mapping[str, Any]) -> None:
    """With ``data.val_corpus`` the split's dev groups would be taken from training and never used."""
    for key in ("n_dev_groups", "dev_fraction"):
        if split.get(key):
            raise ConfigError(
                f"is {split[key]} but data.val_corpus gives the validation data, so these dev groups "
                f"would only be lost to training; set data.split.{key}=null (or drop data.val_corpus)",
                where=f"data.split.{key}",
            )


def _log_shared_texts(train: ParallelCorpus, val: ParallelCorpus) -> None:
    """Log how many of the validation corpus's distinct texts the training corpus also has.

    Why: a validation passage or question that was trained on makes the validation loss optimistic.
    Only the validation texts are hashed (``is_in`` streams the training column), so this stays cheap
    for a training corpus of tens of millions of rows.
    """

    def arrow(c: ParallelCorpus):
        return c.table.data.table if hasattr(c.table.data, "table") else c.table.data

    counts = {}
    for column in ("positive", "query"):
        wanted = pc.unique(arrow(val).column(column))
        col = arrow(train).column(column)
        shared = pc.count_distinct(pc.filter(col, pc.is_in(col, value_set=wanted))).as_py()
        counts[column] = (shared, len(wanted))
    log.log(
        logging.WARNING if any(shared for shared, _ in counts.values()) else logging.INFO,
        "validation corpus '%s' shares %s with the training data",
        val.name,
        " and ".join(f"{s} of its {n} {column} texts" for column, (s, n) in counts.items()),
    )


class RetrievalDataModule(L.LightningDataModule):
    """Training and validation batches from a parallel corpus.

    Args:
        corpus: zero-argument callable returning a :class:`ParallelCorpus` (a ``_partial_`` reader).
        sampler: partial :class:`~mlir.sampling.hybrid.HybridBatchSampler` (``conf/sampler``).
        encoder: provides ``tokenize(texts, side)``; set by ``train.py`` from the model.
        train_langs / eval_langs: language subsets (``None`` = all in the data).
        split: ``data.split`` (:func:`mlir.data.splits.plan_split`: folds, test and dev groups), or ``None``.
        batch_size: GLOBAL batch size, split evenly across DDP ranks.
        val_batches: number of validation-loss batches, drawn once from the validation data
            (:meth:`val_sampler`).
        num_negatives: hard negatives per pair taken from the data's ``negatives`` (at most).
        negatives_if_present: a corpus (training or validation) without any ``negatives`` uses 0 hard
            negatives, logged, instead of being refused (:func:`mlir.data.jsonl.check_negatives`).
        val_corpus: ``None`` (validate on the split's dev groups), or a zero-argument reader like
            ``corpus`` whose data is the validation data instead (the paper's English SQuADShifts loss):
            every non-test group is then trained on, so the split must choose no dev groups.
    """

    def __init__(
        self,
        corpus: Callable[[], ParallelCorpus],
        sampler: Callable[..., Any],
        encoder: Any = None,
        train_langs: Sequence[str] | None = None,
        eval_langs: Sequence[str] | None = None,
        split: dict | None = None,
        batch_size: int = 32,
        val_batches: int = 4,
        num_negatives: int = 0,
        num_workers: int = 0,
        seed: int = 0,
        val_corpus: Callable[[], ParallelCorpus] | None = None,
        negatives_if_present: bool = False,
    ):
        super().__init__()
        self.batch_size = positive_int(batch_size, "data.batch_size")
        self.corpus_fn = corpus
        self.val_corpus_fn = _check_val_corpus(val_corpus)
        self.negatives_if_present = _check_bool(negatives_if_present, "data.negatives_if_present")
        self.sampler_factory = sampler
        self.encoder = encoder
        self.train_langs = [normalize_lang(x) for x in train_langs] if train_langs else None
        self.eval_langs = [normalize_lang(x) for x in eval_langs] if eval_langs else None
        self.split = dict(split) if split else None
        self.val_batches = int(val_batches)
        self.max_negatives = _non_negative_int(num_negatives, "data.num_negatives")
        self.num_negatives = self.max_negatives  # per pair in training; 0 when the corpus has none
        self.val_num_negatives = self.max_negatives  # the same for the validation data
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_corpus: ParallelCorpus | None = None
        self.val_corpus: ParallelCorpus | None = None
        self.plan = None  # mlir.data.splits.GroupSplit when data.split is set
        self._train_sampler = None
        self._pending_state: dict | None = None

    # ------------------------------------------------------------------ setup
    def prepare_corpora(self) -> None:
        """Read, check languages, split train / dev / test by group (no tokenisation).

        With ``val_corpus`` the dev part is that corpus (all its languages) and training takes every
        non-test group; without it, dev is the split's dev groups in the training languages.
        """
        if self.train_corpus is not None:
            return
        full = self.corpus_fn()
        self.num_negatives = self.val_num_negatives = self._negatives(full, "training")
        for key, langs in (("data.train_langs", self.train_langs), ("data.eval_langs", self.eval_langs)):
            unknown = [lang for lang in langs or [] if lang not in full.langs]
            if unknown:
                raise ConfigError(f"languages {unknown} are not in the data (it has {full.langs})", where=key)
        langs = self.train_langs or full.langs
        if self.split:
            from mlir.data.splits import plan_from_config, split_corpus

            if self.val_corpus_fn is not None:
                _check_no_dev_groups(self.split)
            self.plan = plan_from_config(full.groups, self.split)
            train, dev = split_corpus(full, self.plan, langs)
        else:
            train, dev = full.select(full.rows_in_langs(langs)), None
        self.train_corpus = train
        self.val_corpus = dev if self.val_corpus_fn is None else self._read_val_corpus(train)
        log.info(
            "train corpus: %d rows, %d ids, langs %s; groups train/dev/test: %s",
            len(self.train_corpus),
            self.train_corpus.num_ids,
            self.train_corpus.langs,
            "/".join(str(len(self.plan.part(p))) for p in ("train", "dev", "test"))
            if self.plan
            else "all/0/0",
        )

    def _negatives(self, corpus: ParallelCorpus, role: str) -> int:
        """Hard negatives per pair for ``corpus`` (``data.num_negatives``, or 0 when it has none)."""
        n = check_negatives(corpus, self.max_negatives, self.negatives_if_present)
        if self.max_negatives:
            log.info(
                "%s corpus '%s': %s",
                role,
                corpus.name,
                f"up to {n} hard negative(s) per pair"
                if n
                else "no 'negatives' in the rows: in-batch negatives only (data.negatives_if_present)",
            )
        return n

    def _read_val_corpus(self, train: ParallelCorpus) -> ParallelCorpus | None:
        """``data.val_corpus``, read and checked; ``None`` when no validation batch is wanted."""
        if self.val_batches <= 0:
            log.warning("data.val_corpus is set but data.val_batches=0: it is not read, nothing is validated")
            return None
        val = self.val_corpus_fn()
        if not isinstance(val, ParallelCorpus):
            raise ConfigError(
                f"the reader returned {type(val).__name__}, not a corpus; use a corpus reader such as "
                "mlir.data.jsonl.read_jsonl or mlir.data.xquad_r.read_squad",
                where="data.val_corpus",
            )
        self.val_num_negatives = self._negatives(val, "validation")
        log.info(
            "validation corpus '%s' (data.val_corpus): %d rows, %d ids, langs %s",
            val.name,
            len(val),
            val.num_ids,
            val.langs,
        )
        _log_shared_texts(train, val)
        return val

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_train_ds", None) is not None:
            return
        if self.encoder is None:
            raise ConfigError(
                "the data module needs the model's encoder for tokenisation", where="data.encoder"
            )
        self.prepare_corpora()
        self._train_ds = PairDataset(
            self.train_corpus,
            tokenize_corpus(self.train_corpus, self.encoder, self.num_negatives),
            self.num_negatives,
        )
        self._val_ds = (
            PairDataset(
                self.val_corpus,
                tokenize_corpus(self.val_corpus, self.encoder, self.val_num_negatives),
                self.val_num_negatives,
            )
            if self.val_corpus is not None and self.val_batches > 0
            else None
        )

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def make_sampler(self, corpus: ParallelCorpus, seed: int, **overrides: Any) -> Any:
        """A new sampler over ``corpus`` from the configured factory; ``overrides`` replace its settings
        (only the fixed validation batches should need that: :meth:`val_sampler`)."""
        world_size, rank = self._world()
        return self.sampler_factory(
            corpus, batch_size=self.batch_size, seed=seed, world_size=world_size, rank=rank, **overrides
        )

    def train_sampler(self, limits: Any = None) -> Any:
        """The training sampler, built once and reused: ``check_data``, the batch preview and
        :meth:`train_dataloader` all get this object (building it indexes the whole corpus).

        ``limits``: the trainer, or its config; its ``max_steps`` / ``max_epochs`` give a linear alpha
        schedule its length when ``sampler.total_steps`` and ``sampler.max_epochs`` are null
        (:func:`mlir.sampling.schedule.schedule_length`). A call after the first ignores it.
        """
        if self._train_sampler is None:
            self.prepare_corpora()
            self._train_sampler = self.make_sampler(
                self.train_corpus,
                self.seed,
                trainer_max_steps=_limit(limits, "max_steps"),
                trainer_max_epochs=_limit(limits, "max_epochs"),
            )
        return self._train_sampler

    def _loader(self, ds: PairDataset, sampler: Any) -> DataLoader:
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=_identity,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler(getattr(self, "trainer", None))
        sampler.set_world(*self._world())  # it may have been built before the trainer existed
        if self._pending_state is not None:
            sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        return self._loader(self._train_ds, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self._val_ds is None:
            return []
        return self._loader(self._val_ds, self.val_sampler())

    def val_sampler(self) -> FixedBatches:
        """The validation batches: the dev data only, and the same for every arm of a study.

        Why fixed: checkpoint selection and early stopping compare arms, so their criterion must not
        depend on the arm. Half the batches are X-X-mono and half X-Y (one more X-Y when odd), drawn
        once with ``VAL_SEED``, whatever ``sampler.alpha``, its schedule, ``seed`` or the epoch are.
        A one-language validation corpus (``data.val_corpus``, e.g. the paper's English SQuADShifts)
        cannot make X-Y pairs: all its batches are X-X-mono, the paper's criterion being an English
        loss. A ``val_corpus`` is used in all its languages (``sampler.langs`` restricts training).
        """
        fixed = dict(schedule="constant", alpha_start=None, alpha_end=None, total_steps=None)
        if self.val_corpus_fn is not None:
            fixed["langs"] = None
        n_mono = self.val_batches // 2 if len(self.val_corpus.langs) > 1 else self.val_batches
        batches = []
        for alpha, n in ((1.0, n_mono), (0.0, self.val_batches - n_mono)):
            if n:
                batches += list(
                    self.make_sampler(self.val_corpus, VAL_SEED, steps_per_epoch=n, alpha=alpha, **fixed)
                )
        return FixedBatches(batches)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The sampler position of the batches the *loop* consumed (workers may have prefetched more)."""
        if self._train_sampler is None:
            return {}
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {"sampler": self._train_sampler.state_dict()}
        # `processed` counts batches whose optimizer step ran, also inside on_train_batch_end saves; they
        # belong to the epoch begun last (`current_epoch` moves on only once the epoch-end hooks are over)
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        epoch = max(int(trainer.fit_loop.epoch_progress.current.started) - 1, 0)
        if done >= self._train_sampler.steps_per_epoch:  # epoch finished: next is batch 0 of epoch+1
            epoch, done = epoch + 1, 0
        return {"sampler": self._train_sampler.state_at(epoch, done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_state = state.get("sampler") or None
