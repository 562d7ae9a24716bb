"""`kiln up` and `kiln down`: a Prefect server and an MLflow tracking server in the
background, on PostgreSQL when KILN_DB_URL names one, else on SQLite files.

Their addresses go to `.kiln/servers.json`; every later `kiln` command in the repository
reads them from there (`env.configure`) unless MLFLOW_TRACKING_URI or PREFECT_API_URL is
set. Both require a sign-in by default (MLflow's basic-auth app, Prefect's API auth string;
see auth.py). Both bind to 127.0.0.1 unless told otherwise.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from components.errors import KilnError
from pipelines.core import statedir
from pipelines.core.env import read_servers
from pipelines.servers import auth, stores
from pipelines.servers.stores import DB_ENV


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _start(command: list[str], log: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A session of its own: the server outlives this command and `kiln down` stops
        # its whole process group (uvicorn and gunicorn start workers).
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    return proc.pid


def _wait(url: str, pid: int, log: Path, what: str, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else ""
            raise KilnError(f"the {what} stopped while starting; the end of {log}:\n{tail}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise KilnError(f"the {what} did not answer {url} within {timeout:.0f} s; see {log}")


def _alive(pid: int) -> bool:
    """Running, not a zombie (exited, not yet reaped by its parent)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def up(root: Path, host: str, prefect_port: int, mlflow_port: int, secure: bool = True, timeout: float = 180.0) -> dict:
    """Start both servers and write their addresses; returns the state written, with the
    servers started this time under "started". When an earlier `up`'s server died and the
    other still runs, the dead one is started again as it was (host, port, store, sign-in).
    With `secure`, both refuse requests without the credentials of auth.py."""
    current = read_servers(root)
    alive = {name for name, s in (current or {}).get("servers", {}).items() if _alive(s["pid"])}
    if current and alive == set(current["servers"]):
        raise KilnError(f"servers are already up ({statedir.servers_file(root)}); `kiln down` stops them")
    if alive:
        host, prefect_port, mlflow_port, secure = _settings(current)
    db_url = os.environ.get(DB_ENV) or None
    mlflow_store, prefect_db = stores.databases(db_url, root)
    artifacts = (current.get("artifacts") if alive else None) or stores.artifacts_destination(root)
    plan = _plan(root, host, (prefect_port, mlflow_port), secure, (mlflow_store, prefect_db, artifacts))
    starting = [name for name in plan if name not in alive]
    for name in starting:
        port = prefect_port if name == "prefect" else mlflow_port
        if not _port_free(host, port):
            raise KilnError(f"port {port} on {host} is taken; choose another with --prefect-port/--mlflow-port")
    if db_url:
        stores.ensure_databases(db_url)
    for folder in ("mlflow", ".prefect"):
        (root / folder).mkdir(exist_ok=True)
    servers = {name: current["servers"][name] for name in alive}
    for name in starting:
        command, server_env, url, log = plan[name]
        servers[name] = {"url": url, "log": str(log), "pid": _start(command, log, server_env)}
    state = {
        "servers": servers,
        "backend": "postgresql" if db_url else "sqlite",
        "auth": secure,
        "artifacts": artifacts,
    }
    statedir.servers_file(root).parent.mkdir(exist_ok=True)
    statedir.servers_file(root).write_text(json.dumps(state, indent=2))
    try:
        for name in starting:
            what = "Prefect server" if name == "prefect" else "MLflow server"
            _wait(f"{servers[name]['url']}/health", servers[name]["pid"], Path(servers[name]["log"]), what, timeout)
        if secure and "mlflow" in starting:
            auth.check_admin(root, servers["mlflow"]["url"], auth.ensure(root), stores.hide(mlflow_store))
    except KilnError:
        down(root)
        raise
    return {**state, "started": starting}


def _settings(state: dict) -> tuple[str, int, int, bool]:
    """(host, Prefect port, MLflow port, secure) an earlier `up` started its servers with."""
    from urllib.parse import urlsplit

    prefect, mlflow = (urlsplit(state["servers"][name]["url"]) for name in ("prefect", "mlflow"))
    return prefect.hostname, prefect.port, mlflow.port, bool(state.get("auth"))


def _plan(
    root: Path, host: str, ports: tuple[int, int], secure: bool, stores: tuple[str, str, str]
) -> dict[str, tuple[list[str], dict[str, str], str, Path]]:
    """Each server's (command, environment, URL, log), for (Prefect, MLflow) `ports` and
    `stores` (MLflow's backend store, Prefect's database, MLflow's artifact destination)."""
    prefect_port, mlflow_port = ports
    mlflow_store, prefect_db, artifacts = stores
    logs = statedir.folder(root)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    prefect_url = f"http://{host}:{prefect_port}/api"
    prefect_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": prefect_url,
    }
    mlflow_env, mlflow_app = env, []
    if secure:
        credentials = auth.ensure(root)
        prefect_env["PREFECT_SERVER_API_AUTH_STRING"] = credentials.prefect_auth_string
        mlflow_env = {**env, **auth.server_env(root, mlflow_store, credentials)}
        # With workspaces, creating an experiment or registered model takes a workspace
        # grant, which readers lack (roles.py); without, any signed-in user may create.
        mlflow_app = ["--app-name", "basic-auth", "--enable-workspaces"]
    mlflow_command = [str(bin_dir / "mlflow"), "server", *mlflow_app, "--backend-store-uri", mlflow_store]
    mlflow_command += ["--artifacts-destination", artifacts, "--workers", "1"]
    mlflow_command += ["--host", host, "--port", str(mlflow_port)]
    prefect_command = [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)]
    return {
        "prefect": (prefect_command, prefect_env, prefect_url, logs / "prefect.log"),
        "mlflow": (mlflow_command, mlflow_env, f"http://{host}:{mlflow_port}", logs / "mlflow.log"),
    }


def down(root: Path, grace: float = 15.0) -> list[str]:
    """Stop the servers `up` started; returns what was stopped."""
    state = read_servers(root)
    if state is None:
        return []
    stopped = []
    for name, server in state["servers"].items():
        pid = server["pid"]
        if not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    statedir.servers_file(root).unlink(missing_ok=True)
    return stopped
