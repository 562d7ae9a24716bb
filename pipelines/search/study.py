"""The search's Optuna study: where it is stored, which attempt a search resumes, the
trials a killed search left running, each trial as an MLflow child run, and the trials
as reports/search.json lists them.

The study lives in an RDB storage beside the tracking database. A search that was killed
resumes it: its finished trials stay finished, and the trials it had running are marked
failed and asked again with the same params. A study whose search ended is never
resumed: a rerun of the stage starts the next attempt.
"""

import os
import warnings
from pathlib import Path

from components.errors import KilnError
from components.search.config import SearchConfig
from components.search.space import DIRECTIONS
from pipelines.core import statedir
from pipelines.servers.stores import DB_ENV, ensure_databases
from pipelines.tracking import runs

# The study attribute `interrupted.<trial>` marks a trial a killed search left running.
INTERRUPTED = "interrupted"

SEARCH_DB_SUFFIX = "_search"


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
    return f"sqlite:///{statedir.home(root) / 'mlflow' / 'search.db'}"


def shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class Study:
    """The study of this search: opened (or resumed) by name, with the bookkeeping the
    flow needs."""

    def __init__(self, prefix: str, storage: str, cfg: SearchConfig):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = self._current(prefix, storage)
        with warnings.catch_warnings():
            # `group` is marked experimental; it is what samples each family's knobs jointly.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=cfg.seed,
                multivariate=True,
                group=True,
                # Trials in flight count as pending, so parallel workers do not all sample one point.
                constant_liar=True,
                n_startup_trials=max(4, min(10, cfg.n_trials // 2)),
            )
        try:
            self.study = optuna.create_study(
                storage=storage,
                study_name=self.name,
                directions=list(DIRECTIONS),
                sampler=sampler,
                load_if_exists=True,
            )
        except Exception as err:  # sqlalchemy's OperationalError and kin: a wrong URL, a server down
            raise KilnError(f"search: cannot open the study storage {shown(storage)}: {err}") from None

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

        done, marks = self.trials(TrialState.COMPLETE, TrialState.FAIL), self.study.user_attrs
        return sum(1 for t in done if not interrupted(marks, t))

    def requeue_interrupted(self) -> list[int]:
        """Trials a killed search left RUNNING: failed as interrupted, and asked again."""
        from optuna.trial import TrialState

        found = []
        for trial in self.trials(TrialState.RUNNING):
            # On the study: Optuna's public API sets a trial's attributes only while it runs here.
            self.study.set_user_attr(f"{INTERRUPTED}.{trial.number}", True)
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
            self.mlflow = runs.client()
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
                **runs.context_tags("kiln stage search"),
                runs.PARENT_TAG: self.run_id,
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


def interrupted(marks: dict, trial) -> bool:
    """Whether a killed search left `trial` running, by the study's user attributes `marks`
    (an older Kiln marked the trial itself)."""
    return bool(marks.get(f"{INTERRUPTED}.{trial.number}") or trial.user_attrs.get(INTERRUPTED))


def records(study) -> tuple[list[dict], list]:
    """Every trial as search.json lists it, and the candidates: each family's Pareto
    front (on BBC the classical family dominates every student; a user who pins
    select.family to transformer still gets the best students). `front` marks the
    front over both families."""
    from optuna.trial import TrialState

    from components.search.space import OBJECTIVES, pareto

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    values = {t.number: tuple(t.user_attrs["result"][k] for k in OBJECTIVES) for t in complete}
    overall = pareto(values)
    chosen: set[int] = set()
    for family in {t.user_attrs["family"] for t in complete}:
        chosen |= pareto({t.number: values[t.number] for t in complete if t.user_attrs["family"] == family})
    records, marks = [], study.user_attrs
    for t in study.get_trials(deepcopy=False):
        result = t.user_attrs.get("result") or {}
        records.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "family": t.user_attrs.get("family", t.params.get("family", "")),
                "params": t.params,
                "val_macro_f1": result.get("val_macro_f1"),
                "latency_ms_p50_b1": result.get("latency_ms_p50_b1"),
                "size_mb": result.get("size_mb"),
                "front": t.number in overall,
                "family_front": t.number in chosen,
                "worker": t.user_attrs.get("worker"),
                "seconds": t.user_attrs.get("seconds"),
                "interrupted": interrupted(marks, t),
                "retry_of": t.user_attrs.get("retry_of"),
                "error": t.user_attrs.get("error"),
            }
        )
    return records, [t for t in complete if t.number in chosen]
