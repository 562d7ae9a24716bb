"""Signing in to `kiln up`'s servers: the admin credentials, the auth app's config, and
which requests carry them (roles.py says who may do what).

`kiln up` starts MLflow with its basic-auth app and Prefect with an API auth string. The
admin password is generated on first start and kept in `.kiln/auth.json` (mode 0600),
never printed; every kiln command in the repository authenticates with it, unless
MLFLOW_TRACKING_USERNAME (with MLFLOW_TRACKING_PASSWORD) names another user.
"""

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from components.errors import KilnError
from pipelines.core import statedir
from pipelines.core.env import read_servers

ADMIN = "admin"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    # Flask's CSRF key for MLflow's auth app: kept, so a restart keeps browser sessions valid.
    secret_key: str

    @property
    def prefect_auth_string(self) -> str:
        return f"{self.user}:{self.password}"


def read(root: Path) -> Credentials | None:
    try:
        data = json.loads(statedir.credentials_file(root).read_text())
        return Credentials(data["user"], data["password"], data["secret_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure(root: Path) -> Credentials:
    """The repository's admin credentials, generated on first use and written readable by
    their owner alone (created with mode 0600, never widened by the umask)."""
    if (found := read(root)) is not None:
        return found
    # MLflow refuses an admin password under 12 characters; this one has 32.
    made = Credentials(ADMIN, secrets.token_urlsafe(24), secrets.token_urlsafe(32))
    write_private(statedir.credentials_file(root), json.dumps(made.__dict__, indent=2))
    return made


def write_private(path: Path, text: str) -> None:
    """`text` in a new file only its owner can read; replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".tmp")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(staged, path)


# How long MLflow's auth app trusts a password it has checked. Each check is a deliberately
# slow hash, and without the cache MLflow makes one or two for every request: a tiny
# retrain under `kiln up` kept the server at a full core, the run waiting on it. The
# server has one worker, so a password change or deletion through its API (`kiln users`)
# takes effect at once; one made in its database directly, within this time.
AUTH_CACHE_S = 60


def server_config(root: Path, database_uri: str) -> Path:
    """MLflow's auth app config: its user table in `database_uri`, READ for any signed-in
    user without a grant, the admin named ADMIN (its password comes from the environment
    on first start), checked passwords trusted for AUTH_CACHE_S. Mode 0600: a PostgreSQL
    URL holds the database password."""
    path = statedir.auth_config(root)
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n",
    )
    return path


def server_env(root: Path, database_uri: str, credentials: Credentials) -> dict[str, str]:
    """What MLflow's auth app reads from the environment."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(server_config(root, database_uri)),
        # Read only when the user table is empty: the first start makes the admin.
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials.secret_key,
    }


def sign_in(root: Path) -> None:
    """After `env.configure`: sign requests to the servers `kiln up` started, if it turned
    their auth on."""
    if (state := read_servers(root)) and state.get("auth"):
        configure_client(root, state)


def configure_client(root: Path, state: dict) -> None:
    """Sign kiln's requests to `kiln up`'s servers (`state`) with the admin credentials,
    unless the user signs in as someone else (MLFLOW_TRACKING_USERNAME). Never to another
    server the user pointed kiln at: these credentials are for these servers only."""
    found = read(root)
    if found is None:
        return
    servers = state["servers"]
    if os.environ.get("MLFLOW_TRACKING_URI") == servers["mlflow"]["url"] and not os.environ.get(
        "MLFLOW_TRACKING_USERNAME"
    ):
        os.environ["MLFLOW_TRACKING_USERNAME"] = found.user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = found.password
    if os.environ.get("PREFECT_API_URL") == servers["prefect"]["url"]:
        os.environ.setdefault("PREFECT_API_AUTH_STRING", found.prefect_auth_string)


def check_admin(root: Path, url: str, credentials: Credentials, store: str) -> None:
    """The admin of an existing user table keeps the password it was made with: a lost or
    replaced .kiln/auth.json shows here, at `kiln up`, not as 401s in the middle of a run."""
    import requests

    answer = requests.get(
        f"{url}/api/2.0/mlflow/users/current", auth=(credentials.user, credentials.password), timeout=30
    )
    if answer.status_code == 401:
        raise KilnError(
            f"MLflow's user table (in {store}) has an '{credentials.user}' whose password is not the one "
            f"in {statedir.credentials_file(root)}; restore that file, or drop the user tables to start over"
        )


def refused(err: Exception, uri: str) -> str | None:
    """A failed sign-in or a refusal in words (MLflow's message is the endpoint and status)."""
    code = getattr(err, "error_code", None)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED":
        return (
            f"the MLflow server at {uri} did not accept the sign-in of '{user or '(nobody)'}': "
            f"check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if code == "PERMISSION_DENIED":
        return f"the MLflow server at {uri} refused this to user '{user}' (see `kiln users list` for roles)"
    return None
