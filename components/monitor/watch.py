"""Whether the champion still fits what it is asked: a window of its logged traffic
against the data it was trained on (the profile register saved beside it).

The checks are retrain's drift checks (components/data/drift.py), read on traffic:
- predictions: PSI of the predicted label shares against the training label shares
  (traffic has no labels; a shift in what the model answers is the sign of one in what
  it is asked, or of the model going wrong on it);
- length: KS test of text lengths (kept whatever `serve.log_text` is);
- vocabulary: rise of the share of words the champion's tokenizer lacks (masked texts
  only: a hashed log cannot say);
- confidence: fall of the mean top probability against the champion's own on val.
"""

from datetime import datetime

import pandas as pd
from pydantic import BaseModel
from tokenizers import Tokenizer

from components.data.drift import DriftCheck, Profile, label_check, length_check, oov_share, vocabulary_check
from components.monitor.config import MonitorConfig


class MonitorReport(BaseModel):
    """One look at a window of traffic: its checks, or why there was no verdict."""

    model: str
    version: str
    start: datetime
    end: datetime
    requests: int  # logged texts in the window answered by this version
    skipped: str | None = None
    notes: list[str] = []  # checks that could not run, and why
    checks: list[DriftCheck] = []
    mean_confidence: float | None = None
    prediction_shares: dict[str, float] = {}

    @property
    def failed(self) -> list[DriftCheck]:
        return [check for check in self.checks if not check.passed]

    @property
    def headline(self) -> str:
        window = f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        where = f"{self.model} v{self.version}, {self.requests} texts from {window}"
        if self.skipped:
            return f"no verdict on {where}: {self.skipped}"
        if self.failed:
            return f"drift in {where}: " + "; ".join(check.detail for check in self.failed)
        return f"no drift in {where} ({len(self.checks)} checks passed)"


def watch(
    traffic: pd.DataFrame,
    reference: Profile,
    tokenizer: Tokenizer,
    cfg: MonitorConfig,
    model: str,
    version: str,
    start: datetime,
    end: datetime,
) -> MonitorReport:
    """The checks of `traffic` (inference log rows of this version in the window) against
    the champion's training `reference`."""
    report = MonitorReport(model=model, version=version, start=start, end=end, requests=len(traffic))
    if len(traffic) < cfg.min_requests:
        report.skipped = (
            f"{len(traffic)} logged texts in the window, fewer than monitor.min_requests ({cfg.min_requests})"
        )
        return report
    shares = traffic["label"].value_counts(normalize=True).sort_index()
    report.prediction_shares = {str(k): float(v) for k, v in shares.items()}
    report.mean_confidence = float(traffic["confidence"].mean())
    report.checks = [
        label_check(reference.label_shares, report.prediction_shares, cfg.drift, name="predictions"),
        length_check(reference.lengths, traffic["length"].astype(int).tolist(), cfg.drift),
    ]
    texts = traffic["text"].dropna().astype(str).tolist()
    if len(texts) >= cfg.min_requests:
        report.checks.append(vocabulary_check(reference.oov_share, oov_share(tokenizer, texts), cfg.drift))
    else:
        report.notes.append("vocabulary: the log keeps no texts (serve.log_text is hash or off)")
    if reference.confidence is None:
        report.notes.append(
            f"confidence: version {version}'s profile has no val confidence (registered before it was kept)"
        )
    else:
        drop = reference.confidence - report.mean_confidence
        report.checks.append(
            DriftCheck(
                name="confidence",
                value=drop,
                threshold=cfg.max_confidence_drop,
                passed=drop <= cfg.max_confidence_drop,
                detail=f"mean top probability {report.mean_confidence:.3f} vs {reference.confidence:.3f} on val "
                f"(fall limit {cfg.max_confidence_drop})",
            )
        )
    return report
