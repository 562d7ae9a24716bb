"""New batch files in: checked against everything learned before them, rejected ones moved
to quarantine beside their report, accepted ones moved to the processed folder where the
`incoming` ingest source keeps reading them (so the dataset does not change by the move)."""

import shutil
import time
from pathlib import Path

import pandas as pd

from components.data.batches import BatchOutcome, check
from components.data.folders import batch_files
from components.data.sources import learned
from pipelines.core import dag, dvcdata
from pipelines.core.params import Params
from pipelines.registry.models import Reference


def check_batches(repo, params: Params, reference: Reference) -> list[BatchOutcome]:
    """Each batch against everything learned before it, earlier batches of this run
    included, so two batches holding the same rows add them once. Files are read only from
    the folders the ingest stage lists as its inputs in dvc.yaml."""
    root, cfg = Path(repo.root_dir), params.ingest
    folders = dag.input_folders(repo, "ingest")
    rules = params.validate_.resolved(cfg.base)
    dataset = learned(cfg, root, folders)
    outcomes = []
    for path in batch_files(root / cfg.incoming.dir, root, folders):
        no_drift = queued(path)
        outcome = check(
            path, dataset, cfg.file, rules, reference.profile, reference.tokenizer, params.retrain.drift, no_drift
        )
        outcomes.append(outcome)
        if outcome.accepted:
            dataset = pd.concat([dataset, outcome.fresh], ignore_index=True)
    return outcomes


def queued(path: Path) -> str | None:
    """Why a batch skips the drift checks, when `kiln label import` made it: a labelling
    queue is chosen for what the champion is least sure of, so it differs from the
    training data on purpose (its labels and expectations are still checked). Known by its
    name alone, as the export's manifest may have stayed on the machine that made it."""
    from pipelines.monitor.labelling import EXPORT_ID, PREFIX

    export = path.stem.removeprefix(PREFIX)
    if path.stem.startswith(PREFIX) and EXPORT_ID.fullmatch(export):
        return f"labels of the queue exported as {export}: chosen to differ from the training data, drift not checked"
    return None


def _free(folder: Path, name: str) -> Path:
    """`folder/name`, or a dated variant if a batch of that name is already there: a batch
    must never replace another one."""
    target = folder / name
    if not target.exists():
        return target
    return folder / f"{Path(name).stem}.{time.strftime('%Y%m%dT%H%M%S')}{Path(name).suffix}"


def quarantine(outcome: BatchOutcome, folder: Path) -> Path:
    """Move a rejected batch into its own folder beside its report."""
    home = _free(folder, f"{time.strftime('%Y%m%dT%H%M%S')}-{outcome.batch}")
    home.mkdir(parents=True)
    (home / "report.json").write_text(outcome.model_dump_json(indent=2))
    shutil.move(outcome.path, home / outcome.batch)
    return home


def learn(paths: list[Path], folder: Path, repo) -> list[Path]:
    """Move accepted batches into the processed folder, each with a DVC pointer."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in paths:
        target = _free(folder, path.name)
        shutil.move(path, target)
        moved.append(target)
    dvcdata.add(repo, moved)
    return moved
