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
from prefect.states import Completed, Failed

from components.errors import KilnError
from pipelines import console, dag, executor, metrics, tracking
from pipelines.env import find_root
from pipelines.io import chain, user_error
from pipelines.lifecycle import API_START_S, tied_api_server
from pipelines.params import load
from pipelines.records import Promotion


@dataclass
class StageRow:
    name: str
    status: str  # ran | up to date | failed
    seconds: float
    headline: str = ""

    def line(self) -> str:
        took = f"{self.seconds:7.1f} s" if self.status != "up to date" else " " * 9
        return f"{self.name:<10} {self.status:<11} {took}  {self.headline}".rstrip()


def transient(_task, _task_run, state) -> bool:
    """Retry a stage only for what may pass by itself: a connection that dropped or
    timed out (a tracking server that blinked, say). A bug or a missing file would fail
    again the same way, and user errors are not retried (see `reproduce`)."""
    err = state.result(raise_on_failure=False)
    return isinstance(err, BaseException) and any(
        isinstance(e, (ConnectionError, TimeoutError))
        or "Timeout" in type(e).__name__
        or "Connection" in type(e).__name__
        for e in chain(err)
    )


@task(cache_policy=NO_CACHE)
def reproduce(repo, stage, force: bool, outcomes: dict[str, executor.Outcome]) -> StageRow:
    name = dag.stage_name(stage)
    try:
        ran = dag.reproduce(repo, stage, force=force)
    except Exception as err:
        # A user error (bad data, bad params, a missing input, a full disk) fails the task
        # with its message alone: no retry, and no traceback in the log.
        if user := user_error(err):
            return Failed(message=str(user), data=user)
        raise
    if not ran:
        return StageRow(name, "up to date", 0.0)
    outcome = outcomes[name]
    return StageRow(name, "ran", outcome.seconds, metrics.headline(name, outcome.result.metrics))


@flow(name="kiln-pipeline")
def pipeline(targets: list[str] | None = None, force: bool = False, execution: str | None = None):
    """Bring the stages of dvc.yaml up to date, a line per stage as it ends. A stage that
    fails on a user error ends the flow Failed, with that error's message; a new version
    the gate refused ends it Completed, named "Not promoted". `execution` names an MLflow
    run already made (by the retrain flow) to hold the stages."""
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[tracking.FLOW_RUN_ENV] = str(flow_run.get_id())
    repo = dag.open_repo(root)
    outcomes: dict[str, executor.Outcome] = {}
    spent: dict[str, float] = {}
    show = console.get()

    def execute(stage, name: str) -> None:
        start = time.perf_counter()
        try:
            outcomes[name] = executor.execute(root, name, stage)
        finally:
            spent[name] = time.perf_counter() - start

    rows: list[StageRow] = []
    failure: KilnError | None = None
    options = {
        "retries": params.orchestration.retries,
        "retry_delay_seconds": params.orchestration.retry_delay_s,
        "retry_condition_fn": transient,
    }
    try:
        with tracking.pipeline_run(root, params.tracking.experiment, execution), dag.in_process(execute):
            for stage in dag.plan(repo, targets):
                name = dag.stage_name(stage)
                show.status(f"{name} ...")
                state = reproduce.with_options(task_run_name=name, **options)(
                    repo, stage, force, outcomes, return_state=True
                )
                if state.is_failed():
                    rows.append(StageRow(name, "failed", spent.get(name, 0.0)))
                    show.line(rows[-1].line())
                    error = state.result(raise_on_failure=False)
                    if isinstance(error, BaseException) and user_error(error) is None:
                        # A gone tracking server fails a stage with MLflow's own error:
                        # say so in one line instead.
                        tracking.check()
                    # Raised inside the block, so the MLflow parent run ends FAILED.
                    raise error if isinstance(error, BaseException) else RuntimeError(state.message)
                rows.append(state.result())
                show.line(rows[-1].line())
                if rows[-1].status == "ran" and name != "promote":  # promote's decision ends the run's output
                    for line in outcomes[name].result.summary:
                        show.line(f"           {line}")
    except KilnError as err:
        failure = err
    show.line(footer(rows, time.time() - psutil.Process().create_time()))
    promotion = (
        Promotion.read(root / params.paths.reports / "promotion.json", "kiln run", "promote")
        if any(r.name == "promote" and r.status == "ran" for r in rows)
        else None
    )
    if promotion is not None:
        show.line(promotion.headline())
        if promotion.resolution:
            show.line(f"  note: {promotion.resolution}")
        for reason in promotion.reasons:
            if reason.startswith("FAIL"):
                show.line(f"  {reason}")
    data = {"rows": rows, "promotion": promotion}
    if failure is not None:
        return Failed(message=str(failure), data=failure)
    if promotion is not None and not promotion.promoted:
        return Completed(message=promotion.headline(), name="Not promoted", data=data)
    return Completed(message="pipeline up to date", data=data)


def footer(rows: list[StageRow], wall: float) -> str:
    """Stage work, overhead and total: overhead is the wall time no stage accounts for,
    a failed stage's time included in the work."""
    work = sum(r.seconds for r in rows)
    overhead = max(wall - work, 0.0)
    share = f" ({overhead / wall:.0%})" if wall > 0 else ""
    return f"stage work {work:.1f} s, overhead {overhead:.1f} s{share}, total {wall:.1f} s"


def _start_api():
    """Start Prefect's temporary API server from this (the main) thread, tied to this
    process so the kernel stops it however the run ends; returns the server and a thread
    that waits for it, so its ~10 s start overlaps the imports the flow needs first.
    Prefect finds it again as its one temporary server (`SubprocessASGIServer()`)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    import atexit

    import httpx

    server = tied_api_server()
    server.port = server.find_available_port()
    server.running = True
    server.server_process = server._run_uvicorn_command()
    atexit.register(server.stop)
    healthy = threading.Event()

    def wait() -> None:
        # As long as a busy machine needs while the server lives (see API_START_S).
        deadline = time.monotonic() + API_START_S
        while time.monotonic() < deadline and server.server_process and server.server_process.poll() is None:
            try:
                if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                    healthy.set()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    waiter = threading.Thread(target=wait, daemon=True, name="prefect-api")
    waiter.start()
    return server, waiter, healthy


def run_flow(fn, **parameters):
    """Run a flow in this process, on Prefect's temporary API unless a server is set;
    returns its final state."""
    api = _start_api()
    try:
        import mlflow  # noqa: F401  (needed by every stage; imported while the server starts)

        if api is not None:
            began = time.monotonic()
            while api[1].is_alive():
                api[1].join(5)
                if api[1].is_alive():
                    waited = time.monotonic() - began
                    console.get().progress("prefect-api", f"starting Prefect's temporary API ({waited:.0f} s)")
            if not api[2].is_set():
                raise KilnError(f"Prefect's temporary API server did not start; its output is in {console.get().log}")
        return fn(**parameters, return_state=True)
    finally:
        if api is not None:
            # The flow's last log lines go to the API before it stops.
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all()
            api[0].stop()
