"""A run and the processes it starts end together, however the run ends.

- SIGTERM (a scheduler stopping a run, `kill`) becomes a KeyboardInterrupt, so the same
  clean-up as Ctrl-C runs: MLflow runs end KILLED, servers stop, locks are released. An
  error raised while a stop is handled is still a stop.
- A child Kiln starts (the temporary Prefect API, the search's trial workers) asks the
  kernel for SIGTERM when its parent dies, which covers kill -9, where no clean-up can run.
- A stage that `dvc repro` started watches the `dvc` process and stops when it is gone,
  instead of training on and writing outputs for a run nobody is waiting for.
"""

import ctypes
import gc
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

PR_SET_PDEATHSIG = 1
# How long the temporary Prefect API may take to answer while its process lives: a busy
# machine (load 10 on 2 cores) took it past 2 minutes.
API_START_S = 900.0


def interrupt_on_sigterm() -> None:
    def handler(_signum, _frame):
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, handler)


def stopped(err: BaseException | None) -> bool:
    """Whether `err` is a stop (Ctrl-C, SIGTERM, an exit), or was raised from or while one
    was being handled: a SIGTERM that lands inside an SQLite write can leave the store
    locked, and the next write's error must not turn the stop into a failure."""
    while err is not None:
        if not isinstance(err, Exception):
            return True
        err = err.__cause__ or err.__context__
    return False


def bookkeeping(failure: BaseException | None, work: Callable[[], None], seconds: float = 5.0) -> None:
    """Run `work`, the bookkeeping after a command that ended with `failure` (None: it did
    not). After a stop, first drop what the interrupted code held: a SIGTERM that lands
    inside an SQLite write leaves its connection, and the store's lock, in the frames of
    the traceback (MLflow then waits 20 s on every write and fails; with the frames
    cleared the write went through in 9 of 9 tries, against 5 of 9). Then it runs in a
    thread for `seconds` at most, its errors swallowed: runs a stop could not end are
    marked KILLED by the next run."""
    if not stopped(failure):
        work()
        return
    err = failure
    while err is not None:
        traceback.clear_frames(err.__traceback__)
        err = err.__cause__ or err.__context__
    gc.collect()

    def quietly() -> None:
        with suppress(Exception):
            work()

    thread = threading.Thread(target=quietly, daemon=True, name="stop-bookkeeping")
    thread.start()
    thread.join(seconds)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """For `preexec_fn`: runs in the child before exec. The signal is sent when the thread
    that started the child ends, so start children from the main thread."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


# The services of `prefect server start` a run's own API has no use for: schedules,
# workers, automations and the like belong to a server that outlives the run (`kiln up`).
# Left on: the task run recorder, without which the flow run shows no task runs, and the
# event persister, which keeps the run's events (`kiln.model.promoted`).
IDLE_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in (
        "CANCELLATION_CLEANUP",
        "CLEANUP_RECONCILER",
        "FOREMAN",
        "LATE_RUNS",
        "PAUSE_EXPIRATIONS",
        "REPOSSESSOR",
        "SCHEDULER",
        "TRIGGERS",
    )
} | {"PREFECT_API_EVENTS_STREAM_OUT_ENABLED": "false"}


class TemporaryApi:
    """A Prefect API server for this process alone, on a free local port: Prefect's own
    `prefect server start`, without its UI and the services only a lasting server needs
    (IDLE_SERVICES), as a child that ends with this process however it ends. Started
    before the run imports Prefect, so its few seconds overlap that work (see
    flow.run_flow); its output goes where this process's does (the run's log)."""

    def __init__(self) -> None:
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false", **IDLE_SERVICES)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def healthy(self) -> bool:
        """Whether the server answers its health check now."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def wait(self, meanwhile: Callable[[float], None]) -> None:
        """Until the server answers, calling `meanwhile(seconds waited)` between checks (a
        step of other work, or a pause); as long as a busy machine needs while the server
        lives (API_START_S). Raises RuntimeError if it ends or never answers."""
        began = time.monotonic()
        while not self.healthy():
            waited = time.monotonic() - began
            if self.process.poll() is not None:
                raise RuntimeError(f"Prefect's temporary API server ended (exit {self.process.returncode})")
            if waited > API_START_S:
                raise RuntimeError(f"Prefect's temporary API server did not answer in {waited:.0f} s")
            meanwhile(waited)

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def temporary_api() -> Iterator[TemporaryApi | None]:
    """A TemporaryApi, stopped on the way out; None where PREFECT_API_URL names a server."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    api = TemporaryApi()
    try:
        yield api
    finally:
        api.stop()


def watch(pid: int, started: float, every: float = 1.0) -> None:
    """Send this process SIGTERM once process `pid` (started at `started`) is gone."""
    import psutil

    def alive() -> bool:
        try:
            return abs(psutil.Process(pid).create_time() - started) < 1
        except psutil.Error:
            return False

    def loop() -> None:
        while alive():
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=loop, daemon=True, name="watch-parent").start()
