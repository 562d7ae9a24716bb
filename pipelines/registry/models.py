"""Kiln's side of MLflow's model registry: registering a challenger, looking versions and
aliases up, and what a retrain compares new data with (the champion's training profile).

Aliases, not the stages MLflow 3 deprecated: `challenger` is the newest registered
version awaiting the promotion gate (none once it is promoted), `champion` the one in
production.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.errors import KilnError
from pipelines.core.env import tracking_uri
from pipelines.registry.evaluated import Evaluated
from pipelines.servers.auth import refused
from pipelines.tracking import runs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
# The sha256 of everything a registered version is made of (the ONNX file, tokenizer,
# explainer, temperature, serving code and the components package): a rerun that made the
# same finds its version again instead of registering a second one.
MODEL_HASH_TAG = "kiln.model_sha256"


@contextmanager
def registry_errors(what: str) -> Iterator[None]:
    """MLflow and connection failures as one KilnError naming the registry and the step."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        raise KilnError(f"{what}: {refused(err, tracking_uri()) or err.message}") from None
    except OSError as err:  # connection refused, DNS, timeouts (requests' errors are OSErrors)
        raise KilnError(
            f"{what}: the MLflow registry at {tracking_uri()} is unreachable ({err.__class__.__name__})"
        ) from None


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


def find(client: "MlflowClient", name: str, sha256: str) -> "ModelVersion | None":
    """The version of `name` that holds the ONNX file with this hash, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tag.`{MODEL_HASH_TAG}` = '{sha256}'")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return max(found, key=lambda v: int(v.version)) if found else None


@dataclass(frozen=True)
class Registered:
    """The version `register_model` registered, or found already holding the same files."""

    version: str
    uri: str  # the logged model's; models:/<name>/<version> for a version found again
    reused: bool


def _sha256(parts: list[Path | None], temperature: float) -> str:
    """MODEL_HASH_TAG's value: the files of `parts` (a folder's in name order), by name and
    content, and the temperature."""
    import hashlib

    digest = hashlib.sha256(str(temperature).encode())
    for part in filter(None, parts):
        for file in sorted(part.rglob("*")) if part.is_dir() else [part]:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def register_model(
    name: str,
    model: Path,
    tokenizer: Path | None,
    example: list[str],
    tags: dict[str, str],
    run_id: str | None,
    lineage: dict[str, object],
    explainer: Path | None = None,
    temperature: float = 1.0,
    evaluated: Evaluated | None = None,
) -> Registered:
    """Log the ONNX file (with its tokenizer, for a transformer) and what explains it as an
    MLflow model defined by pipelines/registry/serving.py (with the `components` package as its
    code) and register it as a version of `name` with `tags` and alias `challenger`;
    `lineage` files go beside it in the run, and what `evaluated` holds on the model itself
    (the version's page shows them). A version already holding the same ONNX file is
    reused."""
    import mlflow
    from mlflow.models import infer_signature

    from components.runtime.loader import load_classifier
    from pipelines.registry import serving

    client = runs.client()
    components = Path(__file__).resolve().parents[2] / "components"
    sha256 = _sha256([model, tokenizer, explainer, Path(serving.__file__), components], temperature)
    if (existing := find(client, name, sha256)) is not None:
        champion = alias(client, name, CHAMPION)
        # A rerun that made the champion's file again has nothing awaiting the gate.
        if champion is None or str(champion.version) != str(existing.version):
            client.set_registered_model_alias(name, CHALLENGER, existing.version)
        return Registered(str(existing.version), f"models:/{name}/{existing.version}", True)
    inputs = pd.DataFrame({"text": example})
    predictions = load_classifier(model, tokenizer).predict(example, temperature)
    outputs = pd.DataFrame([{"label": p["label"], **p["probabilities"]} for p in predictions])
    artifacts = {"model": str(model)}
    if tokenizer is not None:
        artifacts["tokenizer"] = str(tokenizer)
    if explainer is not None:
        artifacts["explainer"] = str(explainer)
    with _in_run(run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=serving.__file__,
            artifacts=artifacts,
            code_paths=[str(components)],
            model_config={"temperature": temperature},
            signature=infer_signature(inputs, outputs, params={"explain": False}),
            input_example=inputs,
            pip_requirements=requirements(tokenizer is not None),
        )
        if evaluated is not None:
            evaluated.log(info.model_id)
        _log_lineage(lineage)
    registered = mlflow.register_model(info.model_uri, name, tags={**tags, MODEL_HASH_TAG: sha256})
    client.set_registered_model_alias(name, CHALLENGER, registered.version)
    return Registered(str(registered.version), info.model_uri, False)


def _in_run(run_id: str | None):
    """Run `run_id` as MLflow's active run: a stage's is already (tracking.runs.stage_run);
    elsewhere it starts here."""
    import mlflow

    active = mlflow.active_run()
    return nullcontext() if active is not None and active.info.run_id == run_id else mlflow.start_run(run_id=run_id)


def _log_lineage(files: dict[str, object]) -> None:
    """Each file under lineage/ of the active run: text as it is, anything else as JSON."""
    import mlflow

    for file, content in files.items():
        if isinstance(content, str):
            mlflow.log_text(content, f"lineage/{file}")
        else:
            mlflow.log_dict(content, f"lineage/{file}")


def requirements(transformer: bool) -> list[str]:
    """What the served model imports, at the versions that made it: ONNX Runtime and its
    inputs; for a transformer also what explains it (torch, transformers, Captum)."""
    from importlib.metadata import version as installed

    names = ["mlflow", "onnx", "onnxruntime", "tokenizers", "pandas", "numpy", "pydantic", "regex"]
    if transformer:
        names += ["torch", "transformers", "captum"]
    return [f"{p}=={installed(p)}" for p in names]


@dataclass
class Reference:
    """The champion a new batch of data is compared with."""

    version: str | None
    profile: Any = None
    tokenizer: Any = None
    note: str = ""


def champion_reference(name: str) -> Reference:
    """The champion's training profile and the tokenizer it was measured with (both
    logged beside the version by register), or why there is none; the champion is
    checked to be Kiln's own first."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException
    from tokenizers import Tokenizer

    from components.data.drift import Profile
    from pipelines.registry import versions

    with registry_errors(f"reading the champion of '{name}'"):
        champion = alias(runs.client(), name, CHAMPION)
        if champion is None:
            return Reference(None, note="no champion yet: drift checks skipped")
        with tempfile.TemporaryDirectory() as tmp:
            # A champion that is not Kiln's stops the retrain: the gate would load it next.
            versions.fetch(champion, Path(tmp) / "champion", f"the champion of '{name}'")
        try:
            profile = Profile.from_dict(mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/lineage/profile.json"))
            tokenizer = Tokenizer.from_str(
                mlflow.artifacts.load_text(f"runs:/{champion.run_id}/lineage/tokenizer.json")
            )
        except (MlflowException, OSError, KeyError):
            return Reference(
                str(champion.version),
                note=f"champion v{champion.version} has no training profile: drift checks skipped",
            )
    return Reference(str(champion.version), profile, tokenizer)


def who() -> str:
    """Who acts on the registry: the MLflow user when the server has one, else the OS user."""
    import getpass

    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
