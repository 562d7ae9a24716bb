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
def retrain() -> None:
    """Retrain once now: check new batches, rerun the DAG, let the gate decide."""
    root = _root()
    from pipelines.flow import run_flow
    from pipelines.params import load
    from pipelines.retrain import retrain as flow

    load(root / "params.yaml")
    state = run_flow(flow)
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict):
        typer.echo(result.get("markdown", ""))
    if state.is_cancelled():
        raise KilnError(state.message)
    if state.is_failed():
        raise KilnError(f"retrain failed: {state.message}")


@app.command()
def serve() -> None:
    """Serve the scheduled `retrain` deployment (cron from params.yaml) until stopped."""
    root = _root()
    from pipelines.params import load
    from pipelines.retrain import DEPLOYMENT, serve as serve_deployment

    params = load(root / "params.yaml")
    if not os.environ.get("PREFECT_API_URL"):
        raise KilnError("kiln serve needs a Prefect server to hold the schedule: start one with `kiln up` "
                        "or set PREFECT_API_URL")
    typer.echo(f"serving deployment '{DEPLOYMENT}' (cron '{params.retrain.cron}' {params.retrain.timezone}) "
               f"on {os.environ['PREFECT_API_URL']}; Ctrl-C stops it")
    serve_deployment(params)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address both servers bind; 127.0.0.1 keeps them local")] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
) -> None:
    """Start a Prefect server and an MLflow tracking server in the background
    (PostgreSQL if KILN_DB_URL is set, else SQLite files)."""
    root = _root()
    from pipelines import servers

    state = servers.up(root, host, prefect_port, mlflow_port)
    prefect, mlflow = state["servers"]["prefect"], state["servers"]["mlflow"]
    typer.echo(f"Prefect UI and API: {prefect['url'].removesuffix('/api')}  (log {prefect['log']})")
    typer.echo(f"MLflow UI:          {mlflow['url']}  (log {mlflow['log']})")
    typer.echo(f"backend store: {state['backend']}; addresses in {env.servers_file(root)}, "
               f"used by every kiln command here; `kiln down` stops both")


@app.command()
def down() -> None:
    """Stop the servers `kiln up` started."""
    root = env.find_root()
    from pipelines import servers

    stopped = servers.down(root)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no Kiln servers were running")


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


def _registry(root):
    """(MLflow client, registered model name, params)."""
    from pipelines import tracking
    from pipelines.params import load

    params = load(root / "params.yaml")
    return tracking.client(), params.register_.model_name, params


@app.command()
def promote(
    version: Annotated[int | None, typer.Option("--version", "-v", help="promote this registered version by hand")] = None,
    reason: Annotated[str | None, typer.Option(help="why (recorded in the history; needed with --force)")] = None,
    force: Annotated[bool, typer.Option("--force", help="skip the gate; who, what and why are recorded")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="move champion back to the previous champion")] = False,
) -> None:
    """Promote a version through the gate, force it, or roll the champion back."""
    root = _root()
    from components.deploy.gate import Check, Decision
    from pipelines import registry

    client, name, params = _registry(root)
    if rollback == (version is not None):
        raise KilnError("give either --rollback or --version N")
    if force and not reason:
        raise KilnError("--force needs --reason: the history records why the gate was skipped")
    with registry.registry_errors(f"promote: '{name}'"):
        if rollback:
            before, after = registry.rollback(client, name, reason)
            typer.echo(f"champion of '{name}': version {before} -> {after} (rollback)")
            return
        challenger = registry.version(client, name, version)
        champion = registry.alias(client, name, registry.CHAMPION)
        if force:
            decision = Decision([Check("forced", True, f"gate skipped by hand: {reason}")])
            metrics: dict[str, float] = {}
        else:
            from pipelines.io import read_parquet

            test = read_parquet(root / params.paths.split / "test.parquet", "promote", "split")
            decision, mine, theirs, champion = registry.gate(client, name, challenger, test, params.promote,
                                                             params.evaluate)
            metrics = registry.gate_metrics(mine, theirs)
        after = registry.conclude(client, name, challenger.version, decision, champion,
                                  "force" if force else "manual", reason, metrics)
    verdict = "promoted" if decision.promote else "NOT promoted"
    typer.echo(f"version {challenger.version} of '{name}' {verdict}; champion is version {after}")
    for line in decision.reasons:
        typer.echo(f"  {line}")
    if not decision.promote:
        sys.exit(1)


@app.command()
def history() -> None:
    """The champion history: when, what, which version, metrics and reasons."""
    import json

    root = _root()
    from pipelines import registry

    client, name, _ = _registry(root)
    with registry.registry_errors(f"history of '{name}'"):
        events = registry.history(client, name)
    if not events:
        typer.echo(f"no promotion decisions for '{name}' yet")
        return
    for item in events:
        f1 = item["metrics"].get("challenger/macro_f1")
        score = f"  macro-F1 {f1:.4f}" if f1 is not None else ""
        typer.echo(f"{item['when']}  {item.get('action', '?'):<8} v{item.get('version', '?'):<4} "
                   f"{'promoted' if item.get('promoted') == 'true' else 'refused '}  champion v{item.get('champion') or '-'}"
                   f" (was v{item.get('previous_champion') or '-'}){score}  by {item.get('who', '?')}")
        if item.get("why"):
            typer.echo(f"    why: {item['why']}")
        for reason in json.loads(item.get("reasons") or "[]"):
            typer.echo(f"    {reason}")


@app.command()
def lineage(version: Annotated[int, typer.Argument(help="registered version number")]) -> None:
    """From a registered version back to its MLflow run, git commit, dvc.lock stage hashes,
    data version and validation report."""
    import json

    import mlflow
    import yaml

    root = _root()
    from pipelines import registry

    client, name, _ = _registry(root)
    with registry.registry_errors(f"lineage of version {version} of '{name}'"):
        found = registry.version(client, name, version)
        tags = found.tags
        lock = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{found.run_id}/lineage/dvc.lock"))
        validation = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/lineage/validation.json")
    typer.echo(f"model        {name} version {found.version} (aliases: {', '.join(found.aliases) or '-'})")
    typer.echo(f"mlflow run   {found.run_id} (parent {tags.get('mlflow.parent_run_id') or '-'})")
    typer.echo(f"prefect      flow run {tags.get('prefect.flow_run_id') or '- (not run by Prefect)'}")
    typer.echo(f"git          {tags.get('git.commit')}{' (dirty tree)' if tags.get('git.dirty') == 'true' else ''}")
    typer.echo(f"dvc.lock     sha256 {tags.get('dvc.lock.sha256')}")
    for stage, entry in (lock or {}).get("stages", {}).items():
        outs = ", ".join(f"{o['path']}={o.get('md5', '?')}" for o in entry.get("outs", []))
        typer.echo(f"  {stage:<10} {outs}")
    typer.echo(f"data         validated {tags.get('data.validated')}, split {tags.get('data.split')}")
    typer.echo(f"validation   {tags.get('data.validation')}: {validation.get('rows')} rows, "
               f"{validation.get('duplicates', {}).get('rows', 0)} duplicates, "
               f"{json.dumps(validation.get('failed', []))[:200]} failed")


@app.command()
def predict(
    text: Annotated[str | None, typer.Argument(help="a text to classify")] = None,
    file: Annotated[str | None, typer.Option("--file", help="JSONL with a 'text' field per line")] = None,
    model: Annotated[str | None, typer.Option(help="model URI (default: models:/<name>@champion)")] = None,
) -> None:
    """Labels and probabilities from the champion, through ONNX Runtime."""
    import json
    import logging

    root = _root()
    from pipelines import registry

    logging.basicConfig(level=logging.WARNING, format="kiln: warning: %(message)s")
    if (text is None) == (file is None):
        raise KilnError("give a text or --file texts.jsonl")
    texts = [text] if text is not None else _jsonl_texts(file)
    _, name, _ = _registry(root)
    uri = model or f"models:/{name}@{registry.CHAMPION}"
    import mlflow

    with registry.registry_errors(f"predict: loading {uri}"):
        loaded = mlflow.pyfunc.load_model(uri)
    import pandas as pd

    from mlflow.exceptions import MlflowException

    try:
        out = loaded.predict(pd.DataFrame({"text": texts}))
    except MlflowException as err:
        raise KilnError(f"predict: {err.message}") from None
    for _, row in out.iterrows():
        label = row["label"]
        probabilities = {k: round(float(v), 4) for k, v in row.items() if k != "label"}
        typer.echo(json.dumps({"label": label, "probabilities": probabilities}))


def _jsonl_texts(path: str) -> list:
    import json
    from pathlib import Path

    texts = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KilnError(f"predict: cannot read {path}: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise KilnError(f"predict: {path} line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict) or "text" not in record:
            raise KilnError(f"predict: {path} line {number} has no 'text' field")
        texts.append(record["text"])
    return texts


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
