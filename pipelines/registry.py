"""Kiln's side of MLflow's model registry: registering a challenger, the promotion gate
that may make it champion, rollback, the promotion history and lineage.

Aliases, not the stages MLflow 3 deprecated: `challenger` is the newest registered
version, `champion` the one in production. The history of champion changes is an MLflow
experiment of its own (one run per decision), so it lives wherever the registry lives
and shows in the UI.
"""

import getpass
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from components.deploy.config import EvaluateConfig, GateConfig
from components.deploy.gate import Check, Decision, decide
from components.errors import KilnError
from pipelines import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"


@contextmanager
def registry_errors(what: str) -> Iterator[None]:
    """MLflow and connection failures as one KilnError naming the registry and the step."""
    import os

    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        raise KilnError(f"{what}: {err.message}") from None
    except OSError as err:  # connection refused, DNS, timeouts (requests' errors are OSErrors)
        uri = os.environ.get("MLFLOW_TRACKING_URI", "(default)")
        raise KilnError(f"{what}: the MLflow registry at {uri} is unreachable ({err.__class__.__name__})") from None


def version(client: "MlflowClient", name: str, number: int | str) -> "ModelVersion":
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(number))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise KilnError(f"registered model '{name}' has no version {number}") from None
        raise


def alias(client: "MlflowClient", name: str, which: str) -> "ModelVersion | None":
    """The version `which` points at, or None when the alias (or the model) is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, which)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass
class Scored:
    """A registered version scored on today's test split."""

    version: str
    metrics: dict[str, float]


def score(client: "MlflowClient", name: str, number: str, test: pd.DataFrame, cfg: EvaluateConfig) -> Scored:
    """Download the version's ONNX file and tokenizer and measure it on `test`: the data
    may have changed since it was registered, so stored metrics are not reused."""
    import mlflow

    from components.deploy import evaluation as ev
    from components.deploy.runtime import OnnxClassifier

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{number}", dst_path=tmp))
        onnx = next(folder.rglob("*.onnx"), None)
        tokenizer = next(folder.rglob("tokenizer.json"), None)
        if onnx is None or tokenizer is None:
            raise KilnError(f"version {number} of '{name}' holds no ONNX model and tokenizer")
        runtime = OnnxClassifier(onnx, tokenizer, threads=cfg.threads)
        known = test[test["label"].isin(runtime.labels)]
        texts = known["text"].tolist()
        predicted = runtime.logits(texts).argmax(-1).tolist()
        quality = ev.quality([runtime.labels.index(v) for v in known["label"]], predicted, runtime.labels)
        metrics = {"macro_f1": quality["macro_f1"], "accuracy": quality["accuracy"],
                   **ev.latency({"model": runtime.logits}, texts, cfg)["model"], "size_mb": onnx.stat().st_size / 1e6}
    return Scored(str(number), metrics)


def gate(client: "MlflowClient", name: str, challenger: "ModelVersion", test: pd.DataFrame,
         cfg: GateConfig, evaluate: EvaluateConfig) -> tuple[Decision, Scored, Scored | None, "ModelVersion | None"]:
    """Score the challenger and the current champion on the same split and decide."""
    champion = alias(client, name, CHAMPION)
    mine = score(client, name, challenger.version, test, evaluate)
    theirs = None
    if champion is not None and champion.version != challenger.version:
        theirs = score(client, name, champion.version, test, evaluate)
    tags = challenger.tags
    decision = decide(
        cfg, mine.metrics, theirs.metrics["macro_f1"] if theirs else None,
        export_parity=tags.get("gate.export_parity") == "passed",
        quantize_parity=tags.get("gate.quantize_parity") == "passed",
        validation=tags.get("data.validation") == "passed",
    )
    return decision, mine, theirs, champion


def gate_metrics(challenger: Scored, champion: Scored | None) -> dict[str, float]:
    """Both sides of a gate decision as metrics for the history and the stage run."""
    metrics = {f"challenger/{k}": v for k, v in challenger.metrics.items()}
    if champion is not None:
        metrics.update({f"champion/{k}": v for k, v in champion.metrics.items()})
    return metrics


def move_champion(client: "MlflowClient", name: str, to: str, expected: "ModelVersion | None") -> None:
    """Point `champion` at version `to`, unless it moved since the gate read it: the alias
    is read again right before it is set, so a concurrent promotion is never overwritten
    silently."""
    now = alias(client, name, CHAMPION)
    if (str(now.version) if now else None) != (str(expected.version) if expected else None):
        raise KilnError(f"champion of '{name}' moved to version {now.version if now else None} while the gate "
                        f"compared against {expected.version if expected else 'no champion'}; "
                        f"nothing changed, run the promotion again")
    client.set_registered_model_alias(name, CHAMPION, to)


def record(client: "MlflowClient", name: str, event: dict, metrics: dict[str, float]) -> None:
    """Append one event to the promotion history."""
    from mlflow.entities import Metric, RunTag

    experiment = _history_experiment(client, name, create=True)
    run = client.create_run(experiment, run_name=f"{event['action']} v{event['version']}")
    tags = [RunTag(f"kiln.{k}", "" if v is None else str(v)) for k, v in event.items()]
    client.log_batch(run.info.run_id, tags=tags, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id)


def history(client: "MlflowClient", name: str) -> list[dict]:
    """Promotion events, newest first, each with its metrics."""
    experiment = _history_experiment(client, name, create=False)
    if experiment is None:
        return []
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=1000)
    return [{**{k.removeprefix("kiln."): v for k, v in run.data.tags.items() if k.startswith("kiln.")},
             "when": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S"),
             "metrics": run.data.metrics} for run in runs]


def _history_experiment(client: "MlflowClient", name: str, create: bool) -> str | None:
    title = f"{name}.promotions"
    found = client.get_experiment_by_name(title)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(title) if create else None


def event(action: str, version: str, previous: "ModelVersion | None", promoted: bool,
          reasons: list[str], why: str | None = None) -> dict:
    return {
        "action": action,
        "version": version,
        "previous_champion": str(previous.version) if previous else None,
        "champion": version if promoted else (str(previous.version) if previous else None),
        "promoted": str(promoted).lower(),
        "reasons": json.dumps(reasons),
        "who": getpass.getuser(),
        "why": why,
    }


def previous_champion(client: "MlflowClient", name: str, current: str) -> str:
    """The champion `current` replaced when it was promoted, from the history (rollbacks
    skipped, so rolling back twice goes two steps back)."""
    for item in history(client, name):
        if (item.get("action") != "rollback" and item.get("promoted") == "true" and item.get("champion") == current
                and item.get("previous_champion")):
            return item["previous_champion"]
    raise KilnError(f"'{name}' has no champion before version {current} to roll back to")


def conclude(client: "MlflowClient", name: str, number: str, decision: Decision, champion: "ModelVersion | None",
             action: str, why: str | None, metrics: dict[str, float]) -> str | None:
    """Tag the decision and each reason on the version, move the alias if every check
    passed, and append the event to the history; returns the champion's version after."""
    client.set_model_version_tag(name, number, "promotion.decision", "promoted" if decision.promote else "refused")
    for check in decision.checks:
        client.set_model_version_tag(name, number, f"promotion.{check.name}",
                                     f"{'pass' if check.passed else 'fail'}: {check.detail}")
    if decision.promote:
        move_champion(client, name, number, champion)
    record(client, name, event(action, number, champion, decision.promote, decision.reasons, why), metrics)
    return str(number) if decision.promote else (str(champion.version) if champion else None)


def register_model(name: str, model: Path, tokenizer: Path, example: list[str], tags: dict[str, str],
                   run_id: str | None, lineage: dict[str, object]) -> tuple[str, str]:
    """Log the ONNX file and tokenizer as an MLflow model defined by pipelines/serving.py
    (with the `components` package as its code), register it as a new version of `name`
    with `tags` and alias `challenger`; `lineage` files go beside it in the run.
    Returns (version, model URI)."""
    from importlib.metadata import version as installed

    import mlflow
    from mlflow.models import infer_signature

    from components.deploy.runtime import OnnxClassifier
    from pipelines import serving

    inputs = pd.DataFrame({"text": example})
    predictions = OnnxClassifier(model, tokenizer).predict(example)
    outputs = pd.DataFrame([{"label": p["label"], **p["probabilities"]} for p in predictions])
    components = Path(__file__).resolve().parent.parent / "components"
    requirements = [f"{p}=={installed(p)}" for p in ("mlflow", "onnx", "onnxruntime", "tokenizers", "pandas", "numpy")]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=serving.__file__,
            artifacts={"model": str(model), "tokenizer": str(tokenizer)},
            code_paths=[str(components)],
            signature=infer_signature(inputs, outputs),
            input_example=inputs,
            pip_requirements=requirements,
        )
        for file, content in lineage.items():
            if isinstance(content, str):
                mlflow.log_text(content, f"lineage/{file}")
            else:
                mlflow.log_dict(content, f"lineage/{file}")
    registered = mlflow.register_model(info.model_uri, name, tags=tags)
    tracking.client().set_registered_model_alias(name, CHALLENGER, registered.version)
    return str(registered.version), info.model_uri


def rollback(client: "MlflowClient", name: str, why: str | None) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (from, to)."""
    champion = alias(client, name, CHAMPION)
    if champion is None:
        raise KilnError(f"'{name}' has no champion to roll back")
    target = previous_champion(client, name, str(champion.version))
    version(client, name, target)
    decision = Decision([Check("rollback", True, f"from version {champion.version} to {target}")])
    conclude(client, name, target, decision, champion, "rollback", why, {})
    return str(champion.version), target
