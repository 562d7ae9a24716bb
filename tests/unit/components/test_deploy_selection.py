"""Choosing the candidate to ship on val: budgets, ties within the interval, a pinned
family, and candidates that learned nothing left out."""

import pytest

from components.deploy.selection import Measured, choose, learned
from components.errors import KilnError

TRUTH = [i % 4 for i in range(200)]


def predictions(wrong: int) -> list[int]:
    """TRUTH with the first `wrong` texts mislabelled."""
    return [(t + 1) % 4 if i < wrong else t for i, t in enumerate(TRUTH)]


def pick(measured, family="any", latency=50.0, size=10.0):
    return choose(TRUTH, measured, family, latency, size, resamples=1000, seed=0)


def test_the_best_on_val_wins_when_clearly_better():
    measured = {
        "onnx_int8": Measured("transformer", predictions(2), 1.0, 1.2),
        "classical": Measured("classical", predictions(40), 0.5, 0.9),
    }
    choice = pick(measured)
    assert choice.selected == "onnx_int8" and "the best on val" in choice.reason
    assert not choice.candidates["classical"].tied_with_best


def test_a_tie_within_the_interval_goes_to_the_smaller_model():
    # 2 and 3 wrong of 200: a difference no val split of this size can resolve.
    measured = {
        "onnx_teacher": Measured("transformer", predictions(2), 9.0, 15.0),
        "onnx_int8": Measured("transformer", predictions(3), 1.0, 1.2),
    }
    choice = pick(measured, size=20.0)
    assert choice.selected == "onnx_int8"
    assert "tied with the best, onnx_teacher" in choice.reason and "smaller (1.20 MB against 15.00 MB)" in choice.reason


def test_budgets_and_a_pinned_family_are_respected():
    measured = {
        "onnx_teacher": Measured("transformer", predictions(0), 60.0, 15.0),
        "onnx_int8": Measured("transformer", predictions(30), 1.0, 1.2),
        "classical": Measured("classical", predictions(10), 0.5, 0.9),
    }
    assert pick(measured).selected == "classical"  # the teacher is over both budgets
    assert not pick(measured).candidates["onnx_teacher"].within_budgets
    pinned = pick(measured, family="transformer")
    assert pinned.selected == "onnx_int8" and "select.family pins the transformer family" in pinned.reason
    with pytest.raises(ValueError, match="no candidate of family classical"):
        choose(TRUTH, {"onnx_int8": measured["onnx_int8"]}, "classical", 50.0, 10.0, 1000, 0)


NAMES = ["a", "b", "c", "d"]


def keep_learned(measured, family="any"):
    return learned(TRUTH, measured, NAMES, "a", family, resamples=1000, seed=0)


def test_a_candidate_that_learned_nothing_is_left_out_with_the_reason():
    measured = {
        "onnx_int8": Measured("transformer", [0] * 200, 1.0, 1.2),  # always 'a', the commonest train label
        "classical": Measured("classical", predictions(40), 0.5, 0.9),
    }
    kept, excluded = keep_learned(measured)
    assert list(kept) == ["classical"]
    assert excluded == {
        "onnx_int8": "learned nothing: val macro-F1 0.100 vs 0.100 for always 'a' (difference +0.000 [+0.000, +0.000])"
    }
    assert pick(kept).selected == "classical"


def test_select_ships_nothing_when_no_candidate_learned_anything():
    measured = {
        "onnx_int8": Measured("transformer", [0] * 200, 1.0, 1.2),
        "classical": Measured("classical", [1] * 200, 0.5, 0.9),
    }
    with pytest.raises(KilnError) as refused:
        keep_learned(measured)
    assert str(refused.value) == (
        "select: no candidate learned anything: none beats always 'a' on val (macro-F1 0.100) beyond the noise of "
        "200 texts (onnx_int8 0.100, classical 0.100); nothing is shipped"
    )
    # A pinned family whose candidates all learned nothing ships nothing either.
    measured["classical"] = Measured("classical", predictions(40), 0.5, 0.9)
    with pytest.raises(KilnError, match=r"no transformer candidate \(select.family pins that family\) learned"):
        keep_learned(measured, family="transformer")
