"""The checks a new batch passes before a retrain learns it: labels, format, rows already
in the dataset, drift. (The retrain runs themselves: tests/pipeline/test_retrain.py.)"""

import pandas as pd
import pytest
from tokenizers import Tokenizer

from components.text.tokenizer import train_tokenizer
from tests.support.data import check_batch, drifted_batch, good_batch, tiny_frame
from tests.support.params import shipped


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(tiny_frame()["text"], shipped("tokenize", vocab_size=300, min_frequency=1))


def test_batch_with_an_unknown_label_is_refused_naming_it(tmp_path):
    batch = good_batch().assign(label=["science"] + ["tech"] * 19)
    outcome = check_batch(tmp_path, "b.csv", batch)
    assert not outcome.accepted
    assert "unknown label(s) 'science'" in outcome.reasons[0] and "b.csv:2" in outcome.reasons[0]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "text,label\n", "has a header but no rows"),
        ("batch.xlsx", "PK\x03\x04", "cannot tell the format"),
        ("columns.csv", "body,topic\nsome text here and more,tech\n", "no text column 'text'"),
    ],
)
def test_unreadable_batches_are_refused_with_the_reason(tmp_path, name, content, expected):
    outcome = check_batch(tmp_path, name, content)
    assert not outcome.accepted and expected in outcome.reasons[0]


def test_rows_already_in_the_dataset_are_dropped(tmp_path, tokenizer):
    batch = pd.concat([tiny_frame().head(5), good_batch().head(5)])
    outcome = check_batch(tmp_path, "b.csv", batch[["text", "label"]], tokenizer)
    assert outcome.rows == 10 and outcome.new_rows == 5


def test_drifted_batch_is_refused_with_each_failed_check(tmp_path, tokenizer):
    outcome = check_batch(tmp_path, "b.csv", drifted_batch(), tokenizer)
    assert not outcome.accepted
    assert sum(r.startswith("drift: ") for r in outcome.reasons) == 3
