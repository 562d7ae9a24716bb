"""A throwaway copy of the repository, and Kiln's commands run in it as a user runs them."""

import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

from tests.support.stores import empty_store

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The Prefect API that `kiln run` and `kiln retrain` get in tests (conftest's `prefect_api`).
SHARED_PREFECT = "KILN_TEST_PREFECT_API_URL"

# What a run writes: a copy starts without it, as a fresh clone does.
OUTPUTS = (
    "data/raw/",
    "data/validated/",
    "data/split/",
    "data/augmented/",
    "data/quarantine/",
    "models/",
    "reports/",
    "checkpoints/",
    "mlflow/mlflow.db",
)


def project_files() -> list[str]:
    """The repository's files as a clone would have them (tracked plus new, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


# The commands that run a Prefect flow, as `args[:1]`.
FLOWS = (("run",), ("retrain",), ("monitor",))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any tracking server or Prefect API of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "KILN_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_repo(dest: Path) -> Path:
    """`dest` as a new git repo holding the project's files, without any outputs, and the
    empty MLflow store `make install` makes in a clone."""
    for name in project_files():
        if (name.startswith(OUTPUTS) and not name.endswith(".gitignore")) or name == "dvc.lock":
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    empty_store(dest / "mlflow/mlflow.db", home=dest)
    git = ["git", "-c", "user.name=kiln-test", "-c", "user.email=test@kiln.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=clean_env(**extra), capture_output=True, text=True, timeout=900)


def kiln(*args: str, cwd: Path, own_prefect: bool = False, **extra: str) -> subprocess.CompletedProcess:
    """`kiln ARGS` in `cwd`. A run, retrain or monitor uses the test session's Prefect server instead
    of starting its own (seconds each), unless `own_prefect` or PREFECT_API_URL is given:
    tests of the temporary server itself use `own_prefect`."""
    if args[:1] in FLOWS and not own_prefect and os.environ.get(SHARED_PREFECT):
        extra.setdefault("PREFECT_API_URL", os.environ[SHARED_PREFECT])
    return run([str(BIN / "kiln"), *args], cwd, **extra)


def environment(env: dict[str, str]) -> None:
    """`env` as this process's environment, and the libraries' process-wide state read from
    it again, as a process of its own would: MLflow's tracking URI unset (Lightning's
    MLFlowLogger sets it to the store a command tracked into; unset before `env` is in
    place, since unsetting removes MLFLOW_TRACKING_URI too), Prefect's settings read anew."""
    os.environ.clear()
    if (mlflow := sys.modules.get("mlflow")) is not None:
        mlflow.set_tracking_uri(None)
    os.environ.update(env)
    if "prefect.context" in sys.modules:
        sys.modules["prefect.context"].refresh_global_settings_context()


def kiln_here(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """`kiln ARGS` in `cwd` inside this process, with `clean_env(**extra)` as its
    environment: for a command whose output, exit code and files are checked, where a
    process of its own (seconds of imports) checks nothing more. A flow (`run`, `retrain`,
    `monitor`) uses the test session's Prefect server, as `kiln` gives them (see
    `environment` for the settings read again around each command). What the
    command's console prints is returned; the rest goes to its log file as in a process of
    its own. The environment, working directory, console and SIGTERM's handler are put back
    after."""
    from pipelines import cli
    from pipelines.core import console

    flow = args[:1] in FLOWS
    if flow:
        from prefect.logging.handlers import APILogWorker

        extra.setdefault("PREFECT_API_URL", os.environ[SHARED_PREFECT])

    out, err = io.StringIO(), io.StringIO()
    environ, here, argv, shown = dict(os.environ), Path.cwd(), sys.argv, console._current
    capture, sigterm = console.capture, signal.getsignal(signal.SIGTERM)

    @contextmanager
    def into_strings(log: Path) -> Iterator[console.Console]:
        """console.capture, its console printing to `out` and `err`, and sys.stdout and
        sys.stderr to the log, as in a process of its own."""
        with capture(log) as terminal:
            streams = terminal.out, terminal.err, terminal.tty
            terminal.out, terminal.err, terminal.tty = out, err, False
            logged = [open(fd, "w", buffering=1, closefd=False) for fd in (1, 2)]  # noqa: SIM115
            try:
                with redirect_stdout(logged[0]), redirect_stderr(logged[1]):
                    yield terminal
            finally:  # capture closes the streams it made, not these
                for stream in logged:
                    stream.close()
                terminal.out, terminal.err, terminal.tty = streams

    env = clean_env(**extra)  # read before the environment it is made from is cleared
    environment(env)
    os.chdir(cwd)
    sys.argv = ["kiln", *args]
    console._current, console.capture = console.Console(out, err), into_strings
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        if flow:  # its last log lines, before the session's server stops
            APILogWorker.drain_all()
        environment(environ)
        os.chdir(here)
        sys.argv, console._current, console.capture = argv, shown, capture
        signal.signal(signal.SIGTERM, sigterm)
    return subprocess.CompletedProcess(["kiln", *args], code, out.getvalue(), err.getvalue())
