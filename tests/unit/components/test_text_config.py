"""The text models' config: a bad value is refused, naming it."""

import pytest
from pydantic import ValidationError

from tests.support.params import shipped


def test_heads_must_divide_hidden():
    with pytest.raises(ValidationError, match=r"heads \(3\) must divide hidden \(32\)"):
        shipped("encoder", hidden=32, heads=3)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ValidationError, match="lr"):
        shipped("finetune.optim", lr=-1e-3)
