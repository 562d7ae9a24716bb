"""`kiln explain`: which words drive the model's decision on a text."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root
from pipelines.cli.registry import jsonl_texts, no_champion


@app.command()
def explain(
    text: Annotated[str | None, typer.Argument(help="a text to explain")] = None,
    file: Annotated[str | None, typer.Option("--file", help="JSONL with a 'text' field per line")] = None,
    model: Annotated[str | None, typer.Option(help="model URI (default: models:/<name>@champion)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="numbers instead of colours")] = False,
) -> None:
    """Each text's label, probability and every word's contribution to it: Integrated
    Gradients through the model the served file was exported from, or the classical
    model's term weights."""
    import os

    root = repo_root()
    from components.explain.terminal import colours, paint, to_json
    from pipelines import local_model

    if (text is None) == (file is None):
        raise KilnError("give a text or --file texts.jsonl")
    texts = [text] if text is not None else jsonl_texts(file)
    folder = _model_folder(root, model)
    loaded = local_model.LocalModel.open(folder)
    if loaded.transformer:
        import torch

        # One thread answers one text fastest; more only wait on each other.
        torch.set_num_threads(1)
    explained = loaded.explainer.explain(texts)
    if as_json:
        typer.echo(to_json(explained))
        return
    mode = colours(sys.stdout, os.environ)
    for e in explained:
        typer.echo(paint(e, mode))


def _model_folder(root: Path, model: str | None) -> Path:
    """The version's files on disk: the champion from the cache while the registry is
    unchanged, otherwise downloaded through MLflow (and, for the champion, cached)."""
    import os

    from pipelines import local_model
    from pipelines.params import load

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    params = load(root / "params.yaml")
    name = params.register_.name_for(params.ingest)
    if model is None and (cached := local_model.cached_champion(root, uri, name)) is not None:
        return cached
    import tempfile

    import mlflow

    from pipelines import registry, tracking
    from pipelines.io import atomic

    client = tracking.client()
    with registry.registry_errors(f"explain: loading {model or name}"):
        if model is not None:
            return Path(mlflow.artifacts.download_artifacts(model, dst_path=tempfile.mkdtemp(prefix="kiln-explain-")))
        champion = registry.alias(client, name, registry.CHAMPION)
        if champion is None:
            raise no_champion(client, name, "explain")
        folder = local_model.version_folder(root, name, str(champion.version))
        if not (folder / "MLmodel").is_file():
            # Whole or not at all: a cut-short download must not be taken for the version.
            with atomic(folder) as tmp:
                tmp.mkdir()
                mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}", dst_path=str(tmp))
    local_model.remember_champion(root, uri, name, folder)
    return folder
