"""One run at a time per repository.

`kiln run`, `kiln retrain` and every stage that `dvc repro` starts take the same lock,
`.kiln/run.lock`, an OS lock (a killed run leaves nothing to clean up), with the holder's
PID, start time and command beside it in `.kiln/run.json`. DVC keeps a lock of its own,
but releases it while a stage's command runs, so a second `dvc repro` or `kiln run`
would otherwise start in the middle of the first one's stage.
"""

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import KilnError
from pipelines.core import statedir


class Busy(KilnError):
    """Another run holds the repository."""


# Repositories this process holds: `kiln run` holds its repository while its stages run
# in-process, and a stage must not wait on its own run.
_HELD: set[Path] = set()


def _process(pid: int) -> str | None:
    """'PID n, started T' for a live process, else None."""
    import psutil

    try:
        proc = psutil.Process(pid)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proc.create_time()))
    except (psutil.Error, ValueError):
        return None
    return f"PID {pid}, started {started}"


def holder(root: Path) -> str:
    """Who holds the repository, as a person would want to be told."""
    try:
        info = json.loads(statedir.run_holder(root).read_text())
        if found := _process(int(info["pid"])):
            return f"{found}: {info['command']}"
    except (OSError, ValueError, KeyError):
        pass
    try:
        # DVC's lock file holds the PID of the `dvc` process that took it.
        pid = int((root / ".dvc" / "tmp" / "lock").read_text().split()[0])
        if found := _process(pid):
            return f"{found}: dvc"
    except (OSError, ValueError, IndexError):
        pass
    return "a process that has just ended"


def busy(root: Path) -> Busy:
    return Busy(f"another run ({holder(root)}) holds this repo ({root}); this one changed nothing")


@contextmanager
def hold(root: Path, command: str) -> Iterator[None]:
    """Hold the repository for `command`, or raise Busy naming the holder."""
    from filelock import FileLock, Timeout

    root = root.resolve()
    if root in _HELD:
        yield
        return
    path = statedir.run_lock(root)
    path.parent.mkdir(exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise busy(root) from None
    info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    statedir.run_holder(root).write_text(json.dumps(info))
    _HELD.add(root)
    try:
        yield
    finally:
        _HELD.discard(root)
        statedir.run_holder(root).unlink(missing_ok=True)
        lock.release()


def held(root: Path) -> bool:
    return root.resolve() in _HELD
