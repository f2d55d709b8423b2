"""Mine hard negatives for a parallel corpus: ``python -m mlir.mine --corpus IN --out OUT``.

Why: ``data.num_negatives`` trains with each row's ``negatives``, and a corpus rarely comes with them.
Every row's query is encoded with any encoder (the offline e5-small by default), searched against the
corpus's own positive passages (each distinct text once; ``--pool same_lang``: the passages of the
row's language, ``all``: every language's) and the best-scoring candidates that are *not* correct
answers become its negatives. Excluded, in this order, and counted:

* ``positive``: the row's own positive text;
* ``translation``: a positive of the same parallel id in another language. In a parallel corpus the
  translation of the positive answers the query as well as the positive does (the LAReQA setting), so
  it is a false negative; with ``--pool all`` the encoder ranks it near the top;
* ``same_text``: a passage equal to the positive after Unicode NFKC, case folding and whitespace
  collapsing (exact duplicates are one candidate already);
* ``shared_positive``: a positive, in any language, of another id that has this row's positive text
  (up to that normalisation) as one of its positives: two questions about one sentence, so the other
  question's passages in other languages are this sentence's translations. Not transitive: ids linked
  only through a third text (Thai's long segments hold several English sentences) stay negatives.

Of the candidates left, ``--skip-top`` are skipped (guarding against unlabelled positives) and the next
``--num-negatives`` are written, best first; ``--depth`` candidates are searched per query (a row gets
fewer when the exclusions take more). The corpus is written back with ``negatives`` (a JSONL input
line by line, its other fields untouched; existing ``negatives`` are replaced) and the counts go to
``OUT.summary.json``. The counts "above the last negative" are the exclusions that outranked the
row's last written negative (without the exclusions they would have taken negatives' places). Search: FAISS ``IndexFlatIP`` (the ``faiss`` extra) when importable,
else :func:`mlir.eval.search.topk`'s torch backend (both exact inner product).

    python -m mlir.mine --corpus train.jsonl --out train.neg.jsonl
    python -m mlir.mine --corpus xquad_r --out xq.neg.jsonl --pool all --model tiny_random
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlir.core.errors import ConfigError, DataError, MlirError
from mlir.data.mining import POOLS, MineResult, MineSettings, mine_corpus

log = logging.getLogger(__name__)
CONF_MODEL_DIR = Path(__file__).resolve().parent.parent / "conf" / "model"
#: corpus names that read a LAReQA directory of the data dir instead of a JSONL file
BENCHMARK_DIRS = {"xquad_r": "xquad-r", "mlqa_r": "mlqa-r"}


# --------------------------------------------------------------------------------------------------
# input, model, output


def load_corpus(
    spec: str, data_dir: str | None = None, langs: Sequence[str] | None = None, positive: str = "sentence"
) -> tuple[Any, Path | None]:
    """The corpus and, for a JSONL file, its path (written back line by line).

    ``spec`` is a JSONL path or ``xquad_r`` / ``mlqa_r`` (read from ``<data dir>/xquad-r`` etc.,
    missing files fetched like the training data; ``langs`` picks languages, ``positive`` the
    sentence or the paragraph).
    """
    if spec in BENCHMARK_DIRS:
        from mlir.core.paths import default_data_dir
        from mlir.data.download import ensure_lareqa
        from mlir.data.xquad_r import read_xquad_r

        d = ensure_lareqa(
            BENCHMARK_DIRS[spec], Path(data_dir or default_data_dir()) / BENCHMARK_DIRS[spec], langs
        )
        return read_xquad_r(d, langs=langs, positive=positive, name=spec), None
    if langs:
        raise ConfigError(
            "only for --corpus xquad_r / mlqa_r; filter a JSONL file beforehand", where="--langs"
        )
    from mlir.data.jsonl import read_jsonl

    path = Path(spec)
    if not path.exists() and "/" not in spec and not spec.endswith((".jsonl", ".gz")):
        raise DataError(f"no such file, and not one of {sorted(BENCHMARK_DIRS)}", where=spec)
    return read_jsonl(path), path


def model_config(model: str, overrides: Sequence[str] = ()) -> Any:
    """``model.encoder`` of ``conf/model/<model>.yaml``, or of ``model=hf`` for a hub name / directory."""
    from hydra import compose, initialize_config_dir

    import mlir.core.config  # noqa: F401  (resolvers: ${mlir_cache_dir:})
    from mlir.cli import check_overrides

    names = sorted(p.stem for p in CONF_MODEL_DIR.glob("*.yaml"))
    if model in names:
        args = [f"model={model}"]
    elif "/" in model or Path(model).is_dir():
        args = ["model=hf", f"model.encoder.name_or_path={model}"]
    else:
        raise ConfigError(
            f"no model config {model!r} (options: {', '.join(names)}); a hub name needs its owner "
            "(intfloat/multilingual-e5-small) or give a local directory",
            where="--model",
        )
    args += list(overrides)
    check_overrides("eval", args)
    with initialize_config_dir(config_dir=str(CONF_MODEL_DIR.parent), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=args)
    return cfg.model.encoder


def build_encoder(model: str, overrides: Sequence[str] = (), device: str = "auto") -> tuple[Any, str]:
    """The encoder (eval mode, on ``device``) and its ``name_or_path``."""
    import hydra

    from mlir.eval.search import resolve_device

    cfg = model_config(model, overrides)
    encoder = hydra.utils.instantiate(cfg)
    if hasattr(encoder, "to"):
        encoder = encoder.to(resolve_device(device))
    return encoder.eval() if hasattr(encoder, "eval") else encoder, str(cfg.get("name_or_path"))


def output_records(corpus: Any, source: Path | None, result: MineResult) -> Iterator[dict]:
    """The corpus's rows with ``negatives``: a JSONL source's own lines, else the corpus columns."""
    texts = result.passages

    def negs(i: int) -> list[str]:
        return [texts[j] for j in result.negatives[i] if j >= 0]

    if source is not None:
        from mlir.data.io import iter_jsonl

        for i, (_, obj) in enumerate(iter_jsonl(source)):
            obj["negatives"] = negs(i)
            yield obj
        return
    cols = ("id", "lang", "query", "positive", "group")
    table = corpus.table.with_format("arrow")
    for a in range(0, len(corpus), 8192):
        batch = table[a : a + 8192]
        for k, values in enumerate(zip(*(batch.column(c).to_pylist() for c in cols))):
            yield {**dict(zip(cols, values)), "negatives": negs(a + k)}


def check_out_path(out: str | Path) -> Path:
    """``out`` as a Path a file can be written to (checked before the model loads)."""
    p = Path(out)
    if p.is_dir():
        raise MlirError("is a directory; give the output file (e.g. train.neg.jsonl)", where=str(p))
    blocker = next((d for d in p.parents if d.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise MlirError(f"cannot create the output: {blocker} is a file", where=str(p))
    return p


def summary_path(out: Path) -> Path:
    """Where the counts go: ``OUT.summary.json``."""
    return out.with_name(out.name + ".summary.json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read, mine, write; returns the summary."""
    from mlir.core.atomic import write_json
    from mlir.data.io import write_jsonl

    settings = MineSettings(
        args.num_negatives, args.depth, args.skip_top, args.pool, args.batch_size, args.device, args.backend
    )
    settings.check()
    out = check_out_path(args.out)
    langs = [s.strip() for s in args.langs.split(",") if s.strip()] if args.langs else None
    corpus, source = load_corpus(args.corpus, args.data_dir, langs, args.positive)
    encoder, name = build_encoder(args.model, args.override, args.device)
    log.info("mining %d rows of %s with %s (pool %s)", len(corpus), args.corpus, name, settings.pool)
    result = mine_corpus(corpus, encoder, settings)
    write_jsonl(out, output_records(corpus, source, result))
    summary = {
        "corpus": str(source or args.corpus),
        "out": str(out),
        "encoder": name,
        "model": args.model,
        "settings": asdict(settings),
        "langs": list(corpus.langs),
        **result.counts,
    }
    write_json(summary_path(out), summary)
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m mlir.mine",
        description=__doc__.split("\n\n")[0],
        epilog="Excluded and counted: the positive, its translations, positives shared with other ids, same text.",
    )
    ap.add_argument("--corpus", required=True, help="a parallel JSONL(.gz) file, or xquad_r / mlqa_r")
    ap.add_argument("--out", required=True, help="output JSONL(.gz); counts go to OUT.summary.json")
    ap.add_argument("--model", default="me5_small_offline", help="conf/model name, hub name or directory")
    ap.add_argument(
        "--override", action="append", default=[], help="Hydra override, e.g. model.encoder.query_prefix="
    )
    ap.add_argument("--num-negatives", type=int, default=7)
    ap.add_argument("--depth", type=int, default=50, help="candidates searched per query")
    ap.add_argument("--skip-top", type=int, default=0, help="kept candidates skipped before the negatives")
    ap.add_argument("--pool", default="same_lang", choices=POOLS)
    ap.add_argument("--langs", default=None, help="xquad_r / mlqa_r only: comma-separated languages")
    ap.add_argument(
        "--positive", default="sentence", choices=("sentence", "paragraph"), help="xquad_r / mlqa_r"
    )
    ap.add_argument(
        "--data-dir", default=None, help="for xquad_r / mlqa_r (default: MLIR_DATA_DIR, ../shared/data)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=None, help="texts per encoder call (default: token budget)"
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--backend", default="auto", choices=("auto", "faiss", "torch"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a user error is one ``error: <where>: <message>`` line and exit code 2."""
    args = parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # "Loading faiss with AVX2..." lines
    try:
        s = run(args)
    except MlirError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    above = s["excluded_above_last_negative"]
    print(
        f"wrote {s['out']}: {s['rows']} rows, {s['negatives_written']} negatives; excluded above the last "
        f"negative: {above['translation']} translations, {above['shared_positive']} shared positives, "
        f"{above['same_text']} same-text; summary {summary_path(Path(s['out']))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
