"""dvc.yaml's code deps against the code each stage runs. DVC reruns a stage when a file
it lists changes, and only then: a module a stage runs but does not list leaves the
stage's outputs cached after that module changed.

A stage runs its adapter, pipelines/stages/<stage>.py, and the params models of the
sections it lists under `params:` (a default or a validator there changes what the stage
reads: `validate.min_chars: auto`), and every Kiln module those import, directly or not,
at the top of a module or inside a function. Imports under `if TYPE_CHECKING:` never run
and do not count. grimp (import-linter's graph) finds them all. A module counts whole: an
import inside a function counts though this stage may never call it, since telling which
functions a stage reaches would take more than an import graph.

Left out, and not followed, is the machinery that `kiln stage` runs every stage through
alike (MACHINERY): it runs a stage and computes nothing the stage writes. Params reach a
stage as the values dvc.yaml lists under `params:`, and each section's model counts from
its own module. Listing the machinery in every stage would rerun the whole DAG, hours of
training on a real dataset, for an edit to the run lock or a new params section; an edit
to it that does change outputs (io's one Parquet and JSON format) changes every stage's,
and calls for `dvc repro --force`.
"""

from pathlib import Path

import grimp
import pytest
import yaml

from pipelines.core.params import Params
from tests.support.repo import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

# The module of each params.yaml section's model, by section name (`validate`, not `validate_`).
SECTION_MODELS = {field.alias or name: field.annotation.__module__ for name, field in Params.model_fields.items()}

MACHINERY = frozenset(
    {
        # The executor's side of the adapter contract: context, params and inputs handed over as they are.
        "pipelines.stagekit.contract",
        # params.yaml validated; see the docstring.
        "pipelines.core.params",
        # Atomic writes, and the one Parquet and JSON format of every stage.
        "pipelines.core.io",
        # DVC's graph, the run lock, the environment and git state, processes ended with the run.
        "pipelines.core.dag",
        "pipelines.core.lock",
        "pipelines.core.env",
        "pipelines.core.lifecycle",
        # What `kiln` prints.
        "pipelines.core.console",
        # MLflow experiments and runs, their owners, what a stage logs, and the metric names.
        "pipelines.tracking.experiments",
        "pipelines.tracking.runs",
        "pipelines.tracking.stagerun",
        "pipelines.tracking.owners",
        "pipelines.tracking.metrics",
        # `kiln up`'s servers: starting them, where they keep data, signing in, who may do what.
        "pipelines.servers.auth",
        "pipelines.servers.control",
        "pipelines.servers.stores",
        "pipelines.servers.roles",
        # The error type.
        "components.errors",
    }
)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Kiln's imports without the machinery. No cache: grimp would write one into the checkout."""
    found = grimp.build_graph("components", "pipelines", exclude_type_checking_imports=True, cache_dir=None)
    gone = MACHINERY - found.modules
    assert not gone, f"MACHINERY names modules that are gone: {sorted(gone)}"
    for module in MACHINERY:
        found.remove_module(module)
    return found


def runs(graph: grimp.ImportGraph, stage: str) -> set[str]:
    """The files of the Kiln modules `stage` runs, machinery left out."""
    sections = {key.split(".")[0] for key in STAGES[stage].get("params", [])}
    starts = {f"pipelines.stages.{stage}"} | {SECTION_MODELS[section] for section in sections}
    modules = set().union(*(graph.find_upstream_modules(start) | {start} for start in starts - MACHINERY))
    return {module_file(module) for module in modules}


def module_file(module: str) -> str:
    path = Path(*module.split("."))
    return (path / "__init__.py" if (ROOT / path).is_dir() else path.with_suffix(".py")).as_posix()


def code_deps(stage: str) -> list[str]:
    """The deps of `stage` that are Kiln code: files, or folders that cover the files in them."""
    return [dep for dep in STAGES[stage]["deps"] if dep.startswith(("components/", "pipelines/"))]


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", STAGES)
def test_deps_list_every_module_the_stage_runs(graph, stage):
    deps = code_deps(stage)
    missing = sorted(file for file in runs(graph, stage) if not any(covers(dep, file) for dep in deps))
    assert not missing, f"dvc.yaml: stage '{stage}' runs code its deps do not list: {', '.join(missing)}"


@pytest.mark.parametrize("stage", STAGES)
def test_deps_list_no_code_the_stage_does_not_run(graph, stage):
    files = runs(graph, stage)
    extra = [dep for dep in code_deps(stage) if not any(covers(dep, file) for file in files)]
    assert not extra, f"dvc.yaml: stage '{stage}' lists code it does not run under deps: {', '.join(extra)}"


@pytest.mark.parametrize("stage", STAGES)
def test_deps_list_each_path_once(stage):
    deps = STAGES[stage]["deps"]
    twice = sorted({dep for dep in deps if deps.count(dep) > 1})
    assert not twice, f"dvc.yaml: stage '{stage}' lists {', '.join(twice)} more than once under deps"
