"""`kiln run`: a Prefect flow over the DAG in dvc.yaml, one task per stage.

Prefect owns execution (task runs, retries, the flow run id in MLflow); DVC decides
what is stale and records what ran, so `kiln run` skips and leaves dvc.lock exactly as
`dvc repro` would.
"""

import os
import threading
import time
from dataclasses import dataclass

import psutil
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from components.errors import KilnError
from pipelines import dag, stages, tracking
from pipelines.env import find_root
from pipelines.params import load


@dataclass
class StageRow:
    name: str
    status: str  # ran | up to date | from run cache | failed
    seconds: float


def _chain(err: BaseException | None):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def transient(_task, _task_run, state) -> bool:
    """Retry a stage only for what may pass by itself: a connection that dropped or
    timed out (a tracking server that blinked, say). A bug or a missing file would fail
    again the same way, and user errors are not retried (see `reproduce`)."""
    err = state.result(raise_on_failure=False)
    return isinstance(err, BaseException) and any(
        isinstance(e, (ConnectionError, TimeoutError)) or "Timeout" in type(e).__name__
        or "Connection" in type(e).__name__
        for e in _chain(err)
    )


@task(cache_policy=NO_CACHE)
def reproduce(repo, stage, force: bool, timings: dict[str, stages.Timing]) -> StageRow:
    name = dag.stage_name(stage)
    try:
        ran = dag.reproduce(repo, stage, force=force)
    except Exception as err:
        # A user error (bad data, bad params, a missing input) fails the task with its
        # message alone: no retry, and no traceback in the log.
        if user := next((e for e in _chain(err) if isinstance(e, KilnError)), None):
            return Failed(message=str(user), data=user)
        raise
    if not ran:
        return StageRow(name, "up to date", 0.0)
    if name in timings:
        return StageRow(name, "ran", timings[name].seconds)
    return StageRow(name, "from run cache", 0.0)


@flow(name="kiln-pipeline")
def pipeline(targets: list[str] | None = None, force: bool = False, execution: str | None = None):
    """Bring the stages of dvc.yaml up to date; prints a table of what ran and how long.
    A stage that fails on a user error ends the flow Failed, with that error's message.
    `execution` names an MLflow run already made (by the retrain flow) to hold the stages."""
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[tracking.FLOW_RUN_ENV] = str(flow_run.get_id())
    repo = dag.open_repo(root)
    timings: dict[str, stages.Timing] = {}

    def execute(stage, name: str) -> None:
        timings[name] = stages.execute(root, name, stage)

    rows: list[StageRow] = []
    failure: KilnError | None = None
    task_options = {
        "retries": params.orchestration.retries,
        "retry_delay_seconds": params.orchestration.retry_delay_s,
        "retry_condition_fn": transient,
    }
    try:
        with tracking.pipeline_run(root, params.tracking.experiment, execution), dag.in_process(execute):
            for stage in dag.plan(repo, targets):
                name = dag.stage_name(stage)
                step = reproduce.with_options(task_run_name=name, **task_options)
                state = step(repo, stage, force, timings, return_state=True)
                if state.is_failed():
                    rows.append(StageRow(name, "failed", 0.0))
                    error = state.result(raise_on_failure=False)
                    # Raised inside the block, so the MLflow parent run ends FAILED.
                    raise error if isinstance(error, BaseException) else RuntimeError(state.message)
                rows.append(state.result())
    except KilnError as err:
        failure = err
    # Wall time since this process started, interpreter start-up included.
    print(table(rows, time.time() - psutil.Process().create_time()))
    if failure is not None:
        return Failed(message=str(failure), data=failure)
    return rows


def _start_api() -> "threading.Thread | None":
    """Start Prefect's temporary API server in the background, so its ~10 s start overlaps
    the imports that come before the flow needs it."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.server.api.server import SubprocessASGIServer

    thread = threading.Thread(target=SubprocessASGIServer().start, daemon=True, name="prefect-api")
    thread.start()
    return thread


def table(rows: list[StageRow], wall: float) -> str:
    work = sum(r.seconds for r in rows)
    lines = [f"{'stage':<12} {'status':<15} {'seconds':>8}"]
    lines += [f"{r.name:<12} {r.status:<15} {r.seconds:>8.1f}" for r in rows]
    overhead = wall - work
    share = f" ({overhead / wall:.0%})" if wall > 0 else ""
    lines += [
        f"{'stage work':<28} {work:>8.1f}",
        f"{'overhead':<28} {overhead:>8.1f}{share}",
        f"{'total':<28} {wall:>8.1f}",
    ]
    return "\n".join(lines)


def run(targets: list[str] | None, force: bool) -> None:
    """Run the pipeline flow; a failed stage's user error is raised as that KilnError."""
    run_flow(pipeline, targets=targets or None, force=force).result()


def run_flow(fn, **parameters):
    """Run a flow in this process, on Prefect's temporary API unless a server is set;
    returns its final state."""
    server = _start_api()
    import mlflow  # noqa: F401  (needed by every stage; imported while the server starts)

    if server is not None:
        server.join()
    try:
        state = fn(**parameters, return_state=True)
    finally:
        if server is not None:
            # The flow's last log lines go to the API before it stops.
            from prefect.logging.handlers import APILogWorker
            from prefect.server.api.server import SubprocessASGIServer

            APILogWorker.drain_all()
            SubprocessASGIServer().stop()
    return state
