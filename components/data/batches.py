"""Whether a new batch of labelled rows may join the dataset.

A batch is accepted only whole: it must read as a dataset file, hold rows the dataset
does not have yet, use only known labels, leave the dataset passing its expectation
suite, and not drift from the data the champion was trained on.
"""

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

from components.data.drift import DriftConfig, DriftReport, Profile, drift
from components.data.sources import FileSourceConfig, append_new, read_file
from components.data.validation import ValidateConfig, validate
from components.errors import KilnError


class BatchOutcome(BaseModel):
    """What was found about one batch file: the report written beside a quarantined batch
    and the row of the retrain summary."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    batch: str  # the file's name
    path: Path = Field(exclude=True)
    accepted: bool = True
    reasons: list[str] = []
    rows: int = 0
    new_rows: int = 0
    duplicates_dropped: int = 0
    readable: bool = True
    validation: dict[str, Any] | None = None  # the suite's report on the dataset with the batch
    drift: DriftReport | None = None
    note: str | None = None
    # The rows the dataset does not hold yet.
    fresh: pd.DataFrame | None = Field(None, exclude=True)

    @property
    def summary(self) -> str:
        verdict = "accepted" if self.accepted else "quarantined"
        return f"{self.batch}: {verdict}, {self.new_rows} new of {self.rows} rows" + (
            "" if self.accepted else " (" + "; ".join(self.reasons) + ")")

    def reject(self, *reasons: str) -> "BatchOutcome":
        self.reasons += reasons
        self.accepted = not self.reasons
        return self


def check(path: Path, dataset: pd.DataFrame, file_cfg: FileSourceConfig, validate_cfg: ValidateConfig,
          reference: Profile | None, tokenizer: Tokenizer | None, drift_cfg: DriftConfig) -> BatchOutcome:
    """Check one batch file against `dataset` (everything learned so far). No reference
    (no champion yet) skips the drift checks, and the report says so."""
    try:
        batch = read_file(path, file_cfg, f"batch:{path.name}")
    except KilnError as err:
        return BatchOutcome(batch=path.name, path=path, readable=False).reject(str(err).removeprefix("ingest: "))
    outcome = BatchOutcome(batch=path.name, path=path, rows=len(batch))
    known = set(validate_cfg.labels) | (set(reference.label_shares) if reference else set())
    unknown = batch[~batch["label"].isin(known)]
    if len(unknown):
        labels = ", ".join(repr(v) for v in sorted(unknown["label"].astype(str).unique())[:5])
        rows = ", ".join(unknown["id"].head(3))
        outcome.reject(f"unknown label(s) {labels} in {len(unknown)} row(s), e.g. {rows}; "
                       f"known labels: {', '.join(sorted(known))}")
    combined = append_new(dataset, batch)
    outcome.fresh = fresh = combined.iloc[len(dataset):]
    outcome.new_rows, outcome.duplicates_dropped = len(fresh), len(batch) - len(fresh)
    if not outcome.accepted:
        return outcome
    if fresh.empty:
        outcome.note = "every row is already in the dataset"
        return outcome
    validation = validate(combined, validate_cfg)
    outcome.validation = validation.report
    outcome.reject(*(f"validation: {line}" for line in validation.failures))
    if not validation.quarantined.empty:
        # Rows the suite sets aside would be dropped silently from a batch someone sent
        # on purpose; the sender should fix and resend them.
        mine = validation.quarantined[validation.quarantined["id"].isin(fresh["id"])]
        if len(mine):
            outcome.reject(f"validation: {len(mine)} row(s) break row expectations, e.g. "
                           + ", ".join(f"{r.id} ({r.reason})" for r in mine.head(3).itertuples()))
    if reference is None or tokenizer is None:
        outcome.drift = DriftReport(skipped="no champion to compare with")
    else:
        outcome.drift = drift(reference, fresh, tokenizer, drift_cfg)
        outcome.reject(*(f"drift: {c.detail}" for c in outcome.drift.failed))
    return outcome
