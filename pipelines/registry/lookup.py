"""Which registered version a command means: the one `--model` names
(models:/NAME/VERSION or models:/NAME@ALIAS), or the champion; and, where there is no
champion, what the user can do instead."""

from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines.registry import models

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def resolve(client: "MlflowClient", model: str | None, name: str, command: str) -> "ModelVersion":
    """The version `--model` names (models:/NAME/VERSION or models:/NAME@ALIAS), or the
    champion of `name` when it names none."""
    if model is None:
        found = models.alias(client, name, models.CHAMPION)
        if found is None:
            raise no_champion(client, name, command)
        return found
    target = model.removeprefix("models:/")
    if target == model or not target:
        raise KilnError(f"{command}: --model takes models:/NAME/VERSION or models:/NAME@ALIAS, got '{model}'")
    if "@" in target:
        other, which = target.split("@", 1)
        found = models.alias(client, other, which)
        if found is None:
            raise KilnError(f"{command}: '{other}' has no version with alias '{which}'")
        return found
    other, _, number = target.rpartition("/")
    if not other or not number.isdigit():
        raise KilnError(f"{command}: --model takes models:/NAME/VERSION or models:/NAME@ALIAS, got '{model}'")
    return models.version(client, other, number)


def no_champion(client: "MlflowClient", name: str, command: str) -> KilnError:
    """Why there is nothing to predict with, and what can be used instead."""
    challenger = models.alias(client, name, models.CHALLENGER)
    if challenger is None:
        return KilnError(f"{command}: '{name}' has no registered version yet; run the pipeline (`kiln run`)")
    refused = [
        f"{k.removeprefix('promotion.')}: {v.removeprefix('fail: ')}"
        for k, v in challenger.tags.items()
        if k.startswith("promotion.") and v.startswith("fail")
    ]
    why = f" (the gate refused it: {'; '.join(refused)})" if refused else ""
    return KilnError(
        f"{command}: '{name}' has no champion; version {challenger.version} is the challenger{why}. "
        f"Use it with --model models:/{name}@{models.CHALLENGER}, or promote it: "
        f"kiln promote --version {challenger.version} --force --reason ..."
    )
