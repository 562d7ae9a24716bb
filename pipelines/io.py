"""Atomic writes: a reader never sees a half-written output, and a full disk is one
message naming the path, not a traceback."""

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import KilnError

if TYPE_CHECKING:
    import pandas as pd


# Errors of the file system itself (full, over quota, read-only, too large, failing), as
# opposed to a bug: the user can act on them.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def disk_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and not isinstance(err, ConnectionError) and err.errno in DISK_ERRORS


def chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err` and the exceptions it was raised from or during."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def user_error(err: BaseException | None) -> KilnError | None:
    """The KilnError behind `err`, or a full disk and its kin as one, else None (a bug)."""
    for found in chain(err):
        if isinstance(found, KilnError):
            return found
        if disk_error(found):
            return KilnError(f"{found.strerror}{f': {found.filename}' if found.filename else ''}")
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
