"""The files ingest may read: only those that really lie in the folders the caller allows
(for the pipeline, the ingest stage's DVC dependencies). A file elsewhere is not hashed by
DVC, so a rerun could not notice that it changed, and a path such as /etc/passwd has no
business in a dataset."""

import glob
from collections.abc import Sequence
from pathlib import Path, PurePath

from components.errors import KilnError


def escapes(pattern: str) -> bool:
    """Whether a configured path could point outside the repository before any file is
    looked at: an absolute path, or one that climbs with '..'."""
    path = PurePath(pattern)
    return path.is_absolute() or ".." in path.parts


def folders_of(allowed: Sequence[Path] | None, root: Path) -> list[Path]:
    """The folders ingest may read from, as given (relative ones under `root`); the data
    folder of the repository unless the caller says otherwise."""
    return [root / folder for folder in allowed] if allowed is not None else [root / "data"]


def refuse_outside(paths: list[Path], allowed: Sequence[Path], key: str, root: Path) -> None:
    """Refuse a file whose real path (symlinks followed) is in none of `allowed`, and any
    of `allowed` whose real path is outside the repository at `root`: a data folder that
    is itself a link elsewhere would let in every file there."""
    real_root, real_folders = root.resolve(), []
    for folder in allowed:
        real = folder.resolve()
        if not real.is_relative_to(real_root):
            linked = real != folder.absolute()
            raise KilnError(
                f"ingest: {folder} is {f'a link to {real}, ' if linked else ''}outside the repository "
                f"{real_root}, so DVC cannot track what ingest would read there; "
                + ("replace the link with a copy of the data" if linked else "copy the data into the repository")
            )
        real_folders.append(real)
    for path in paths:
        real = path.resolve()
        if not any(real.is_relative_to(folder) for folder in real_folders):
            where = f"{path} is" if real == path.absolute() else f"{path} is a link to {real},"
            raise KilnError(
                f"ingest: {key}: {where} outside the folders ingest may read "
                f"({', '.join(map(str, allowed))}); copy the file into one of them"
            )


def expand(
    pattern: str, root: Path, allowed: Sequence[Path] | None = None, key: str = "ingest.file.path"
) -> list[Path]:
    """Files matching a path or glob, relative to `root`, sorted. `allowed` are the folders
    the files must really lie in (default: root/data); `key` is the params key the
    pattern came from, named when a file is refused."""
    folders = folders_of(allowed, root)
    if escapes(pattern):
        raise KilnError(
            f"ingest: {key} '{pattern}' must be relative to the repository and free of '..'; "
            f"ingest reads only files under {', '.join(map(str, folders))}: copy the file there"
        )
    paths = sorted(root / p for p in glob.glob(pattern, root_dir=root, recursive=True) if (root / p).is_file())
    refuse_outside(paths, folders, key, root)
    return paths


def batch_files(
    directory: Path, root: Path, allowed: Sequence[Path] | None = None, key: str = "ingest.incoming.dir"
) -> list[Path]:
    """The batch files of a folder, by name (a name that starts with a date sorts by it).
    Hidden files and DVC's `.dvc` pointers beside learned batches are not batches. A file
    that is a link to somewhere outside `allowed` (default: `directory` itself), or a
    folder of `allowed` outside the repository at `root`, is refused, naming `key`, the
    params key that set the folder."""
    if not directory.is_dir():
        return []
    paths = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".dvc")
    refuse_outside(paths, list(allowed) if allowed is not None else [directory], key, root)
    return paths
