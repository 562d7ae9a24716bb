"""The production loop on the tiny config: the champion's logged traffic watched by
`kiln monitor`, and a labelling queue exported, labelled by a script, imported and learned
by `kiln retrain`. Every command runs inside the test's process (`kiln_here`), where a
process of its own would add seconds of imports and check nothing more: the flows on the
session's Prefect server, whose events the test reads."""

import json
import os
import re
import time
from datetime import UTC, datetime

import pandas as pd
import pytest
import requests

from tests.support.data import good_batch
from tests.support.repo import SHARED_PREFECT, kiln_here
from tests.support.tiny import incoming_repo

pytestmark = pytest.mark.slow


def logged(repo, texts: list[str]) -> None:
    """`texts` answered by the champion and recorded in the inference log."""
    file = repo / "texts.jsonl"
    file.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    out = kiln_here("predict", "--log", "--file", str(file), cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr


def new_window(repo) -> None:
    """The inference log emptied, as if its earlier traffic were out of the window."""
    for file in (repo / "data/inference").glob("*/*.parquet"):
        file.unlink()


def drift_events(since: datetime) -> list[dict]:
    """The kiln.monitor.drift events the session's Prefect server holds since `since`."""
    wanted = {"filter": {"event": {"name": ["kiln.monitor.drift"]}, "occurred": {"since": since.isoformat()}}}
    answer = requests.post(f"{os.environ[SHARED_PREFECT]}/events/filter", json=wanted, timeout=30)
    return answer.json()["events"]


def test_monitor_fires_on_shifted_traffic_only_and_a_labelled_queue_is_learned(trained, tmp_path):
    started = datetime.now(UTC)
    # From the session's trained models: the same rows come in through the incoming
    # source, so the run redoes ingest and validate, finds the models up to date, and
    # registers and promotes them.
    repo = incoming_repo(trained, monitor={"min_requests": 20})
    first = kiln_here("run", cwd=repo)
    assert first.returncode == 0 and "version 1 of 'kiln-mine' promoted" in first.stdout, first.stdout + first.stderr
    split = pd.concat([pd.read_parquet(p) for p in sorted((repo / "data/split").glob("*.parquet"))])

    # Traffic like the training data: no verdict of drift, no event.
    logged(repo, split["text"].tolist())
    calm = kiln_here("monitor", cwd=repo)
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert f"no drift in kiln-mine v1, {len(split)} texts" in calm.stdout, calm.stdout
    assert "event kiln.monitor.drift" not in calm.stdout and "Traceback" not in calm.stderr
    assert "no drift" in (repo / "reports/monitor.html").read_text()

    # A window of another domain's texts: drift, and the event.
    (repo / "reports/monitor.html").unlink()
    new_window(repo)
    logged(repo, [f"Recipe {i}: whisk two eggs, fold in the flour and bake for {20 + i} minutes." for i in range(40)])
    shifted = kiln_here("monitor", cwd=repo)
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr
    assert "drift in kiln-mine v1, 40 texts" in shifted.stdout and "vocabulary   FAILED" in shifted.stdout
    assert "event kiln.monitor.drift emitted" in shifted.stdout
    deadline, events = time.monotonic() + 60, []
    while not events and time.monotonic() < deadline:
        events = drift_events(started)
        time.sleep(1)
    assert [e["resource"]["prefect.resource.id"] for e in events] == ["kiln.model.kiln-mine.1"]
    assert "vocabulary" in events[0]["payload"]["failed"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("kiln-monitor")
    verdicts = [r.data.tags["kiln.monitor.verdict"] for r in client.search_runs([experiment.experiment_id])]
    assert sorted(verdicts) == ["drift", "no drift"]

    # New texts asked of the champion; the queue picks some, a script labels them.
    new_window(repo)
    logged(repo, good_batch(start=12, rows_per_label=6)["text"].tolist())
    exported = kiln_here("label", "export", "--n", "10", cwd=repo)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    (folder,) = (repo / "data/labelling").iterdir()
    queue = pd.read_csv(folder / "queue.csv", dtype=str, keep_default_na=False)
    assert len(queue) == 10 and not set(queue["text"]) & set(split["text"])
    assert {t["data"]["kiln_id"] for t in json.loads((folder / "tasks.json").read_text())} == set(queue["id"])
    # The labeller leaves two out.
    queue["label"] = [re.search(r"about (\w+):", t).group(1) for t in queue["text"]]
    queue.loc[[3, 7], "label"] = ""
    queue.to_csv(tmp_path / "labelled.csv", index=False)
    imported = kiln_here("label", "import", str(tmp_path / "labelled.csv"), "--by", "rita", cwd=repo)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    again = kiln_here("label", "import", str(tmp_path / "labelled.csv"), cwd=repo)
    assert again.returncode == 1 and "was imported already" in again.stderr

    retrained = kiln_here("retrain", cwd=repo)
    assert retrained.returncode == 0, retrained.stdout + retrained.stderr
    assert "1 batch(es) learned" in retrained.stdout and "drift not checked" in retrained.stdout
    batch = f"labelled-{folder.name}.csv"
    learned = pd.read_parquet(repo / "data/raw/dataset.parquet")
    assert set(queue["text"][queue["label"] != ""]) <= set(learned["text"])
    trail = [json.loads(line) for line in (repo / ".kiln/audit.jsonl").read_text().splitlines()]
    (given,) = [e for e in trail if e["action"] == "labels-imported"]
    assert given["detail"]["export"] == folder.name and given["detail"]["labelled_by"] == "rita"
    assert given["detail"]["rows"] == 8 and given["detail"]["unlabelled"] == 2 and given["version"] == "1"
    (took,) = [e for e in trail if e["action"] == "batch-learned"]
    assert took["detail"]["file"] == f"data/processed/{batch}" and took["data"] == given["data"]
