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
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlir.core.errors import ConfigError, MlirError

PROBE_TEXTS = (
    "Where is the Eiffel tower?",
    "Der Eiffelturm steht in Paris und wurde 1889 eröffnet.",
    "埃菲尔铁塔位于巴黎。",
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
        st.save(str(out))
    (out / "mlir_export.json").write_text(
        json.dumps(
            {
                "source": str(getattr(encoder, "name_or_path", "")),
                "pooling": encoder.pooling,
                "normalize": bool(encoder.normalize),
                "query_prefix": encoder.query_prefix,
                "passage_prefix": encoder.passage_prefix,
                "query_max_length": q_len,
                "passage_max_length": p_len,
            },
            indent=2,
        )
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


def export_checkpoint(
    ckpt: str | Path, out_dir: str | Path, config: str | Path | None = None, verify: bool = True
) -> dict[str, Any]:
    """Checkpoint -> sentence-transformers directory; with ``verify`` the embeddings are compared."""
    check_out_dir(out_dir)
    encoder = load_encoder(ckpt, config)
    out = export_encoder(encoder, out_dir)
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
    args = ap.parse_args(argv)
    try:
        res = export_checkpoint(args.checkpoint, args.out_dir, args.config, verify=not args.no_verify)
    except MlirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported to {res['out_dir']}")
    if "check" in res:
        print("embeddings vs checkpoint: " + ", ".join(f"{k}={v:.6g}" for k, v in res["check"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
