"""Credentials of `kiln up`'s servers: generated once, readable by their owner alone, sent
only to the servers they belong to; a local store needs no sign-in. The servers
themselves, users and roles are tested in tests/ops/ (test_operations.py on PostgreSQL)."""

import json
import os

import pytest

from components.errors import KilnError
from pipelines.core import env, statedir
from pipelines.servers import auth, roles

STATE = {
    "servers": {
        "mlflow": {"url": "http://127.0.0.1:5000"},
        "prefect": {"url": "http://127.0.0.1:4200/api"},
    },
    "auth": True,
}


@pytest.fixture
def signed_out(monkeypatch):
    for key in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "PREFECT_API_URL",
        "PREFECT_API_AUTH_STRING",
    ):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_the_admin_password_is_made_once_and_only_its_owner_can_read_it(tmp_path):
    os.umask(0o022)
    made = auth.ensure(tmp_path)
    again = auth.ensure(tmp_path)
    assert made == again and made.user == auth.ADMIN
    assert len(made.password) >= 12 and made.password != made.secret_key
    assert statedir.credentials_file(tmp_path).stat().st_mode & 0o777 == 0o600
    assert json.loads(statedir.credentials_file(tmp_path).read_text())["password"] == made.password


def test_the_auth_app_config_names_its_database_and_holds_no_password(tmp_path):
    made = auth.ensure(tmp_path)
    config = auth.server_config(tmp_path, "postgresql+psycopg2://kiln:dbpass@db:5432/kiln")
    text = config.read_text()
    assert "database_uri = postgresql+psycopg2://kiln:dbpass@db:5432/kiln" in text
    assert "default_permission = READ" in text and f"admin_username = {auth.ADMIN}" in text
    assert made.password not in text
    assert config.stat().st_mode & 0o777 == 0o600


def test_the_auth_app_trusts_a_checked_password_for_a_minute(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(auth.server_config(tmp_path, "sqlite:///users.db")))
    read = read_auth_config()  # as the server reads it
    assert read.auth_cache_ttl_seconds == auth.AUTH_CACHE_S == 60
    assert read.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


def test_kiln_signs_in_to_its_own_servers_as_admin(tmp_path, signed_out):
    made = auth.ensure(tmp_path)
    signed_out.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    signed_out.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    auth.configure_client(tmp_path, STATE)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == made.password
    assert os.environ["PREFECT_API_AUTH_STRING"] == f"admin:{made.password}"


def test_a_user_who_signs_in_as_someone_else_stays_that_user(tmp_path, signed_out):
    auth.ensure(tmp_path)
    signed_out.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    signed_out.setenv("MLFLOW_TRACKING_USERNAME", "rita")
    signed_out.setenv("MLFLOW_TRACKING_PASSWORD", "rita-reads-a-lot")
    auth.configure_client(tmp_path, STATE)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "rita"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "rita-reads-a-lot"


def test_the_admin_password_never_goes_to_another_server(tmp_path, signed_out):
    auth.ensure(tmp_path)
    signed_out.setenv("MLFLOW_TRACKING_URI", "https://mlflow.elsewhere.example")
    signed_out.setenv("PREFECT_API_URL", "https://prefect.elsewhere.example/api")
    auth.configure_client(tmp_path, STATE)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ and "PREFECT_API_AUTH_STRING" not in os.environ


def test_sign_in_reads_the_credentials_only_when_kiln_up_turned_auth_on(tmp_path, signed_out):
    auth.ensure(tmp_path)
    statedir.servers_file(tmp_path).write_text(json.dumps({**STATE, "auth": False}))
    signed_out.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    env.configure(tmp_path)
    auth.sign_in(tmp_path)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    statedir.servers_file(tmp_path).write_text(json.dumps(STATE))
    env.configure(tmp_path)
    auth.sign_in(tmp_path)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin"


def test_a_local_store_has_no_users_to_check_or_manage(tmp_path):
    roles.require_manage(env.local_tracking_uri(tmp_path), "kiln-bbc-news", "promote version 1")
    with pytest.raises(KilnError, match="users and roles live in an MLflow server with its auth app"):
        roles.users(env.local_tracking_uri(tmp_path))
