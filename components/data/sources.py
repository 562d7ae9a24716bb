"""Data sources: the bundled BBC News corpus, user files, and incoming batches.

Every reader returns a frame with the columns of `schema.COLUMNS`. A file that cannot be
read raises `KilnError` naming the file, the row or column, and the problem. User files
are read only from the folders the caller allows (see components.data.folders); each is
read as components.data.formats reads a file.
"""

import glob
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from components.data.bbc import read_bbc
from components.data.folders import batch_files, escapes, expand, folders_of
from components.data.formats import file_format, read_table, refuse_non_text
from components.data.pii_config import PiiConfig
from components.data.schema import COLUMNS, normalise
from components.errors import KilnError


def _relative_path(key: str, value: str, example: str) -> str:
    if escapes(value):
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


def read_file(path: Path, cfg: FileSourceConfig, source: str) -> pd.DataFrame:
    """One CSV, Parquet or JSONL file as a dataset frame."""
    fmt = file_format(path, cfg.format, "ingest.file.format")
    if path.stat().st_size == 0:
        raise KilnError(f"ingest: {path}: the file is empty")
    raw = read_table(path, fmt, cfg.encoding)
    return _to_dataset(raw, path, fmt, cfg, source)


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
    refuse_non_text(raw, path, fmt, cfg.text_column, cfg.id_column)
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
            fmt = file_format(path, cfg.format, "unlabeled.format")
            raw = read_table(path, fmt, cfg.encoding)
            if cfg.text_column not in raw.columns:
                found = ", ".join(map(str, raw.columns[:10]))
                raise KilnError(
                    f"ingest: {path}: no text column '{cfg.text_column}' (columns found: {found}); "
                    "set unlabeled.text_column"
                )
            refuse_non_text(raw, path, fmt, cfg.text_column, cfg.id_column)
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
    folders = folders_of(allowed, root)
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
    folders = folders_of(allowed, root)
    if cfg.source == "file":
        return read_files(cfg.file.path, cfg.file, root, "file", folders)
    dataset = learned(cfg, root, folders)
    for batch in _batches(root, "dir", cfg, folders):
        dataset = append_new(dataset, batch)
    return dataset
