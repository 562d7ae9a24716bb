"""What `kiln` prints, and where everything else goes.

A command that runs stages prints, per stage, one progress line while it runs (rewritten
in place on a terminal) and one result line, then the decision and where the log is.
Everything else, from library tips and deprecation warnings to Prefect's and DVC's log
lines, progress bars and messages C++ libraries write to the process's own file
descriptors, goes to a log file under `.kiln/logs/`: while a run captures, descriptors 1
and 2 point at that file, and only the console writes to the terminal.
"""

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pipelines.core import statedir

# Off a terminal (CI, a scheduler's log) a stage's progress is a line at most this often.
PROGRESS_EVERY_S = 10.0


class Console:
    def __init__(self, out: TextIO, err: TextIO):
        self.out, self.err = out, err
        self.tty = out.isatty()
        self.log: Path | None = None
        self._progress = ""  # the progress line on screen, if any
        self._printed: dict[str, float] = {}

    def _clear(self) -> None:
        if self._progress:
            self.out.write("\r" + " " * len(self._progress) + "\r")
            self._progress = ""

    def line(self, text: str = "") -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str) -> None:
        """What is running now: on a terminal only, where the next line replaces it."""
        if self.tty:
            self.progress("", text)

    def progress(self, key: str, text: str) -> None:
        """A stage's progress: rewritten in place on a terminal, else a line now and then."""
        if self.tty:
            self._clear()
            shown = text[: max(20, os.get_terminal_size(self.out.fileno()).columns - 1)]
            self.out.write(shown)
            self.out.flush()
            self._progress = shown
            return
        now = time.monotonic()
        if now - self._printed.get(key, -PROGRESS_EVERY_S) >= PROGRESS_EVERY_S:
            self._printed[key] = now
            self.line(text)

    def error(self, text: str) -> None:
        self._clear()
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()


_current = Console(sys.stdout, sys.stderr)


def get() -> Console:
    """The console of this process: the terminal while a run captures, else stdout."""
    return _current


class _ToConsole(logging.Handler):
    """Kiln's own warnings ("checkpoint moved aside") belong on the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        _current.line(f"kiln: {record.levelname.lower()}: {record.getMessage()}")


def log_path(root: Path, command: str) -> Path:
    folder = statedir.logs(root)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextmanager
def capture(log: Path) -> Iterator[Console]:
    """Send descriptors 1 and 2 (and so every print, warning and library log line) to
    `log`; the console keeps the terminal."""
    global _current
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    previous = _current
    _current = Console(os.fdopen(os.dup(saved[0]), "w", buffering=1), os.fdopen(os.dup(saved[1]), "w", buffering=1))
    _current.log = log
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    logging.captureWarnings(True)
    kiln = logging.getLogger("kiln")
    handler = _ToConsole(logging.WARNING)
    kiln.addHandler(handler)
    try:
        yield _current
    finally:
        kiln.removeHandler(handler)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _current.out.close()
        _current.err.close()
        _current = previous
