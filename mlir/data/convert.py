"""Convert public training data to mlir's parallel JSONL: ``python -m mlir.data.convert <format> ...``.

Why a converter: ``data=jsonl`` (docs/your_data.md) then trains on the file *and* evaluates its own
held-out groups; the conversion streams, so a 40M-line source never sits in memory.

    python -m mlir.data.convert mmarco /data/mmarco/data/google /data/mmarco.jsonl.gz --langs en de zh
    python -m mlir.data.convert mmarco DIR OUT --negatives-from triples --max-negatives 8 --max-queries 100000
    python -m mlir.data.convert tevatron /data/train_all_langs.jsonl OUT           # records carry "lang"
    python -m mlir.data.convert tevatron en=/data/en.jsonl de=/data/de.jsonl OUT    # one file per language

``mmarco``: :mod:`mlir.data.mmarco` (layout, what is kept, memory). ``tevatron``: Tevatron or
FlagEmbedding JSONL (:mod:`mlir.data.tevatron`). Prints the counts (rows per language, what was
dropped) as JSON on stdout. A bad input is one line ``error: <file>:<line>: <message>``, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence

from mlir.core.errors import ConfigError, exit_on_user_error


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m mlir.data.convert",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="format", required=True)
    mm = sub.add_parser("mmarco", help="mMARCO per-language TSVs (queries, collections, qrels/triples)")
    mm.add_argument("dir", help="the folder holding queries/train/ and collections/ (e.g. data/google)")
    mm.add_argument("out", help="output .jsonl or .jsonl.gz (written atomically)")
    mm.add_argument("--langs", nargs="+", help="ISO codes or mMARCO names (default: every language found)")
    mm.add_argument("--negatives-from", choices=("none", "triples"), default="none")
    mm.add_argument("--max-negatives", type=int, default=8, help="negatives per query (default 8)")
    mm.add_argument("--max-queries", type=int, default=None, help="the first N query ids only")
    mm.add_argument("--qrels", help="qrels file (default: <dir>[/..]/qrels.train.tsv if present)")
    mm.add_argument("--triples", help="triples file (default: <dir>[/..]/triples.train.ids.small.tsv)")
    tv = sub.add_parser("tevatron", help="Tevatron or FlagEmbedding JSONL (one file, or lang=file each)")
    tv.add_argument("sources", nargs="+", metavar="SOURCE", help="FILE, or LANG=FILE per language; then OUT")
    tv.add_argument("--lang-field", default="lang", help="the records' language field (one-file input)")
    tv.add_argument("--format", dest="fmt", choices=("auto", "tevatron", "flag"), default="auto")
    tv.add_argument("--max-negatives", type=int, default=None, help="keep the first K negatives")
    tv.add_argument("--title-sep", default=" ", help="between a Tevatron passage's title and text")
    return ap


def _langs(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [x for v in values for x in v.split(",") if x.strip()]


def _tevatron_sources(args: Sequence[str]) -> tuple[object, str]:
    """``(path or {lang: path}, out)`` from ``SOURCE... OUT``."""
    if len(args) < 2:
        raise ConfigError("give one or more sources, then the output file", where="tevatron")
    *sources, out = args
    pairs = [s.partition("=") for s in sources]
    if all(sep for _, sep, _ in pairs):
        return {lang: path for lang, _, path in pairs}, out
    if len(sources) == 1 and not pairs[0][1]:
        return sources[0], out
    raise ConfigError(
        "give one FILE (records carry a language field) or LANG=FILE for each", where="tevatron"
    )


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, convert, print the counts as JSON; returns them."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.format == "mmarco":
        from mlir.data.mmarco import convert_mmarco

        stats = convert_mmarco(
            args.dir,
            args.out,
            langs=_langs(args.langs),
            negatives_from=args.negatives_from,
            max_negatives=args.max_negatives,
            max_queries=args.max_queries,
            qrels=args.qrels,
            triples=args.triples,
        )
        result = dataclasses.asdict(stats)
    else:
        from mlir.data.tevatron import convert_tevatron

        path, out = _tevatron_sources(args.sources)
        result = convert_tevatron(path, out, args.lang_field, args.fmt, args.max_negatives, args.title_sep)
    print(json.dumps(result, indent=1, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
