"""MLflow runs: one parent run per pipeline execution, one nested child run per stage.

The structure is the same whoever started the stages: the parent carries the tag
`kiln.execution`, and the first stage of an execution creates it. `kiln run` names its
execution in KILN_EXECUTION_ID. Under `dvc repro` each stage is its own process; they
share the `dvc` process that started them all, whose pid and start time name the
execution. A stage run alone (`kiln stage NAME` from a shell) gets a parent of its own.

Every run records the process that owns it (see owners.py): a run whose owner died
without ending it is marked KILLED by the next run.
"""

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import KilnError
from pipelines.core.env import local_tracking_uri, tracking_uri
from pipelines.core.lifecycle import bookkeeping, stopped
from pipelines.servers.auth import refused
from pipelines.tracking.owners import dvc_ancestor, owner, reap

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXECUTION_ENV, FLOW_RUN_ENV = "KILN_EXECUTION_ID", "KILN_PREFECT_FLOW_RUN_ID"
EXECUTION_TAG, PARENT_TAG = "kiln.execution", "mlflow.parentRunId"
# MLflow caps a param value at 6000 characters.
PARAM_LIMIT = 6000
# Opens the experiment on its training runs in MLflow 3's UI, not on the GenAI view.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def client() -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient()


def check() -> None:
    """Fail fast, naming the URI, when the tracking server is not there: a run that finds
    out at the register stage has spent its training time for nothing."""
    import requests

    where = tracking_uri()
    if where.startswith(("http://", "https://")):
        try:
            answer = requests.get(where.rstrip("/") + "/health", timeout=10)
        except requests.RequestException as err:
            raise KilnError(
                f"the MLflow tracking server at {where} is not answering ({type(err).__name__}); "
                f"start it (`kiln up`) or set MLFLOW_TRACKING_URI"
            ) from None
        if not answer.ok:
            raise KilnError(f"the MLflow tracking server at {where} answered {answer.status_code} to /health")


def experiment_id(mlflow: "MlflowClient", name: str, root: Path) -> str:
    """The experiment's id, created on first use. On the embedded store its artifacts go
    under mlflow/artifacts/ (the SQLite store would otherwise use ./mlruns of the cwd)."""
    from mlflow.exceptions import MlflowException

    location = (root / "mlflow" / "artifacts").as_uri() if tracking_uri() == local_tracking_uri(root) else None
    try:
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            try:
                return mlflow.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
            except MlflowException:
                # Another process created it between our lookup and create.
                found = mlflow.get_experiment_by_name(name)
                if found is None:
                    raise
        if KIND_TAG not in found.tags:
            mlflow.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
        return found.experiment_id
    except MlflowException as err:
        check()  # a server that is gone is said so, in one line
        where = tracking_uri()
        raise KilnError(refused(err, where) or f"MLflow tracking at {where} failed: {err.message}") from None


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: {"file": {"path": "x"}} -> {"file.path": "x"}."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(data)[:PARAM_LIMIT]}


def _execution() -> tuple[str, str, bool]:
    """(key, trigger, owned) of the pipeline execution this process belongs to."""
    if key := os.environ.get(EXECUTION_ENV):
        return key, "kiln run", False
    proc = dvc_ancestor()
    if proc is not None:
        return f"dvc-{proc.pid}-{int(proc.create_time())}", "dvc repro", True
    return f"stage-{uuid.uuid4().hex}", "kiln stage", True


def _find(mlflow: "MlflowClient", experiment: str, key: str) -> str | None:
    found = mlflow.search_runs([experiment], filter_string=f"tags.`{EXECUTION_TAG}` = '{key}'", max_results=1)
    return found[0].info.run_id if found else None


def create_parent(mlflow: "MlflowClient", experiment: str, key: str, tags: dict[str, str]) -> str:
    """A parent run for execution `key`, named by its trigger and start time."""
    run = mlflow.create_run(
        experiment,
        run_name=f"{tags['kiln.trigger']} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={EXECUTION_TAG: key, **tags},
    )
    return run.info.run_id


def run_tags(trigger: str, git: tuple[str, bool]) -> dict[str, str]:
    commit, dirty = git
    tags = {"kiln.trigger": trigger, "git.commit": commit, "git.dirty": str(dirty).lower(), **owner()}
    if flow_run := os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = flow_run
    return tags


def end(mlflow: "MlflowClient", run_id: str, status: str) -> None:
    """End a run if the tracking server is still there; if not, the next run marks it
    KILLED (the error that matters is the one the run already has)."""
    from mlflow.exceptions import MlflowException

    with suppress(MlflowException, OSError):
        mlflow.set_terminated(run_id, status)


def _status(err: BaseException | None) -> str:
    if err is None:
        return "FINISHED"
    # Ctrl-C, SIGTERM (as KeyboardInterrupt, or Prefect's TerminationSignal), exits, and
    # errors raised while a stop was being handled.
    return "KILLED" if stopped(err) else "FAILED"


class StageRun:
    """What a stage adapter may log while it runs; everything else the executor logs."""

    def __init__(self, mlflow: "MlflowClient | None", run_id: str | None, parent_id: str | None):
        self.mlflow, self.run_id, self.parent_id = mlflow, run_id, parent_id

    @classmethod
    def offline(cls) -> "StageRun":
        """For processes that must not log (distributed workers): every call is a no-op."""
        return cls(None, None, None)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.mlflow is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.mlflow is not None and path.is_dir():
            self.mlflow.log_artifacts(self.run_id, str(path), artifact_path)
        elif self.mlflow is not None and path.exists():
            self.mlflow.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.mlflow is not None:
            from mlflow.entities import RunTag

            self.mlflow.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@contextmanager
def stage_run(
    name: str, params: dict[str, Any], root: Path, experiment_name: str, tags: dict[str, str], git: tuple[str, bool]
) -> Iterator[StageRun]:
    """A child run for one stage under this execution's parent; FAILED (or KILLED) if the
    block raises, and the parent (when this process owns it) follows the child's status."""
    from mlflow.entities import Param

    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name, root)
    key, trigger, owned = _execution()
    if owned:
        reap(mlflow, experiment)
    base = run_tags(trigger, git)
    parent = _find(mlflow, experiment, key) or create_parent(mlflow, experiment, key, base)
    if owned:
        mlflow.update_run(parent, status="RUNNING")
    run = mlflow.create_run(experiment, run_name=name, tags={PARENT_TAG: parent, "kiln.stage": name, **base, **tags})
    mlflow.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(params).items()])
    failure: BaseException | None = None

    def close() -> None:
        if failure is not None:
            with suppress(Exception):  # best effort, as `end`; see lifecycle.bookkeeping
                mlflow.set_tag(run.info.run_id, "kiln.error", str(failure)[:5000])
        end(mlflow, run.info.run_id, _status(failure))
        if owned:
            end(mlflow, parent, _status(failure))

    try:
        yield StageRun(mlflow, run.info.run_id, parent)
    except BaseException as err:
        failure = err
        raise
    finally:
        bookkeeping(failure, close)


@contextmanager
def pipeline_run(root: Path, experiment_name: str, key: str | None = None) -> Iterator[None]:
    """Group the stages a `kiln run` executes under one parent run, created when the first
    stage starts (a run with nothing to do leaves no empty parent) and closed here. With
    `key`, the parent is the run already tagged with it, and its owner closes it."""
    owner = key is None
    key = key or f"flow-{uuid.uuid4().hex}"
    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name, root)
    reap(mlflow, experiment)
    previous = os.environ.get(EXECUTION_ENV)
    os.environ[EXECUTION_ENV] = key
    failure: BaseException | None = None
    try:
        yield
    except BaseException as err:
        failure = err
        raise
    finally:
        if previous is None:
            os.environ.pop(EXECUTION_ENV, None)
        else:
            os.environ[EXECUTION_ENV] = previous
        if owner:
            from mlflow.exceptions import MlflowException

            try:
                run_id = _find(mlflow, experiment, key)
            except (MlflowException, OSError):
                run_id = None
            if run_id:
                end(mlflow, run_id, _status(failure))
