"""Stage adapters and the executor that runs one of them as DVC asks.

An adapter is `run(ctx) -> StageResult`: it reads its section of params, calls a
component, writes its outputs and returns its metrics. The executor does the rest the
same way for every stage: clears stale outputs, opens the MLflow child run, times the
work, writes the stage's metrics file and tags the run with DVC's hashes.
"""

import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines import dag, tracking
from pipelines.io import remove, write_json
from pipelines.params import Params, load

if TYPE_CHECKING:
    from dvc.stage import PipelineStage

# Stage name -> adapter module, imported only when that stage runs.
ADAPTERS = {
    "ingest": "pipelines.stages.ingest",
    "validate": "pipelines.stages.validate",
    "split": "pipelines.stages.split",
    "augment": "pipelines.stages.augment",
    "tokenize": "pipelines.stages.tokenize",
    "pretrain": "pipelines.stages.pretrain",
    "finetune": "pipelines.stages.finetune",
    "distill": "pipelines.stages.distill",
    "prune": "pipelines.stages.prune",
    "export": "pipelines.stages.export",
    "quantize": "pipelines.stages.quantize",
    "evaluate": "pipelines.stages.evaluate",
    "register": "pipelines.stages.register",
    "promote": "pipelines.stages.promote",
}


@dataclass
class StageResult:
    metrics: dict[str, float]
    # Files or folders to log as MLflow artifacts, by artifact folder.
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass
class StageContext:
    name: str
    root: Path
    params: Params
    run: tracking.StageRun
    # DVC's hash of each input file or folder, by path.
    deps: dict[str, str] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        return self.root / relative


@dataclass
class Timing:
    name: str
    seconds: float


def worker_rank() -> int:
    """Non-zero in the extra processes a distributed strategy (DDP) starts: Lightning
    re-runs `kiln stage NAME` in each, with its rank in the environment."""
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        if int(os.environ.get(key, "0") or 0):
            return int(os.environ[key])
    return 0


def execute(root: Path, name: str, stage: "PipelineStage | None" = None) -> Timing:
    """Run stage `name` once, with `stage` as DVC loaded it (loaded here if None)."""
    if name not in ADAPTERS:
        raise KilnError(f"unknown stage '{name}'; Kiln's stages are: {', '.join(ADAPTERS)}")
    params = load(root / "params.yaml")
    if worker_rank():
        return _execute_worker(root, name, params)
    if stage is None:
        stage = dag.load_stage(dag.open_repo(root), name)
    outs = [(root / out.def_path, out) for out in stage.outs]
    for path, out in outs:
        if not out.persist:
            remove(path)
    adapter = importlib.import_module(ADAPTERS[name])
    section = params.section(name).model_dump(mode="json")
    deps = dag.hashes(stage, "deps")
    tags = {f"dvc.dep.{path}": value for path, value in deps.items()}
    reports = (root / params.paths.reports).resolve()
    with tracking.stage_run(name, section, root, params.tracking.experiment, tags) as run:
        start = time.perf_counter()
        try:
            result = adapter.run(StageContext(name, root, params, run, deps))
        except BaseException:
            # Leave nothing a later stage could mistake for this stage's output; reports
            # stay, since they explain the failure.
            for path, out in outs:
                if not out.persist and not path.resolve().is_relative_to(reports):
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
    return Timing(name, seconds)


def _execute_worker(root: Path, name: str, params: Params) -> Timing:
    """A distributed worker trains alongside rank 0 and nothing else: rank 0 alone
    clears and writes outputs and logs to MLflow."""
    adapter = importlib.import_module(ADAPTERS[name])
    start = time.perf_counter()
    adapter.run(StageContext(name, root, params, tracking.StageRun.offline(), {}))
    return Timing(name, time.perf_counter() - start)
