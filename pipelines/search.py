"""The search flow: an Optuna multi-objective study whose trials are Prefect tasks.

The flow asks the study for a trial, submits it as a task, and tells the study each
result as it comes back, keeping `search.workers` trials in flight: in local worker
processes (Prefect's ProcessPoolTaskRunner) or on a Dask cluster (prefect-dask's
DaskTaskRunner) when `search.scheduler` names one. Only the flow talks to the study, so
workers need no database access and no trial is ever handed out twice.

The study lives in an RDB storage beside the tracking database. A search that was killed
resumes it: its finished trials stay finished, and the trials it had running are marked
failed and asked again with the same params. A study whose search ended is never
resumed: a rerun of the stage starts the next attempt.
"""

import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from components.errors import KilnError
from components.search.config import SearchConfig
from components.search.space import DIRECTIONS, OBJECTIVES, suggest
from components.search.trial import TrialSpec, run_trial
from pipelines import tracking
from pipelines.servers import DB_ENV, ensure_databases

SEARCH_DB_SUFFIX = "_search"
# A trial is not started with less time than this left: it could not train.
MIN_TRIAL_S = 60
POLL_S = 2


def storage_url(root: Path, setting: str) -> str:
    """Where the study lives: `search.storage` if set; else beside MLflow's tables, in a
    database of their own (Optuna and MLflow each keep an `alembic_version` table):
    mlflow/search.db, or on KILN_DB_URL's PostgreSQL server the database <name>_search."""
    if setting != "auto":
        return setting
    if db_url := os.environ.get(DB_ENV):
        from sqlalchemy.engine import make_url

        ensure_databases(db_url, (SEARCH_DB_SUFFIX,))
        url = make_url(db_url)
        url = url.set(drivername="postgresql+psycopg2", database=url.database + SEARCH_DB_SUFFIX)
        return url.render_as_string(hide_password=False)
    return f"sqlite:///{root / 'mlflow' / 'search.db'}"


def shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


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
    from dataclasses import asdict

    start, worker = time.time(), worker_id()
    try:
        result = asdict(run_trial(spec))
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
    deadline: float
    run_id: str | None  # the search stage's MLflow run, parent of each trial's


class Study:
    """The study of this search: opened (or resumed) by name, with the bookkeeping the
    flow needs."""

    def __init__(self, plan: SearchPlan):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.plan = plan
        self.name = self._current(plan.study_prefix, plan.storage)
        with warnings.catch_warnings():
            # `group` is marked experimental; it is what samples each family's knobs jointly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=plan.cfg.seed,
                multivariate=True,
                group=True,
                # Trials in flight count as pending, so parallel workers do not all sample one point.
                constant_liar=True,
                n_startup_trials=max(4, min(10, plan.cfg.n_trials // 2)),
            )
        try:
            self.study = optuna.create_study(
                storage=plan.storage,
                study_name=self.name,
                directions=list(DIRECTIONS),
                sampler=sampler,
                load_if_exists=True,
            )
        except Exception as err:  # sqlalchemy's OperationalError and kin: a wrong URL, a server down
            raise KilnError(f"search: cannot open the study storage {shown(plan.storage)}: {err}") from None

    @staticmethod
    def load(storage: str, name: str):
        import optuna

        return optuna.load_study(study_name=name, storage=storage)

    @staticmethod
    def _current(prefix: str, storage: str) -> str:
        """The newest attempt of this search that did not end, or the next attempt."""
        import optuna

        try:
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        except Exception as err:  # noqa: BLE001 - see above
            raise KilnError(f"search: cannot open the study storage {shown(storage)}: {err}") from None
        attempts = {
            int(s.study_name.rsplit("-", 1)[1]): s
            for s in summaries
            if s.study_name.startswith(prefix + "-") and s.study_name.rsplit("-", 1)[1].isdigit()
        }
        if not attempts:
            return f"{prefix}-1"
        last = max(attempts)
        return f"{prefix}-{last + 1}" if attempts[last].user_attrs.get("ended") else f"{prefix}-{last}"

    def trials(self, *states):
        return self.study.get_trials(deepcopy=False, states=states or None)

    def finished(self) -> int:
        from optuna.trial import TrialState

        return sum(1 for t in self.trials(TrialState.COMPLETE, TrialState.FAIL) if not t.user_attrs.get("interrupted"))

    def requeue_interrupted(self) -> list[int]:
        """Trials a killed search left RUNNING: failed as interrupted, and asked again."""
        from optuna.trial import TrialState

        found = []
        for trial in self.trials(TrialState.RUNNING):
            self.study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            self.study.tell(trial.number, state=TrialState.FAIL)
            params = {k: v for k, v in trial.params.items()}
            self.study.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            found.append(trial.number)
        return found

    def end(self) -> None:
        self.study.set_user_attr("ended", True)


class TrialLog:
    """Each trial as an MLflow child run of the search stage's run: its params, the three
    objectives, its state and the worker that ran it."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        if run_id is not None:
            self.mlflow = tracking.client()
            self.experiment = self.mlflow.get_run(run_id).info.experiment_id

    def log(self, study: str, number: int, family: str, params: dict, outcome: dict) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric, Param

        run = self.mlflow.create_run(
            self.experiment,
            start_time=int(outcome["start"] * 1000),
            run_name=f"trial {number}",
            tags={
                tracking.PARENT_TAG: self.run_id,
                "kiln.stage": "search",
                "kiln.search.study": study,
                "kiln.search.trial": str(number),
                "kiln.search.family": family,
                "kiln.search.worker": outcome["worker"],
                **({"kiln.error": outcome["error"]} if outcome["error"] else {}),
            },
        )
        run_id = run.info.run_id
        end = int(outcome["end"] * 1000)
        metrics = []
        if outcome["result"]:
            r = outcome["result"]
            values = {
                "val/macro_f1": r["val_macro_f1"],
                "trial/latency_ms_p50_b1": r["latency_ms_p50_b1"],
                "trial/size_mb": r["size_mb"],
                "trial/seconds": r["seconds"],
                **r["details"],
            }
            metrics = [Metric(k, float(v), end, 0) for k, v in values.items()]
        self.mlflow.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in {"family": family, **params}.items()],
        )
        self.mlflow.set_terminated(run_id, "FINISHED" if outcome["state"] == "COMPLETE" else "FAILED", end_time=end)


@flow(name="kiln-search")
def search_flow(plan: SearchPlan) -> dict[str, Any]:
    """Run trials until the study holds `search.n_trials` finished ones or the deadline
    is near; returns the study's name and the trials it requeued."""
    from prefect.futures import wait

    cfg = plan.cfg
    study = Study(plan)
    requeued = study.requeue_interrupted()
    log = TrialLog(plan.run_id)
    running: dict[Any, tuple[Any, str, dict]] = {}
    while True:
        while (
            len(running) < plan.workers
            and study.finished() + len(running) < cfg.n_trials
            and plan.deadline - time.time() >= MIN_TRIAL_S
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
                study.study.tell(trial, state=_fail())
            log.log(study.name, trial.number, family, params, outcome)
    study.end()
    return {"study": study.name, "requeued": requeued}


def _fail():
    from optuna.trial import TrialState

    return TrialState.FAIL


def task_runner(cfg: SearchConfig, workers: int):
    """Local worker processes, or the Dask cluster `search.scheduler` names."""
    if cfg.scheduler:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.scheduler)
    from prefect.task_runners import ProcessPoolTaskRunner

    return ProcessPoolTaskRunner(max_workers=workers)


@contextmanager
def shared_api() -> Iterator[None]:
    """Trials in other processes report to the flow's Prefect API. Without an API URL in
    the environment, each worker process would start a temporary server of its own: the
    flow's temporary server (`kiln run`'s, or one started here) is named to them."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    started = not server.running
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if started:
            # Stopped here, while its log lines still go to the log file, once the flow's
            # logs are sent (a log worker left holding some would retry a gone server).
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
            server.stop()


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
