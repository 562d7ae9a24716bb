"""Drift of a batch from the training data: PSI, and the checks a retrain applies."""

import pytest
from tokenizers import Tokenizer

from components.data.drift import drift, profile, psi
from components.text.tokenizer import train_tokenizer
from tests.support.data import LABELS, drifted_batch, good_batch, tiny_frame
from tests.support.params import shipped


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(tiny_frame()["text"], shipped("tokenize", vocab_size=300, min_frequency=1))


def test_psi_is_zero_for_equal_shares_and_grows_with_shift():
    shares = {label: 0.2 for label in LABELS}
    assert psi(shares, shares) == pytest.approx(0.0)
    assert psi(shares, {"tech": 1.0}) > 5


def test_drift_passes_a_batch_like_the_training_data_and_flags_a_shifted_one(tokenizer):
    reference = profile(tiny_frame(), tokenizer)
    assert not drift(reference, good_batch(), tokenizer, shipped("retrain.drift")).failed
    failed = {c.name for c in drift(reference, drifted_batch(), tokenizer, shipped("retrain.drift")).failed}
    assert failed == {"labels", "length", "vocabulary"}
