"""A stage adapter run in the test's own process: its context built as the executor builds
it, less DVC (no hashes, no git state), and a run that keeps what the adapter logs."""

import importlib
import re
import shutil
from pathlib import Path

import yaml

from pipelines.core.params import load
from pipelines.stagekit.contract import StageContext, StageParams, StageResult
from pipelines.tracking.stagerun import StageRun
from tests.support.repo import ROOT
from tests.support.tiny import tiny_repo


class RecordingRun(StageRun):
    """A stage's MLflow run that keeps the metrics, artifacts and tags set on it."""

    def __init__(self):
        super().__init__(None, "test-run", None)
        self.metrics: dict[str, float] = {}
        self.artifacts: dict[str, Path] = {}
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.metrics.update(metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts[artifact_path or path.name] = path

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def _interpolated(value: str, params: dict) -> str:
    """dvc.yaml's `${section.key}` with params.yaml's value, as DVC reads it."""

    def lookup(match: re.Match) -> str:
        found = params
        for part in match[1].split("."):
            found = found[part]
        return str(found)

    return re.sub(r"\$\{([^}]+)\}", lookup, value)


def _paths(entries: list, params: dict) -> list[str]:
    """dvc.yaml's deps or outs: each a path, or a path with its options."""
    return [_interpolated(entry if isinstance(entry, str) else next(iter(entry)), params) for entry in entries]


def stage_context(root: Path, name: str) -> StageContext:
    """Stage `name`'s context in `root`, from root's dvc.yaml and params.yaml: the params
    sections dvc.yaml lists for it, its deps (each path, hashed as nothing), and the stage
    that makes every output of the DAG (outs, metrics and plots, as DVC counts them)."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    sections = tuple(stages[name].get("params", []))
    return StageContext(
        name=name,
        root=root,
        params=StageParams(load(root / "params.yaml"), name, sections),
        sections=sections,
        run=RecordingRun(),
        deps=dict.fromkeys(_paths(stages[name].get("deps", []), raw), ""),
        producers={
            out: stage
            for stage, spec in stages.items()
            for kind in ("outs", "metrics", "plots")
            for out in _paths(spec.get(kind, []), raw)
        },
    )


def stage_repo(folder: Path, **overrides: dict) -> Path:
    """The least a stage adapter runs in: `folder` holding dvc.yaml and params.yaml as
    shipped, set up for the tiny config (`tiny_repo`: ingest reads `tiny_frame` from
    data/external/mine.csv), with `overrides` merged into params.yaml."""
    (folder / "data/external").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, folder / name)
    return tiny_repo(folder, **overrides)


def run_stage(root: Path, name: str) -> tuple[StageContext, StageResult]:
    """Stage `name`'s adapter called in this process on `root`: its context, and what it returned."""
    ctx = stage_context(root, name)
    return ctx, importlib.import_module(f"pipelines.stages.{name}").run(ctx)


def evaluate_context(sections: tuple[str, ...], root: Path = ROOT) -> StageContext:
    """The evaluate stage's context over `sections` of the shipped params.yaml, offline."""
    return StageContext(
        "evaluate",
        root,
        StageParams(load(ROOT / "params.yaml"), "evaluate", sections),
        sections,
        StageRun.offline(),
        producers={"models/onnx": "export"},
    )
