"""Commands that start servers: `up`, `down`, `ui`, `serve-model`."""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.app import app, repo_root
from pipelines.core import env, statedir


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address both servers bind; 127.0.0.1 keeps them local")] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="no sign-in on either server: for a throwaway local run only")
    ] = False,
) -> None:
    """Start a Prefect server and an MLflow tracking server in the background
    (PostgreSQL if KILN_DB_URL is set, else SQLite files), both requiring a sign-in."""
    root = repo_root()
    from pipelines.servers import auth, control

    if no_auth:
        typer.echo(
            f"kiln: warning: --no-auth: anyone who reaches {host} can write to MLflow and Prefect "
            f"and move the champion",
            err=True,
        )
    state = control.up(root, host, prefect_port, mlflow_port, secure=not no_auth)
    if kept := sorted(set(state["servers"]) - set(state["started"])):
        typer.echo(
            f"restarted the {' and '.join(state['started'])} server, which had stopped, as it was "
            f"({' and '.join(kept)} still up)"
        )
    prefect, mlflow = state["servers"]["prefect"], state["servers"]["mlflow"]
    typer.echo(f"Prefect UI and API: {prefect['url'].removesuffix('/api')}  (log {prefect['log']})")
    typer.echo(f"MLflow UI:          {mlflow['url']}  (log {mlflow['log']})")
    if state["auth"]:
        typer.echo(
            f"sign-in: user '{auth.ADMIN}', password in {statedir.credentials_file(root)} (readable by you alone); "
            f"`kiln users add` makes more"
        )
    typer.echo(
        f"backend store: {state['backend']}; artifacts: {state['artifacts']}; "
        f"addresses in {statedir.servers_file(root)}, used by every kiln command here; `kiln down` stops both"
    )


@app.command()
def down() -> None:
    """Stop the servers `kiln up` started."""
    root = env.find_root()
    from pipelines.servers import control

    stopped = control.down(root)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no Kiln servers were running")


def _become(command: list[str], banner: str) -> None:
    """Replace this process with `command`, so Ctrl-C and kill reach the server itself;
    it inherits Kiln's environment (pickle deserialization off among it)."""
    typer.echo(banner, color=False)
    sys.stdout.flush()
    # MLflow starts its server programs (uvicorn, gunicorn) by name: from this venv.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.execv(command[0], command)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port to serve on")] = 5000,
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it local")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on Kiln's tracking store, and print the address of its runs."""
    from pipelines.core.params import load
    from pipelines.tracking import experiments, runs

    root = repo_root()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    (root / "mlflow").mkdir(exist_ok=True)
    import mlflow  # noqa: F401 - sets up its own loggers, which the next line quiets

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its note that it made the store's tables
    experiment = experiments.experiment_id(runs.client(), load(root / "params.yaml").tracking.experiment)
    # MLflow 3's UI opens an experiment on its GenAI view unless the address asks for the
    # machine-learning one: no tag of the experiment chooses it (3.17 reads the address,
    # then the browser's last choice).
    runs_page = f"http://{host}:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    _become(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)],
        f"MLflow UI: {runs_page}  (store: {uri}; Ctrl-C stops it)",
    )


@app.command("serve-model")
def serve_model(
    model: Annotated[str | None, typer.Option(help="model URI (default: models:/<name>@champion)")] = None,
    port: Annotated[int, typer.Option(help="port to serve on")] = 5001,
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it local")] = "127.0.0.1",
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="record each request in the inference log (params.yaml: serve)")
    ] = True,
) -> None:
    """Serve a registered model over HTTP (MLflow's scoring server), never unpickling, and
    record what it is asked and answers in the inference log."""
    root = repo_root()
    from pipelines.core.params import load

    params = load(root / "params.yaml")
    name = params.register_.name_for(params.ingest)
    from pipelines.cli.registry import local_folder
    from pipelines.registry import lookup
    from pipelines.registry.models import registry_errors
    from pipelines.tracking import runs

    # The version is fetched and checked here, and the server loads that checked folder,
    # not the URI: a model that cannot be served (code that is not Kiln's, a missing
    # version) is one clear line, not the server's traceback.
    with registry_errors(f"serve-model: loading {model or name}"):
        found = lookup.resolve(runs.client(), model, name, "serve-model")
        folder = local_folder(root, found, "serve-model")
        import mlflow

        mlflow.pyfunc.load_model(str(folder))
    uri = f"models:/{found.name}/{found.version}"
    where = (
        f"requests logged to {params.serve.log_dir} (texts {params.serve.log_text})" if log else "requests not logged"
    )
    _become(
        [
            sys.executable,
            "-m",
            "pipelines.servers.scoring",
            str(folder),
            host,
            str(port),
            found.name,
            str(found.version),
            *([] if log else ["--no-log"]),
        ],
        f"serving {uri} on http://{host}:{port}/invocations; {where} (Ctrl-C stops it)",
    )
