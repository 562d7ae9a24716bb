"""What a stage may log to its MLflow run while it runs (the executor logs the rest), and
params as MLflow takes them."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow caps a param value at 6000 characters, and a batch at 100 params.
PARAM_LIMIT, PARAMS_PER_BATCH = 6000, 100


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: {"file": {"path": "x"}} -> {"file.path": "x"}."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(data)[:PARAM_LIMIT]}


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

    def log_dict(self, data: dict, artifact_file: str) -> None:
        if self.mlflow is not None:
            self.mlflow.log_dict(self.run_id, data, artifact_file)

    def set_tags(self, tags: dict[str, str], parent: bool = False) -> None:
        """Tag this stage's run, and with `parent` the pipeline's run too."""
        if self.mlflow is not None:
            from mlflow.entities import RunTag

            for run_id in (self.run_id, self.parent_id) if parent else (self.run_id,):
                self.mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_headline(self, metrics: dict[str, float]) -> None:
        """Figures that describe the whole pipeline run (the selected model's), logged on
        its parent run so that two pipeline runs compare side by side."""
        if self.mlflow is not None and self.parent_id is not None and metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_params(mlflow: "MlflowClient", run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = list(flatten(params).items())
    for start in range(0, len(flat), PARAMS_PER_BATCH):
        mlflow.log_batch(run_id, params=[Param(k, v) for k, v in flat[start : start + PARAMS_PER_BATCH]])
