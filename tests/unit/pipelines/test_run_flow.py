"""`kiln run`'s flow: what Prefect retries, and the footer's count of work and overhead."""

from components.errors import KilnError
from pipelines.run.flow import StageRow, footer, transient
from tests.support.shared import wrapped


class _State:
    def __init__(self, err: BaseException):
        self.err = err

    def result(self, raise_on_failure: bool = True):
        return self.err


def test_only_os_and_network_errors_are_retried():
    assert transient(None, None, _State(wrapped(ConnectionError("tracking server went away")))) is True
    assert transient(None, None, _State(wrapped(TimeoutError("read timed out")))) is True
    assert transient(None, None, _State(wrapped(AttributeError("a bug fails again the same way")))) is False
    assert transient(None, None, _State(wrapped(FileNotFoundError("data/raw/dataset.parquet")))) is False
    assert transient(None, None, _State(wrapped(KilnError("ingest: x.csv: the file is empty")))) is False


def test_the_footer_counts_a_failed_stage_as_work():
    rows = [StageRow("ingest", "up to date", 0.0), StageRow("finetune", "failed", 40.0)]
    assert footer(rows, 50.0) == "stage work 40.0 s, overhead 10.0 s (20%), total 50.0 s"
