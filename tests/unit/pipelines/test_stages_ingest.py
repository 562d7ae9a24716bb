"""The ingest adapter, in process: the user's file to the raw dataset, personal data masked
and counted, read only from the folders dvc.yaml lists as the stage's deps."""

import json

import pandas as pd
import pytest

from components.data.schema import COLUMNS
from components.errors import KilnError
from pipelines.tracking import metrics
from tests.support.data import tiny_frame
from tests.support.params import set_params
from tests.support.stages import run_stage, stage_repo

ADDRESS = "jane.doe@example.com"


def test_ingest_writes_the_users_file_masked_and_counts_what_it_found(tmp_path):
    root = stage_repo(tmp_path / "kiln")
    frame = tiny_frame()
    frame.loc[0, "text"] = f"Write to {ADDRESS} for the full story about business."
    frame.to_csv(root / "data/external/mine.csv", index=False)
    ctx, result = run_stage(root, "ingest")

    raw = pd.read_parquet(root / "data/raw/dataset.parquet")
    assert tuple(raw.columns) == COLUMNS and len(raw) == len(frame)
    assert raw["id"].iloc[0] == "mine.csv:2" and set(raw["source"]) == {"file"}  # a row's line in the file
    assert ADDRESS not in raw["text"].iloc[0] and "<EMAIL>" in raw["text"].iloc[0]
    assert raw["text"].iloc[1:].tolist() == frame["text"].iloc[1:].tolist()
    assert {"data/rows": 60, "data/classes": 5, "data/sources": 1}.items() <= result.metrics.items()
    assert result.metrics["pii/EMAIL"] == 1 and result.metrics["pii/rows_with_pii"] == 1
    assert not metrics.unknown(result.metrics)
    assert result.summary == ["personal data in 1 row(s), masked: EMAIL 1"]
    # The report counts what was found and never holds it.
    report = root / "reports/pii.json"
    assert result.artifacts == {"pii": report} and json.loads(report.read_text())["rows_with_pii"] == 1
    assert ADDRESS not in report.read_text()


def test_ingest_reads_only_the_folders_its_stage_lists_as_deps(tmp_path):
    """data/unlabeled/ is under data/ but not among ingest's deps in dvc.yaml: DVC would not
    rerun ingest when a file there changed."""
    root = stage_repo(tmp_path / "kiln")
    (root / "data/unlabeled").mkdir()
    (root / "data/external/mine.csv").rename(root / "data/unlabeled/mine.csv")
    set_params(root, ingest={"file": {"path": "data/unlabeled/mine.csv"}})
    with pytest.raises(KilnError, match=r"ingest: ingest.file.path: .*data/unlabeled/mine.csv is outside the folders"):
        run_stage(root, "ingest")
    assert not (root / "data/raw").exists() and not (root / "reports/pii.json").exists()
