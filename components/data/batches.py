"""Whether a new batch of labelled rows may join the dataset.

A batch is accepted only whole: it must read as a dataset file, hold rows the dataset
does not have yet, use only known labels, leave the dataset passing its expectation
suite, and not drift from the data the champion was trained on.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tokenizers import Tokenizer

from components.data.drift import DriftConfig, Profile, drift
from components.data.sources import FileSourceConfig, append_new, read_file
from components.data.validation import ValidateConfig, validate
from components.errors import KilnError


@dataclass
class BatchOutcome:
    path: Path
    accepted: bool
    reasons: list[str]
    rows: int = 0
    fresh: pd.DataFrame | None = None  # the rows the dataset does not hold yet
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def new_rows(self) -> int:
        return 0 if self.fresh is None else len(self.fresh)

    @property
    def summary(self) -> str:
        verdict = "accepted" if self.accepted else "quarantined"
        return f"{self.path.name}: {verdict}, {self.new_rows} new of {self.rows} rows" + (
            "" if self.accepted else " (" + "; ".join(self.reasons) + ")")


def check(path: Path, dataset: pd.DataFrame, file_cfg: FileSourceConfig, validate_cfg: ValidateConfig,
          reference: Profile | None, tokenizer: Tokenizer | None, drift_cfg: DriftConfig) -> BatchOutcome:
    """Check one batch file against `dataset` (everything learned so far). No reference
    (no champion yet) skips the drift checks, and the report says so."""
    try:
        batch = read_file(path, file_cfg, f"batch:{path.name}")
    except KilnError as err:
        return BatchOutcome(path, False, [str(err).removeprefix("ingest: ")], report={"stage": "read"})
    outcome = BatchOutcome(path, True, [], rows=len(batch), report={"rows": len(batch)})
    known = set(validate_cfg.labels) | (set(reference.label_shares) if reference else set())
    unknown = batch[~batch["label"].isin(known)]
    if len(unknown):
        labels = ", ".join(repr(v) for v in sorted(unknown["label"].astype(str).unique())[:5])
        rows = ", ".join(unknown["id"].head(3))
        outcome.reasons.append(f"unknown label(s) {labels} in {len(unknown)} row(s), e.g. {rows}; "
                               f"known labels: {', '.join(sorted(known))}")
    combined = append_new(dataset, batch)
    outcome.fresh = fresh = combined.iloc[len(dataset):]
    outcome.report["new_rows"] = len(fresh)
    outcome.report["duplicates_dropped"] = len(batch) - len(fresh)
    if outcome.reasons:
        return _reject(outcome)
    if fresh.empty:
        outcome.report["note"] = "every row is already in the dataset"
        return outcome
    validation = validate(combined, validate_cfg)
    outcome.report["validation"] = validation.report
    if not validation.success:
        outcome.reasons += [f"validation: {line}" for line in validation.failures]
    if not validation.quarantined.empty:
        # Rows the suite sets aside would be dropped silently from a batch someone sent
        # on purpose; the sender should fix and resend them.
        mine = validation.quarantined[validation.quarantined["id"].isin(fresh["id"])]
        if len(mine):
            outcome.reasons.append(f"validation: {len(mine)} row(s) break row expectations, e.g. "
                                   + ", ".join(f"{r.id} ({r.reason})" for r in mine.head(3).itertuples()))
    if reference is None or tokenizer is None:
        outcome.report["drift"] = "skipped: no champion to compare with"
    else:
        checks = drift(reference, fresh, tokenizer, drift_cfg)
        outcome.report["drift"] = [vars(c) for c in checks]
        outcome.reasons += [f"drift: {c.detail}" for c in checks if not c.passed]
    return _reject(outcome) if outcome.reasons else outcome


def _reject(outcome: BatchOutcome) -> BatchOutcome:
    outcome.accepted = False
    outcome.report["reasons"] = outcome.reasons
    return outcome
