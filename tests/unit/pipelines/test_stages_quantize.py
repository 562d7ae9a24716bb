"""The quantize adapter, in process: it decides on val, never reads test, and writes a
refused INT8 with its reason."""

from pathlib import Path

import pytest

from components.deploy.parity import TorchClassifier
from components.runtime.transformer import OnnxClassifier
from tests.support.data import LABELS, TEXTS
from tests.support.repo import ROOT
from tests.support.stages import RecordingRun
from tests.support.tiny import tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[TorchClassifier, Path, Path]:
    model, path, tokenizer = tiny_onnx(tmp_path_factory.mktemp("onnx"))
    return TorchClassifier(model, tokenizer, LABELS), path, tokenizer


def _quantize_stage(tiny, root: Path, monkeypatch, int8: Path | None):
    """The quantize stage in `root`: FP32 is the tiny model, val is labelled with its own
    predictions, and test holds a label no model knows. INT8 is `int8` (None: FP32's copy)."""
    import shutil

    import pandas as pd

    from components.deploy import gated
    from pipelines.core.params import load
    from pipelines.stagekit.contract import StageContext, StageParams
    from pipelines.stages import quantize

    _, path, tokenizer = tiny
    (root / "models/onnx").mkdir(parents=True)
    shutil.copy(path, root / "models/onnx/pruned.onnx")
    shutil.copy(tokenizer, root / "models/onnx/tokenizer.json")
    (root / "data/split").mkdir(parents=True)
    predicted = OnnxClassifier(path, tokenizer).logits(TEXTS).argmax(-1)
    pd.DataFrame({"text": TEXTS, "label": [LABELS[i] for i in predicted]}).to_parquet(root / "data/split/val.parquet")
    pd.DataFrame({"text": ["sunny"], "label": ["weather"]}).to_parquet(root / "data/split/test.parquet")
    monkeypatch.setattr(gated, "quantize_dynamic", lambda source, out: shutil.copy(int8 or source, out))
    params = StageParams(load(ROOT / "params.yaml"), "quantize", ("quantize",))
    ctx = StageContext("quantize", root, params, ("quantize",), RecordingRun())
    return ctx, quantize.run(ctx), quantize.report(ctx)


def test_quantize_decides_on_val_and_never_reads_test(tiny, tmp_path, monkeypatch):
    ctx, result, report = _quantize_stage(tiny, tmp_path, monkeypatch, None)
    assert report.passed and report.texts == len(TEXTS) and report.agreement == 1.0
    assert f"0 of {len(TEXTS)} val texts" in report.verdict
    assert result.metrics["onnx_int8/passed"] == 1.0 and result.metrics["onnx_int8/val_agreement"] == 1.0
    assert not result.summary and not ctx.run.tags


def test_a_refused_int8_is_written_and_says_why(tiny, tmp_path, monkeypatch):
    """Another model in the INT8 file: the stage does not fail (the run goes on without it),
    and the file, the metrics, the run's tags and the summary carry the refusal."""
    _, other, _ = tiny_onnx(tmp_path / "other", seed=1)
    ctx, result, report = _quantize_stage(tiny, tmp_path / "repo", monkeypatch, other)
    assert not report.passed and report.agreement < 0.9
    assert report.verdict.startswith("INT8 labels ") and "val texts differently from FP32 (allowed 1:" in report.verdict
    assert (tmp_path / "repo/models/model.int8.onnx").is_file()
    assert result.metrics["onnx_int8/passed"] == 0.0
    assert ctx.run.tags == {"kiln.quantize.refused": report.verdict}
    assert result.summary == [f"INT8 refused, not a candidate of select: {report.verdict}"]
