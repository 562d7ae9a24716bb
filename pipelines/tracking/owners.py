"""Which process owns an MLflow run, and ending the runs whose owner is gone.

Every run Kiln creates is tagged with its host, pid and the pid's start time. A run whose
owner died without ending it (kill -9, a full machine, a lost node) would stay RUNNING
for ever; the next run on the same host marks it KILLED.
"""

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient


def owner() -> dict[str, str]:
    import psutil

    me = psutil.Process()
    return {"kiln.host": socket.gethostname(), "kiln.pid": str(me.pid), "kiln.pid_started": str(me.create_time())}


def reap(mlflow: "MlflowClient", experiment: str) -> int:
    """Mark KILLED the RUNNING runs of this host whose owning process is gone; returns
    how many."""
    import psutil

    host, count = socket.gethostname(), 0
    for run in mlflow.search_runs([experiment], filter_string="attributes.status = 'RUNNING'", max_results=200):
        tags = run.data.tags
        if tags.get("kiln.host") != host or "kiln.pid" not in tags:
            continue
        try:
            alive = abs(psutil.Process(int(tags["kiln.pid"])).create_time() - float(tags["kiln.pid_started"])) < 1
        except (psutil.Error, ValueError):
            alive = False
        if not alive:
            mlflow.set_terminated(run.info.run_id, "KILLED")
            count += 1
    return count


def dvc_ancestor() -> Any:
    """The `dvc` process this one runs under, if any."""
    import psutil

    for proc in psutil.Process().parents():
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if any(Path(arg).name == "dvc" for arg in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
            return proc
    return None
