"""The `kiln` command: one Typer app, its commands grouped by concern in this package."""

import sys
import traceback

import typer

from pipelines.cli import audit, explain, monitor, pipeline, registry, servers, users  # noqa: F401  (each registers its commands)
from pipelines.cli.app import app
from pipelines.core import console
from pipelines.core.io import user_error
from pipelines.core.lifecycle import stopped


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as err:
        # A usage error (a bad value, an unknown option or command): Typer's vendored click
        # raises it, not click's own. One line, like every other mistake, naming the
        # command and where its usage is.
        context = getattr(err, "ctx", None)
        command = context.command_path if context is not None else "kiln"
        where = command.removeprefix("kiln").strip()
        console.get().error(
            f"kiln: error: {where + ': ' if where else ''}{err.format_message()} (see `{command} --help`)"
        )
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.get().error("kiln: stopped")
        sys.exit(130)
    except Exception as err:
        if stopped(err):
            console.get().error("kiln: stopped")
            sys.exit(130)
        # A stage failure reaches here wrapped by DVC or Prefect; a user error inside it
        # still gets its one clear message.
        if (cause := user_error(err)) is not None:
            console.get().error(f"kiln: error: {cause}")
            sys.exit(1)
        console.get().error("".join(traceback.format_exception(err)).rstrip())
        sys.exit(1)
    # Typer answers Ctrl-C (and SIGTERM, which Kiln turns into it) with 130, not an exception.
    if code == 130:
        console.get().error("kiln: stopped")
    if isinstance(code, int) and code:
        sys.exit(code)
