"""`kiln run`: a Prefect flow over the DAG in dvc.yaml, one task per stage.

Prefect owns execution (task runs, retries, the flow run id in MLflow); DVC decides
what is stale and records what ran, so `kiln run` skips and leaves dvc.lock exactly as
`dvc repro` would.
"""

import logging
import os
import threading
from dataclasses import dataclass

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from components.errors import KilnError
from pipelines import dag, stages, tracking
from pipelines.env import find_root
from pipelines.params import load


@dataclass
class StageRow:
    name: str
    status: str  # ran | up to date | from run cache
    seconds: float


def transient(_task, _task_run, state) -> bool:
    """Retry a stage unless it failed on something the user must fix: bad data, bad
    params, a missing input (a KilnError anywhere in the exception's chain)."""
    try:
        state.result()
    except BaseException as err:  # the state holds the stage's exception; inspect it
        seen = err
        while seen is not None:
            if isinstance(seen, KilnError):
                return False
            seen = seen.__cause__ or seen.__context__
        return True
    return False


@task(cache_policy=NO_CACHE)
def reproduce(repo, stage, force: bool, timings: dict[str, stages.Timing]) -> StageRow:
    name = dag.stage_name(stage)
    ran = dag.reproduce(repo, stage, force=force)
    if not ran:
        return StageRow(name, "up to date", 0.0)
    if name in timings:
        return StageRow(name, "ran", timings[name].seconds)
    return StageRow(name, "from run cache", 0.0)


@flow(name="kiln-pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, force: bool = False) -> list[StageRow]:
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[tracking.FLOW_RUN_ENV] = str(flow_run.get_id())
    repo = dag.open_repo(root)
    # DVC narrates each step and suggests git commands; the flow's table says what ran.
    # (Set after open_repo: importing dvc resets its logger.)
    logging.getLogger("dvc").setLevel(logging.WARNING)
    timings: dict[str, stages.Timing] = {}

    def execute(stage, name: str) -> None:
        timings[name] = stages.execute(root, name, stage)

    rows = []
    task_options = {
        "retries": params.orchestration.retries,
        "retry_delay_seconds": params.orchestration.retry_delay_s,
        "retry_condition_fn": transient,
    }
    with tracking.pipeline_run(root, params.tracking.experiment), dag.in_process(execute):
        for stage in dag.plan(repo, targets):
            step = reproduce.with_options(task_run_name=dag.stage_name(stage), **task_options)
            rows.append(step(repo, stage, force, timings))
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


def run(targets: list[str] | None, force: bool) -> list[StageRow]:
    server = _start_api()
    import mlflow  # noqa: F401  (needed by every stage; imported while the server starts)

    if server is None:
        return pipeline(targets=targets or None, force=force)
    server.join()
    try:
        return pipeline(targets=targets or None, force=force)
    finally:
        # Stopped here rather than at exit, so the time it takes shows in the table; the
        # flow's last log lines go to the API first.
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer

        APILogWorker.drain_all()
        SubprocessASGIServer().stop()
