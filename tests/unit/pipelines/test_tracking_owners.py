"""Runs and the processes that own them: a dead process's runs are marked killed."""

import socket
import subprocess
import sys

import pytest

from pipelines.tracking import experiments, runs
from tests.support.registry import use_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_runs_of_a_process_that_died_are_marked_killed(store):
    from pipelines.tracking.owners import owner, reap

    client = runs.client()
    experiment = experiments.experiment_id(client, "kiln")
    # The UI opens it on its training runs, not on MLflow 3's GenAI view.
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = client.create_run(
        experiment, tags={"kiln.host": socket.gethostname(), "kiln.pid": str(gone.pid), "kiln.pid_started": "0"}
    )
    alive = client.create_run(experiment, tags=owner())
    assert reap(client, experiment) == 1
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
