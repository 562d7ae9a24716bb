"""`kiln explain`: which words drive the model's decision on a text."""

import sys
from typing import Annotated

import typer

from components.errors import KilnError
from pipelines.cli.app import app, repo_root
from pipelines.cli.registry import jsonl_texts, no_champion, registry_of


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
    from pipelines import registry

    if (text is None) == (file is None):
        raise KilnError("give a text or --file texts.jsonl")
    texts = [text] if text is not None else jsonl_texts(file)
    client, name, _ = registry_of(root)
    import mlflow
    import torch

    # One thread answers one text fastest; more only wait on each other.
    torch.set_num_threads(1)
    with registry.registry_errors(f"explain: loading {model or name}"):
        if model is None and registry.alias(client, name, registry.CHAMPION) is None:
            raise no_champion(client, name, "explain")
        loaded = mlflow.pyfunc.load_model(model or f"models:/{name}@{registry.CHAMPION}")
    explained = loaded.unwrap_python_model().explanations(texts)
    if as_json:
        typer.echo(to_json(explained))
        return
    mode = colours(sys.stdout, os.environ)
    for e in explained:
        typer.echo(paint(e, mode))
