"""`kiln up`'s MLflow server as its roles say, on SQLite: a reader reads and can create
nothing through any creating endpoint (nor claim a model name nobody has used yet), a
promoter can; and a server that died is started again by the next `kiln up`."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.support.repo import BIN, clean_env, kiln, kiln_here

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """`kiln up` in the smallest Kiln repository, with a reader and a promoter: started
    once for the module (the restart test comes last, as it kills the MLflow server)."""
    repo = tmp_path_factory.mktemp("roles") / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    (repo / "params.yaml").write_text("{}\n")
    ports = {"prefect": _port(), "mlflow": _port()}
    started = kiln("up", "--prefect-port", str(ports["prefect"]), "--mlflow-port", str(ports["mlflow"]), cwd=repo)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        for name, role in (("rita", "reader"), ("pete", "promoter")):
            added = subprocess.run(
                [str(BIN / "kiln"), "users", "add", name, "--role", role, "--password-stdin"],
                cwd=repo,
                env=clean_env(),
                input=f"{name}-has-a-long-password\n",
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert added.returncode == 0, added.stdout + added.stderr
        yield repo, f"http://127.0.0.1:{ports['mlflow']}"
    finally:
        kiln("down", cwd=repo)


def _as(name: str) -> tuple[str, str]:
    return name, f"{name}-has-a-long-password"


def _admin(repo) -> tuple[str, str]:
    found = json.loads((repo / ".kiln" / "auth.json").read_text())
    return found["user"], found["password"]


def test_a_reader_creates_nothing_and_a_promoter_may(servers):
    repo, url = servers
    api = f"{url}/api/2.0/mlflow"

    def call(who, method: str, path: str, body: dict | None = None, data: bytes | None = None) -> int:
        return requests.request(method, url + path, json=body, data=data, auth=who, timeout=30).status_code

    admin = _admin(repo)
    made = requests.post(f"{api}/experiments/create", json={"name": "kiln"}, auth=admin, timeout=30)
    experiment = made.json()["experiment_id"]
    run = requests.post(f"{api}/runs/create", json={"experiment_id": experiment}, auth=admin, timeout=30)
    run_id = run.json()["run"]["info"]["run_id"]
    assert call(admin, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "kiln-mine"}) == 200
    version = {"name": "kiln-mine", "source": f"runs:/{run_id}/model", "run_id": run_id}
    assert call(admin, "POST", "/api/2.0/mlflow/model-versions/create", version) == 200

    # `kiln users add` recorded its audit entries in the audit experiment.
    found = requests.get(f"{api}/experiments/get-by-name?experiment_name=kiln-audit", auth=admin, timeout=30)
    audit = found.json()["experiment"]["experiment_id"]
    reader = _as("rita")
    creating = {
        "experiment": ("POST", "/api/2.0/mlflow/experiments/create", {"name": "rita's"}),
        "run": ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}),
        "audit run": ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": audit}),
        "logged model": ("POST", "/api/2.0/mlflow/logged-models", {"experiment_id": experiment}),
        "run tags": (
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            {"run_id": run_id, "tags": [{"key": "k", "value": "v"}]},
        ),
        "experiment tag": (
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            {"experiment_id": experiment, "key": "k", "value": "v"},
        ),
        # The name the next dataset's model would take: claimed, it would be the reader's.
        "registered model": ("POST", "/api/2.0/mlflow/registered-models/create", {"name": "kiln-next"}),
        "version": ("POST", "/api/2.0/mlflow/model-versions/create", version),
        "alias": (
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": "kiln-mine", "alias": "champion", "version": "1"},
        ),
        "model tag": (
            "POST",
            "/api/2.0/mlflow/registered-models/set-tag",
            {"name": "kiln-mine", "key": "k", "value": "v"},
        ),
    }
    for what, (method, path, body) in creating.items():
        assert call(reader, method, path, body) == 403, what
    upload = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/planted.txt"
    assert call(reader, "PUT", upload, data=b"planted") == 403
    # Reading is what a reader is for.
    assert call(reader, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 10}) == 200
    assert call(reader, "GET", "/api/2.0/mlflow/registered-models/get?name=kiln-mine") == 200
    assert call(admin, "GET", "/api/2.0/mlflow/registered-models/get?name=kiln-next") == 404

    promoter = _as("pete")
    assert call(promoter, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "kiln-next"}) == 200
    alias = {"name": "kiln-mine", "alias": "champion", "version": "1"}
    assert call(promoter, "POST", "/api/2.0/mlflow/registered-models/alias", alias) == 200
    assert call(promoter, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}) == 200


def test_a_removed_user_is_refused_at_once_though_checked_passwords_are_trusted_a_minute(servers):
    repo, url = servers
    added = subprocess.run(
        [str(BIN / "kiln"), "users", "add", "tess", "--role", "reader", "--password-stdin"],
        cwd=repo,
        env=clean_env(),
        input=_as("tess")[1] + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    me = f"{url}/api/2.0/mlflow/users/current"
    assert requests.get(me, auth=_as("tess"), timeout=10).status_code == 200  # checked, so trusted
    removed = kiln_here("users", "remove", "tess", cwd=repo)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert requests.get(me, auth=_as("tess"), timeout=10).status_code == 401


def test_kiln_ups_mlflow_runs_without_processes_for_genai_jobs(servers):
    import psutil

    repo, _ = servers
    state = json.loads((repo / ".kiln" / "servers.json").read_text())
    started = psutil.Process(state["servers"]["mlflow"]["pid"]).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in started]
    assert any("uvicorn" in c for c in commands), commands  # the server's own worker
    assert not [c for c in commands if "mlflow.server.jobs" in c or "huey" in c], commands


def test_kiln_up_starts_again_the_server_that_died(servers):
    repo, url = servers
    state = json.loads((repo / ".kiln" / "servers.json").read_text())
    prefect_pid = state["servers"]["prefect"]["pid"]
    os.killpg(state["servers"]["mlflow"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/health", timeout=2)
        except requests.RequestException:
            break
        time.sleep(0.5)
    again = kiln("up", cwd=repo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restarted the mlflow server, which had stopped, as it was (prefect still up)" in again.stdout
    assert requests.get(f"{url}/health", timeout=10).ok
    restarted = json.loads((repo / ".kiln" / "servers.json").read_text())
    assert restarted["servers"]["prefect"]["pid"] == prefect_pid
    # Restarted with its sign-in and roles as before.
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "x"}, timeout=10).status_code == 401
    refused = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "x"}, auth=_as("rita"), timeout=10
    )
    assert refused.status_code == 403
    both = kiln("up", cwd=repo)
    assert both.returncode == 1 and "servers are already up" in both.stderr
