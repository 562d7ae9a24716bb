"""The expectation suite on the real corpus and on broken copies of it."""

import pandas as pd
import pytest

from components.data.sources import read_bbc
from components.data.validation import ValidateConfig, validate


@pytest.fixture(scope="module")
def bbc() -> pd.DataFrame:
    return read_bbc()


def test_bbc_passes_and_its_duplicates_are_reported(bbc, tmp_path):
    outcome = validate(bbc, ValidateConfig(), tmp_path / "docs")
    assert outcome.success, outcome.failures
    assert outcome.report["duplicates"]["rows"] == 98
    assert len(outcome.valid) == 2225
    assert (tmp_path / "docs" / "index.html").is_file()
    first = outcome.report["duplicates"]["examples"][0]
    texts = bbc.set_index("id").loc[first, "text"]
    assert texts.nunique() == 1


def broken(bbc: pd.DataFrame) -> pd.DataFrame:
    frame = bbc.copy()
    frame.loc[3, "label"] = "sprot"
    frame.loc[5, "text"] = "   "
    frame.loc[7, "text"] = "A story with a lost character \ufffd in it, long enough to pass."
    frame.loc[9, "id"] = frame.loc[10, "id"]
    return frame


def test_failure_names_each_expectation_with_count_and_samples(bbc):
    outcome = validate(broken(bbc), ValidateConfig())
    assert not outcome.success
    text = "\n".join(outcome.failures)
    assert "expect_column_values_to_be_in_set(label): 1 rows, e.g. 'sprot'" in text
    assert "expect_column_values_to_not_match_regex(text) [empty text]: 1 rows" in text
    assert "[undecodable text]: 1 rows, e.g. 'A story with a lost character" in text
    assert "expect_column_values_to_be_unique(id): 2 rows, e.g. 'bbc/business/011'" in text
    assert outcome.valid.empty


def test_quarantine_moves_bad_rows_with_reasons(bbc):
    frame = broken(bbc)
    frame.loc[9, "id"] = "bbc/business/010-fixed"  # unique ids again: only row-level faults remain
    outcome = validate(frame, ValidateConfig(policy="quarantine"))
    assert outcome.success, outcome.failures
    reasons = outcome.quarantined.set_index("id")["reason"]
    assert reasons["bbc/business/004"] == "expect_column_values_to_be_in_set(label)"
    assert "empty text" in reasons["bbc/business/006"]
    assert "undecodable text" in reasons["bbc/business/008"]
    assert len(outcome.valid) == len(frame) - 3
    assert not set(outcome.quarantined["id"]) & set(outcome.valid["id"])


def test_quarantine_above_threshold_fails(bbc):
    frame = bbc.copy()
    frame.loc[:100, "label"] = "unknown"
    outcome = validate(frame, ValidateConfig(policy="quarantine", max_quarantine_share=0.01))
    assert not outcome.success
    assert "more than validate.max_quarantine_share=0.01" in outcome.failures[0]


def test_class_balance_and_duplicate_rate(bbc):
    frame = pd.concat([bbc, bbc[bbc["label"] == "tech"].assign(id=lambda f: f["id"] + "-copy")], ignore_index=True)
    outcome = validate(frame, ValidateConfig(max_class_share=0.25))
    text = "\n".join(outcome.failures)
    assert "[class balance]: 1 rows, e.g. 'tech=0." in text
    assert "[duplicate-text rate]: observed 0.8100, expected >= 0.95" in text


def test_missing_column_fails(bbc):
    outcome = validate(bbc.drop(columns=["source"]), ValidateConfig())
    assert any("expect_table_columns_to_match_set" in line for line in outcome.failures)
