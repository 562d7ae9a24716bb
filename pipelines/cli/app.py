"""The Typer app and what every command shares: finding the repository, and the
terminal-and-log-file arrangement of the commands that run stages."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from pipelines.core import console, env, lifecycle
from pipelines.servers import auth

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Kiln: raw labelled text to a small, fast, validated model."
)


def repo_root() -> Path:
    root = env.find_root()
    env.configure(root)
    auth.sign_in(root)
    return root


@contextmanager
def running(root: Path, command: str) -> Iterator[console.Console]:
    """Progress and results on the terminal, everything else in a log file; SIGTERM stops
    the command the way Ctrl-C does."""
    lifecycle.interrupt_on_sigterm()
    log = console.log_path(root, command.replace(" ", "-"))
    with console.capture(log) as shown:
        try:
            yield shown
        finally:
            shown.line(f"log: {log.relative_to(root)}")
