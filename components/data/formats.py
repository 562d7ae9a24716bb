"""One data file read into a table: CSV, Parquet or JSONL, in a given encoding.

What would lose data without a word is refused, naming the file and the line, row or
column: a column given twice, a JSON key given twice in one object, a text cell that
holds a number or a list.
"""

import csv
import io
import json
import math
from pathlib import Path

import pandas as pd

from components.errors import KilnError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def file_format(path: Path, given: str, key: str) -> str:
    """The file's format: `given`, or with auto the one its extension names."""
    fmt = given if given != "auto" else FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise KilnError(
            f"ingest: {path}: cannot tell the format from the extension '{path.suffix}'; "
            f"use one of {sorted(FORMATS)} or set {key}"
        )
    return fmt


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    if encoding.replace("-", "").lower() in ("utf8", "ascii") and b"\x00" in data[:8192]:
        raise KilnError(f"ingest: {path}: holds NUL bytes, so it looks binary, not {encoding} text")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        bad = data[err.start : err.end].hex(" ")
        raise KilnError(
            f"ingest: {path}: line {line}: bytes {bad} are not valid {encoding} "
            f"(wrong encoding? set ingest.file.encoding)"
        ) from None
    except LookupError:
        raise KilnError(f"ingest: unknown encoding '{encoding}' in ingest.file.encoding") from None


def _refuse_repeated(names: list, path: Path, where: str, unit: str) -> None:
    """Refuse a column name given twice: pandas would keep one of them (or rename the
    other to `text.1`), and the data in the other would be dropped without a word."""
    for name in dict.fromkeys(names):
        places = [str(i) for i, other in enumerate(names, start=1) if other == name]
        if len(places) > 1:
            raise KilnError(
                f"ingest: {path}: {where}: column '{name}' appears {len(places)} times "
                f"({unit} {', '.join(places)}); rename or remove the extra column"
            )


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        # The schema alone first: pandas reads repeated names without complaint.
        _refuse_repeated(pq.read_schema(path).names, path, "Parquet schema", "fields")
        return pd.read_parquet(path)
    except KilnError:
        raise
    except Exception as err:  # pyarrow raises several types for a broken file
        raise KilnError(f"ingest: {path}: not a readable Parquet file ({err})") from None


def read_table(path: Path, fmt: str, encoding: str) -> pd.DataFrame:
    if fmt == "parquet":
        return _read_parquet(path)
    text = _decode(path, encoding)
    if not text.strip():
        raise KilnError(f"ingest: {path}: the file is empty")
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    try:
        # pandas skips blank lines before the header, so the header is the first row with cells.
        header = next((row for row in csv.reader(io.StringIO(text)) if row), [])
    except csv.Error as err:
        raise KilnError(f"ingest: {path}: malformed CSV header: {err}") from None
    _refuse_repeated(header, path, "header row", "columns")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise KilnError(f"ingest: {path}: the file has no header row") from None
    except pd.errors.ParserError as err:
        raise KilnError(f"ingest: {path}: malformed CSV: {_first_line(err)}") from None


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """`object_pairs_hook` for json.loads: a plain dict keeps the last of two equal keys
    and drops the first value silently."""
    record = {}
    for key, value in pairs:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """The objects of a JSONL file, indexed by their line numbers, which errors name."""
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise KilnError(f"ingest: {path}: line {number}: invalid JSON ({err.msg})") from None
        except _RepeatedKey as err:
            raise KilnError(
                f"ingest: {path}: line {number}: key '{err.key}' appears more than once in one object; "
                f"keep one, or rename the other"
            ) from None
        if not isinstance(record, dict):
            raise KilnError(f"ingest: {path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        lines.append(number)
    return pd.DataFrame.from_records(records, index=lines)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def refuse_non_text(raw: pd.DataFrame, path: Path, fmt: str, text_column: str, id_column: str | None) -> None:
    """Refuse a text cell that holds a number, a list or another value that is not text,
    naming the first one's line or row, and id. JSONL and Parquet keep their values' types
    (CSV is read as text throughout). A missing text (null) is left to validation, which
    quarantines its row."""
    text = raw[text_column]
    bad = [i for i, value in enumerate(text) if not (isinstance(value, str) or _missing(value))]
    if not bad:
        return
    value = text.iloc[bad[0]]
    # `_read_jsonl` indexes records by their line; Parquet rows count from 1.
    row = f"line {raw.index[bad[0]]}" if fmt == "jsonl" else f"row {bad[0] + 1}"
    if id_column:
        row += f" (id {raw[id_column].iloc[bad[0]]})"
    more = f" ({len(bad) - 1} more such row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise KilnError(
        f"ingest: {path}: {row}: column '{text_column}' holds {type(value).__name__} {str(value)[:40]}, not text{more}"
    )


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
