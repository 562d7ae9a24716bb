"""MLflow runs: one parent run per pipeline execution, one nested child run per stage.

The structure is the same whoever started the stages: the parent carries the tag
`kiln.execution`, and the first stage of an execution creates it. `kiln run` names its
execution in KILN_EXECUTION_ID. Under `dvc repro` each stage is its own process; they
share the `dvc` process that started them all, whose pid and start time name the
execution. A stage run alone (`kiln stage NAME` from a shell) gets a parent of its own.

Every run records the process that owns it (see owners.py): a run whose owner died
without ending it is marked KILLED by the next run.
"""

import getpass
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from pipelines.core.lifecycle import bookkeeping, stopped
from pipelines.tracking.experiments import experiment_id
from pipelines.tracking.owners import dvc_ancestor, owner, reap
from pipelines.tracking.stagerun import StageRun, log_params

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXECUTION_ENV, FLOW_RUN_ENV = "KILN_EXECUTION_ID", "KILN_PREFECT_FLOW_RUN_ID"
# The Prefect flow run's name, which the parent run takes, so the two UIs name it alike.
RUN_NAME_ENV = "KILN_RUN_NAME"
EXECUTION_TAG, PARENT_TAG = "kiln.execution", "mlflow.parentRunId"
# The experiment `dvc exp run` is running (DVC sets it for the stages): the parent run's name.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"


def client() -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient()


def _execution() -> tuple[str, str, bool]:
    """(key, trigger, owned) of the pipeline execution this process belongs to."""
    if key := os.environ.get(EXECUTION_ENV):
        return key, "kiln run", False
    proc = dvc_ancestor()
    if proc is not None:
        trigger = "dvc exp run" if os.environ.get(DVC_EXPERIMENT_ENV) else "dvc repro"
        return f"dvc-{proc.pid}-{int(proc.create_time())}", trigger, True
    return f"stage-{uuid.uuid4().hex}", "kiln stage", True


def _find(mlflow: "MlflowClient", experiment: str, key: str) -> str | None:
    found = mlflow.search_runs([experiment], filter_string=f"tags.`{EXECUTION_TAG}` = '{key}'", max_results=1)
    return found[0].info.run_id if found else None


def parent_of(experiment_name: str, key: str) -> tuple[str, str | None]:
    """(experiment id, parent run id or None) of execution `key`."""
    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name)
    return experiment, _find(mlflow, experiment, key)


def run_name(trigger: str) -> str:
    """A pipeline run's name, in MLflow and Prefect alike: its trigger and start time."""
    return f"{trigger} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def create_parent(mlflow: "MlflowClient", experiment: str, key: str, tags: dict[str, str]) -> str:
    """A parent run for execution `key`, named as its Prefect flow run, or by its trigger
    and start time."""
    experiment_name = os.environ.get(DVC_EXPERIMENT_ENV)
    run = mlflow.create_run(
        experiment,
        run_name=os.environ.get(RUN_NAME_ENV)
        or (f"dvc exp {experiment_name}" if experiment_name else run_name(tags["kiln.trigger"])),
        tags={EXECUTION_TAG: key, **tags},
    )
    return run.info.run_id


def context_tags(source: str) -> dict[str, str]:
    """The tags `mlflow.start_run` would give a run (Kiln creates its runs with
    `MlflowClient.create_run`, which gives none): the UI's User and Source columns."""
    return {"mlflow.user": getpass.getuser(), "mlflow.source.name": source, "mlflow.source.type": "LOCAL"}


def run_tags(trigger: str, git: tuple[str, bool]) -> dict[str, str]:
    """A pipeline run's tags: MLflow's context (the commit is the UI's Version column) and
    Kiln's own, under kiln.*."""
    commit, dirty = git
    tags = {
        **context_tags(trigger),
        "mlflow.source.git.commit": commit,
        "kiln.trigger": trigger,
        "kiln.git.dirty": str(dirty).lower(),
        **owner(),
    }
    if flow_run := os.environ.get(FLOW_RUN_ENV):
        tags["kiln.prefect.flow_run_id"] = flow_run
    if experiment := os.environ.get(DVC_EXPERIMENT_ENV):
        tags["kiln.dvc.experiment"] = experiment
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


def _active(run_id: str):
    """MLflow's fluent API with the stage's run active and its system metrics (CPU, memory,
    disk, network, GPU) sampled, as `mlflow.start_run(log_system_metrics=True)` does for
    the runs it creates."""
    import mlflow as fluent

    fluent.start_run(run_id=run_id, log_system_metrics=True)
    return fluent


@contextmanager
def stage_run(
    name: str,
    params: dict[str, Any],
    experiment_name: str,
    git: tuple[str, bool],
    pipeline_params: dict[str, Any],
) -> Iterator[StageRun]:
    """A child run for one stage under this execution's parent; FAILED (or KILLED) if the
    block raises, and the parent (when this process owns it) follows the child's status.
    The stage's run carries the params sections it reads; a parent made here, every param."""
    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name)
    key, trigger, owned = _execution()
    if owned:
        reap(mlflow, experiment)
    base = run_tags(trigger, git)
    parent = _find(mlflow, experiment, key)
    if parent is None:
        parent = create_parent(mlflow, experiment, key, base)
        log_params(mlflow, parent, pipeline_params)
    if owned:
        mlflow.update_run(parent, status="RUNNING")
    run = mlflow.create_run(experiment, run_name=name, tags={PARENT_TAG: parent, "kiln.stage": name, **base})
    log_params(mlflow, run.info.run_id, params)
    fluent = _active(run.info.run_id)
    failure: BaseException | None = None

    def close() -> None:
        if failure is not None:
            with suppress(Exception):  # best effort, as `end`; see lifecycle.bookkeeping
                mlflow.set_tag(run.info.run_id, "kiln.error", str(failure)[:5000])
        try:
            fluent.end_run(_status(failure))  # ends the run and its system metrics
        except Exception:  # noqa: BLE001 - ended by the client then, or marked KILLED by the next run
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
def pipeline_run(experiment_name: str, key: str, owner: bool) -> Iterator[None]:
    """Group the stages of execution `key` under one parent run, created when the first
    stage starts (a run with nothing to do leaves no empty parent) and, if this is its
    `owner`, closed here; otherwise (the retrain flow's run) whoever made it closes it."""
    mlflow = client()
    experiment = experiment_id(mlflow, experiment_name)
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
