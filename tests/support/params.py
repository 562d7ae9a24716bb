"""params.yaml in a test: a copy's file changed in place, or the shipped values as the
config models a component takes."""

import copy
import functools
from pathlib import Path

from tests.support.repo import ROOT


def set_params(repo: Path, **sections: dict) -> None:
    """Merge `sections` into the copy's params.yaml."""
    import yaml

    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        _merge(params.setdefault(name, {}), values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@functools.cache
def _shipped() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def shipped_params(**sections: dict) -> dict:
    """params.yaml's values, with `sections` merged in (for `parse`)."""
    params = copy.deepcopy(_shipped())
    for name, values in sections.items():
        _merge(params.setdefault(name, {}), values)
    return params


def shipped(key: str, **changes):
    """The config model at `key`, a params.yaml section or a dotted path into one
    ("finetune.loop"), holding params.yaml's values with `changes` merged in: the models
    have no defaults, so a test builds a config this way and names only the knobs it is
    about."""
    from pipelines.core.params import Params

    model, values = Params, shipped_params()
    for part in key.split("."):
        model = next(f.annotation for name, f in model.model_fields.items() if part in (name, f.alias))
        values = values[part]
    _merge(values, changes)
    return model.model_validate(values)


def _merge(into: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
