"""Atomic writes: a reader never sees a half-written output."""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from components.errors import KilnError


@contextmanager
def atomic(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` (file or directory) and move it into place
    only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(data: Any, path: Path) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_parquet(path: Path, stage: str, maker: str) -> pd.DataFrame:
    """Read a stage input, or say which stage should have made it."""
    if not path.exists():
        raise KilnError(f"{stage}: {path} is missing; the {maker} stage makes it (kiln stage {maker})")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise KilnError(f"{stage}: {path} is not readable Parquet ({err}); rerun the {maker} stage") from None


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
