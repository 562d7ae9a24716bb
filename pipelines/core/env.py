"""Where Kiln runs and the environment it gives the tools it drives.

Called by the CLI before any tool is imported, never at import time.
"""

import os
import subprocess
from pathlib import Path

from components.errors import KilnError
from pipelines.core import statedir

# No internet at run time: telemetry calls would only fail and fill the log.
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


# How long MLflow calls may take before a run says the tracking server is gone.
TRACKING_TIMEOUTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}

# MLflow's server starts a job runner and seven consumer processes (about 250 MB and 2 s of
# CPU each) for its GenAI jobs, which Kiln never submits: the servers `kiln up` and `kiln ui`
# start, which inherit Kiln's environment, run without them.
SERVER_JOBS_OFF = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

# Kiln's own state in a repository: the run lock, run logs, and `kiln up`'s logs and addresses.


# Every variable Kiln reads or hands to the tools it drives (infra/ sets no other), and
# what it does. infra/README.md explains each one.
VARIABLES = {
    "KILN_DB_URL": "kiln up: PostgreSQL URL; MLflow uses its database, Prefect the same name plus _prefect",
    "KILN_ARTIFACTS_URL": "kiln up: the MLflow server's artifacts (s3://bucket/prefix); default mlflow/artifacts",
    "MLFLOW_TRACKING_URI": "the MLflow tracking server (or store) every kiln command uses",
    "MLFLOW_BACKEND_STORE_URI": "the MLflow server's own database (the server of docker-compose.yml)",
    "MLFLOW_S3_ENDPOINT_URL": "the S3 endpoint (MinIO) of MLflow's artifact store",
    "AWS_ACCESS_KEY_ID": "S3 credentials: MLflow's artifact store and the DVC remote",
    "AWS_SECRET_ACCESS_KEY": "S3 credentials: MLflow's artifact store and the DVC remote",
    "PREFECT_API_URL": "the Prefect server every kiln command, kiln serve and the worker use",
    "PREFECT_UI_API_URL": "the API address the Prefect UI in a browser calls",
    "PREFECT_API_DATABASE_CONNECTION_URL": "the Prefect server's database",
    "PREFECT_HOME": "Prefect's profile and temporary-API database (default: .prefect/ in the repository)",
    **{key: "telemetry off (no internet where Kiln runs)" for key in TELEMETRY_OFF},
    **{
        key: "bounded retries and timeouts of MLflow calls (a gone server fails a run in seconds)"
        for key in TRACKING_TIMEOUTS
    },
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false: no model is ever unpickled",
    **{key: "off: the MLflow server's GenAI job processes, which Kiln never uses" for key in SERVER_JOBS_OFF},
    "MLFLOW_TRACKING_USERNAME": "who kiln commands sign in to MLflow as (default under kiln up: admin)",
    "MLFLOW_TRACKING_PASSWORD": "that user's MLflow password (default under kiln up: .kiln/auth.json)",
    "PREFECT_API_AUTH_STRING": "user:password kiln commands and workers send to the Prefect API",
    "PREFECT_SERVER_API_AUTH_STRING": "user:password the Prefect server requires of API clients",
    "MLFLOW_AUTH_CONFIG_PATH": "MLflow's auth app config (user database, default permission, admin name)",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "the MLflow admin's password, read on the auth app's first start",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "the MLflow auth app's CSRF key (the same on every restart)",
}


def find_root(start: Path | None = None) -> Path:
    """The Kiln repository: the nearest folder upward holding dvc.yaml and params.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    raise KilnError(f"no Kiln repository (dvc.yaml and params.yaml) in {here} or above it")


def local_tracking_uri(root: Path) -> str:
    """The SQLite store in mlflow/ of the repository (of `statedir.home`: an experiment's
    workspace tracks into the store of the repository it was queued from)."""
    return f"sqlite:///{statedir.home(root) / 'mlflow' / 'mlflow.db'}"


def tracking_uri() -> str:
    """The MLflow tracking URI this process uses (`configure` sets it)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "(default)")


def configure(root: Path) -> None:
    """Embedded defaults, each overridable by the variable a user already knows:
    MLFLOW_TRACKING_URI, PREFECT_API_URL, PREFECT_HOME. Servers started by `kiln up` come
    before the embedded ones (`auth.sign_in` then signs requests to them)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    if state := read_servers(root):
        os.environ.setdefault("MLFLOW_TRACKING_URI", state["servers"]["mlflow"]["url"])
        os.environ.setdefault("PREFECT_API_URL", state["servers"]["prefect"]["url"])
    os.environ.setdefault("MLFLOW_TRACKING_URI", local_tracking_uri(root))
    # Prefect's profile and the temporary API's database live beside the project.
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Command output is for people: no download progress bars between its lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Kiln's models are ONNX files loaded by code; a model that needs unpickling is refused,
    # here and in every process Kiln starts (servers, `kiln serve-model`), which inherit it.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    # MLflow retries an unreachable server 7 times with a doubling back-off and a 120 s
    # timeout: a run would hang for half an hour before saying the server is gone. Three
    # tries within seconds tell a blip from an outage. (And see SERVER_JOBS_OFF.)
    for key, value in {**TRACKING_TIMEOUTS, **SERVER_JOBS_OFF}.items():
        os.environ.setdefault(key, value)


def read_servers(root: Path) -> dict | None:
    """What `kiln up` wrote (addresses, pids, logs), if its servers are up."""
    import json

    try:
        return json.loads(statedir.servers_file(root).read_text())
    except (OSError, ValueError):
        return None


def git_state(root: Path, generated: list[str] = ()) -> tuple[str, bool]:
    """(commit, dirty) of the repository, or ("unknown", False) outside git. Changes to
    `generated` paths (what a run itself writes: dvc.lock, outputs) do not make it dirty."""
    excluded = [f":(exclude){path}" for path in generated]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())
