"""The MLflow experiments Kiln logs to, each made the one way (`experiment_id`), and the
check that the tracking server is there before a run spends its time."""

from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines.core.env import tracking_uri
from pipelines.servers.auth import refused

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's kind of experiment: model development, not GenAI. In MLflow 3.17 it does not
# choose the view the UI opens on (only the address does: see `kiln ui`).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


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


def _artifact_location() -> str | None:
    """Beside a SQLite store, its artifacts/ folder (MLflow would otherwise use ./mlruns of
    whatever the working directory is); a server chooses for itself."""
    where = tracking_uri()
    if not where.startswith("sqlite:///"):
        return None
    return (Path(where.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def experiment_id(mlflow: "MlflowClient", name: str) -> str:
    """The id of experiment `name`, created on first use with its artifacts beside a SQLite
    store and the tag that opens it on its runs: every experiment Kiln makes comes here."""
    from mlflow.exceptions import MlflowException

    location = _artifact_location()
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
