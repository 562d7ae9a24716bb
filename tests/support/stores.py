"""Empty MLflow stores, as `make install` leaves one in a clone, and copies of full ones."""

import atexit
import shutil
import sqlite3
import tempfile
from contextlib import closing
from functools import cache
from pathlib import Path


@cache
def _template() -> Path:
    """An empty store made once in this process: MLflow's migrations take about 2 s a
    new store, a copy milliseconds."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="kiln-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def empty_store(db: Path, home: Path | None = None) -> str:
    """The URI of an empty MLflow SQLite store at `db`, a copy of `_template()`. Its Default
    experiment keeps artifacts under mlruns/ in `home` (default: beside `db`), as a store
    made by a command run in that folder would."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), db)
    where = str((home or db.parent) / "mlruns" / "0")
    with closing(sqlite3.connect(db)) as copy, copy:
        copy.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (where,))
    return f"sqlite:///{db}"


def copy_with_store(source: Path, dest: Path) -> Path:
    """`dest` as a copy of the repository `source`, its MLflow store with it and naming
    `dest` (see moved_store)."""
    shutil.copytree(source, dest, symlinks=True)
    moved_store(dest / "mlflow/mlflow.db", source, dest)
    return dest


def moved_store(store: Path, old: Path, new: Path) -> None:
    """The MLflow store copied from `old` to `new` made to name `new`: its experiments,
    runs and models keep absolute artifact locations, and a copy would otherwise log into
    the template (which the other tests read)."""
    with closing(sqlite3.connect(store)) as db, db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?)',
                        (str(old), str(new), str(old)),
                    )
