"""The production loop's commands: `monitor`, `label export` and `label import`."""

from pathlib import Path
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root, running

label = typer.Typer(
    no_args_is_help=True, help="The labelling queue: logged texts the champion is least sure of, labelled by people."
)
app.add_typer(label, name="label")


@app.command()
def monitor() -> None:
    """Check the champion's logged traffic (the last monitor.window_days) for drift against
    its training data; a crossed threshold emits the Prefect event kiln.monitor.drift."""
    root = repo_root()
    from pipelines.core.lifecycle import temporary_api
    from pipelines.core.params import load

    params = load(root / "params.yaml")
    with running(root, "monitor") as shown, temporary_api() as api:
        from pipelines.monitor.flow import EVENT
        from pipelines.monitor.flow import monitor as flow
        from pipelines.run.flow import run_flow

        state = run_flow(flow, api)
        if state.is_crashed():
            raise KeyboardInterrupt(state.message)
        report = state.result()  # a failed run raises its user error, shown as one line
        shown.line(state.message)
        for check in report["checks"]:
            shown.line(f"  {check['name']:<12} {'passed' if check['passed'] else 'FAILED':<7} {check['detail']}")
        for note in report["notes"]:
            shown.line(f"  not checked: {note}")
        if any(not check["passed"] for check in report["checks"]):
            shown.line(f"event {EVENT} emitted")
        shown.line(f"report: {Path(params.paths.reports) / 'monitor.html'}")


@label.command("export")
def label_export(
    n: Annotated[int | None, typer.Option("--n", min=1, help="texts in the queue (default: label.n)")] = None,
) -> None:
    """Write a queue of logged texts worth labelling: queue.csv, and tasks.json with
    label_config.xml for Label Studio."""
    root = repo_root()
    from pipelines.core.params import load
    from pipelines.monitor import labelling

    params = load(root / "params.yaml")
    folder, queue = labelling.export(root, params, n)
    where = folder.relative_to(root)
    typer.echo(
        f"{len(queue)} texts to label in {where}/queue.csv (fill in `label`), or import {where}/tasks.json into "
        f"Label Studio with {where}/label_config.xml; then `kiln label import FILE`"
    )
    shares = queue["guess"].value_counts().sort_index()
    typer.echo("champion's guesses: " + ", ".join(f"{label} {count}" for label, count in shares.items()))


@label.command("import")
def label_import(
    file: Annotated[Path, typer.Argument(help="the labelled queue.csv, or Label Studio's JSON export")],
    by: Annotated[
        str | None, typer.Option("--by", help="who labelled it (default: the file's annotators, or you)")
    ] = None,
) -> None:
    """Turn a labelled export into a batch of the incoming folder, for the next retrain."""
    root = repo_root()
    from pipelines.core.params import load
    from pipelines.monitor import labelling

    params = load(root / "params.yaml")
    if not file.is_file():
        raise KilnError(f"label import: {file} is not a file")
    batch, rows, unlabelled = labelling.import_labels(root, params, file.resolve(), by)
    skipped = f" ({unlabelled} left unlabelled, not imported)" if unlabelled else ""
    typer.echo(
        f"{rows} labelled texts in {batch.relative_to(root)}{skipped}; the next `kiln retrain` checks and learns them"
    )
