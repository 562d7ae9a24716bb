"""Inference with an exported transformer: files and requests checked, long texts read from
their head."""

from pathlib import Path

import pytest

from components.deploy.parity import TorchClassifier
from components.errors import KilnError
from components.runtime.session import MAX_BATCH
from components.runtime.transformer import OnnxClassifier, TextEncoder
from tests.support.data import LABELS, TEXTS
from tests.support.tiny import tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[TorchClassifier, Path, Path]:
    model, path, tokenizer = tiny_onnx(tmp_path_factory.mktemp("onnx"))
    return TorchClassifier(model, tokenizer, LABELS), path, tokenizer


def test_missing_and_corrupt_onnx_files_name_the_file(tiny, tmp_path):
    _, _, tokenizer = tiny
    with pytest.raises(KilnError, match="missing.onnx is missing"):
        OnnxClassifier(tmp_path / "missing.onnx", tokenizer)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(KilnError, match="junk.onnx is corrupt"):
        OnnxClassifier(junk, tokenizer)


def test_requests_are_checked(tiny, caplog):
    _, path, tokenizer = tiny
    runtime = OnnxClassifier(path, tokenizer)
    out = runtime.predict("business story " * 50)
    assert out[0]["label"] in LABELS and abs(sum(out[0]["probabilities"].values()) - 1) < 1e-5
    assert "truncated" in caplog.text
    for bad, message in (
        ([], "no texts"),
        (["  "], "text 0 is empty"),
        ([3], "text 0 is a int"),
        (7, "got int"),
        (["x"] * (MAX_BATCH + 1), "at most"),
    ):
        with pytest.raises(KilnError, match=message):
            runtime.predict(bad)


def test_head_tokenization_equals_whole_text(tiny):
    from tokenizers import Tokenizer

    _, _, tokenizer = tiny
    whole = Tokenizer.from_file(str(tokenizer))
    whole.enable_truncation(32)
    encode = TextEncoder(tokenizer, 32)
    long = [" ".join(TEXTS[i : i + 6]) for i in range(0, 30, 3)] + ["word " * 400, "short text", "x" * 5000]
    for text in long:
        ids = encode([text])["input_ids"][0].tolist()
        assert ids == whole.encode(text).ids
