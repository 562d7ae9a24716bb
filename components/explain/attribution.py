"""What an explanation is, whichever model family made it: a text's words, each with its
share of the score the model gave one label.

Words are the text's units (components.data.augment.units): whitespace words in spaced
scripts, graphemes in Chinese, Japanese and Thai, so a Chinese text is explained character
by character rather than as one "word". A model scores pieces of its own (word pieces,
n-grams of characters or words), located by character spans; each piece's score is spread
evenly over its characters, and each character belongs to the unit it is part of, or, for
whitespace, to the unit before it. Every piece's score so lands on some unit, and the
words' scores add up to what the pieces' do.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components.data.augment import units
from components.errors import KilnError


@dataclass(frozen=True)
class Word:
    text: str  # the unit as `units` gives it (`join` of a text's words rebuilds the text)
    start: int  # the unit's characters in the explained text: text[start:end]
    end: int
    score: float  # positive: speaks for the explained label
    read: bool = True  # False past the model's token limit: the model never saw it, so its score is 0

    def to_dict(self) -> dict:
        return {"word": self.text, "start": self.start, "end": self.end, "score": self.score, "read": self.read}


@dataclass(frozen=True)
class Explanation:
    """Why a model gave `label` to `text`.

    `score` is what the words' scores share: the logit of `label` less the mean logit
    (components/explain/transformer.py says why; the linear family's logits are centred
    already). `base` is the score with no words (the all-[PAD] sequence's; the
    intercept), so the word scores sum to score - base, up to `delta`: Integrated
    Gradients' convergence error, which shrinks with more steps (float rounding for the
    linear family)."""

    text: str
    label: str
    probability: float  # the model's probability of `label`
    predicted: str  # the label the model gives the text (`label` too, unless another was asked for)
    score: float
    base: float
    words: tuple[Word, ...]

    @property
    def delta(self) -> float:
        return sum(word.score for word in self.words) - (self.score - self.base)

    def top(self, k: int) -> list[Word]:
        """The k read words with the highest scores, the strongest first."""
        return sorted((w for w in self.words if w.read), key=lambda w: -w.score)[:k]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probability": self.probability,
            "predicted": self.predicted,
            "score": self.score,
            "base": self.base,
            "delta": self.delta,
            "words": [word.to_dict() for word in self.words],
        }


def spans(text: str) -> list[tuple[str, int, int]]:
    """Each unit of `text` with its character span. `units` may give an unspaced unit the
    space before it (see its docstring); the span covers the unit's own characters."""
    out: list[tuple[str, int, int]] = []
    at = 0
    for unit in units(text):
        start = text.index(unit.lstrip(" "), at)
        at = start + len(unit.lstrip(" "))
        out.append((unit, start, at))
    return out


def to_words(
    text: str, pieces: Sequence[tuple[int, int]], scores: Sequence[float], read_until: int | None = None
) -> tuple[Word, ...]:
    """The units of `text` with the scores of `pieces` (character spans, [start, end))
    summed onto them; units starting at or after `read_until` (where a truncated text was
    cut) are marked unread."""
    found = spans(text)
    if not found:
        return ()
    starts = np.array([start for _, start, _ in found])
    # Each character's unit: the last one starting at or before it; leading whitespace
    # goes to the first unit.
    owner = np.clip(np.searchsorted(starts, np.arange(len(text)), side="right") - 1, 0, None)
    bounds = np.asarray(pieces, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(scores, dtype=float)
    width = bounds[:, 1] - bounds[:, 0]
    bounds, values, width = bounds[width > 0], values[width > 0], width[width > 0]
    # A piece adds score / width to each of its characters: added at its start and taken
    # off at its end, then summed along the text.
    steps = np.zeros(len(text) + 1)
    np.add.at(steps, bounds[:, 0], values / width)
    np.add.at(steps, bounds[:, 1], -values / width)
    per_char = np.cumsum(steps)[:-1]
    totals = np.bincount(owner, weights=per_char, minlength=len(found))
    cut = len(text) if read_until is None else read_until
    return tuple(Word(unit, start, end, float(total), start < cut) for (unit, start, end), total in zip(found, totals))


def target_ids(labels: list[str], texts: Sequence[str], targets: Sequence[str] | None) -> list[int] | None:
    """The indices of the labels asked to be explained, one per text; None: the predicted ones."""
    if targets is None:
        return None
    if len(targets) != len(texts):
        raise KilnError(f"explain: {len(targets)} target labels for {len(texts)} texts")
    unknown = sorted(set(targets) - set(labels))
    if unknown:
        raise KilnError(f"explain: target labels {unknown} are not the model's ({labels})")
    return [labels.index(t) for t in targets]
