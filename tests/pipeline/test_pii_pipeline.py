"""Personal data planted in a user's file never gets past ingest: not into the data stages'
files, the tokenizer, the reports and Data Docs, MLflow or Prefect."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.support.repo import copy_repo, kiln
from tests.support.tiny import tiny_repo

pytestmark = pytest.mark.slow

PLANTED = {
    "EMAIL": ["zhang.san@example.com", "j.doe+kiln@mail.example.org"],
    "PHONE": ["13812345678", "+44 20 7946 0958"],
    "CREDIT_CARD": ["4111 1111 1111 1111", "5500005555555559"],
    "CN_RESIDENT_ID": ["11010519491231002X", "440524188001010014"],
}


def _contents(path: Path) -> str:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return "\n".join(frame[c].astype(str).str.cat(sep="\n") for c in frame.columns)
    return path.read_bytes().decode("utf-8", errors="replace")


def test_planted_personal_data_is_masked_before_anything_is_written(tmp_path):
    repo = tiny_repo(copy_repo(tmp_path / "kiln"))
    frame = pd.read_csv(repo / "data/external/mine.csv")
    values = [v for vs in PLANTED.values() for v in vs]
    clean = frame["text"].iloc[0]
    # One planted value in each of eight rows, the Chinese ones inside text without spaces.
    for i, value in enumerate(values, start=1):
        frame.loc[i, "text"] = f"{frame.loc[i, 'text']} 联系我{value}谢谢"
    frame.to_csv(repo / "data/external/mine.csv", index=False)
    # Its own temporary Prefect server, whose database under .prefect/ is searched too.
    out = kiln("run", "tokenize", cwd=repo, own_prefect=True)
    assert out.returncode == 0, out.stdout + out.stderr

    report = json.loads((repo / "reports/pii.json").read_text())
    assert {k: v for k, v in report["findings"].items() if v} == {k: len(v) for k, v in PLANTED.items()}
    assert report["rows_with_pii"] == len(values)
    raw = pd.read_parquet(repo / "data/raw/dataset.parquet").set_index("id")["text"]
    assert raw.iloc[0] == clean  # a text without personal data comes through unchanged
    assert "<EMAIL>" in raw.iloc[1] and "<CN_RESIDENT_ID>" in raw.iloc[8]

    written = [
        p
        for folder in ("data", "models", "reports", "mlflow", ".prefect")
        for p in (repo / folder).rglob("*")
        if p.is_file() and not p.is_relative_to(repo / "data/external")
    ]
    assert any(p.name == "tokenizer.json" for p in written) and any("validation_docs" in str(p) for p in written)
    leaks = [(str(p.relative_to(repo)), v) for p in written for v in values if v in _contents(p)]
    assert not leaks
