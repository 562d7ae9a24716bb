"""The `kiln` command's own behaviour: a usage error in one line, and a stop that stays a
stop. (`kiln ui`: tests/ops/test_commands.py.)"""

import io
import sqlite3
import subprocess

import pytest

from tests.support.repo import BIN, clean_env
from tests.support.shared import wrapped


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
        return wrapped(err)


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
    assert _status(wrapped(sqlite3.OperationalError("database is locked"))) == "FAILED"
