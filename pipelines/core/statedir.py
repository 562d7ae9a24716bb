"""Every path of Kiln's own state, all under `.kiln/` in the repository: beside the outputs
DVC tracks, out of git, and never an input of a stage. What each file holds is said here,
and the modules that write them ask here for the path.

A workspace `dvc exp run --temp` or `--queue` makes for an experiment (under
.dvc/tmp/exps/) is a repository of its own for the run's lock and logs, but shares the
tracking store, servers, sign-in, audit trail and model cache of the repository the
experiment was queued from (`home`): its runs land where `kiln run`'s do."""

import os
from pathlib import Path

STATE_DIR = ".kiln"


def folder(root: Path) -> Path:
    """`.kiln/` itself; `kiln up`'s servers write their logs here."""
    return root / STATE_DIR


def home(root: Path) -> Path:
    """The repository whose shared state a command in `root` uses: `root` itself, or the
    one an experiment's workspace was made from, which DVC names in DVC_ROOT."""
    root = root.resolve()
    if parent := os.environ.get("DVC_ROOT"):
        queued_from = Path(parent).resolve()
        if root.is_relative_to(queued_from / ".dvc" / "tmp"):
            return queued_from
    return root


def shared(root: Path) -> Path:
    """`.kiln/` of `home(root)`."""
    return folder(home(root))


def servers_file(root: Path) -> Path:
    """The servers `kiln up` started: addresses, pids, logs, whether sign-in is on."""
    return shared(root) / "servers.json"


def credentials_file(root: Path) -> Path:
    """The admin credentials of `kiln up`'s servers (mode 0600)."""
    return shared(root) / "auth.json"


def auth_config(root: Path) -> Path:
    """MLflow's auth app config for `kiln up`'s tracking server (mode 0600)."""
    return shared(root) / "mlflow-auth.ini"


def audit_log(root: Path) -> Path:
    """The audit trail, a hash chain of JSON lines."""
    return shared(root) / "audit.jsonl"


def run_lock(root: Path) -> Path:
    """The OS lock held by the one run in the repository."""
    return folder(root) / "run.lock"


def run_holder(root: Path) -> Path:
    """Who holds the run lock: PID, start time and command."""
    return folder(root) / "run.json"


def logs(root: Path) -> Path:
    """A log file per command run."""
    return folder(root) / "logs"


# Relative to the repository: a running stage's previous outputs wait in PREVIOUS, and
# go to DROPPED to be deleted.
PREVIOUS = Path(STATE_DIR) / "previous"
DROPPED = Path(STATE_DIR) / "previous.dropped"


def cache(root: Path) -> Path:
    """Registered versions on disk, and the champion last looked up."""
    return shared(root) / "cache"


def pretrained(root: Path, name: str) -> Path:
    """A pretrained checkpoint that shipped as a Python package, extracted."""
    return shared(root) / "models" / name
