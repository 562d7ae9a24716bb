"""The validate adapter, in process: valid rows passed on with the report and Data Docs, a
failed expectation stopping the stage with its report logged, and the quarantine policy."""

import json

import pandas as pd
import pytest

from components.errors import KilnError
from pipelines.core.io import write_parquet
from pipelines.stages import validate
from pipelines.tracking import metrics
from tests.support.data import dataset, tiny_frame
from tests.support.params import set_params
from tests.support.stages import run_stage, stage_context, stage_repo


def raw(root, frame: pd.DataFrame) -> None:
    """`frame` as ingest would have written the raw dataset."""
    write_parquet(dataset(frame), root / "data/raw/dataset.parquet")


def test_validate_passes_every_valid_row_on_with_its_report(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    raw(root, tiny_frame())
    ctx, result = run_stage(root, "validate")
    validated = pd.read_parquet(root / "data/validated/dataset.parquet")
    assert validated.equals(dataset(tiny_frame()))
    assert pd.read_parquet(root / "data/quarantine/rows.parquet").empty
    report = json.loads((root / "reports/validation.json").read_text())
    assert report["success"] is True and report["rows"] == 60
    assert (root / "reports/validation_docs/index.html").is_file()
    page = (root / "reports/validation.html").read_text()
    assert page.count('<span class="pass">passed</span>') == len(report["expectations"]) + 1
    assert result.metrics == {
        "data/rows": 60,
        "data/valid_rows": 60,
        "data/quarantined_rows": 0,
        "data/duplicate_rows": 0,
        "data/failed_expectations": 0,
    }
    assert not metrics.unknown(result.metrics)
    assert set(result.artifacts) == {"validation", "validation/page", "validation/data_docs"}
    assert ctx.run.tags == {"kiln.validation": "passed"}


def test_a_failed_expectation_stops_validate_after_it_logs_what_a_person_opens_to_see_why(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    frame = tiny_frame()
    frame.loc[0, "label"] = "sprot"
    raw(root, frame)
    ctx = stage_context(root, "validate")
    failed_on = r"^validate: \d+ expectation\(s\) failed on data/raw/dataset.parquet"
    with pytest.raises(KilnError, match=failed_on) as failed:
        validate.run(ctx)
    assert "expect_column_values_to_be_in_set(label): 1 rows, e.g. 'sprot'" in str(failed.value)
    assert (
        "report: reports/validation.html (offline), reports/validation.json, "
        "Data Docs: reports/validation_docs/index.html" in str(failed.value)
    )
    page = (root / "reports/validation.html").read_text()
    assert "<h2>Why it failed</h2>" in page and "&#x27;sprot&#x27;" in page  # escaped, as every value
    assert not (root / "data/validated").exists()
    assert json.loads((root / "reports/validation.json").read_text())["success"] is False
    # The report and Data Docs, what a person opens to see why, are logged before it fails.
    assert ctx.run.tags == {"kiln.validation": "failed"}
    assert ctx.run.metrics["data/rows"] == 60 and ctx.run.metrics["data/failed_expectations"] >= 1
    assert set(ctx.run.artifacts) == {"validation", "validation/page", "validation/data_docs"}


def test_the_quarantine_policy_sets_bad_rows_aside_and_passes_the_rest_on(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    set_params(root, validate={"policy": "quarantine", "max_quarantine_share": 0.05})
    frame = tiny_frame()
    frame.loc[0, "label"] = "sprot"
    raw(root, frame)
    _, result = run_stage(root, "validate")
    quarantined = pd.read_parquet(root / "data/quarantine/rows.parquet")
    assert quarantined["id"].tolist() == ["mine.csv:2"]
    assert quarantined["reason"].tolist() == ["expect_column_values_to_be_in_set(label)"]
    assert len(pd.read_parquet(root / "data/validated/dataset.parquet")) == 59
    assert result.metrics["data/quarantined_rows"] == 1 and result.metrics["data/valid_rows"] == 59
