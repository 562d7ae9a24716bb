"""`kiln up`'s choice of backend stores and artifact destination (the servers themselves: tests/ops/)."""

from pathlib import Path

import pytest

from components.errors import KilnError
from pipelines.servers.stores import artifacts_destination, databases


def test_without_kiln_db_url_both_servers_use_sqlite_files_in_the_repository():
    mlflow, prefect = databases(None, Path("/repo"))
    assert mlflow == "sqlite:////repo/mlflow/mlflow.db"
    assert prefect == "sqlite+aiosqlite:////repo/.prefect/prefect.db"


def test_postgresql_gives_mlflow_the_named_database_and_prefect_its_own():
    mlflow, prefect = databases("postgresql://kiln:s3cret@db.internal:5433/kiln", Path("/repo"))
    assert mlflow == "postgresql+psycopg2://kiln:s3cret@db.internal:5433/kiln"
    assert prefect == "postgresql+asyncpg://kiln:s3cret@db.internal:5433/kiln_prefect"


@pytest.mark.parametrize("url", ["mysql://kiln:s3cret@db/kiln", "postgresql://kiln:s3cret@db", "not a url"])
def test_anything_but_a_postgresql_database_is_refused_without_showing_the_password(url):
    with pytest.raises(KilnError, match="KILN_DB_URL") as err:
        databases(url, Path("/repo"))
    assert "s3cret" not in str(err.value)


def test_artifacts_stay_in_the_repository_unless_kiln_artifacts_url_names_a_bucket(monkeypatch):
    monkeypatch.delenv("KILN_ARTIFACTS_URL", raising=False)
    assert artifacts_destination(Path("/repo")) == "file:///repo/mlflow/artifacts"
    monkeypatch.setenv("KILN_ARTIFACTS_URL", "s3://kiln/mlflow")
    assert artifacts_destination(Path("/repo")) == "s3://kiln/mlflow"


@pytest.mark.parametrize("url", ["kiln/mlflow", "s3://"])
def test_an_artifact_destination_that_is_no_storage_url_is_named(monkeypatch, url):
    monkeypatch.setenv("KILN_ARTIFACTS_URL", url)
    with pytest.raises(
        KilnError, match=r"KILN_ARTIFACTS_URL='.*' is not a storage URL \(expected s3://bucket/prefix\)"
    ):
        artifacts_destination(Path("/repo"))
