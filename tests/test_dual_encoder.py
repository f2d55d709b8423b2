"""DualEncoder: length-sorted sub-batches give the same embeddings as one padded batch."""

import pytest
import torch

from mlir.core.errors import ConfigError, MlirError
from mlir.models.dual_encoder import DualEncoder

TEXTS = [
    "short",
    "Пантеры были основаны в 1995 году, и это довольно длинное предложение для проверки.",
    "黑豹队成立于1995年。",
    "x",
    "Die Panthers wurden 1995 gegründet und spielen in der NFC South.",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return DualEncoder(
        str(tiny_model_dir), query_max_length=32, passage_max_length=48, token_budget=64
    ).eval()


def test_sorted_sub_batches_equal_one_padded_batch(encoder):
    ids = encoder.tokenize(TEXTS, "passage")
    assert len(encoder.chunks(ids)) > 1  # the budget really splits the batch
    sub = encoder.embed(ids, "passage")
    full = encoder.forward_padded(*encoder.pad(ids, torch.device("cpu")), "passage")
    torch.testing.assert_close(sub, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encoder.encode_passages(TEXTS), full.detach(), rtol=1e-5, atol=1e-6)


def test_chunks_respect_budget_and_cover_everything(encoder):
    ids = encoder.tokenize(TEXTS * 7, "passage")
    groups = encoder.chunks(ids)
    assert sorted(i for g in groups for i in g) == list(range(len(ids)))
    for g in groups:
        width = max(len(ids[i]) for i in g)
        assert len(g) == 1 or len(g) * width <= encoder.token_budget


def test_prefixes_and_max_lengths(encoder):
    q = encoder.tokenize(["abc"], "query")[0]
    p = encoder.tokenize(["abc"], "passage")[0]
    assert encoder.tokenizer.decode(q, skip_special_tokens=True).startswith("query: ")
    assert encoder.tokenizer.decode(p, skip_special_tokens=True).startswith("passage: ")
    long = encoder.tokenize(["word " * 500], "query")[0]
    assert len(long) == encoder.max_length["query"]


def test_embeddings_are_unit_norm_and_encode_restores_train_mode(encoder):
    encoder.train()
    e = encoder.encode_queries(TEXTS)
    assert encoder.training
    torch.testing.assert_close(e.norm(dim=1), torch.ones(len(TEXTS)))
    encoder.eval()


def test_gradients_flow_through_sorted_embedding(tiny_model_dir):
    enc = DualEncoder(str(tiny_model_dir), token_budget=64, passage_max_length=48)
    enc.embed(enc.tokenize(TEXTS, "passage"), "passage").sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_separate_towers_and_frozen_embeddings(tiny_model_dir):
    enc = DualEncoder(str(tiny_model_dir), shared=False, freeze_embeddings=True)
    assert enc.query_model is not enc.passage_model
    assert not enc.query_model.get_input_embeddings().weight.requires_grad
    assert not enc.passage_model.get_input_embeddings().weight.requires_grad


def test_cls_pooling_differs_from_mean(tiny_model_dir):
    mean = DualEncoder(str(tiny_model_dir), pooling="mean").encode_passages(TEXTS)
    cls = DualEncoder(str(tiny_model_dir), pooling="cls").encode_passages(TEXTS)
    assert not torch.allclose(mean, cls)


def test_config_errors_name_their_key(tiny_model_dir):
    with pytest.raises(ConfigError, match="model.encoder.pooling"):
        DualEncoder(str(tiny_model_dir), pooling="max")
    with pytest.raises(ConfigError, match="model.encoder.name_or_path"):
        DualEncoder("/nonexistent/model/dir")


def test_unreachable_hub_name_says_how_to_use_a_local_directory(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MlirError, match="local") as e:
        DualEncoder("xlm-roberta-base-does-not-exist-offline")
    assert e.value.where == "model.encoder.name_or_path"
