"""Uncertainty for compared numbers: bootstrap intervals of accuracy and macro-F1 over
test texts, a paired comparison of two models on the same texts (a bootstrap interval of
their macro-F1 difference and an exact McNemar test), and how many test texts a wanted
precision would take.

Intervals are percentile intervals over resamples of the test texts. Macro-F1 averages
over the labels that occur in a (re)sample's truth or predictions, as scikit-learn's
`f1_score(average="macro")` does when given no `labels`: it equals
`evaluation.quality`'s macro-F1 whenever every label occurs in the test split, and a
rare label missing from one resample is left out of that resample rather than scored 0.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# Draws per block of resamples: bounds memory (two arrays of 8 bytes a draw) whatever
# the test size.
BLOCK = 1 << 22


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Comparison:
    """Model a against model b on the same texts."""

    macro_f1_difference: Interval  # a minus b
    a_only: int  # texts a labels right and b wrong
    b_only: int  # texts b labels right and a wrong
    mcnemar_p: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def bootstrap(
    truth: Sequence[int], predicted: Sequence[int], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Interval]:
    """{"accuracy": ..., "macro_f1": ...}: each point estimate with its percentile interval."""
    y, p = _arrays(truth, predicted)
    labels = int(max(y.max(), p.max())) + 1
    correct = (y == p).astype(float)
    accuracy, macro_f1 = [], []
    for weights in _weights(len(y), resamples, seed):
        accuracy.append(weights @ correct / len(y))
        macro_f1.append(_macro_f1(weights, y, p, labels))
    return {
        "accuracy": _interval(float(correct.mean()), np.concatenate(accuracy), level),
        "macro_f1": _interval(float(_macro_f1(np.ones((1, len(y))), y, p, labels)[0]), np.concatenate(macro_f1), level),
    }


def paired(
    truth: Sequence[int], a: Sequence[int], b: Sequence[int], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> Comparison:
    """Macro-F1 of a minus that of b, each resample scoring both models on the same
    texts, so what the texts share cancels out; plus McNemar's test on the texts where
    exactly one of the two is right."""
    y, pa, pb = _arrays(truth, a, b)
    labels = int(max(y.max(), pa.max(), pb.max())) + 1
    differences = np.concatenate(
        [_macro_f1(w, y, pa, labels) - _macro_f1(w, y, pb, labels) for w in _weights(len(y), resamples, seed)]
    )
    everyone = np.ones((1, len(y)))
    estimate = float(_macro_f1(everyone, y, pa, labels)[0] - _macro_f1(everyone, y, pb, labels)[0])
    a_only, b_only = int(((pa == y) & (pb != y)).sum()), int(((pb == y) & (pa != y)).sum())
    return Comparison(_interval(estimate, differences, level), a_only, b_only, mcnemar(a_only, b_only))


def mcnemar(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value. If the two models were equally good, each
    discordant text would be a fair coin's toss between them: twice the smaller
    binomial tail, at most 1."""
    # Imported here: scipy.stats takes ~2 s to import, and every command that reads a
    # promotion decision imports this module without ever testing anything.
    from scipy.stats import binom

    n = a_only + b_only
    if n == 0:
        return 1.0
    return min(1.0, 2 * float(binom.cdf(min(a_only, b_only), n, 0.5)))


def texts_needed(half_width: float, texts: int, tolerance: float) -> int:
    """Roughly how many test texts would narrow an interval of `half_width`, measured on
    `texts` texts, to a half-width of `tolerance`. Assumes the half-width shrinks as
    1/sqrt(texts), the central-limit rate, with the models' per-text successes and
    failures as frequent as observed: a guide for sizing a test set, not a power analysis."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    return math.ceil(texts * (half_width / tolerance) ** 2)


def _arrays(*columns: Sequence[int]) -> list[np.ndarray]:
    arrays = [np.asarray(column, dtype=np.int64) for column in columns]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or not arrays[0].size:
        raise ValueError(f"expected label ids of equal, non-zero length, got shapes {[a.shape for a in arrays]}")
    if min(a.min() for a in arrays) < 0:
        raise ValueError("label ids must be non-negative")
    return arrays


def _weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of n texts is drawn in each resample (rows), a block of rows at a
    time; the blocks follow one seeded stream."""
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // n)
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        drawn = rng.integers(0, n, size=(count, n)) + n * np.arange(count)[:, None]
        yield np.bincount(drawn.ravel(), minlength=count * n).reshape(count, n).astype(float)


def _macro_f1(weights: np.ndarray, truth: np.ndarray, predicted: np.ndarray, labels: int) -> np.ndarray:
    """Macro-F1 for each row of `weights` (how often each text counts)."""
    truth_hot, predicted_hot = np.eye(labels)[truth], np.eye(labels)[predicted]
    hits = weights @ (truth_hot * predicted_hot)
    # 2TP + FP + FN: the label's true texts plus its predicted ones.
    denominator = weights @ truth_hot + weights @ predicted_hot
    present = denominator > 0
    f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def _interval(estimate: float, values: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high))


def seeded_sample(items: Sequence, k: int, seed: int) -> list:
    """`k` of `items` drawn with `seed`, in their order; all of them when there are no more."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), k, replace=False))]
