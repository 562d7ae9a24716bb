"""A stop's bookkeeping: bounded while a stop is under way, and able to end its run."""

import os

import pytest


def test_a_stops_bookkeeping_waits_seconds_at_most_and_any_other_runs_to_the_end():
    """A SIGTERM inside an SQLite write can leave MLflow's store locked for 20 s a write:
    a stop's bookkeeping must not hold the stop up that long."""
    import threading
    import time

    from pipelines.core.lifecycle import bookkeeping

    release = threading.Event()
    start = time.monotonic()
    bookkeeping(KeyboardInterrupt("terminated"), lambda: release.wait(60), seconds=0.5)
    assert time.monotonic() - start < 30  # gave up on the locked store, not 60 s later
    release.set()
    bookkeeping(KeyboardInterrupt("terminated"), lambda: 1 / 0, seconds=5)  # a stop swallows its errors
    done = []
    bookkeeping(None, lambda: done.append(1))
    bookkeeping(ValueError("a failure"), lambda: done.append(2))
    assert done == [1, 2]  # anything else runs to the end, in this thread
    with pytest.raises(ZeroDivisionError):
        bookkeeping(None, lambda: 1 / 0)


def test_a_stop_inside_a_tracking_write_still_ends_its_run(tmp_path, monkeypatch):
    """A SIGTERM that lands inside one of MLflow's SQLite writes left the store locked by
    the connection it cut short (in 4 of 9 tries), so the stop could not end its run;
    the stop's bookkeeping drops that connection first."""
    import random
    import signal
    import threading
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from pipelines.core.lifecycle import bookkeeping
    from tests.support.stores import empty_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(tmp_path / "mlflow.db"))
    client = MlflowClient()
    experiment = client.create_experiment("stops")

    def terminated(*_):
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, terminated)
    ended = []
    try:
        for _ in range(6):
            run = client.create_run(experiment).info.run_id
            threading.Timer(0.1 + random.random() * 0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            failure = None
            try:
                for step in range(10**6):
                    client.log_batch(run, metrics=[Metric("m", 1.0, int(time.time() * 1000), step)])
            except KeyboardInterrupt as err:
                failure = err
            finally:
                bookkeeping(failure, lambda: client.set_terminated(run, "KILLED"))  # noqa: B023 - run now
            ended.append(client.get_run(run).info.status)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ended == ["KILLED"] * 6
