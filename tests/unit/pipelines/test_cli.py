"""The `kiln` command's own behaviour: the UI, and which failures Prefect retries."""

import io
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest

from components.errors import KilnError
from pipelines.run.flow import transient
from tests.support.repo import BIN, clean_env


class _State:
    def __init__(self, err: BaseException):
        self.err = err

    def result(self, raise_on_failure: bool = True):
        return self.err


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise RuntimeError("failed to reproduce 'ingest'") from err
    except RuntimeError as outer:
        return outer


def test_only_os_and_network_errors_are_retried():
    assert transient(None, None, _State(_wrapped(ConnectionError("tracking server went away")))) is True
    assert transient(None, None, _State(_wrapped(TimeoutError("read timed out")))) is True
    assert transient(None, None, _State(_wrapped(AttributeError("a bug fails again the same way")))) is False
    assert transient(None, None, _State(_wrapped(FileNotFoundError("data/raw/dataset.parquet")))) is False
    assert transient(None, None, _State(_wrapped(KilnError("ingest: x.csv: the file is empty")))) is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_kiln_ui_serves_the_local_store(repo):
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "kiln"), "ui", "--port", str(port)],
        cwd=repo,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        assert f"MLflow UI: http://127.0.0.1:{port}" in first
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "the UI exited"
                assert time.time() < deadline, "the UI did not answer in 90 s"
                time.sleep(1)
    finally:
        # The server has workers of its own: stop the whole process group.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert (repo / "mlflow" / "mlflow.db").exists()


@pytest.mark.slow
def test_gpu_profile_merges_into_params_and_keeps_comments(repo):
    from tests.support.repo import kiln as run_kiln

    before = (repo / "params.yaml").read_text()
    out = run_kiln("profile", "gpu", cwd=repo)
    assert out.returncode == 0, out.stderr
    after = (repo / "params.yaml").read_text()
    assert "# Every knob of Kiln" in after and "precision: bf16-mixed" in after
    assert "  layers: 6" in after and after != before
    bad = run_kiln("profile", "tpu", cwd=repo)
    assert bad.returncode == 1 and "no profile 'tpu'" in bad.stderr and "profiles: gpu" in bad.stderr


@pytest.mark.parametrize(
    "args, error",
    [
        (["promote", "--version", "abc"], "kiln: error: promote: Invalid value for '--version' / '-v': "),
        (["stage", "ingest", "--bogus"], "kiln: error: stage: No such option: --bogus"),
        (["stage"], "kiln: error: stage: Missing argument 'name'."),
        (["nosuch"], "kiln: error: No such command 'nosuch'."),
    ],
)
def test_a_usage_error_is_one_line_not_a_traceback(tmp_path, args, error):
    # Typer raises its vendored click's errors, not click's own: each must still be shown.
    out = subprocess.run(
        [str(BIN / "kiln"), *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(error) and line.endswith("--help`)"), line


def _raised_during_a_stop() -> BaseException:
    try:
        try:
            raise KeyboardInterrupt("terminated")
        except KeyboardInterrupt:
            # The store a SIGTERM left locked mid-write fails the next write.
            raise sqlite3.OperationalError("database is locked") from None
    except sqlite3.OperationalError as err:
        return _wrapped(err)


def test_an_error_raised_while_stopping_is_still_a_stop(monkeypatch):
    import pipelines.cli
    from pipelines.core import console
    from pipelines.tracking.runs import _status

    def app(standalone_mode):
        raise _raised_during_a_stop()

    said = io.StringIO()
    monkeypatch.setattr(console, "_current", console.Console(io.StringIO(), said))
    monkeypatch.setattr(pipelines.cli, "app", app)
    with pytest.raises(SystemExit) as ended:
        pipelines.cli.main()
    assert ended.value.code == 130 and said.getvalue() == "kiln: stopped\n"
    assert _status(_raised_during_a_stop()) == "KILLED"
    assert _status(_wrapped(sqlite3.OperationalError("database is locked"))) == "FAILED"
