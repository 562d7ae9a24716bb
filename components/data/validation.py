"""The dataset's expectation suite (Great Expectations 1.x) and the quarantine policy.

Row-level expectations (null, empty, too short or too long text, unknown labels,
undecodable characters) can quarantine the rows that break them; table-level ones
(columns, unique ids, duplicate rate, class balance) can only pass or fail. How a run
of the suite is reported is in components.data.suite_runs, the expectations themselves in
components.data.expectations.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.data.expectations import suites
from components.data.suite_runs import Runner, class_shares, describe, duplicate_groups, failure_line, report_entry
from components.errors import KilnError

# The bound the bundled BBC corpus has always been held to: its shortest article has 503
# characters, so only a truncated or broken article falls below it.
BBC_MIN_CHARS = 20
# User files hold whatever their texts are: one-line reviews, or a language that says a
# sentence in six characters ('海景不错！爽'). Any non-empty text counts.
FILE_MIN_CHARS = 1


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(min_length=2)
    min_chars: int | Literal["auto"] = Field(
        description=f"shortest text; auto: {BBC_MIN_CHARS} for the BBC corpus, {FILE_MIN_CHARS} for user files"
    )
    max_chars: int = Field(ge=1)
    max_duplicate_rate: float = Field(ge=0, le=1)
    min_class_share: float = Field(ge=0, le=1)
    max_class_share: float = Field(ge=0, le=1)
    policy: Literal["fail", "quarantine"]
    max_quarantine_share: float = Field(ge=0, lt=1)
    samples: int = Field(ge=1, le=20, description="sample values per failed expectation in messages")

    @field_validator("min_chars", mode="before")
    @classmethod
    def _min_chars(cls, value: Any) -> Any:
        # Checked by hand: the union's own errors would be two lines, one per branch.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"validate.min_chars must be auto or a whole number of characters >= 1, got {value!r}")

    @model_validator(mode="after")
    def _bounds(self) -> "ValidateConfig":
        if isinstance(self.min_chars, int) and self.min_chars > self.max_chars:
            raise ValueError("min_chars is larger than max_chars")
        if self.min_class_share > self.max_class_share:
            raise ValueError("min_class_share is larger than max_class_share")
        return self

    def resolved(self, kind: Literal["bbc", "file"]) -> "ValidateConfig":
        """A copy whose `min_chars` is a number. `kind` is where the rows come from
        (`IngestConfig.base`): "auto" is BBC_MIN_CHARS for the bundled corpus ("bbc") and
        FILE_MIN_CHARS for user files ("file")."""
        if self.min_chars != "auto":
            return self.model_copy()
        minimum = {"bbc": BBC_MIN_CHARS, "file": FILE_MIN_CHARS}[kind]
        if minimum > self.max_chars:
            raise KilnError(
                f"validate: validate.max_chars={self.max_chars} is below validate.min_chars "
                f"(auto: {minimum} for {kind} data); raise validate.max_chars or set validate.min_chars"
            )
        return self.model_copy(update={"min_chars": minimum})


@dataclass
class ValidationOutcome:
    success: bool
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    report: dict[str, Any]
    failures: list[str] = field(default_factory=list)


def validate(frame: pd.DataFrame, cfg: ValidateConfig, docs_dir: Path | None = None) -> ValidationOutcome:
    """Run the suite; under the quarantine policy, set aside rows that break row-level
    expectations and validate the rest again.

    Pass `cfg.resolved(kind)` to hold the data to its source's shortest text; a config
    whose `min_chars` is still "auto" is taken as for user files (any non-empty text).
    """
    if frame.empty:
        raise KilnError("validate: the dataset has no rows")
    if cfg.min_chars == "auto":
        cfg = cfg.resolved("file")
    frame = frame.reset_index(drop=True)
    total = len(frame)
    runner = Runner(docs_dir)
    results = _check(runner, frame, cfg)
    quarantined = frame.iloc[0:0].assign(reason=pd.Series(dtype=str))
    failures: list[str] = []
    reasons = _row_reasons(results) if cfg.policy == "quarantine" else {}
    if reasons:
        share = len(reasons) / total
        if share > cfg.max_quarantine_share:
            failures.append(
                f"quarantine: {len(reasons)} of {total} rows ({share:.1%}) break row-level expectations, "
                f"more than validate.max_quarantine_share={cfg.max_quarantine_share}; fix the rows or raise "
                f"validate.max_quarantine_share (the report lists each failed expectation)"
            )
        else:
            bad = sorted(reasons)
            quarantined = frame.iloc[bad].assign(reason=["; ".join(reasons[i]) for i in bad])
            frame = frame.drop(index=bad).reset_index(drop=True)
            results = _check(runner, frame, cfg)

    entries = [report_entry(r, data, cfg.samples) for r, data in results]
    failures += [failure_line(e) for e in entries if not e["success"]]
    return ValidationOutcome(
        success=not failures,
        valid=frame.iloc[0:0] if failures else frame,
        quarantined=quarantined,
        report=_report(frame, total, quarantined, cfg, entries, failures),
        failures=failures,
    )


def _check(runner: Runner, data: pd.DataFrame, cfg: ValidateConfig) -> list[tuple[Any, pd.DataFrame]]:
    """(result, the frame it was computed on) pairs."""
    # Fresh expectation objects per run: a suite takes ownership of the ones it holds.
    row_suite, table_suite, share_suite = suites(cfg)
    shares = class_shares(data)
    return [(r, data) for r in runner.run("dataset", data, row_suite + table_suite)] + [
        (r, shares) for r in runner.run("class_shares", shares, share_suite, index_columns=["label"])
    ]


def _report(
    valid: pd.DataFrame,
    total: int,
    quarantined: pd.DataFrame,
    cfg: ValidateConfig,
    entries: list[dict[str, Any]],
    failures: list[str],
) -> dict[str, Any]:
    """The validation report; `valid` is the frame the last run checked, quarantined rows gone."""
    groups = duplicate_groups(valid)
    return {
        "success": not failures,
        "rows": total,
        "rows_valid": 0 if failures else len(valid),
        "rows_quarantined": len(quarantined),
        "policy": cfg.policy,
        "min_chars": cfg.min_chars,
        "duplicates": {
            "rows": sum(len(g) - 1 for g in groups),
            "groups": len(groups),
            "examples": groups[:20],
        },
        "class_shares": {row.label: round(float(row.share), 4) for row in class_shares(valid).itertuples()},
        "expectations": entries,
        "failures": failures,
    }


def _row_reasons(results: list[tuple[Any, pd.DataFrame]]) -> dict[int, list[str]]:
    """Row position to the row-level expectations it breaks."""
    reasons: dict[int, list[str]] = {}
    for result, _ in results:
        if result.success or (result.expectation_config.meta or {}).get("level") != "row":
            continue
        for index in (result.result or {}).get("unexpected_index_list") or []:
            reasons.setdefault(int(index), []).append(describe(result))
    return reasons
