"""A registered version on disk, checked to be Kiln's own before anything of it is loaded.

MLflow loads a model by importing the loader module its MLmodel names, after putting the
version's `code/` folder first on sys.path: whoever can write a version could make
`kiln predict` run their code, pickles or none. So Kiln loads a version only if it is
exactly what `registry.register_model` writes:
- one flavor, python_function, loaded by MLflow's models-from-code loader from serving.py;
- serving.py and every file under code/ byte-identical to Kiln's own: this installation's,
  or those of the commit the version was registered from (its `kiln.git.commit` tag) in this
  repository's git history, so a version an older Kiln registered still loads;
- artifacts of the kinds Kiln writes (ONNX, JSON, safetensors), and no links.
`kiln predict`, `kiln serve-model`, `kiln explain`, the promotion gate and the retrain
flow's champion lookup all get their version through `fetch`.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from components.errors import KilnError
from pipelines.core.io import atomic

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

# Where Kiln's code lives: the repository this installation runs from.
KILN = Path(__file__).resolve().parents[2]
SERVING = "pipelines/registry/serving.py"
# Where serving.py lay in commits before pipelines/ was grouped by concern.
FORMER_SERVING = "pipelines/serving.py"
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
# What MLflow 3 writes for a models-from-code pyfunc, and `registered_model_meta`, which a
# download of a models:/ URI adds.
TOP_LEVEL = {
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
    "registered_model_meta",
    "serving.py",
    "code",
    "artifacts",
}
FLAVOR_KEYS = {
    "artifacts",
    "cloudpickle_version",
    "code",
    "config",
    "env",
    "loader_module",
    "model_code_path",
    "python_version",
    "streamable",
}
ARTIFACTS = {"model", "tokenizer", "explainer"}
# The ONNX file, tokenizer and explainer (a transformer's config and weights, or a
# classical model's term weights): data a loader parses, never code it runs.
DATA_SUFFIXES = {".onnx", ".json", ".safetensors"}


def lineage(found: "ModelVersion") -> dict[str, str]:
    """A version's tags by Kiln's names without their `kiln.` prefix ("git.commit",
    "data.split", "gate.export_agreement"): versions registered before the tags moved under
    kiln.* carry the bare names (and mlflow.parent_run_id), and read the same."""
    tags = dict(found.tags)
    if "mlflow.parent_run_id" in tags:
        tags["parent_run_id"] = tags["mlflow.parent_run_id"]
    return tags | {key.removeprefix("kiln."): value for key, value in tags.items() if key.startswith("kiln.")}


def fetch(found: "ModelVersion", into: Path, command: str) -> Path:
    """The version's files in `into` (downloaded once, whole or not at all), checked;
    `command` heads the refusal."""
    import mlflow

    if not (into / "MLmodel").is_file():
        with atomic(into) as tmp:
            tmp.mkdir()
            mlflow.artifacts.download_artifacts(f"models:/{found.name}/{found.version}", dst_path=str(tmp))
    check(into, f"{command}: version {found.version} of '{found.name}'", lineage(found).get("git.commit"))
    return into


def artifacts(folder: Path) -> dict[str, Path]:
    """A checked version's files by role: model (ONNX), tokenizer and explainer, where held."""
    flavor = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
    return {key: folder / entry["path"] for key, entry in (flavor.get("artifacts") or {}).items()}


def check(folder: Path, what: str, commit: str | None) -> None:
    """Raise a KilnError naming `what` and the first thing that is not Kiln's."""
    if (problem := _problem(folder, commit)) is not None:
        raise KilnError(f"{what} is not a model Kiln registered ({problem}); refused, nothing of it was loaded")


def _problem(folder: Path, commit: str | None) -> str | None:
    # Python prefers a module's bytecode to its source when the two look alike: bytecode
    # that came with the version, or that a load wrote, goes, and the checked source is read.
    for cache in [p for p in folder.rglob("__pycache__") if p.is_dir() and not p.is_symlink()]:
        shutil.rmtree(cache)
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            return f"{path.relative_to(folder)} is a link"
    if extra := sorted(p.name for p in folder.iterdir() if p.name not in TOP_LEVEL):
        return f"it holds {', '.join(extra)}, which Kiln never writes"
    try:
        described = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
        flavors = described["flavors"]
        flavor = flavors["python_function"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        return f"its MLmodel does not read as a python_function model: {type(err).__name__} {err}"
    if set(flavors) != {"python_function"}:
        return f"its MLmodel has the flavors {', '.join(sorted(flavors))}, not python_function alone"
    if extra := sorted(set(flavor) - FLAVOR_KEYS):
        return f"its MLmodel sets {', '.join(extra)}"
    if flavor.get("loader_module") != CODE_LOADER:
        return f"its MLmodel loads '{flavor.get('loader_module')}', not MLflow's models-from-code loader"
    if os.path.basename(str(flavor.get("model_code_path"))) != "serving.py" or flavor.get("code") != "code":
        return "its MLmodel names other model code than serving.py with code/"
    if (problem := _artifacts(folder, flavor.get("artifacts") or {})) is not None:
        return problem
    return _code(folder, commit)


def _artifacts(folder: Path, artifacts: dict) -> str | None:
    if extra := sorted(set(artifacts) - ARTIFACTS):
        return f"its MLmodel names the artifacts {', '.join(extra)}"
    for key, entry in artifacts.items():
        path = os.path.normpath(str(entry.get("path") if isinstance(entry, dict) else entry))
        if not path.startswith("artifacts" + os.sep):
            return f"its artifact '{key}' lies outside artifacts/ ({path})"
    for path in (folder / "artifacts").rglob("*"):
        if path.is_file() and path.suffix not in DATA_SUFFIXES:
            return f"{path.relative_to(folder)} is not a kind of file Kiln registers"
    return None


def _code(folder: Path, commit: str | None) -> str | None:
    """None if serving.py and code/ are Kiln's files, as installed or at `commit`."""
    shipped = {SERVING: folder / "serving.py"}
    code = folder / "code"
    for path in sorted(code.rglob("*")) if code.is_dir() else []:
        if path.is_file():
            shipped[path.relative_to(code).as_posix()] = path
    if not all(name.startswith("components/") for name in shipped if name != SERVING):
        stray = next(name for name in shipped if name != SERVING and not name.startswith("components/"))
        return f"code/{stray} is not a file of Kiln's"
    installed = _differing(shipped, lambda name: _blob_of_file(KILN / name))
    if not installed:
        return None
    if commit:
        at_commit = _tree(commit)
        if at_commit is not None and not _differing(shipped, at_commit.get):
            return None
        where = f"this installation's or commit {commit[:12]}'s" if at_commit else "this installation's"
        if at_commit is None:
            where += f" (commit {commit[:12]}, which it was registered from, is not in this repository)"
    else:
        where = "this installation's (it names no commit it was registered from)"
    first = installed[0]
    return f"{'code/' + first if first != SERVING else 'serving.py'} is not {where}"


def _differing(shipped: dict[str, Path], reference) -> list[str]:
    return [name for name, path in shipped.items() if reference(name) != _blob_of_file(path)]


def _blob(data: bytes) -> str:
    """Git's object id of a file's bytes, the id `git ls-tree` lists. A file made to match
    one of Kiln's would need a second preimage of SHA-1, which nobody can compute."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _blob_of_file(path: Path) -> str | None:
    try:
        return _blob(path.read_bytes())
    except OSError:
        return None


def _tree(commit: str) -> dict[str, str] | None:
    """Path -> object id of Kiln's code at `commit`, or None when git does not know it."""
    try:
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "-z", commit, "--", "components", SERVING, FORMER_SERVING],
            cwd=KILN,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    tree = {}
    for entry in listed.stdout.decode().split("\0"):
        if entry:
            meta, name = entry.split("\t", 1)
            tree[SERVING if name == FORMER_SERVING else name] = meta.split()[2]
    return tree
