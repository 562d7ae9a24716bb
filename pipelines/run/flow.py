"""`kiln run`: a Prefect flow over the DAG in dvc.yaml, one task per stage.

Prefect owns execution (task runs, retries, the flow run id in MLflow); DVC decides
what is stale and records what ran, so `kiln run` skips and leaves dvc.lock exactly as
`dvc repro` would.
"""

import importlib
import os
import pkgutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from components.errors import KilnError
from pipelines.core import console, dag
from pipelines.core.env import find_root
from pipelines.core.io import chain, user_error
from pipelines.core.lifecycle import TemporaryApi
from pipelines.core.params import load
from pipelines.core.records import Promotion
from pipelines.run import executor, publish
from pipelines.tracking import experiments, metrics, runs


@dataclass
class StageRow:
    name: str
    status: str  # ran | restored | up to date | failed
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
def reproduce(repo, stage, force: bool, outcomes: dict[str, executor.Outcome], reports: Path) -> StageRow:
    """DVC's reproduction of one stage, if it changed, with its outputs kept (see
    executor.kept): it runs, or DVC restores its outputs from the run-cache."""
    name = dag.stage_name(stage)
    start = time.perf_counter()
    try:
        if not (force or dag.changed(repo, stage)):
            return StageRow(name, "up to date", 0.0)
        with executor.kept(Path(repo.root_dir), stage, reports):
            dag.reproduce(repo, stage, force=force)
    except Exception as err:
        # A user error (bad data, bad params, a missing input, a full disk) fails the task
        # with its message alone: no retry, and no traceback in the log.
        if user := user_error(err):
            return Failed(message=str(user), data=user)
        raise
    if name not in outcomes:
        return StageRow(name, "restored", time.perf_counter() - start, "outputs from DVC's run-cache")
    outcome = outcomes[name]
    return StageRow(name, "ran", outcome.seconds, metrics.headline(name, outcome.result.metrics))


def _run_name() -> str:
    """Under the retrain flow, the name of its run, whose MLflow parent this run's stages
    share; otherwise `kiln run` and the time."""
    if flow_run.get_parameters().get("execution") and (shared := os.environ.get(runs.RUN_NAME_ENV)):
        return shared
    return runs.run_name("kiln run")


@flow(name="kiln-pipeline", flow_run_name=_run_name)
def pipeline(targets: list[str] | None = None, force: bool = False, execution: str | None = None):
    """Bring the stages of dvc.yaml up to date, a line per stage as it ends. A stage that
    fails on a user error ends the flow Failed, with that error's message; a new version
    the gate refused ends it Completed, named "Not promoted". `execution` names an MLflow
    run already made (by the retrain flow) to hold the stages."""
    root = find_root()
    params = load(root / "params.yaml")
    os.environ[runs.FLOW_RUN_ENV] = str(flow_run.get_id())
    os.environ[runs.RUN_NAME_ENV] = flow_run.get_name() or _run_name()
    repo = dag.open_repo(root)
    rows: list[StageRow] = []
    failure: KilnError | None = None
    key = execution or f"flow-{uuid.uuid4().hex}"  # a run of its own, or the retrain flow's
    try:
        _reproduce_all(root, params, repo, targets, force, (key, execution is None), rows)
    except KilnError as err:
        failure = err
    show = console.get()
    show.line(footer(rows, time.time() - psutil.Process().create_time()))
    promotion = (
        Promotion.read(root / params.paths.reports / "promotion.json", "kiln run", "promote")
        if any(r.name == "promote" and r.status == "ran" for r in rows)
        else None
    )
    if promotion is not None:
        _show_promotion(promotion)
    ran = {r.name for r in rows if r.status == "ran"}
    publish.report(root / params.paths.reports, params.tracking.experiment, key, ran, promotion)
    data = {"rows": rows, "promotion": promotion}
    if failure is not None:
        return Failed(message=str(failure), data=failure)
    if promotion is not None and not promotion.promoted:
        return Completed(message=promotion.headline(), name="Not promoted", data=data)
    return Completed(message=publish.outcome([r.status for r in rows], promotion), data=data)


def _reproduce_all(root, params, repo, targets: list[str] | None, force: bool, parent, rows: list[StageRow]) -> None:
    """Each stage of the plan as a task, its row added to `rows` and shown as it ends;
    the first failed stage's error is raised inside the MLflow parent run, so that run
    ends FAILED."""
    outcomes: dict[str, executor.Outcome] = {}
    spent: dict[str, float] = {}
    show = console.get()

    def execute(stage, name: str) -> None:
        start = time.perf_counter()
        try:
            outcomes[name] = executor.execute(root, name, stage, keep=False)
        finally:
            spent[name] = time.perf_counter() - start

    options = {
        "retries": params.orchestration.retries,
        "retry_delay_seconds": params.orchestration.retry_delay_s,
        "retry_condition_fn": transient,
    }
    with runs.pipeline_run(params.tracking.experiment, *parent), dag.in_process(execute):
        for stage in dag.plan(repo, targets):
            name = dag.stage_name(stage)
            show.status(f"{name} ...")
            state = reproduce.with_options(task_run_name=name, **options)(
                repo, stage, force, outcomes, root / params.paths.reports, return_state=True
            )
            if state.is_failed():
                rows.append(StageRow(name, "failed", spent.get(name, 0.0)))
                show.line(rows[-1].line())
                raise _stage_error(state)
            rows.append(state.result())
            show.line(rows[-1].line())
            if rows[-1].status == "ran" and name != "promote":  # promote's decision ends the run's output
                for line in outcomes[name].result.summary:
                    show.line(f"           {line}")


def _stage_error(state) -> BaseException:
    """The error a failed stage's task ended with."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException) and user_error(error) is None:
        # A gone tracking server fails a stage with MLflow's own error: say so in one line instead.
        experiments.check()
    return error if isinstance(error, BaseException) else RuntimeError(state.message)


def _show_promotion(promotion: Promotion) -> None:
    show = console.get()
    show.line(promotion.headline())
    if promotion.resolution:
        show.line(f"  note: {promotion.resolution}")
    for reason in promotion.reasons:
        if reason.startswith("FAIL"):
            show.line(f"  {reason}")


def footer(rows: list[StageRow], wall: float) -> str:
    """Stage work, overhead and total: overhead is the wall time no stage accounts for,
    a failed stage's time included in the work."""
    work = sum(r.seconds for r in rows)
    overhead = max(wall - work, 0.0)
    share = f" ({overhead / wall:.0%})" if wall > 0 else ""
    return f"stage work {work:.1f} s, overhead {overhead:.1f} s{share}, total {wall:.1f} s"


def _warm_up() -> Iterator[None]:
    """What a run needs first, a step at a time, while its API server starts: on 2 cores
    these imports take one core while the server starts on the other (a default run spent
    9 s waiting for the server, then 6 s importing its stages)."""
    import mlflow  # noqa: F401

    yield
    runs.client()  # MLflow keeps the store it opens, and its check of the schema
    yield
    import dvc.repo  # noqa: F401

    yield
    from pipelines import stages

    for found in pkgutil.iter_modules(stages.__path__):
        importlib.import_module(f"{stages.__name__}.{found.name}")
        yield


def run_flow(fn, api: TemporaryApi | None, **parameters):
    """Run a flow in this process and return its final state: on `api`, a temporary server
    started before Prefect was imported (see lifecycle.temporary_api), or on the server
    PREFECT_API_URL names when `api` is None."""
    if api is None:
        return fn(**parameters, return_state=True)
    steps = _warm_up()
    said = 0

    def meanwhile(waited: float) -> None:
        nonlocal said
        if next(steps, StopIteration) is StopIteration:
            if waited // 5 > said:
                said = int(waited // 5)
                console.get().progress("prefect-api", f"starting Prefect's temporary API ({waited:.0f} s)")
            time.sleep(0.1)

    try:
        api.wait(meanwhile)
    except RuntimeError as err:
        raise KilnError(f"{err}; its output is in {console.get().log}") from None
    from prefect.context import refresh_global_settings_context
    from prefect.logging.handlers import APILogWorker

    # Named in the environment, for the processes the run starts (the search's workers), and
    # in Prefect's global settings, which its own threads (log and event workers) read.
    os.environ["PREFECT_API_URL"] = api.url
    refresh_global_settings_context()
    try:
        return fn(**parameters, return_state=True)
    finally:
        APILogWorker.drain_all()  # the flow's last log lines, before the server stops
        os.environ.pop("PREFECT_API_URL", None)
        refresh_global_settings_context()
