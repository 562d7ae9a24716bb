"""MLflow runs: one parent run per pipeline execution, one nested child run per stage.

The structure is the same whoever started the stages: the parent carries the tag
`kiln.execution`, and the first stage of an execution creates it. `kiln run` names its
execution in KILN_EXECUTION_ID. Under `dvc repro` each stage is its own process; they
share the `dvc` process that started them all, whose pid and start time name the
execution. A stage run alone (`kiln stage NAME` from a shell) gets a parent of its own.
"""

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import KilnError
from pipelines.env import git_state, local_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXECUTION_ENV = "KILN_EXECUTION_ID"
FLOW_RUN_ENV = "KILN_PREFECT_FLOW_RUN_ID"
EXECUTION_TAG = "kiln.execution"
PARENT_TAG = "mlflow.parentRunId"
# MLflow caps a param value at 6000 characters.
PARAM_LIMIT = 6000


def client() -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient()


def experiment_id(mlflow: "MlflowClient", name: str, root: Path) -> str:
    """The experiment's id, created on first use. On the embedded store its artifacts go
    under mlflow/artifacts/ (the SQLite store would otherwise use ./mlruns of the cwd)."""
    from mlflow.exceptions import MlflowException

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (root / "mlflow" / "artifacts").as_uri() if uri == local_tracking_uri(root) else None
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:
            # Another stage created it between our lookup and create.
            found = mlflow.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id
    except MlflowException as err:
        raise KilnError(f"MLflow tracking at {uri or '(default)'} failed: {err.message}") from None


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: {"file": {"path": "x"}} -> {"file.path": "x"}."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(data)[:PARAM_LIMIT]}


def _dvc_ancestor() -> Any:
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


@dataclass
class Parent:
    run_id: str
    # True when this process must close the parent (no flow is there to do it).
    owned: bool
    trigger: str


def _execution() -> tuple[str, str, bool]:
    """(key, trigger, owned) of the pipeline execution this process belongs to."""
    if key := os.environ.get(EXECUTION_ENV):
        return key, "kiln run", False
    proc = _dvc_ancestor()
    if proc is not None:
        return f"dvc-{proc.pid}-{int(proc.create_time())}", "dvc repro", True
    return f"stage-{uuid.uuid4().hex}", "kiln stage", True


def _find(mlflow: "MlflowClient", experiment: str, key: str) -> str | None:
    found = mlflow.search_runs([experiment], filter_string=f"tags.`{EXECUTION_TAG}` = '{key}'", max_results=1)
    return found[0].info.run_id if found else None


def resolve_parent(mlflow: "MlflowClient", experiment: str, root: Path) -> Parent:
    """The execution's parent run, created by the first stage that needs it. Stages of
    one execution run one after another, so two never race to create it."""
    key, trigger, owned = _execution()
    run_id = _find(mlflow, experiment, key) or create_parent(mlflow, experiment, root, key, trigger)
    return Parent(run_id, owned, trigger)


def create_parent(mlflow: "MlflowClient", experiment: str, root: Path, key: str, trigger: str) -> str:
    """A parent run for execution `key`, named by its trigger and start time."""
    run = mlflow.create_run(
        experiment,
        run_name=f"{trigger} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={EXECUTION_TAG: key, **run_tags(root, trigger)},
    )
    return run.info.run_id


def run_tags(root: Path, trigger: str) -> dict[str, str]:
    commit, dirty = git_state(root)
    tags = {"kiln.trigger": trigger, "git.commit": commit, "git.dirty": str(dirty).lower()}
    if flow_run := os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = flow_run
    return tags


class StageRun:
    """What a stage adapter may log while it runs; everything else the executor logs."""

    def __init__(self, mlflow: "MlflowClient | None", run_id: str | None, parent_id: str | None):
        self.mlflow = mlflow
        self.run_id = run_id
        self.parent_id = parent_id

    @classmethod
    def offline(cls) -> "StageRun":
        """For processes that must not log (distributed workers): every call is a no-op."""
        return cls(None, None, None)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.mlflow is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.mlflow.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.mlflow is None:
            return
        if path.is_dir():
            self.mlflow.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.mlflow.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.mlflow is None:
            return
        from mlflow.entities import RunTag

        self.mlflow.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@contextmanager
def stage_run(name: str, params: dict[str, Any], root: Path, experiment_name: str,
              tags: dict[str, str]) -> Iterator[StageRun]:
    """A child run for one stage under this execution's parent; FAILED if the block
    raises, and the parent (when this process owns it) follows the child's status."""
    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name, root)
    parent = resolve_parent(mlflow, experiment, root)
    if parent.owned:
        mlflow.update_run(parent.run_id, status="RUNNING")
    run = mlflow.create_run(
        experiment,
        run_name=name,
        tags={PARENT_TAG: parent.run_id, "kiln.stage": name, **run_tags(root, parent.trigger), **tags},
    )
    handle = StageRun(mlflow, run.info.run_id, parent.run_id)
    from mlflow.entities import Param

    flat = flatten(params, name)
    mlflow.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat.items()])
    status = "FAILED"
    try:
        yield handle
        status = "FINISHED"
    except BaseException as err:
        mlflow.set_tag(run.info.run_id, "kiln.error", str(err)[:5000])
        raise
    finally:
        mlflow.set_terminated(run.info.run_id, status)
        if parent.owned:
            mlflow.set_terminated(parent.run_id, status)


@contextmanager
def pipeline_run(root: Path, experiment_name: str, key: str | None = None) -> Iterator[None]:
    """Group the stages a `kiln run` executes under one parent run, created when the first
    stage starts (a run with nothing to do leaves no empty parent) and closed here. With
    `key`, the parent is the run already tagged with it, and its owner closes it."""
    owner = key is None
    key = key or f"flow-{uuid.uuid4().hex}"
    previous = os.environ.get(EXECUTION_ENV)
    os.environ[EXECUTION_ENV] = key
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        if previous is None:
            os.environ.pop(EXECUTION_ENV, None)
        else:
            os.environ[EXECUTION_ENV] = previous
        mlflow = client()
        if owner and (run_id := _find(mlflow, experiment_id(mlflow, experiment_name, root), key)):
            mlflow.set_terminated(run_id, status)
