"""The search flow: an Optuna multi-objective study whose trials are Prefect tasks.

The flow asks the study for a trial, submits it as a task, and tells the study each
result as it comes back, keeping `search.workers` trials in flight: in local worker
processes (Prefect's ProcessPoolTaskRunner) or on a Dask cluster (prefect-dask's
DaskTaskRunner) when `search.scheduler` names one. Only the flow talks to the study, so
workers need no database access and no trial is ever handed out twice.

The study and its bookkeeping are in study.py.
"""

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from components.search.config import SearchConfig
from components.search.space import OBJECTIVES, suggest
from components.search.spec import TrialSpec
from components.search.trial import run_trial
from pipelines.core.lifecycle import die_with_parent, temporary_api
from pipelines.search.study import Study, TrialLog

# A trial is not started with less time than this left: it could not train.
MIN_TRIAL_S = 60
POLL_S = 2


def worker_id() -> str:
    """The Dask worker running this task, or else the host and process."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return f"dask:{worker.name}@{worker.address}"
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@task(cache_policy=NO_CACHE, name="search-trial")
def trial_task(spec: TrialSpec) -> dict[str, Any]:
    """One trial; a trial that fails (a parity gate, a model too small to train) is a
    result to tell the study, not a task to retry."""
    start, worker = time.time(), worker_id()
    try:
        # As JSON, for the study's user attributes; a classical trial has no INT8 record.
        result = run_trial(spec).model_dump(mode="json", exclude_none=True)
        state, error = "COMPLETE", None
    except Exception as err:  # noqa: BLE001 - any trial may fail; the study records why
        result, state, error = None, "FAIL", f"{type(err).__name__}: {str(err).strip()[:500]}"
    return {"state": state, "result": result, "error": error, "worker": worker, "start": start, "end": time.time()}


class SearchPlan(BaseModel):
    """What the flow needs: plain data, so Prefect can record it as the flow's parameters."""

    model_config = ConfigDict(extra="forbid")

    study_prefix: str
    storage: str
    cfg: SearchConfig
    workers: int
    template: TrialSpec  # every trial's spec but its number, family, params and folder
    folder: Path  # trials write under folder/<study>/trial-<n>
    run_id: str | None  # the search stage's MLflow run, parent of each trial's


@flow(name="kiln-search")
def search_flow(plan: SearchPlan) -> dict[str, Any]:
    """Run trials until the study holds `search.n_trials` finished ones or the deadline
    is near; returns the study's name and the trials it requeued."""
    from optuna.trial import TrialState
    from prefect.futures import wait

    cfg = plan.cfg
    study = Study(plan.study_prefix, plan.storage, plan.cfg)
    requeued = study.requeue_interrupted()
    log = TrialLog(plan.run_id)
    running: dict[Any, tuple[Any, str, dict]] = {}
    while True:
        while (
            len(running) < plan.workers
            and study.finished() + len(running) < cfg.n_trials
            and plan.template.deadline - time.time() >= MIN_TRIAL_S
        ):
            trial = study.study.ask()
            family, params = suggest(trial, cfg)
            trial.set_user_attr("family", family)
            spec = plan.template.model_copy(
                update={
                    "number": trial.number,
                    "family": family,
                    "params": params,
                    "folder": plan.folder / study.name / f"trial-{trial.number}",
                }
            )
            future = trial_task.with_options(task_run_name=f"trial-{trial.number}").submit(spec)
            running[future] = (trial, family, params)
        if not running:
            break
        for future in wait(list(running), timeout=POLL_S).done:
            trial, family, params = running.pop(future)
            try:
                outcome = future.result()
            except Exception as err:  # noqa: BLE001 - the worker itself died (out of memory, a lost Dask worker)
                now = time.time()
                error = f"{type(err).__name__}: {str(err).strip()[:500]}"
                outcome = {"state": "FAIL", "result": None, "error": error, "worker": "?", "start": now, "end": now}
            trial.set_user_attr("worker", outcome["worker"])
            trial.set_user_attr("seconds", outcome["end"] - outcome["start"])
            if outcome["state"] == "COMPLETE":
                trial.set_user_attr("result", outcome["result"])
                study.study.tell(trial, [outcome["result"][k] for k in OBJECTIVES])
            else:
                trial.set_user_attr("error", outcome["error"])
                study.study.tell(trial, state=TrialState.FAIL)
            log.log(study.name, trial.number, family, params, outcome)
    study.end()
    return {"study": study.name, "requeued": requeued}


def task_runner(cfg: SearchConfig, workers: int):
    """Local worker processes, or the Dask cluster `search.scheduler` names."""
    if cfg.scheduler:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.scheduler)
    from prefect.task_runners import ProcessPoolTaskRunner

    # A worker ends with the process that started it, however that ends (kill -9 included).
    # SIGKILL: a worker that is training has Lightning's SIGTERM handler, which would turn
    # SIGTERM into an exception the worker survives, waiting for a trial that never comes.
    return ProcessPoolTaskRunner(max_workers=workers, initializer=partial(die_with_parent, signal.SIGKILL))


@contextmanager
def shared_api() -> Iterator[None]:
    """Trials in other processes report to the flow's Prefect API. Without an API URL in
    the environment, each worker process would start a temporary server of its own: the
    flow's temporary server (`kiln run`'s, or one started here) is named to them."""
    with temporary_api() as api:
        if api is None:
            yield
            return
        from prefect.context import refresh_global_settings_context
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        api.wait(lambda _: time.sleep(0.1))  # as kiln run waits for its own: a busy machine starts it slowly
        # In the environment for the workers, in Prefect's global settings for its own threads.
        os.environ["PREFECT_API_URL"] = api.url
        refresh_global_settings_context()
        try:
            yield
        finally:
            # The server stops once the flow's logs are sent (a log worker left holding some
            # would retry a gone server), while its log lines still go to the log file.
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
            os.environ.pop("PREFECT_API_URL", None)
            refresh_global_settings_context()


def run(plan: SearchPlan) -> dict[str, Any]:
    """The search flow; under `kiln run` a subflow of the pipeline's flow run. A task
    runner sends the current task's context along with each trial, and the stage's own
    task (`kiln run`'s) holds a DVC repository among its parameters, which does not
    pickle: the flow runs outside that task's context."""
    import contextvars

    from prefect.context import TaskRunContext

    searching = search_flow.with_options(task_runner=task_runner(plan.cfg, plan.workers))
    context = contextvars.copy_context()
    context.run(TaskRunContext.__var__.set, None)
    with shared_api():
        return context.run(searching, plan)
