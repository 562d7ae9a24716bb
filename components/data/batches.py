"""Whether a new batch of labelled rows may join the dataset.

A batch is accepted only whole: it must read as a dataset file, hold rows the dataset
does not have yet, use only known labels, leave the dataset passing its expectation
suite, and not drift from the data the champion was trained on.
"""

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

from components.data.drift import DriftConfig, DriftReport, Profile, drift
from components.data.sources import FileSourceConfig, append_new, read_file
from components.data.validation import ValidateConfig, validate
from components.errors import KilnError


class Finding(BaseModel):
    """One reason a batch was refused, told without a value of the batch: its kind, the
    check, how many rows and a few row ids. What the audit trail keeps; the matching line
    of `reasons` may quote texts and labels, for whoever fixes the batch."""

    kind: Literal["unreadable", "unknown-label", "validation", "drift"]
    check: str | None = None  # the expectation or drift check that failed
    rows: int | None = None
    ids: list[str] = []


class BatchOutcome(BaseModel):
    """What was found about one batch file: the report written beside a quarantined batch
    and the row of the retrain summary."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    batch: str  # the file's name
    path: Path = Field(exclude=True)
    accepted: bool = True
    reasons: list[str] = []
    findings: list[Finding] = []
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
            "" if self.accepted else " (" + "; ".join(self.reasons) + ")"
        )

    def reject(self, findings: list[Finding], *reasons: str) -> "BatchOutcome":
        """Refuse the batch for `reasons`, which `findings` tell without the batch's values."""
        if reasons:
            self.reasons += reasons
            self.findings += findings
        self.accepted = not self.reasons
        return self


def check(
    path: Path,
    dataset: pd.DataFrame,
    file_cfg: FileSourceConfig,
    validate_cfg: ValidateConfig,
    reference: Profile | None,
    tokenizer: Tokenizer | None,
    drift_cfg: DriftConfig,
    no_drift: str | None = None,
) -> BatchOutcome:
    """Check one batch file against `dataset` (everything learned so far). No reference
    (no champion yet), or a reason in `no_drift`, skips the drift checks, and the report
    says so."""
    try:
        batch = read_file(path, file_cfg, f"batch:{path.name}")
    except KilnError as err:
        # The message may quote the file (its first row, read as a header): the finding does not.
        return BatchOutcome(batch=path.name, path=path, readable=False).reject(
            [Finding(kind="unreadable")], str(err).removeprefix("ingest: ")
        )
    outcome = BatchOutcome(batch=path.name, path=path, rows=len(batch))
    _check_labels(outcome, batch, set(validate_cfg.labels) | (set(reference.label_shares) if reference else set()))
    combined = append_new(dataset, batch)
    outcome.fresh = fresh = combined.iloc[len(dataset) :]
    outcome.new_rows, outcome.duplicates_dropped = len(fresh), len(batch) - len(fresh)
    if not outcome.accepted:
        return outcome
    if fresh.empty:
        outcome.note = "every row is already in the dataset"
        return outcome
    _check_validation(outcome, combined, validate_cfg)
    if no_drift is not None:
        outcome.drift = DriftReport(skipped=no_drift)
    elif reference is None or tokenizer is None:
        outcome.drift = DriftReport(skipped="no champion to compare with")
    else:
        outcome.drift = drift(reference, fresh, tokenizer, drift_cfg)
        outcome.reject(
            [Finding(kind="drift", check=c.name) for c in outcome.drift.failed],
            *(f"drift: {c.detail}" for c in outcome.drift.failed),
        )
    return outcome


def _check_labels(outcome: BatchOutcome, batch: pd.DataFrame, known: set[str]) -> None:
    """Refuse a batch with a label that is neither validate's nor the champion's."""
    unknown = batch[~batch["label"].isin(known)]
    if len(unknown):
        labels = ", ".join(repr(v) for v in sorted(unknown["label"].astype(str).unique())[:5])
        ids = list(unknown["id"].head(3))
        outcome.reject(
            [Finding(kind="unknown-label", rows=len(unknown), ids=ids)],
            f"unknown label(s) {labels} in {len(unknown)} row(s), e.g. {', '.join(ids)}; "
            f"known labels: {', '.join(sorted(known))}",
        )


def _check_validation(outcome: BatchOutcome, combined: pd.DataFrame, cfg: ValidateConfig) -> None:
    """Refuse a batch that leaves the dataset (`combined`, with the batch's new rows)
    failing the suite, or whose own rows the suite would set aside."""
    validation = validate(combined, cfg)
    outcome.validation = validation.report
    failed = [e for e in validation.report["expectations"] if not e["success"]]
    outcome.reject(
        [
            Finding(
                kind="validation", check=e["expectation"], rows=e.get("unexpected_count"), ids=e.get("sample_ids", [])
            )
            for e in failed
        ],
        *(f"validation: {line}" for line in validation.failures),
    )
    if not validation.quarantined.empty:
        # Rows the suite sets aside would be dropped silently from a batch someone sent
        # on purpose; the sender should fix and resend them.
        mine = validation.quarantined[validation.quarantined["id"].isin(outcome.fresh["id"])]
        if len(mine):
            broken = "; ".join(sorted({name for reason in mine["reason"] for name in reason.split("; ")}))
            outcome.reject(
                [Finding(kind="validation", check=broken, rows=len(mine), ids=list(mine["id"].head(3)))],
                f"validation: {len(mine)} row(s) break row expectations, e.g. "
                + ", ".join(f"{r.id} ({r.reason})" for r in mine.head(3).itertuples()),
            )
