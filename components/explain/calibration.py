"""How far a model's confidence is from its accuracy: expected calibration error (ECE)
over equal-width confidence bins, the reliability diagram's data, and temperature scaling
(Guo et al., 2017) fitted on val.

Confidence is the top label's probability. A text falls in bin m of M when its confidence
lies in ((m-1)/M, m/M]; ECE is the mean over bins of |accuracy - mean confidence|,
weighted by the share of texts in each bin.

Temperature scaling divides every logit by one T > 0: the predicted labels stay, only
the probabilities sharpen (T < 1) or soften (T > 1). T minimises val's negative
log-likelihood; that is a convex problem in 1/T, solved by bounded Brent search, which is
deterministic. The fitted T is worth serving only if it lowers val's ECE: NLL and ECE can
disagree, and a temperature that does not help on val must not be shipped on faith. Nor
is one at the search's bound: when the model labels every val text right, NLL falls
without end as T goes to 0, and such a T would make serving certain of everything.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# Where 1/T is searched: temperatures 0.01 to 100, far past any seen in practice (Guo et
# al. report 1 to 3 for overconfident networks).
_INVERSE_BOUNDS = (0.01, 100.0)


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    confidence: float  # mean top probability of the bin's texts (0 when empty)
    accuracy: float  # share of them labelled right (0 when empty)


@dataclass(frozen=True)
class Reliability:
    ece: float
    bins: list[Bin]


@dataclass(frozen=True)
class Calibration:
    """The shipped model's calibration on test, and the temperature chosen on val."""

    fitted_temperature: float  # minimises val NLL
    temperature: float  # what serving divides logits by: the fitted one if it lowers val ECE, else 1
    val_ece: float  # at T = 1
    val_ece_scaled: float  # at the fitted T
    test: Reliability  # at T = 1
    test_scaled: Reliability  # at the fitted T

    @property
    def applied(self) -> bool:
        return self.temperature != 1.0

    @property
    def served(self) -> Reliability:
        """Test as the served model answers: at the temperature serving divides by."""
        return self.test_scaled if self.applied else self.test


def _checked(probabilities: np.ndarray, truth: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probabilities, float), np.asarray(truth, dtype=np.int64)
    if p.ndim != 2 or y.shape != (len(p),) or not len(p):
        raise ValueError(f"expected [texts, labels] probabilities and one label id a text, got {p.shape} and {y.shape}")
    return p, y


def reliability(probabilities: np.ndarray, truth: Sequence[int], bins: int) -> Reliability:
    p, y = _checked(probabilities, truth)
    confidence, correct = p.max(-1), (p.argmax(-1) == y).astype(float)
    # ((m-1)/M, m/M] is bin m-1; a confidence of exactly 0 cannot occur (it is at least 1/labels).
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=confidence, minlength=bins), np.bincount(index, weights=correct, minlength=bins)
    mean_confidence, accuracy = (np.divide(s, counts, out=np.zeros(bins), where=counts > 0) for s in sums)
    ece = float((counts * np.abs(accuracy - mean_confidence)).sum() / len(p))
    return Reliability(
        ece,
        [
            Bin(m / bins, (m + 1) / bins, int(counts[m]), float(mean_confidence[m]), float(accuracy[m]))
            for m in range(bins)
        ],
    )


def ece(probabilities: np.ndarray, truth: Sequence[int], bins: int) -> float:
    return reliability(probabilities, truth, bins).ece


def fit_temperature(logits: np.ndarray, truth: Sequence[int]) -> float:
    """The T > 0 that minimises the mean negative log-likelihood of softmax(logits / T)."""
    z, y = _checked(logits, truth)

    def nll(inverse: float) -> float:
        return float(-log_softmax(z * inverse, axis=-1)[np.arange(len(y)), y].mean())

    found = minimize_scalar(nll, bounds=_INVERSE_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(1.0 / found.x)


def calibrate(
    val_logits: np.ndarray, val_truth: Sequence[int], test_logits: np.ndarray, test_truth: Sequence[int], bins: int
) -> Calibration:
    """Fit T on val; keep it only if it lowers val's ECE; report test before and after."""
    fitted = fit_temperature(val_logits, val_truth)
    before = ece(softmax(np.asarray(val_logits, float), axis=-1), val_truth, bins)
    after = ece(softmax(np.asarray(val_logits, float) / fitted, axis=-1), val_truth, bins)
    bounded = not 1.001 / _INVERSE_BOUNDS[1] < fitted < 0.999 / _INVERSE_BOUNDS[0]
    return Calibration(
        fitted_temperature=fitted,
        temperature=fitted if after < before and not bounded else 1.0,
        val_ece=before,
        val_ece_scaled=after,
        test=reliability(softmax(np.asarray(test_logits, float), axis=-1), test_truth, bins),
        test_scaled=reliability(softmax(np.asarray(test_logits, float) / fitted, axis=-1), test_truth, bins),
    )
