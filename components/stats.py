"""Uncertainty for compared numbers: bootstrap intervals of accuracy and macro-F1 over
test texts, a paired comparison of two models on the same texts (a bootstrap interval of
their macro-F1 difference and an exact McNemar test), whether a model beats the
majority-class predictor (learned anything), how many test texts a wanted
precision would take, and the most macro-F1 one changed prediction can cost on a split.

Intervals are percentile intervals over resamples of the test texts. Macro-F1 averages
over the labels that occur in a (re)sample's truth or predictions, as scikit-learn's
`f1_score(average="macro")` does when given no `labels`: it equals
`evaluation.quality`'s macro-F1 whenever every label occurs in the test split, and a
rare label missing from one resample is left out of that resample rather than scored 0.
"""

import math
from collections import Counter
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


@dataclass(frozen=True)
class AgainstMajority:
    """A model against the majority-class predictor (always the commonest train label) on
    the same val texts: did it learn anything?"""

    model: float  # val macro-F1
    majority: float  # the majority predictor's
    difference: Interval  # model minus majority, paired
    label: str  # the label the majority predictor always says

    @property
    def learned(self) -> bool:
        # A difference the val texts cannot tell from 0 is no evidence of learning.
        return self.difference.low > 0

    @property
    def reason(self) -> str:
        d = self.difference
        return (
            f"val macro-F1 {self.model:.3f} vs {self.majority:.3f} for always '{self.label}' "
            f"(difference {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}])"
        )


def majority_label(train: Sequence[str]) -> str:
    """The commonest label of `train`; of those tied, the first by name."""
    counts = Counter(map(str, train))
    return min(counts, key=lambda label: (-counts[label], label))


def against_majority(
    truth: Sequence[str], predicted: Sequence[str], majority: str, resamples: int = 1000, seed: int = 0
) -> AgainstMajority:
    """`predicted` against always `majority` on the texts of `truth` (label names, not
    ids): the paired 95 % interval of their macro-F1 difference, as `paired` draws it."""
    ids = {name: i for i, name in enumerate(sorted({*map(str, truth), *map(str, predicted), majority}))}
    y, p, m = _arrays([ids[str(t)] for t in truth], [ids[str(q)] for q in predicted], [ids[majority]] * len(truth))
    everyone = np.ones((1, len(y)))
    model, baseline = (float(_macro_f1(everyone, y, x, len(ids))[0]) for x in (p, m))
    return AgainstMajority(model, baseline, paired(y, p, m, resamples, seed).macro_f1_difference, majority)


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


def one_text_loss(truth: Sequence[int], predicted: Sequence[int], labels: int) -> float:
    """The most macro-F1 these predictions can lose when one text's prediction moves to
    another of the model's `labels`: the finest loss a split of these texts can show.
    Macro-F1 is averaged as `bootstrap` averages it, so a label can enter or leave the
    average. Exact, from the per-label counts: one step per label and per distinct
    (truth, wrong prediction) pair, never per text and label."""
    y, p = _arrays(truth, predicted)
    hits = np.bincount(y[y == p], minlength=labels).astype(float)
    # 2TP + FP + FN: the label's true texts plus its predicted ones.
    size = (np.bincount(y, minlength=labels) + np.bincount(p, minlength=labels)).astype(float)
    f1 = np.divide(2 * hits, size, out=np.zeros_like(hits), where=size > 0)
    present = int((size > 0).sum())
    before = f1.sum() / present
    # The F1 a present label loses when it gains one wrong prediction. A text's new label is
    # neither its truth nor its old prediction, so the three worst serve every text.
    hurt = f1 - 2 * hits / (size + 1)
    worst = sorted(np.flatnonzero(size > 0), key=lambda label: -hurt[label])[:3]

    def lowest(total: float, count: int, exclude: set[int]) -> float | None:
        """The lowest macro-F1 once the text has left its old prediction (F1 sum `total`
        over `count` labels): moved to the worst present label, or to an absent one."""
        options = [total / (count + 1)] if present < labels else []
        if (label := next((q for q in worst if q not in exclude), None)) is not None:
            options.append((total - hurt[label]) / count)
        return min(options, default=None)

    # A text predicted right, of label t: t loses a hit (and still counts, as a truth).
    lows = [
        lowest(f1.sum() - f1[t] + 2 * (hits[t] - 1) / (size[t] - 1), present, {t}) for t in np.flatnonzero(hits > 0)
    ]
    # A text of label t predicted wrong, as `old`: `old` loses a false positive.
    for pair in np.unique(y[y != p] * labels + p[y != p]):
        t, old = divmod(int(pair), labels)
        gone = bool(size[old] == 1)  # its only occurrence: the label leaves the average
        left = 0.0 if gone else 2 * hits[old] / (size[old] - 1)
        lows.append(lowest(f1.sum() - f1[old] + left, present - gone, {t, old}))
    return max([0.0] + [float(before - low) for low in lows if low is not None])


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


def stratified_sample(labels: Sequence, k: int, seed: int) -> list[int]:
    """Positions of about `k` of `labels` drawn with `seed`, each label keeping its share
    (at least one), in their order; all of them when there are no more than `k`."""
    if len(labels) <= k:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    where: dict = {}
    for i, label in enumerate(labels):
        where.setdefault(label, []).append(i)
    kept = []
    for label in sorted(where, key=str):
        found = where[label]
        kept += rng.choice(found, max(1, round(len(found) * k / len(labels))), replace=False).tolist()
    return sorted(kept)


def seeded_sample(items: Sequence, k: int, seed: int) -> list:
    """`k` of `items` drawn with `seed`, in their order; all of them when there are no more."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), k, replace=False))]
