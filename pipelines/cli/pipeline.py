"""Commands that run the pipeline: `run`, `stage`, `status`, `profile`, `retrain`, `serve`."""

import os
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root, running


@app.command()
def stage(name: Annotated[str, typer.Argument(help="stage name from dvc.yaml")]) -> None:
    """Run one stage (what dvc.yaml's `cmd` calls)."""
    root = repo_root()
    from pipelines.core import lifecycle
    from pipelines.run import executor
    from pipelines.tracking import metrics, owners

    if not executor.worker_rank() and (dvc := owners.dvc_ancestor()) is not None:
        # Under `dvc repro`: when dvc is gone (killed), so is this stage.
        lifecycle.watch(dvc.pid, dvc.create_time())
    with running(root, f"stage {name}") as shown:
        outcome = executor.execute(root, name)
        shown.line(
            f"{name}: done in {outcome.seconds:.1f} s  {metrics.headline(name, outcome.result.metrics)}".rstrip()
        )
        for line in outcome.result.summary:
            shown.line(f"  {line}")


@app.command()
def run(
    targets: Annotated[list[str] | None, typer.Argument(help="stages to bring up to date (default: all)")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="rerun stages even if up to date")] = False,
) -> None:
    """Run the pipeline as a Prefect flow; up-to-date stages are skipped as `dvc repro` would."""
    root = repo_root()
    from pipelines.core import lock
    from pipelines.core.lifecycle import temporary_api
    from pipelines.core.params import load
    from pipelines.tracking import experiments

    load(root / "params.yaml")  # a typo in params.yaml fails here, before any work
    with lock.hold(root, "kiln run"), running(root, "run"), temporary_api() as api:
        from pipelines.run.flow import pipeline, run_flow  # Prefect's import overlaps the server's start

        experiments.check()
        state = run_flow(pipeline, api, targets=targets or None, force=force)
        if state.is_crashed():  # stopped by a signal: the same ending as Ctrl-C
            raise KeyboardInterrupt(state.message)
        state.result()  # a failed stage's user error is raised as that KilnError


@app.command()
def retrain() -> None:
    """Retrain once now: check new batches, rerun the DAG, let the gate decide."""
    root = repo_root()
    from pipelines.core.lifecycle import temporary_api
    from pipelines.core.params import load

    load(root / "params.yaml")
    with running(root, "retrain") as shown, temporary_api() as api:
        from pipelines.retrain.flow import retrain as flow
        from pipelines.run.flow import run_flow  # Prefect's import overlaps the server's start

        state = run_flow(flow, api)
        if state.is_crashed():
            raise KeyboardInterrupt(state.message)
        result = state.result(raise_on_failure=False)
        if isinstance(result, dict):
            shown.line(result.get("markdown", ""))
    if state.is_cancelled():
        raise KilnError(state.message)
    if state.is_failed():
        raise KilnError(f"retrain failed: {state.message}")


@app.command()
def serve() -> None:
    """Serve the scheduled `retrain` and `monitor` deployments (crons from params.yaml) until stopped."""
    root = repo_root()
    from pipelines.core.params import load
    from pipelines.monitor.flow import add_deployment
    from pipelines.retrain.flow import DEPLOYMENT, FLOW, runner
    from pipelines.retrain.flow import serve as serve_deployment

    params = load(root / "params.yaml")
    if not os.environ.get("PREFECT_API_URL"):
        raise KilnError(
            "kiln serve needs a Prefect server to hold the schedule: start one with `kiln up` or set PREFECT_API_URL"
        )
    served = runner(params)
    add_deployment(served, params)
    typer.echo(
        f"deployments '{FLOW}/{DEPLOYMENT}' (cron '{params.retrain.cron}') and 'kiln-monitor/monitor' "
        f"(cron '{params.monitor.cron}') are being served, {params.retrain.timezone}, "
        f"on {os.environ['PREFECT_API_URL']}; Ctrl-C stops them"
    )
    serve_deployment(served)


@app.command()
def status() -> None:
    """Which stages are stale, and why."""
    root = repo_root()
    from pipelines.core import dag
    from pipelines.core.params import load

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
def profile(
    name: Annotated[str, typer.Argument(help="a file of profiles/, without .yaml")],
    sets: Annotated[
        bool, typer.Option("--sets", help="print it as a `dvc exp run -S` command instead; params.yaml stays")
    ] = False,
) -> None:
    """Merge a named params profile (profiles/NAME.yaml) into params.yaml."""
    root = repo_root()
    from pipelines.core import profiles

    if sets:
        import shlex

        typer.echo(" ".join(["dvc exp run", *(f"-S {shlex.quote(item)}" for item in profiles.sets(root, name))]))
        return
    path = profiles.apply(root, name)
    typer.echo(f"{path.name}: profile '{name}' merged; `kiln status` shows what it makes stale")
