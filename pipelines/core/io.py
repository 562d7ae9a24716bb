"""Atomic writes: a reader never sees a half-written output, and a full disk is one
message naming the path, not a traceback."""

import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import KilnError
from pipelines.core.env import tracking_uri

if TYPE_CHECKING:
    import pandas as pd


# Errors of the file system itself (full, over quota, read-only, too large, failing), as
# opposed to a bug: the user can act on them.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


# The same in SQLite's words (primary result codes), for the SQLite tracking store.
STORE_ERRORS = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
}


def disk_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and not isinstance(err, ConnectionError) and err.errno in DISK_ERRORS


def store_error(err: BaseException) -> KilnError | None:
    """MLflow's error for a SQLite tracking store that its file system failed, as one
    message naming the store and SQLite's reason; else None. MLflow wraps SQLAlchemy's
    error, which holds the driver's (`orig`): only that one carries SQLite's code."""
    found = getattr(err.__cause__, "orig", None)
    if not isinstance(found, sqlite3.Error) or (found.sqlite_errorcode or 0) & 0xFF not in STORE_ERRORS:
        return None
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException):
        return None
    store = tracking_uri().removeprefix("sqlite:///")
    return KilnError(f"the MLflow tracking store {store} failed: {found} ({found.sqlite_errorname}); check its disk")


def chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err` and the exceptions it was raised from or during."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def user_error(err: BaseException | None) -> KilnError | None:
    """The KilnError behind `err`, or a full disk and its kin (the tracking store's
    included) as one, else None (a bug)."""
    for found in chain(err):
        if isinstance(found, KilnError):
            return found
        if disk_error(found):
            return KilnError(f"{found.strerror}{f': {found.filename}' if found.filename else ''}")
        if (failed := store_error(found)) is not None:
            return failed
    return None


@contextmanager
def atomic(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` (file or directory) and move it into place
    only if the block succeeds. Siblings a killed process left behind are removed first."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KilnError(f"cannot write {target}: {err.strerror or err}") from None
    _sweep(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as err:
        if not disk_error(err):
            raise
        raise KilnError(f"cannot write {target}: {err.strerror}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _sweep(target: Path) -> None:
    import psutil

    for stale in target.parent.glob(f".{target.name}.tmp*"):
        pid = stale.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            remove(stale)


def write_parquet(frame: "pd.DataFrame", path: Path) -> None:
    with atomic(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(data: Any, path: Path) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_parquet(path: Path, stage: str, maker: str) -> "pd.DataFrame":
    """Read a stage input that exists; a broken one names the stage to rerun."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise KilnError(f"{stage}: {path} is not readable Parquet ({err}); rerun the {maker} stage") from None


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
