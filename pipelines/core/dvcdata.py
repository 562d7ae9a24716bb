"""DVC's data beside the DAG: the default remote a retrain pulls from and pushes to, and
the `.dvc` pointers of the batches it learned."""

from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import KilnError

if TYPE_CHECKING:
    from dvc.repo import Repo


def remote(repo: "Repo") -> str | None:
    return repo.config.get("core", {}).get("remote") or None


def pull(repo: "Repo") -> str:
    from dvc.exceptions import DvcException

    try:
        repo.pull()
    except DvcException as err:
        # A fresh remote holds nothing yet; the run rebuilds what it lacks.
        return f"pull: {err}"
    return "pulled"


def push(repo: "Repo") -> str:
    from dvc.exceptions import DvcException

    try:
        count = repo.push()
    except DvcException as err:
        raise KilnError(f"dvc push to remote '{remote(repo)}' failed: {err}") from None
    return f"pushed {count} file(s)"


def add(repo: "Repo", paths: list[Path]) -> None:
    """Track data files with `.dvc` pointers: the data version that travels with git."""
    if paths:
        repo.add([str(p) for p in paths])
