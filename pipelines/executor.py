"""Run one stage the way DVC asks for it, the same way for every stage.

The executor validates params.yaml before anything is touched, takes the repository's
run lock, clears the stage's outputs (dvc.yaml marks them `persist`, so DVC leaves that
to Kiln and nothing is removed when params are invalid or another run holds the
repository), opens the stage's MLflow child run with every params section the stage
reads, times the adapter, writes the stage's metrics file, and tags the run with DVC's
hashes. A stage that fails leaves no output a later stage could mistake for its own.
"""

import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines import dag, lock, metrics, tracking
from pipelines.contract import StageContext, StageParams, StageResult
from pipelines.env import git_state
from pipelines.io import remove, write_json
from pipelines.params import Params, load

if TYPE_CHECKING:
    from dvc.stage import PipelineStage


@dataclass
class Outcome:
    name: str
    seconds: float
    result: StageResult


def worker_rank() -> int:
    """Non-zero in the extra processes a distributed strategy (DDP) starts: Lightning
    re-runs `kiln stage NAME` in each, with its rank in the environment."""
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        if int(os.environ.get(key, "0") or 0):
            return int(os.environ[key])
    return 0


def _adapter(name: str):
    return importlib.import_module(f"pipelines.stages.{name}")


def _context(root: Path, name: str, params: Params, stage: "PipelineStage", run, rank: int) -> StageContext:
    sections = dag.sections(stage)
    return StageContext(
        name=name,
        root=root,
        params=StageParams(params, name, sections),
        sections=sections,
        run=run,
        deps=dag.hashes(stage, "deps"),
        producers=dag.producers(stage.repo),
        rank=rank,
        git=git_state(root, dag.generated(stage.repo)),
    )


def execute(root: Path, name: str, stage: "PipelineStage | None" = None) -> Outcome:
    """Run stage `name` once, with `stage` as DVC loaded it (loaded here if None)."""
    params = load(root / "params.yaml")
    if stage is None:
        stage = dag.load_stage(dag.open_repo(root), name)
    if dag.kiln_stage_of(stage.cmd) != name:
        raise KilnError(f"dvc.yaml: stage '{name}' does not run `kiln stage {name}`")
    rank = worker_rank()
    if rank:
        # A distributed worker trains alongside rank 0 and nothing else: rank 0 alone
        # clears and writes outputs and logs to MLflow.
        start = time.perf_counter()
        result = _adapter(name).run(_context(root, name, params, stage, tracking.StageRun.offline(), rank))
        return Outcome(name, time.perf_counter() - start, result)
    with lock.hold(root, f"kiln stage {name}"):
        return _execute(root, name, params, stage)


def _execute(root: Path, name: str, params: Params, stage: "PipelineStage") -> Outcome:
    outs = [(root / out.def_path, out) for out in stage.outs]
    for path, _ in outs:
        remove(path)
    adapter = _adapter(name)
    reports = (root / params.paths.reports).resolve()
    probe = _context(root, name, params, stage, tracking.StageRun.offline(), 0)
    tags = {f"dvc.dep.{path}": value for path, value in probe.deps.items()}
    with tracking.stage_run(name, probe.section_params(), root, params.tracking.experiment, tags, probe.git) as run:
        ctx = StageContext(**{**vars(probe), "run": run})
        start = time.perf_counter()
        try:
            result = adapter.run(ctx)
            if bad := metrics.unknown(result.metrics):
                raise RuntimeError(f"stage {name} logs metrics missing from pipelines/metrics.py: {bad}")
        except BaseException:
            # Reports stay, since they explain the failure.
            for path, _ in outs:
                if not path.resolve().is_relative_to(reports):
                    remove(path)
            raise
        seconds = time.perf_counter() - start
        for path, out in outs:
            # Outputs were cleared above: a metrics file that exists now is the stage's own
            # structured report (evaluate's); any other gets the flat metrics.
            if out.metric and not path.exists():
                write_json(result.metrics, path)
        run.log_metrics({**result.metrics, "time/stage_s": seconds})
        for folder, path in result.artifacts.items():
            run.log_artifact(path, folder)
        run.set_tags({f"dvc.out.{path}": value for path, value in dag.hashes(stage, "outs").items()})
    return Outcome(name, seconds, result)
