"""A registered version as a folder on disk, loaded without MLflow.

`kiln explain` answers in about a second once the champion is cached: MLflow alone takes
seconds to import. The cache under `.kiln/cache/` is trusted while the local registry's
database is unchanged since the champion was looked up; any write to it (a new version,
a moved alias, a logged run) sends the next call back to MLflow."""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.errors import KilnError
from pipelines.core import statedir


def _stamp(uri: str) -> list[int] | None:
    """What changes whenever a local SQLite registry is written; None for a server."""
    if not uri.startswith("sqlite:///"):
        return None
    try:
        found = Path(uri.removeprefix("sqlite:///")).stat()
    except OSError:
        return None
    return [found.st_mtime_ns, found.st_size]


def cached_champion(root: Path, uri: str, name: str) -> tuple[Path, str | None] | None:
    """The champion's folder and the commit it was registered from, if the cache holds it
    and the registry has not changed since."""
    stamp = _stamp(uri)
    try:
        record = json.loads((statedir.cache(root) / "champion.json").read_text())
    except (OSError, ValueError):
        return None
    if stamp is None or record.get("key") != [uri, name, stamp]:
        return None
    folder = statedir.cache(root) / record["folder"]
    return (folder, record.get("commit")) if (folder / "MLmodel").is_file() else None


def remember_champion(root: Path, uri: str, name: str, folder: Path, commit: str | None) -> None:
    if (stamp := _stamp(uri)) is None:
        return
    record = statedir.cache(root) / "champion.json"
    tmp = record.with_name(f".{record.name}.tmp{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {"key": [uri, name, stamp], "folder": str(folder.relative_to(statedir.cache(root))), "commit": commit}
        )
    )
    os.replace(tmp, record)


def version_folder(root: Path, uri: str, name: str, version: str) -> Path:
    """Where a registered version is downloaded to (a version's files never change); one
    folder per tracking store, whose version numbers are their own."""
    store = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return statedir.cache(root) / "models" / store / name / version


@dataclass
class LocalModel:
    """The model and explainer pipelines/registry/serving.py's KilnClassifier loads, read from the
    version's MLmodel (`kiln explain` needs no temperature: it reports raw probabilities)."""

    model: Any
    explainer: Any

    @classmethod
    def open(cls, folder: Path) -> "LocalModel":
        from components.explain.loading import LazyExplainer
        from components.runtime.loader import load_classifier

        try:
            flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
            artifacts = {key: folder / value["path"] for key, value in flavor.get("artifacts", {}).items()}
        except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
            raise KilnError(f"{folder / 'MLmodel'} is not a Kiln model ({err})") from None
        if "model" not in artifacts:
            raise KilnError(f"{folder / 'MLmodel'} names no model file")
        model = load_classifier(artifacts["model"], artifacts.get("tokenizer"))
        return cls(model, LazyExplainer(artifacts.get("explainer"), model))

    @property
    def transformer(self) -> bool:
        """Explained through PyTorch (a model folder), not by stored term weights."""
        return self.explainer.source is not None and self.explainer.source.is_dir()
