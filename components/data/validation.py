"""The dataset's expectation suite (Great Expectations 1.x) and the quarantine policy.

Row-level expectations (null, empty or over-long text, unknown labels, undecodable
characters) can quarantine the rows that break them; table-level ones (columns, unique
ids, duplicate rate, class balance) can only pass or fail.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.data.schema import COLUMNS
from components.errors import KilnError

# U+FFFD is what a lossy decode leaves behind; C0 controls other than tab, newline and
# carriage return never occur in real text and mark binary junk or a wrong encoding.
UNDECODABLE = r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f]"
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=lambda: list(BBC_LABELS), min_length=2)
    min_chars: int = Field(20, ge=1)
    max_chars: int = Field(100_000, ge=1)
    max_duplicate_rate: float = Field(0.05, ge=0, le=1)
    min_class_share: float = Field(0.05, ge=0, le=1)
    max_class_share: float = Field(0.6, ge=0, le=1)
    policy: Literal["fail", "quarantine"] = "fail"
    max_quarantine_share: float = Field(0.02, ge=0, lt=1)
    samples: int = Field(3, ge=1, le=20, description="sample values per failed expectation in messages")

    @model_validator(mode="after")
    def _bounds(self) -> "ValidateConfig":
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars is larger than max_chars")
        if self.min_class_share > self.max_class_share:
            raise ValueError("min_class_share is larger than max_class_share")
        return self


@dataclass
class ValidationOutcome:
    success: bool
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    report: dict[str, Any]
    failures: list[str] = field(default_factory=list)


def _suites(cfg: ValidateConfig) -> tuple[list, list, list]:
    """(row-level, table-level, class-share) expectations. Built on call, not at import:
    importing great_expectations takes seconds."""
    import great_expectations.expectations as gxe

    row = {"level": "row"}
    rows = [
        gxe.ExpectColumnValuesToNotBeNull(column="id", meta=row),
        gxe.ExpectColumnValuesToNotBeNull(column="text", meta=row),
        gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$", meta={**row, "what": "empty text"}),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=cfg.min_chars, max_value=cfg.max_chars, meta=row
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=UNDECODABLE, meta={**row, "what": "undecodable text"}
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="label", meta=row),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=cfg.labels, meta=row),
    ]
    table = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=True),
        gxe.ExpectColumnValuesToBeOfType(column="id", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="text", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="label", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="source", type_="str"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="text", min_value=1 - cfg.max_duplicate_rate, meta={"what": "duplicate-text rate"}
        ),
    ]
    shares = [
        gxe.ExpectColumnValuesToBeBetween(
            column="share", min_value=cfg.min_class_share, max_value=cfg.max_class_share,
            meta={"what": "class balance"},
        )
    ]
    return rows, table, shares


class _Runner:
    """An ephemeral GX context with one pandas asset per frame kind and a Data Docs site."""

    def __init__(self, docs_dir: Path | None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("kiln")
        self.actions = []
        if docs_dir is not None:
            self.context.add_data_docs_site(
                "kiln",
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            self.actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["kiln"])]
        self.count = 0

    def run(self, name: str, frame: pd.DataFrame, expectations: list, index_columns: list[str] | None = None) -> list:
        gx = self.gx
        self.count += 1
        key = f"{name}-{self.count}"
        batch = self.source.add_dataframe_asset(key).add_batch_definition_whole_dataframe(key)
        suite = self.context.suites.add(gx.ExpectationSuite(name=name if self.count == 1 else key))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = self.context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=key,
                validation_definitions=[definition],
                actions=self.actions,
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns or []},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        return [r for run in result.run_results.values() for r in run.results]


def _describe(result) -> str:
    config = result.expectation_config
    column = config.kwargs.get("column")
    what = (config.meta or {}).get("what")
    name = config.type + (f"({column})" if column else "")
    return f"{name} [{what}]" if what else name


def _summary(result, samples: int) -> dict[str, Any]:
    r = result.result or {}
    config = result.expectation_config
    entry: dict[str, Any] = {"expectation": _describe(result), "success": bool(result.success)}
    if result.exception_info and result.exception_info.get("raised_exception"):
        entry["error"] = result.exception_info.get("exception_message")
    if r.get("unexpected_count") is not None:
        entry["unexpected_count"] = int(r["unexpected_count"])
        entry["unexpected_percent"] = round(float(r.get("unexpected_percent") or 0.0), 4)
        indexed = r.get("unexpected_index_list") or []
        if indexed and isinstance(indexed[0], dict):
            # The class-share frame names its rows by label: show "label=share".
            entry["samples"] = [f"{row['label']}={float(row['share']):.4f}" for row in indexed[:samples]]
        else:
            entry["samples"] = [_short(v) for v in (r.get("partial_unexpected_list") or [])[:samples]]
    if r.get("observed_value") is not None:
        entry["observed"] = _jsonable(r["observed_value"])
        bounds = {k: config.kwargs[k] for k in ("min_value", "max_value") if config.kwargs.get(k) is not None}
        if bounds:
            entry["expected"] = bounds
    return entry


def _short(value: Any, limit: int = 60) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def failure_line(entry: dict[str, Any]) -> str:
    """One line of the failure message: expectation, count and sample values."""
    if "error" in entry:
        return f"{entry['expectation']}: could not be evaluated: {entry['error']}"
    if "unexpected_count" in entry:
        samples = ", ".join(repr(s) for s in entry.get("samples", []))
        return f"{entry['expectation']}: {entry['unexpected_count']} rows" + (f", e.g. {samples}" if samples else "")
    observed = entry.get("observed")
    shown = f"{observed:.4f}" if isinstance(observed, float) else repr(observed)
    expected = entry.get("expected", {})
    bounds = " and ".join(f"{'>=' if k == 'min_value' else '<='} {v}" for k, v in expected.items())
    return f"{entry['expectation']}: observed {shown}" + (f", expected {bounds}" if bounds else "")


def duplicate_groups(frame: pd.DataFrame) -> list[list[str]]:
    """Ids of rows that share an exact text, one list per text, first occurrence first."""
    dup = frame[frame["text"].notna() & frame["text"].duplicated(keep=False)]
    return [list(ids) for _, ids in dup.groupby("text", sort=False)["id"]]


def class_shares(frame: pd.DataFrame) -> pd.DataFrame:
    shares = frame["label"].value_counts(normalize=True, dropna=True).sort_index()
    return pd.DataFrame({"label": shares.index.astype(str), "share": shares.to_numpy()})


def validate(frame: pd.DataFrame, cfg: ValidateConfig, docs_dir: Path | None = None) -> ValidationOutcome:
    """Run the suite; under the quarantine policy, set aside rows that break row-level
    expectations and validate the rest again."""
    if frame.empty:
        raise KilnError("validate: the dataset has no rows")
    frame = frame.reset_index(drop=True)
    total = len(frame)
    runner = _Runner(docs_dir)

    def check(data: pd.DataFrame) -> list:
        # Fresh expectation objects per run: a suite takes ownership of the ones it holds.
        row_suite, table_suite, share_suite = _suites(cfg)
        return runner.run("dataset", data, row_suite + table_suite) + runner.run(
            "class_shares", class_shares(data), share_suite, index_columns=["label"]
        )

    results = check(frame)
    quarantined = frame.iloc[0:0].assign(reason=pd.Series(dtype=str))
    failures: list[str] = []
    reasons = _row_reasons(results) if cfg.policy == "quarantine" else {}
    if reasons:
        share = len(reasons) / total
        if share > cfg.max_quarantine_share:
            failures.append(
                f"quarantine: {len(reasons)} of {total} rows ({share:.1%}) break row-level expectations, "
                f"more than validate.max_quarantine_share={cfg.max_quarantine_share}"
            )
        else:
            bad = sorted(reasons)
            quarantined = frame.iloc[bad].assign(reason=["; ".join(reasons[i]) for i in bad])
            frame = frame.drop(index=bad).reset_index(drop=True)
            results = check(frame)

    entries = [_summary(r, cfg.samples) for r in results]
    failures += [failure_line(e) for e in entries if not e["success"]]
    groups = duplicate_groups(frame)
    report = {
        "success": not failures,
        "rows": total,
        "rows_valid": 0 if failures else len(frame),
        "rows_quarantined": len(quarantined),
        "policy": cfg.policy,
        "duplicates": {
            "rows": sum(len(g) - 1 for g in groups),
            "groups": len(groups),
            "examples": groups[:20],
        },
        "class_shares": {row.label: round(float(row.share), 4) for row in class_shares(frame).itertuples()},
        "expectations": entries,
        "failures": failures,
    }
    return ValidationOutcome(
        success=not failures,
        valid=frame.iloc[0:0] if failures else frame,
        quarantined=quarantined,
        report=report,
        failures=failures,
    )


def _row_reasons(results: list) -> dict[int, list[str]]:
    """Row position to the row-level expectations it breaks."""
    reasons: dict[int, list[str]] = {}
    for result in results:
        if result.success or (result.expectation_config.meta or {}).get("level") != "row":
            continue
        for index in (result.result or {}).get("unexpected_index_list") or []:
            reasons.setdefault(int(index), []).append(_describe(result))
    return reasons
