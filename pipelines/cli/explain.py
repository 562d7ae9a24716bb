"""`kiln explain`: which words drive the model's decision on a text."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root
from pipelines.cli.registry import jsonl_texts, local_folder


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
    from pipelines.registry import local_model

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
    """The version's files on disk, checked to be Kiln's own: the champion from the cache
    while the registry is unchanged, otherwise fetched through MLflow (the champion is
    remembered for the next call)."""
    import os

    from pipelines.core.params import load
    from pipelines.registry import local_model, lookup, versions

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    params = load(root / "params.yaml")
    name = params.register_.name_for(params.ingest)
    if model is None and (cached := local_model.cached_champion(root, uri, name)) is not None:
        folder, commit = cached
        versions.check(folder, f"explain: the cached champion of '{name}' ({folder})", commit)
        return folder
    from pipelines.registry import models
    from pipelines.tracking import runs

    with models.registry_errors(f"explain: loading {model or name}"):
        found = lookup.resolve(runs.client(), model, name, "explain")
        folder = local_folder(root, found, "explain")
    if model is None:
        local_model.remember_champion(root, uri, name, folder, versions.lineage(found).get("git.commit"))
    return folder
