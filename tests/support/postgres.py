"""A throwaway PostgreSQL server for the tests that need a real database.

The binaries come from the Debian `postgresql` package (`.ci/run` installs it). The
server runs from a temporary data folder on a free loopback port, as the `postgres`
user when the tests run as root (PostgreSQL refuses to run as root).
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER, PASSWORD = "kiln", "kiln-test"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server() -> Iterator[str]:
    """Start a server; yields the URL of database `kiln` (created by `kiln up`)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL is not installed; `apt-get update && apt-get install -y postgresql` "
            "(what .ci/run does) provides it"
        )
    home = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
    home.chmod(0o755)
    data, sockets = home / "data", home / "run"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, "postgres")
        shutil.chown(sockets, "postgres")
    secret = home / "password"
    secret.write_text(PASSWORD)
    secret.chmod(0o644)
    port = free_port()
    try:
        subprocess.run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--pwfile",
                str(secret),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *prefix,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(home / "server.log"),
                "-o",
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/kiln"
    finally:
        if data.exists():
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(home, ignore_errors=True)
