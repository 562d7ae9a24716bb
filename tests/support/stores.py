"""Empty MLflow stores, as `make install` leaves one in a clone."""

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

_TEMPLATE: list[Path] = []  # the empty store this process copies, once made


def empty_store(db: Path, home: Path | None = None) -> str:
    """The URI of an empty MLflow SQLite store at `db`: a copy of one this process made
    first (MLflow's migrations take about 2 s a new store; a copy takes milliseconds). Its
    Default experiment keeps artifacts under mlruns/ in `home` (default: beside `db`), as
    a store made by a command run in that folder would."""
    if not _TEMPLATE:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="kiln-mlflow-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE[0], db)
    with sqlite3.connect(db) as copy:
        where = str((home or db.parent) / "mlruns" / "0")
        copy.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (where,))
    copy.close()
    return f"sqlite:///{db}"
