"""Drift of a new batch against the data the champion was trained on.

The reference is a `Profile` of the champion's training split, saved beside the model
when it was registered: label shares, text lengths and the out-of-vocabulary share under
its tokenizer. A batch drifts when any of three checks crosses its threshold:

- labels: population stability index (PSI) of the label shares; 0.25 is the usual
  "significant shift" mark.
- length: two-sample Kolmogorov-Smirnov test on text lengths in characters. Both the
  statistic and its p-value must cross: a large batch makes any tiny shift significant,
  and a small batch makes a large statistic likely by chance.
- vocabulary: the share of words the tokenizer does not hold whole, against the same
  share on the training data.
"""

import math
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

# Shares of zero would make PSI infinite; a label a batch lacks counts as this share.
_EPSILON = 1e-4


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_label_psi: float = Field(gt=0, description="largest PSI of the label shares")
    max_length_ks: float = Field(gt=0, le=1, description="largest KS statistic of text lengths")
    length_alpha: float = Field(gt=0, lt=1, description="the KS shift must also be significant at this level")
    max_oov_increase: float = Field(ge=0, le=1, description="largest rise of the out-of-vocabulary word share")


@dataclass
class Profile:
    """What drift needs to know about a training set."""

    rows: int
    label_shares: dict[str, float]
    lengths: list[int]
    oov_share: float
    # The served model's mean top probability on val: what `kiln monitor` compares live
    # traffic's with. None in the profiles of versions registered before it was kept.
    confidence: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        return cls(
            rows=int(data["rows"]),
            label_shares={str(k): float(v) for k, v in data["label_shares"].items()},
            lengths=[int(n) for n in data["lengths"]],
            oov_share=float(data["oov_share"]),
            confidence=float(data["confidence"]) if data.get("confidence") is not None else None,
        )


class DriftCheck(BaseModel):
    name: Literal["labels", "length", "vocabulary", "predictions", "confidence"]
    value: float
    threshold: float
    passed: bool
    detail: str


class DriftReport(BaseModel):
    """The three checks of a batch, or why none ran (no champion to compare with)."""

    skipped: str | None = None
    checks: list[DriftCheck] = []

    @property
    def failed(self) -> list[DriftCheck]:
        return [check for check in self.checks if not check.passed]


def oov_share(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Share of words (after the tokenizer's own normalisation and pre-tokenisation) that
    are not one vocabulary entry, so WordPiece must split them or call them [UNK]."""
    total = missing = 0
    for text in texts:
        normalised = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
        words = (
            tokenizer.pre_tokenizer.pre_tokenize_str(normalised)
            if tokenizer.pre_tokenizer
            else [(w, None) for w in normalised.split()]
        )
        total += len(words)
        missing += sum(tokenizer.token_to_id(word) is None for word, _ in words)
    return missing / total if total else 0.0


def profile(frame: pd.DataFrame, tokenizer: Tokenizer) -> Profile:
    texts = frame["text"].astype(str).tolist()
    shares = frame["label"].value_counts(normalize=True).sort_index()
    return Profile(
        rows=len(frame),
        label_shares={str(k): float(v) for k, v in shares.items()},
        lengths=[len(t) for t in texts],
        oov_share=oov_share(tokenizer, texts),
    )


def psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    total = 0.0
    for label in sorted(set(expected) | set(actual)):
        e, a = max(expected.get(label, 0.0), _EPSILON), max(actual.get(label, 0.0), _EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def label_check(reference: dict[str, float], shares: dict[str, float], cfg: DriftConfig, name="labels") -> DriftCheck:
    value = psi(reference, shares)
    what = "label" if name == "labels" else "predicted label"
    return DriftCheck(
        name=name,
        value=value,
        threshold=cfg.max_label_psi,
        passed=value <= cfg.max_label_psi,
        detail=f"{what} PSI {value:.3f} (limit {cfg.max_label_psi}); shares "
        + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
    )


def length_check(reference: list[int], lengths: list[int], cfg: DriftConfig) -> DriftCheck:
    from scipy.stats import ks_2samp

    ks = ks_2samp(reference, lengths)
    ref_median, median = pd.Series(reference).median(), pd.Series(lengths).median()
    return DriftCheck(
        name="length",
        value=float(ks.statistic),
        threshold=cfg.max_length_ks,
        passed=not (ks.statistic > cfg.max_length_ks and ks.pvalue < cfg.length_alpha),
        detail=f"text length KS {ks.statistic:.3f} (limit {cfg.max_length_ks}), p={ks.pvalue:.2g}; "
        f"median {median:.0f} chars vs {ref_median:.0f} in training",
    )


def vocabulary_check(reference: float, share: float, cfg: DriftConfig) -> DriftCheck:
    rise = share - reference
    return DriftCheck(
        name="vocabulary",
        value=rise,
        threshold=cfg.max_oov_increase,
        passed=rise <= cfg.max_oov_increase,
        detail=f"out-of-vocabulary words {share:.1%} vs {reference:.1%} in training "
        f"(rise limit {cfg.max_oov_increase:.0%})",
    )


def drift(reference: Profile, batch: pd.DataFrame, tokenizer: Tokenizer, cfg: DriftConfig) -> DriftReport:
    """The three checks of `batch` against `reference`; the batch drifted if any failed."""
    current = profile(batch, tokenizer)
    return DriftReport(
        checks=[
            label_check(reference.label_shares, current.label_shares, cfg),
            length_check(reference.lengths, current.lengths, cfg),
            vocabulary_check(reference.oov_share, current.oov_share, cfg),
        ]
    )
