"""Running an expectation suite on a frame with Great Expectations, and reading what it
found.

Each failure is reported as one line that names the expectation, how many rows break it,
a few of them with their row ids, the bound and the params key that sets it, and how to
fix it: the suite's `meta` of each expectation holds what only the suite knows (the fix,
the params it checks, what to explain from the data).
"""

from itertools import zip_longest
from pathlib import Path
from typing import Any

import pandas as pd


class Runner:
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


def describe(result) -> str:
    config = result.expectation_config
    column = config.kwargs.get("column")
    what = (config.meta or {}).get("what")
    name = config.type + (f"({column})" if column else "")
    return f"{name} [{what}]" if what else name


def report_entry(result, data: pd.DataFrame, samples: int) -> dict[str, Any]:
    """The report entry of one result; `data` is the frame it was computed on."""
    r = result.result or {}
    config = result.expectation_config
    meta = config.meta or {}
    entry: dict[str, Any] = {"expectation": describe(result), "success": bool(result.success)}
    if meta.get("params"):
        entry["params"] = meta["params"]
    if result.exception_info and result.exception_info.get("raised_exception"):
        entry["error"] = result.exception_info.get("exception_message")
    if r.get("unexpected_count") is not None:
        entry["unexpected_count"] = int(r["unexpected_count"])
        entry["unexpected_percent"] = round(float(r.get("unexpected_percent") or 0.0), 4)
        indexed = (r.get("unexpected_index_list") or [])[:samples]
        if indexed and isinstance(indexed[0], dict):
            # The class-share frame names its rows by label: show "label=share".
            entry["samples"] = [f"{row['label']}={float(row['share']):.4f}" for row in indexed]
        elif indexed:
            # Positions in `data` (its index is 0..n-1), not the `id` column as GX's
            # unexpected_index_column_names would give: the quarantine needs positions, and
            # the rows to name may have no id or a repeated one.
            entry["samples"] = [_short(data.at[i, config.kwargs["column"]]) for i in indexed]
            entry["sample_ids"] = [_row_id(data, i) for i in indexed]
        else:
            entry["samples"] = [_short(v) for v in (r.get("partial_unexpected_list") or [])[:samples]]
    if r.get("observed_value") is not None:
        entry["observed"] = _jsonable(r["observed_value"])
        bounds = {k: config.kwargs[k] for k in ("min_value", "max_value") if config.kwargs.get(k) is not None}
        if bounds:
            entry["expected"] = bounds
    if not result.success and meta.get("fix"):
        found = _explain(meta.get("explain"), r, data, entry.get("params", {}))
        entry["fix"] = f"{found}; {meta['fix']}" if found else meta["fix"]
    return entry


def _row_id(data: pd.DataFrame, position: int) -> str:
    value = data.at[position, "id"] if "id" in data.columns else None
    return f"at position {position}" if value is None or pd.isna(value) else str(value)


def _explain(what: str | None, r: dict[str, Any], data: pd.DataFrame, params: dict[str, Any]) -> str:
    """The part of a failure line that only the data can tell."""
    if what == "labels":
        found = data.loc[r.get("unexpected_index_list") or [], "label"].astype(str).value_counts()
        return "labels not in validate.labels: " + ", ".join(
            f"{label!r} ({n} {'row' if n == 1 else 'rows'})" for label, n in found.items()
        )
    if what == "duplicates":
        groups = duplicate_groups(data)
        if not groups:
            return ""
        text = data.loc[data["id"] == groups[0][0], "text"].iloc[0]
        return (
            f"{sum(len(g) - 1 for g in groups)} rows repeat an earlier text, e.g. {_short(text)!r} "
            f"(rows {', '.join(groups[0][:5])})"
        )
    if what == "shares":
        lo, hi = params["validate.min_class_share"], params["validate.max_class_share"]
        return ", ".join(
            f"{row['label']} is "
            + (
                f"above validate.max_class_share={hi}"
                if float(row["share"]) > hi
                else f"below validate.min_class_share={lo}"
            )
            for row in r.get("unexpected_index_list") or []
        )
    return ""


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
    """One line of the failure message: expectation, count or observed value, sample
    values with their row ids, and the bound, params key and fix."""
    if "error" in entry:
        return f"{entry['expectation']}: could not be evaluated: {entry['error']}"
    if "unexpected_count" in entry:
        line = f"{entry['expectation']}: {entry['unexpected_count']} rows"
    else:
        observed = entry.get("observed")
        shown = f"{observed:.4f}" if isinstance(observed, float) else repr(observed)
        expected = entry.get("expected", {})
        bounds = " and ".join(f"{'>=' if k == 'min_value' else '<='} {v}" for k, v in expected.items())
        line = f"{entry['expectation']}: observed {shown}" + (f", expected {bounds}" if bounds else "")
    samples = ", ".join(
        # An id column's value is its own row id.
        repr(value) if row is None or row == value else f"{value!r} (row {row})"
        for value, row in zip_longest(entry.get("samples", []), entry.get("sample_ids", []))
    )
    return line + (f", e.g. {samples}" if samples else "") + (f"; {entry['fix']}" if entry.get("fix") else "")


def duplicate_groups(frame: pd.DataFrame) -> list[list[str]]:
    """Ids of rows that share an exact text, one list per text, first occurrence first."""
    dup = frame[frame["text"].notna() & frame["text"].duplicated(keep=False)]
    return [list(ids) for _, ids in dup.groupby("text", sort=False)["id"]]


def class_shares(frame: pd.DataFrame) -> pd.DataFrame:
    shares = frame["label"].value_counts(normalize=True, dropna=True).sort_index()
    return pd.DataFrame({"label": shares.index.astype(str), "share": shares.to_numpy()})
