"""Named overlays of params.yaml (profiles/NAME.yaml), merged in place."""

import io
from pathlib import Path

from components.errors import KilnError
from pipelines.core.io import atomic
from pipelines.core.params import parse


def _merge(into, overlay: dict, where: str = "") -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, f"{where}{key}.")
        else:
            into[key] = value


def _overlay(root: Path, name: str) -> dict:
    from ruamel.yaml import YAML

    profile = root / "profiles" / f"{name}.yaml"
    if not profile.is_file():
        found = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise KilnError(f"no profile '{name}' ({profile}); profiles: {', '.join(found) or 'none'}")
    return YAML(typ="safe").load(profile.read_text(encoding="utf-8")) or {}


def sets(root: Path, name: str) -> list[str]:
    """Profile NAME as the `key=value` sets of `dvc exp run -S`, one per leaf, values
    written as YAML reads them back."""
    from ruamel.yaml import YAML

    def leaves(node: dict, where: str = "") -> list[str]:
        found = []
        for key, value in node.items():
            if isinstance(value, dict):
                found += leaves(value, f"{where}{key}.")
            else:
                text = io.StringIO()
                YAML(typ="safe").dump(value, text)  # flow style: lists stay on one line
                found.append(f"{where}{key}={text.getvalue().strip().removesuffix('...').strip()}")
        return found

    return leaves(_overlay(root, name))


def apply(root: Path, name: str) -> Path:
    """Merge profiles/NAME.yaml into params.yaml, keeping its comments and order; the
    result is validated before it is written."""
    from ruamel.yaml import YAML

    overlay = _overlay(root, name)
    yaml = YAML()
    yaml.preserve_quotes = True
    params_path = root / "params.yaml"
    params = yaml.load(params_path.read_text(encoding="utf-8"))
    _merge(params, overlay)
    text = io.StringIO()
    yaml.dump(params, text)
    parse(YAML(typ="safe").load(text.getvalue()), f"{params_path} with profile {name}")
    with atomic(params_path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    return params_path
