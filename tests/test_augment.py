import random

import pandas as pd
import pytest

from components.data.augment import AugmentConfig, Augmenter, augment
from tests.conftest import tiny_frame


@pytest.fixture
def train() -> pd.DataFrame:
    return tiny_frame(4).assign(id=lambda f: [f"t{i}" for i in range(len(f))], source="file")


def test_seeded_and_order_independent(train):
    cfg = AugmentConfig(factor=2)
    a = augment(train, cfg)
    b = augment(train.iloc[::-1], cfg).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a.sort_values("id").reset_index(drop=True), b)
    assert len(a) == 2 * len(train)
    assert set(a["origin_id"]) == set(train["id"])


def test_inserted_words_come_from_the_given_texts(train):
    vocabulary = {w for t in train["text"] for w in t.split()}
    out = augment(train, AugmentConfig(factor=3, ops=["insert"], alpha=0.5))
    assert {w for t in out["text"] for w in t.split()} <= vocabulary


def test_each_op():
    words = "one two three four five six seven eight nine ten".split()
    aug = Augmenter(AugmentConfig(alpha=0.3), tuple(["extra"]))
    rng = random.Random(0)
    assert len(aug.delete(words, rng)) < len(words)
    swapped = aug.swap(words, rng)
    assert sorted(swapped) == sorted(words) and swapped != words
    assert aug.insert(words, rng).count("extra") == 3
    masked = aug.mask(words, random.Random(1))
    assert "[MASK]" in masked and len(masked) == len(words)


def test_factor_zero(train):
    assert augment(train, AugmentConfig(factor=0)).empty
