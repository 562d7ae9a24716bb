"""Commands on the model registry: `promote`, `history`, `lineage`, `predict`."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root


def registry_of(root: Path):
    """(MLflow client, registered model name, params)."""
    from pipelines.core.params import load
    from pipelines.tracking import runs

    params = load(root / "params.yaml")
    return runs.client(), params.register_.name_for(params.ingest), params


@app.command()
def promote(
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="promote this registered version by hand")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="why (recorded in the history; needed with --force)")] = None,
    force: Annotated[bool, typer.Option("--force", help="skip the gate; who, what and why are recorded")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="move champion back to the previous champion")] = False,
) -> None:
    """Promote a version through the gate, force it, or roll the champion back."""
    root = repo_root()
    from pipelines.core.io import read_parquet
    from pipelines.registry import audit, promotion
    from pipelines.registry.gating import Bounds, floor
    from pipelines.registry.models import registry_errors

    client, name, params = registry_of(root)
    if rollback == (version is not None):
        raise KilnError("give either --rollback or --version N")
    if force and not reason:
        raise KilnError("--force needs --reason: the history records why the gate was skipped")
    action = "rollback" if rollback else "force" if force else "manual"
    with (
        audit.denials(root, client, name, None if rollback else str(version), action, reason),
        registry_errors(f"promote: '{name}'"),
    ):
        if rollback:
            decision = promotion.rollback(client, name, reason)
        elif force:
            decision = promotion.promote(client, name, str(version), None, None, "force", reason)
        else:
            test = read_parquet(root / params.paths.split / "test.parquet", "promote", "split")
            limit = floor(params.promote, root / params.paths.reports / "evaluation.json")
            bounds = Bounds(params.promote, params.evaluate, params.export, params.quantize, *limit)
            decision = promotion.promote(client, name, str(version), test, bounds, "manual", reason)
        audit.promotion(root, client, decision, action, reason)
    typer.echo(decision.headline())
    if decision.resolution:
        typer.echo(f"  note: {decision.resolution}")
    for line in decision.reasons:
        typer.echo(f"  {line}")
    if not decision.promoted:
        sys.exit(1)


@app.command()
def history() -> None:
    """The champion history: when, what, which version, metrics and reasons."""
    root = repo_root()
    from pipelines.registry.models import registry_errors
    from pipelines.registry.promotion import history as events

    client, name, _ = registry_of(root)
    with registry_errors(f"history of '{name}'"):
        found = events(client, name)
    if not found:
        typer.echo(f"no promotion decisions for '{name}' yet")
        return
    for item in found:
        f1 = item["metrics"].get("challenger/test_macro_f1")
        score = f"  macro-F1 {f1:.4f}" if f1 is not None else ""
        typer.echo(
            f"{item['when']}  {item.get('action', '?'):<8} v{item.get('version', '?'):<4} "
            f"{'promoted' if item.get('promoted') == 'true' else 'refused '}  champion v{item.get('champion') or '-'}"
            f" (was v{item.get('previous_champion') or '-'}){score}  by {item.get('who', '?')}"
        )
        if item.get("why"):
            typer.echo(f"    why: {item['why']}")
        for line in json.loads(item.get("reasons") or "[]"):
            typer.echo(f"    {line}")


@app.command()
def lineage(version: Annotated[int, typer.Argument(help="registered version number")]) -> None:
    """From a registered version back to its MLflow run, git commit, dvc.lock stage hashes,
    data version and validation report."""
    import mlflow
    import yaml

    root = repo_root()
    from pipelines.registry import models
    from pipelines.registry.versions import lineage

    client, name, _ = registry_of(root)
    with models.registry_errors(f"lineage of version {version} of '{name}'"):
        found = models.version(client, name, version)
        tags = lineage(found)
        lock = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{found.run_id}/lineage/dvc.lock"))
        validation = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/lineage/validation.json")
    typer.echo(f"model        {name} version {found.version} (aliases: {', '.join(found.aliases) or '-'})")
    typer.echo(f"mlflow run   {found.run_id} (parent {tags.get('parent_run_id') or '-'})")
    typer.echo(f"prefect      flow run {tags.get('prefect.flow_run_id') or '- (not run by Prefect)'}")
    typer.echo(f"git          {tags.get('git.commit')}{' (dirty tree)' if tags.get('git.dirty') == 'true' else ''}")
    typer.echo(f"dvc.lock     sha256 {tags.get('dvc.lock.sha256')}")
    for stage, entry in (lock or {}).get("stages", {}).items():
        outs = ", ".join(f"{o['path']}={o.get('md5', '?')}" for o in entry.get("outs", []))
        typer.echo(f"  {stage:<10} {outs}")
    typer.echo(f"data         validated {tags.get('data.validated')}, split {tags.get('data.split')}")
    failures = validation.get("failures", [])
    typer.echo(
        f"validation   {tags.get('data.validation')}: {validation.get('rows')} rows, "
        f"{validation.get('duplicates', {}).get('rows', 0)} duplicates, "
        f"{len(failures)} expectations failed{': ' + '; '.join(failures)[:200] if failures else ''}"
    )


@app.command()
def predict(
    text: Annotated[str | None, typer.Argument(help="a text to classify")] = None,
    file: Annotated[str | None, typer.Option("--file", help="JSONL with a 'text' field per line")] = None,
    model: Annotated[str | None, typer.Option(help="model URI (default: models:/<name>@champion)")] = None,
    log: Annotated[
        bool, typer.Option("--log", help="record the texts and answers in the inference log, as serve-model does")
    ] = False,
) -> None:
    """Labels and probabilities from the champion, through ONNX Runtime."""
    import logging

    root = repo_root()
    from pipelines.registry import models

    logging.basicConfig(level=logging.WARNING, format="kiln: warning: %(message)s")
    if (text is None) == (file is None):
        raise KilnError("give a text or --file texts.jsonl")
    texts = [text] if text is not None else jsonl_texts(file)
    client, name, _ = registry_of(root)
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipelines.registry import lookup

    with models.registry_errors(f"predict: loading {model or name}"):
        found = lookup.resolve(client, model, name, "predict")
        folder = local_folder(root, found, "predict")
        loaded = mlflow.pyfunc.load_model(str(folder))
    if log:
        from pipelines.core.params import load
        from pipelines.servers.scoring import Logged, inference_log

        recorder = inference_log(root, load(root / "params.yaml"), found.name, str(found.version))
        loaded = Logged(loaded, recorder)
    try:
        out = loaded.predict(pd.DataFrame({"text": texts}))
    except MlflowException as err:
        raise KilnError(f"predict: {err.message}") from None
    finally:
        if log:
            recorder.close()
    for _, row in out.iterrows():
        probabilities = {k: round(float(v), 4) for k, v in row.items() if k != "label"}
        typer.echo(json.dumps({"label": row["label"], "probabilities": probabilities}))


def local_folder(root: Path, found, command: str) -> Path:
    """A registered version's files in the repository's cache, checked to be Kiln's own."""
    from pipelines.core.env import tracking_uri
    from pipelines.registry import local_model, versions

    folder = local_model.version_folder(root, tracking_uri(), found.name, str(found.version))
    return versions.fetch(found, folder, command)


def jsonl_texts(path: str) -> list:
    texts = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KilnError(f"predict: cannot read {path}: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise KilnError(f"predict: {path} line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict) or "text" not in record:
            raise KilnError(f"predict: {path} line {number} has no 'text' field")
        texts.append(record["text"])
    return texts
