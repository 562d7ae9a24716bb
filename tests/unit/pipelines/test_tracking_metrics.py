"""The one table of metric names, and the README's copy of it."""

from pipelines.tracking import metrics
from tests.support.repo import ROOT


def test_metric_names_come_from_one_table():
    assert metrics.known("onnx_int8/test_macro_f1") and metrics.known("split/train_rows")
    assert metrics.known("challenger/latency_ms_p95_b1") and metrics.known("augment/insert")
    # Names that meant two things, or two names for one thing, are gone.
    assert metrics.unknown(["train/rows", "int8/test_macro_f1", "onnx_int8/macro_f1"]) == [
        "int8/test_macro_f1",
        "onnx_int8/macro_f1",
        "train/rows",
    ]
    assert metrics.headline("finetune", {"val/macro_f1": 0.91234, "test/macro_f1": 0.9}) == (
        "val/macro_f1 0.9123  test/macro_f1 0.9"
    )
    assert metrics.headline("ingest", {"data/rows": 22250.0, "data/classes": 5}) == "data/rows 22250  data/classes 5"


def test_the_readme_shows_the_metric_table():
    assert metrics.markdown() in (ROOT / "README.md").read_text()
