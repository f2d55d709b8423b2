"""mlir.export: a checkpoint becomes a sentence-transformers directory with the same embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mlir.core.config  # noqa: F401  (resolvers)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "Where is the Eiffel tower?",
    "Der Eiffelturm steht in Paris.",
    "埃菲尔铁塔位于巴黎。",
    "a much longer text " * 20,  # longer than the tiny model's 32-token query length
]


def _train_run(tmp_path: Path, tiny_model_dir: Path, pooling: str) -> tuple[Path, object]:
    """A train.py-like run directory: .hydra/config.yaml + checkpoints/step.ckpt with changed weights."""
    from mlir.models.module import RetrieverModule

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                "model=tiny_random",
                f"model.encoder.name_or_path={tiny_model_dir}",
                f"model.encoder.pooling={pooling}",
            ],
        )
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=False)
    model_cfg["encoder"]["cache_dir"] = str(tmp_path / "cache")
    OmegaConf.save(OmegaConf.create({"model": model_cfg}), run / ".hydra" / "config.yaml")
    import hydra

    module = hydra.utils.instantiate(OmegaConf.create(model_cfg))
    assert isinstance(module, RetrieverModule)
    torch.manual_seed(0)
    with torch.no_grad():  # trained weights differ from the base model's: the export must carry them
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "step_000010.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 10}, ckpt)
    return ckpt, module.encoder


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_round_trip_gives_the_same_embeddings(tmp_path, tiny_model_dir, pooling):
    from sentence_transformers import SentenceTransformer

    from mlir.export import main

    ckpt, encoder = _train_run(tmp_path, tiny_model_dir, pooling)
    out = tmp_path / "st"
    assert main([str(ckpt), str(out)]) == 0

    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()
    st_cfg = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {"query": "query: ", "passage": "passage: ", "document": "passage: "}
    assert st_cfg["default_prompt_name"] is None
    modules = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert any("Transformer" in t for t in modules) and any("Pooling" in t for t in modules)
    assert any("Normalize" in t for t in modules)
    pool = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pool.get("pooling_mode_cls_token", pool.get("pooling_mode") == "cls") == (pooling == "cls") or (
        pool.get("pooling_mode") == pooling
    )

    st = SentenceTransformer(str(out), device="cpu")
    encoder.eval()
    for side, encode_side in (("query", st.encode_query), ("passage", st.encode_document)):
        ours = encoder.encode(TEXTS, side)
        # encode_query/encode_document: the training prompts AND the training truncation lengths
        theirs = torch.as_tensor(encode_side(TEXTS, convert_to_numpy=True))
        cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
        assert cos.min() >= 0.9999, (side, cos)
        assert (ours - theirs).abs().max() < 1e-5
        # encode(prompt_name=...) as well, for texts within the (tiny, byte-level) query length
        short = ["Paris?", "Berlin.", "巴黎"]
        theirs = torch.as_tensor(st.encode(short, prompt_name=side, convert_to_numpy=True))
        assert (encoder.encode(short, side) - theirs).abs().max() < 1e-5
    # the export carries the trained weights, not the base model's
    base = SentenceTransformer(str(tiny_model_dir), device="cpu")
    assert not torch.allclose(
        torch.as_tensor(base.encode(TEXTS[:1])), torch.as_tensor(st.encode(TEXTS[:1])), atol=1e-3
    )


def test_checkpoint_outside_a_run_needs_config(tmp_path, tiny_model_dir, capsys):
    from mlir.export import main

    ckpt, _ = _train_run(tmp_path, tiny_model_dir, "mean")
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes(ckpt.read_bytes())
    assert main([str(lone), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and "--config" in errors[0]
    # with --config (the run's config) it works
    assert (
        main(
            [
                str(lone),
                str(tmp_path / "out"),
                "--config",
                str(ckpt.parents[1] / ".hydra" / "config.yaml"),
                "--no-verify",
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "modules.json").is_file()
