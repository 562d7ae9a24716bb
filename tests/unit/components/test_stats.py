"""Bootstrap intervals, the paired comparison, McNemar's test and the test-size guide."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from components.stats import (
    _macro_f1,
    _weights,
    against_majority,
    bootstrap,
    majority_label,
    mcnemar,
    one_text_loss,
    paired,
    texts_needed,
)


def _labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, n)


def test_accuracy_interval_is_the_normal_one_for_a_large_test_set():
    n, resamples = 4000, 2000
    truth = _labels(n)
    predicted = truth.copy()
    predicted[: n // 5] = (truth[: n // 5] + 1) % 4  # accuracy exactly 0.8
    accuracy = bootstrap(truth, predicted, resamples=resamples, seed=0)["accuracy"]
    half = 1.96 * math.sqrt(0.8 * 0.2 / n)  # 0.0124
    # The margin, not luck: each endpoint is a 2.5% quantile of `resamples` draws of
    # Binomial(n, 0.8) / n (sd 0.0063), whose standard error is
    # sqrt(0.025 * 0.975 / resamples) / density = 0.0035 / 9.2 = 0.0004; the normal
    # approximation's own error (skewness -0.024) is under 1e-4 and the grid step 1/n is
    # 0.00025. 0.003 is over 7 standard errors, yet an interval sqrt(2) too wide or too
    # narrow (ends 0.004 to 0.005 off) fails.
    assert accuracy.estimate == 0.8
    assert accuracy.low == pytest.approx(0.8 - half, abs=0.003)
    assert accuracy.high == pytest.approx(0.8 + half, abs=0.003)


def test_perfect_predictions_have_a_zero_width_interval():
    truth = _labels(500)
    scores = bootstrap(truth, truth)
    for interval in scores.values():
        assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_macro_f1_is_scikit_learns_on_the_texts_and_on_each_resample():
    truth = _labels(300)
    rng = np.random.default_rng(1)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 4, 300))
    assert bootstrap(truth, predicted)["macro_f1"].estimate == pytest.approx(
        f1_score(truth, predicted, average="macro")
    )
    weights = next(_weights(300, 5, seed=3))
    for row, f1 in zip(weights, _macro_f1(weights, truth, predicted, 4)):
        drawn = np.repeat(np.arange(300), row.astype(int))
        assert f1 == pytest.approx(f1_score(truth[drawn], predicted[drawn], average="macro"))


def test_identical_models_differ_by_exactly_nothing():
    truth = _labels(400)
    predicted = (truth + (np.arange(400) % 3 == 0)) % 4
    comparison = paired(truth, predicted, predicted)
    interval = comparison.macro_f1_difference
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0) and interval.contains(0.0)
    assert comparison.discordant == 0 and comparison.mcnemar_p == 1.0


def test_a_model_better_on_many_texts_is_better_in_every_resample():
    truth = _labels(1000)
    worse = truth.copy()
    worse[::10] = (truth[::10] + 1) % 4  # wrong on 100 texts where the other is right
    comparison = paired(truth, truth, worse)
    # A resample misses all 100 texts with probability 0.9**1000 (about 1e-46).
    assert comparison.macro_f1_difference.low > 0 and not comparison.macro_f1_difference.contains(0.0)
    assert (comparison.a_only, comparison.b_only, comparison.discordant) == (100, 0, 100)
    assert comparison.mcnemar_p == pytest.approx(2 * 0.5**100)


def test_one_text_loss_is_the_worst_single_change():
    """Against every text moved to every other label (macro-F1 as scikit-learn's, above),
    on small splits that miss labels, predict labels the truth lacks, or get everything
    right or wrong."""
    rng = np.random.default_rng(0)
    for _ in range(150):
        labels, n = int(rng.integers(2, 7)), int(rng.integers(2, 30))
        used = int(rng.integers(2, labels + 1))
        truth = rng.integers(0, used, n)
        predicted = np.where(rng.random(n) < rng.random(), truth, rng.integers(0, used, n))
        everyone = np.ones((1, n))
        before = _macro_f1(everyone, truth, predicted, labels)[0]
        worst = 0.0
        for i in range(n):
            for label in set(range(labels)) - {predicted[i]}:
                moved = predicted.copy()
                moved[i] = label
                worst = max(worst, before - _macro_f1(everyone, truth, moved, labels)[0])
        assert one_text_loss(truth, predicted, labels) == pytest.approx(worst, abs=1e-12), (truth, predicted)


def test_one_text_of_185_is_more_than_half_a_point():
    """The split of issue 25: 185 texts of two labels, all right. One changed prediction
    costs 0.54 points of macro-F1, so a 0.5-point bound asks for less than one text."""
    truth = [0] * 92 + [1] * 93
    assert one_text_loss(truth, truth, 2) == pytest.approx(0.0054, abs=5e-5)


def test_mcnemar_is_scipys_exact_binomial_test():
    for a_only, b_only in [(0, 1), (1, 0), (3, 7), (10, 10), (25, 12), (100, 130), (0, 50), (500, 460)]:
        expected = binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert mcnemar(a_only, b_only) == pytest.approx(expected, rel=1e-9), (a_only, b_only)
    assert mcnemar(0, 0) == 1.0


def test_texts_needed_scales_with_the_square_of_the_precision():
    assert texts_needed(0.04, 500, 0.02) == 2000
    assert texts_needed(0.02, 500, 0.02) == 500
    # Accuracy 0.8: the normal half-width at 1,000 texts is 1.96 * sqrt(0.16 / 1000); a
    # half-width of 0.01 takes 1.96**2 * 0.16 / 0.01**2 = 6146.6 texts.
    assert texts_needed(1.96 * math.sqrt(0.16 / 1000), 1000, 0.01) == 6147
    with pytest.raises(ValueError, match="positive"):
        texts_needed(0.04, 500, 0)


def test_same_seed_same_interval_and_bad_input_refused():
    truth = _labels(200)
    predicted = (truth + (np.arange(200) % 4 == 0)) % 4
    assert bootstrap(truth, predicted, seed=7) == bootstrap(truth, predicted, seed=7)
    with pytest.raises(ValueError, match="equal, non-zero length"):
        bootstrap(truth, predicted[:-1])
    with pytest.raises(ValueError, match="equal, non-zero length"):
        bootstrap([], [])


# 200 reviews, 65/26/9 %: the skew on which a teacher once collapsed to always 'positive'.
REVIEWS = ["positive"] * 130 + ["neutral"] * 52 + ["negative"] * 18


def test_a_model_that_always_says_the_commonest_label_learned_nothing():
    found = against_majority(REVIEWS, ["positive"] * 200, majority_label(REVIEWS))
    assert not found.learned and found.model == found.majority == pytest.approx(2 * 0.65 / 1.65 / 3)
    assert found.reason == "val macro-F1 0.263 vs 0.263 for always 'positive' (difference +0.000 [+0.000, +0.000])"
    # Collapsed onto another label, it is worse than the majority predictor: nothing learned either.
    assert not against_majority(REVIEWS, ["neutral"] * 200, "positive").learned


def test_a_clearly_better_model_learned_something():
    predicted = [label if i % 10 else "negative" for i, label in enumerate(REVIEWS)]  # 90 % right
    found = against_majority(REVIEWS, predicted, "positive")
    assert found.learned and found.difference.low > 0 and found.model > found.majority


def test_a_gain_within_the_noise_is_not_learning():
    # The majority predictor but for one negative review labelled right: above it on these
    # texts, but a resample without that review (about e**-1 of them) shows no difference.
    predicted = ["positive"] * 199 + ["negative"]
    found = against_majority(REVIEWS, predicted, "positive")
    assert found.difference.estimate > 0 and found.difference.low <= 0 and not found.learned


def test_the_majority_label_is_the_commonest_the_first_by_name_when_tied():
    assert majority_label(REVIEWS) == "positive"
    assert majority_label(["b", "a", "c", "b", "a"]) == "a"
