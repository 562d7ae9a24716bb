"""The `kiln` command."""

import os
import sys
from typing import Annotated

import click
import typer

from components.errors import KilnError
from pipelines import env

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Kiln: raw labelled text to a small, fast, validated model.")


def _root():
    root = env.find_root()
    env.configure(root)
    return root


@app.command()
def stage(name: Annotated[str, typer.Argument(help="stage name from dvc.yaml")]) -> None:
    """Run one stage (what dvc.yaml's `cmd` calls)."""
    root = _root()
    from pipelines.stages import execute

    timing = execute(root, name)
    typer.echo(f"{name}: done in {timing.seconds:.1f} s")


@app.command()
def run(
    targets: Annotated[list[str] | None, typer.Argument(help="stages to bring up to date (default: all)")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="rerun stages even if up to date")] = False,
) -> None:
    """Run the pipeline as a Prefect flow; up-to-date stages are skipped as `dvc repro` would."""
    root = _root()
    from pipelines import flow
    from pipelines.params import load

    load(root / "params.yaml")  # a typo in params.yaml fails here, before any work
    flow.run(targets, force)


@app.command()
def status() -> None:
    """Which stages are stale, and why."""
    root = _root()
    from pipelines import dag
    from pipelines.params import load

    load(root / "params.yaml")
    stale = dag.status(dag.open_repo(root))
    if not stale:
        typer.echo("Every stage is up to date.")
        return
    for name, reasons in stale.items():
        typer.echo(f"{name}:")
        for reason in reasons:
            typer.echo(f"  {reason}")


@app.command()
def profile(name: Annotated[str, typer.Argument(help="a file of profiles/, without .yaml")]) -> None:
    """Merge a named params profile (profiles/NAME.yaml) into params.yaml."""
    root = _root()
    from pipelines.profiles import apply

    path = apply(root, name)
    typer.echo(f"{path.name}: profile '{name}' merged; `kiln status` shows what it makes stale")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port to serve on")] = 5000,
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it local")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on Kiln's tracking store."""
    root = _root()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    (root / "mlflow").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI: http://{host}:{port}  (store: {uri}; Ctrl-C stops it)", color=False)
    sys.stdout.flush()
    # Become the UI process, so Ctrl-C and kill reach the server itself.
    os.execv(sys.executable, command)


def _user_error(err: BaseException) -> KilnError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KilnError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def main() -> None:
    try:
        app(standalone_mode=False)
    except KilnError as err:
        typer.echo(f"kiln: error: {err}", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (click.Abort, KeyboardInterrupt):
        typer.echo("kiln: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except Exception as err:
        # A stage failure reaches here wrapped by DVC or Prefect; a user error inside it
        # still gets its one clear message.
        if (cause := _user_error(err)) is not None:
            typer.echo(f"kiln: error: {cause}", err=True)
            sys.exit(1)
        raise
