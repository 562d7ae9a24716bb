"""Where `kiln up`'s servers keep their data: MLflow's backend store and Prefect's
database (PostgreSQL when KILN_DB_URL names one, else SQLite files in the repository),
and MLflow's artifacts (KILN_ARTIFACTS_URL, else mlflow/artifacts/)."""

import os
from pathlib import Path

from components.errors import KilnError

DB_ENV = "KILN_DB_URL"
PREFECT_DB_SUFFIX = "_prefect"
ARTIFACTS_ENV = "KILN_ARTIFACTS_URL"


def artifacts_destination(root: Path) -> str:
    """Where the MLflow server keeps artifacts: KILN_ARTIFACTS_URL (`s3://bucket/prefix` on
    S3 or MinIO, reached with MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials), else
    mlflow/artifacts/ in the repository. Clients upload through the server, so only the
    machine running it needs those credentials."""
    from urllib.parse import urlsplit

    where = os.environ.get(ARTIFACTS_ENV)
    if not where:
        return (root / "mlflow" / "artifacts").as_uri()
    parts = urlsplit(where)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise KilnError(f"{ARTIFACTS_ENV}='{where}' is not a storage URL (expected s3://bucket/prefix)")
    if parts.scheme == "s3":
        try:
            import boto3  # noqa: F401 - MLflow's S3 artifact store
        except ImportError:
            raise KilnError(f"{ARTIFACTS_ENV} is on S3: install Kiln's s3 extra (pip install -e '.[s3]')") from None
    return where


def databases(db_url: str | None, root: Path) -> tuple[str, str]:
    """(MLflow backend store URI, Prefect database URL). MLflow and Prefect each keep an
    `alembic_version` table, so on one PostgreSQL server they get a database each: the
    one KILN_DB_URL names for MLflow, and the same name plus `_prefect` for Prefect."""
    if not db_url:
        return (f"sqlite:///{root / 'mlflow' / 'mlflow.db'}", f"sqlite+aiosqlite:///{root / '.prefect' / 'prefect.db'}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except ArgumentError:
        raise KilnError(
            f"{DB_ENV}='{hide(db_url)}' is not a database URL (expected postgresql://user:password@host:5432/kiln)"
        ) from None
    if url.get_backend_name() != "postgresql" or not url.database:
        raise KilnError(
            f"{DB_ENV} must name a PostgreSQL database (postgresql://user:password@host:5432/kiln), "
            f"got '{hide(db_url)}'"
        )
    mlflow = url.set(drivername="postgresql+psycopg2")
    prefect = url.set(drivername="postgresql+asyncpg", database=url.database + PREFECT_DB_SUFFIX)
    return mlflow.render_as_string(hide_password=False), prefect.render_as_string(hide_password=False)


def hide(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing of it that could be a secret
        return "<unparseable>"


def ensure_databases(db_url: str, suffixes: tuple[str, ...] = ("", PREFECT_DB_SUFFIX)) -> None:
    """Create the databases named KILN_DB_URL's database plus each suffix (MLflow's and
    Prefect's by default) if the server lacks them (needs CREATEDB; a DBA may make them
    beforehand instead)."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    names = [url.database + suffix for suffix in suffixes]
    try:
        connection = psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname="postgres",
            connect_timeout=10,
        )
    except psycopg2.OperationalError as err:
        raise KilnError(f"cannot reach PostgreSQL at {hide(db_url)}: {str(err).strip().splitlines()[0]}") from None
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as err:
        raise KilnError(
            f"PostgreSQL at {hide(db_url)}: cannot create {' and '.join(names)}: {str(err).strip().splitlines()[0]}"
        ) from None
    finally:
        connection.close()
