"""Run one stage the way DVC asks for it, the same way for every stage.

The executor validates params.yaml before anything is touched, takes the repository's
run lock, moves the stage's previous outputs aside (`kept`; nothing moves when params are
invalid or another run holds the repository), opens the stage's MLflow child run with
every params section the stage reads, times the adapter, writes the stage's metrics file,
and logs DVC's hashes as one artifact and the pipeline's headline figures on the parent
run. A stage that succeeds drops its previous outputs. One that fails puts them back as
they were, except the reports it wrote, which explain the failure: it leaves no output a
later stage could mistake for its own, and loses none that the last good run made.
`kiln run` keeps a stage's outputs the same way, around DVC's whole reproduction of the
stage: DVC would otherwise remove them before a run or a restore from its run-cache.

The previous outputs wait in .kiln/previous/, moved there by a rename (the same file
system). Under the run lock no other stage runs, so what a stage finds there when it
starts was left by a killed run: it goes back first, and the repository is as that run
found it.
"""

import importlib
import os
import shutil
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote
from weakref import WeakKeyDictionary

from components.errors import KilnError
from pipelines.core import dag, lock
from pipelines.core.env import git_state
from pipelines.core.io import remove, write_json
from pipelines.core.params import Params, load
from pipelines.core.statedir import DROPPED, PREVIOUS
from pipelines.stagekit.contract import StageContext, StageParams, StageResult
from pipelines.tracking import metrics, runs
from pipelines.tracking.stagerun import StageRun

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc.stage import PipelineStage


DVC_HASHES = "dvc/hashes.json"


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


# What a run's stages write does not change while it runs, but DVC rebuilds its index after
# every stage (0.35 s a stage on 2 cores): read once per Repo, for (producers, generated).
_OUTPUTS: "WeakKeyDictionary[Repo, tuple[dict[str, str], list[str]]]" = WeakKeyDictionary()


def _outputs(repo: "Repo") -> tuple[dict[str, str], list[str]]:
    if repo not in _OUTPUTS:
        _OUTPUTS[repo] = (dag.producers(repo), dag.generated(repo))
    return _OUTPUTS[repo]


def _context(root: Path, name: str, params: Params, stage: "PipelineStage", run, rank: int) -> StageContext:
    sections = dag.sections(stage)
    producers, generated = _outputs(stage.repo)
    return StageContext(
        name=name,
        root=root,
        params=StageParams(params, name, sections),
        sections=sections,
        run=run,
        deps=dag.hashes(stage, "deps"),
        producers=producers,
        rank=rank,
        git=git_state(root, generated),
    )


def execute(root: Path, name: str, stage: "PipelineStage | None" = None, keep: bool = True) -> Outcome:
    """Run stage `name` once, with `stage` as DVC loaded it (loaded here if None); with
    `keep`, its previous outputs are `kept` (`kiln run` keeps them itself, around DVC)."""
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
        result = _adapter(name).run(_context(root, name, params, stage, StageRun.offline(), rank))
        return Outcome(name, time.perf_counter() - start, result)
    with (
        lock.hold(root, f"kiln stage {name}"),
        kept(root, stage, root / params.paths.reports) if keep else nullcontext(),
    ):
        return _run(root, name, params, stage)


def _set_aside(root: Path, outs: list[Path]) -> None:
    """Move the outputs that exist into PREVIOUS, each named by its path; if one cannot
    be moved, those already moved go back."""
    folder = root / PREVIOUS
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for path in outs:
            if path.exists() or path.is_symlink():
                # A rename; a copy only where an output lies on another file system.
                shutil.move(path, folder / quote(path.relative_to(root).as_posix(), safe=""))
    except BaseException:
        _put_back(root)
        raise


def _put_back(root: Path, keep: Collection[Path] = ()) -> None:
    """Return every output set aside to its place, over what stands there now, unless
    that is in `keep`."""
    folder = root / PREVIOUS
    if not folder.is_dir():
        return
    for old in folder.iterdir():
        path = root / unquote(old.name)
        if path in keep:
            remove(old)
            continue
        remove(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(old, path)
    folder.rmdir()


def _drop_previous(root: Path) -> None:
    """Delete the outputs set aside, after one rename: a run killed while deleting them
    leaves none to be put back over the new ones."""
    if (root / PREVIOUS).is_dir():
        (root / PREVIOUS).rename(root / DROPPED)
        remove(root / DROPPED)


@contextmanager
def kept(root: Path, stage: "PipelineStage", reports: Path) -> Iterator[None]:
    """The stage's outputs set aside while the block runs: dropped if it succeeds, back
    in place if it raises (less the reports under `reports` it wrote). Under the run lock."""
    outs = [root / out.def_path for out in stage.outs]
    reports = reports.resolve()
    # What a killed run left: outputs it was deleting go, outputs it had set aside return.
    remove(root / DROPPED)
    _put_back(root)
    _set_aside(root, outs)
    try:
        yield
    except BaseException:
        # The reports this run wrote stay, since they explain the failure; every other
        # output is the last good run's again, or none if there was none.
        written = {path for path in outs if path.exists() and path.resolve().is_relative_to(reports)}
        for path in outs:
            if path not in written:
                remove(path)
        _put_back(root, keep=written)
        raise
    _drop_previous(root)


def _run(root: Path, name: str, params: Params, stage: "PipelineStage") -> Outcome:
    adapter = _adapter(name)
    outs = [(root / out.def_path, out) for out in stage.outs]
    probe = _context(root, name, params, stage, StageRun.offline(), 0)
    everything = params.model_dump(mode="json", by_alias=True)
    with runs.stage_run(name, probe.section_params(), params.tracking.experiment, probe.git, everything) as run:
        ctx = StageContext(**{**vars(probe), "run": run})
        start = time.perf_counter()
        result = adapter.run(ctx)
        if bad := metrics.unknown(result.metrics):
            raise RuntimeError(f"stage {name} logs metrics missing from pipelines/tracking/metrics.py: {bad}")
        seconds = time.perf_counter() - start
        for path, out in outs:
            # Outputs were set aside: a metrics file that exists now is the stage's own
            # structured report (evaluate's); any other gets the flat metrics.
            if out.metric and not path.exists():
                write_json(result.metrics, path)
        run.log_metrics({**result.metrics, "time/stage_s": seconds})
        for folder, path in result.artifacts.items():
            run.log_artifact(path, folder)
        run.log_headline({key: value for key, value in result.metrics.items() if metrics.pipeline_level(key)})
        # DVC's hashes of what the stage read and wrote: one file, not a tag a path.
        run.log_dict({"deps": probe.deps, "outs": dag.hashes(stage, "outs")}, DVC_HASHES)
    return Outcome(name, seconds, result)
