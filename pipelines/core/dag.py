"""The pipeline DAG as DVC reads it from dvc.yaml: stage order, staleness, reproduction,
and what each stage reads and who makes it.

Kiln never writes the DAG down a second time: `kiln run` walks DVC's own graph, asks
DVC whether a stage changed, and lets DVC's `reproduce` consult its lock file, save,
commit and write dvc.lock. The params sections a stage reads and the stage that makes
each of its inputs are read from the same graph. The one thing Kiln changes is how a
stage's command executes: `kiln stage NAME` commands run inside the current interpreter,
so a run pays the seconds of importing torch, lightning or great_expectations once
instead of once per stage.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import KilnError
from pipelines.core import lockfile

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

COMMAND_PREFIX = "kiln stage "


def open_repo(root: Path) -> "Repo":
    from dvc.repo import Repo

    repo = Repo(str(root))
    # DVC narrates each step and suggests git commands; Kiln's flows say what ran. (Set
    # here, after the import: importing dvc resets its logger.)
    logging.getLogger("dvc").setLevel(logging.WARNING)
    return repo


def load_stage(repo: "Repo", name: str) -> "PipelineStage":
    from dvc.exceptions import DvcException

    try:
        stages = repo.stage.collect(name)
    except DvcException as err:
        raise KilnError(f"dvc.yaml: no stage '{name}' ({err})") from None
    if len(stages) != 1:
        raise KilnError(f"dvc.yaml: '{name}' names {len(stages)} stages, expected one")
    return stages[0]


def plan(repo: "Repo", targets: list[str] | None = None) -> list["PipelineStage"]:
    """The stages to visit, dependencies first, exactly as `dvc repro TARGETS` orders them.
    Data sources (the `.dvc` files of learned batches) have nothing to run and are left out."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    stages = collect_stages(repo, targets or ["dvc.yaml"])
    return [s for s in plan_repro(get_active_graph(repo.index.graph), stages) if not s.is_data_source]


def stage_name(stage: "PipelineStage") -> str:
    return stage.addressing


def sections(stage: "PipelineStage") -> tuple[str, ...]:
    """The params sections (or `section.key`s) a stage lists under `params:`."""
    from dvc.dependency.param import ParamsDependency

    return tuple(key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params)


def input_folders(repo: "Repo", name: str) -> list[Path]:
    """The folders a stage lists among its dependencies (those that exist)."""
    root = Path(repo.root_dir)
    return [
        root / dep.def_path for dep in load_stage(repo, name).deps if dep.def_path and (root / dep.def_path).is_dir()
    ]


def producers(repo: "Repo") -> dict[str, str]:
    """Every output path of the DAG, and the stage that writes it."""
    return {
        out.def_path: stage_name(stage) for stage in repo.index.stages if not stage.is_data_source for out in stage.outs
    }


def producer_of(path: str, made: dict[str, str]) -> str | None:
    """The stage that makes `path`: an output itself, inside one (a file of a folder), or
    a folder holding outputs (the split folder holds one file per split)."""
    target = Path(path)
    for out, stage in made.items():
        if target == Path(out) or Path(out) in target.parents or target in Path(out).parents:
            return stage
    return None


def generated(repo: "Repo") -> list[str]:
    """What a run writes into the git tree: dvc.lock, every output, and the .gitignore and
    .dvc files DVC keeps beside them. A change there is the pipeline's own, not a change
    to the code or params a result came from."""
    paths = {"dvc.lock"}
    for stage in repo.index.stages:
        for out in stage.outs:
            paths.add(out.def_path)
            if out.use_cache:
                paths.add(str(Path(out.def_path).parent / ".gitignore"))
        if stage.is_data_source:
            paths.add(str(Path(stage.path).relative_to(repo.root_dir)))
    return sorted(paths)


def kiln_stage_of(command: str | list[str]) -> str | None:
    """The stage name if `command` is a plain `kiln stage NAME`, else None."""
    if isinstance(command, list):
        if len(command) != 1:
            return None
        command = command[0]
    command = command.strip()
    if not command.startswith(COMMAND_PREFIX):
        return None
    rest = command[len(COMMAND_PREFIX) :].split()
    return rest[0] if len(rest) == 1 else None


@contextmanager
def in_process(execute: Callable[["PipelineStage", str], None]) -> Iterator[None]:
    """While active, DVC runs `kiln stage NAME` commands by calling `execute(stage, NAME)`
    in this process; any other command still goes to a shell.

    DVC has no public hook for how a command runs, so this swaps its `cmd_run`; DVC is
    pinned, and the test suite checks that `kiln run` leaves dvc.lock as `dvc repro` does.
    """
    import dvc.stage.run as dvc_run

    original = dvc_run.cmd_run

    def cmd_run(stage, dry=False, run_env=None):
        name = kiln_stage_of(stage.cmd)
        if name is None or dry:
            return original(stage, dry=dry, run_env=run_env)
        return execute(stage, name)

    dvc_run.cmd_run = cmd_run
    try:
        with lockfile.kept_parsed():
            yield
    finally:
        dvc_run.cmd_run = original


@contextmanager
def dvc_lock_errors(root: Path) -> Iterator[None]:
    """DVC's own repository lock, taken by another process (a `dvc repro` between two
    stages), as Kiln's one message about who holds the repository."""
    from dvc.lock import LockError

    from pipelines.core.lock import busy

    try:
        yield
    except LockError:
        raise busy(root) from None


def changed(repo: "Repo", stage: "PipelineStage") -> bool:
    """Whether DVC would reproduce `stage`: its code, data, params or outputs differ from
    what dvc.lock records."""
    with dvc_lock_errors(Path(repo.root_dir)), repo.lock:
        return bool(stage.changed())


def reproduce(repo: "Repo", stage: "PipelineStage", force: bool = False) -> None:
    """Reproduce one stage of the plan as `dvc repro` does: run it, or restore its outputs
    from DVC's run-cache when it has seen these inputs before.

    `dvc repro` plans once and reproduces each planned stage in turn, under the lock and
    SCM context its `Repo.reproduce` takes; so does this, with DVC's own steps. Asked for a
    stage by name, `Repo.reproduce` would read dvc.yaml and dvc.lock again for each stage
    (2.5 s of a default run's overhead)."""
    from dvc.repo import lock_repo
    from dvc.repo.reproduce import _reproduce

    with dvc_lock_errors(Path(repo.root_dir)), lock_repo(repo), repo.scm_context():
        _reproduce([stage], force=force, interactive=False)


def status(repo: "Repo", targets: list[str] | None = None) -> dict[str, list[str]]:
    """Why each stale stage would rerun, in DAG order; stages downstream of a stale one
    are listed too, since their inputs are about to change."""
    stale: dict[str, list[str]] = {}
    graph = repo.index.graph
    with dvc_lock_errors(Path(repo.root_dir)), repo.lock:
        for stage in plan(repo, targets):
            reasons = [_reason(entry) for entry in stage.status().get(stage.addressing, [])]
            upstream = [stage_name(s) for s in graph.successors(stage) if stage_name(s) in stale]
            if upstream and not reasons:
                reasons.append("downstream of " + ", ".join(upstream))
            if reasons:
                stale[stage_name(stage)] = reasons
    return stale


def _reason(entry) -> str:
    if isinstance(entry, str):
        return entry
    parts = []
    for kind, changes in entry.items():
        if isinstance(changes, dict):
            parts.append(kind + ": " + ", ".join(f"{path} ({_what(what)})" for path, what in changes.items()))
        else:
            parts.append(f"{kind}: {changes}")
    return "; ".join(parts)


def _what(change) -> str:
    """DVC reports params changes as {key: 'modified'}; files as a plain word."""
    if isinstance(change, dict):
        return ", ".join(f"{key} {word}" for key, word in change.items())
    return str(change)


def hashes(stage: "PipelineStage", kind: str) -> dict[str, str]:
    """DVC's content hash of each dependency or output (params excluded), the same
    values dvc.lock records."""
    from dvc.dependency.param import ParamsDependency

    entries = stage.deps if kind == "deps" else stage.outs
    found = {}
    for entry in entries:
        if isinstance(entry, ParamsDependency) or not entry.exists:
            continue
        info = entry.get_hash()
        if info and info.value:
            found[entry.def_path] = info.value
    return found
