"""The expectation suite on the real corpus and on broken copies of it."""

import pandas as pd
import pytest
from pydantic import ValidationError

from components.data.bbc import read_bbc
from components.data.sources import read_file
from components.data.validation import validate
from tests.support.data import tiny_frame
from tests.support.params import shipped


@pytest.fixture(scope="module")
def bbc() -> pd.DataFrame:
    return read_bbc()


def test_bbc_passes_and_its_duplicates_are_reported(bbc, tmp_path):
    outcome = validate(bbc, shipped("validate").resolved("bbc"), tmp_path / "docs")
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
    outcome = validate(broken(bbc), shipped("validate"))
    assert not outcome.success
    text = "\n".join(outcome.failures)
    assert (
        "expect_column_values_to_be_in_set(label): 1 rows, e.g. 'sprot' (row bbc/business/004); "
        "labels not in validate.labels: 'sprot' (1 row); add them to validate.labels"
    ) in text
    assert "expect_column_values_to_not_match_regex(text) [empty text]: 1 rows" in text
    assert "[undecodable text]: 1 rows, e.g. 'A story with a lost character" in text
    assert "expect_column_values_to_be_unique(id): 2 rows, e.g. 'bbc/business/011'" in text
    assert outcome.valid.empty


def test_quarantine_moves_bad_rows_with_reasons(bbc):
    frame = broken(bbc)
    frame.loc[9, "id"] = "bbc/business/010-fixed"  # unique ids again: only row-level faults remain
    outcome = validate(frame, shipped("validate", policy="quarantine"))
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
    outcome = validate(frame, shipped("validate", policy="quarantine", max_quarantine_share=0.01))
    assert not outcome.success
    assert "more than validate.max_quarantine_share=0.01" in outcome.failures[0]


def test_class_balance_and_duplicate_rate(bbc):
    frame = pd.concat([bbc, bbc[bbc["label"] == "tech"].assign(id=lambda f: f["id"] + "-copy")], ignore_index=True)
    outcome = validate(frame, shipped("validate", max_class_share=0.25))
    text = "\n".join(outcome.failures)
    assert "[class balance]: 1 rows, e.g. 'tech=0." in text
    assert "tech is above validate.max_class_share=0.25" in text
    assert "[duplicate-text rate]: observed 0.8100, expected >= 0.95; 499 rows repeat an earlier text" in text
    assert "validate.max_duplicate_rate=0.05" in text


def test_missing_column_fails(bbc):
    outcome = validate(bbc.drop(columns=["source"]), shipped("validate"))
    assert any("expect_table_columns_to_match_set" in line for line in outcome.failures)


def test_min_chars_auto_is_the_bbc_bound_for_bbc_and_any_text_for_user_files():
    cfg = shipped("validate")
    assert cfg.min_chars == "auto"
    assert cfg.resolved("bbc").min_chars == 20 and cfg.resolved("file").min_chars == 1
    assert shipped("validate", min_chars=5).resolved("bbc").min_chars == 5
    assert shipped("ingest", source="incoming", incoming={"base": "file"}).base == "file"
    with pytest.raises(ValidationError, match="validate.min_chars must be auto or a whole number"):
        shipped("validate", min_chars=0)


def test_short_chinese_text_passes_for_a_user_file_and_names_the_bound_for_bbc(tmp_path):
    frame = tiny_frame(4)
    frame.loc[12, "text"] = "海景不错！爽"
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    data = read_file(tmp_path / "reviews.csv", shipped("ingest.file"), "file")
    # An unresolved config is taken as for user files.
    assert validate(data, shipped("validate")).success
    outcome = validate(data, shipped("validate").resolved("bbc"))
    assert outcome.failures == [
        "expect_column_value_lengths_to_be_between(text) [too short]: 1 rows, e.g. '海景不错！爽' "
        "(row reviews.csv:14); texts shorter than validate.min_chars=20 characters: lower validate.min_chars "
        "(1 accepts any non-empty text), fix these rows, or set validate.policy: quarantine to set them aside"
    ]
    entry = next(e for e in outcome.report["expectations"] if not e["success"])
    assert entry["sample_ids"] == ["reviews.csv:14"] and entry["params"] == {"validate.min_chars": 20}
