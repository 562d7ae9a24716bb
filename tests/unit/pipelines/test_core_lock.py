"""The run lock: one run a repository, and the next told whose it is."""

import os
import subprocess
import sys
import textwrap

from pipelines.core import lock
from tests.support.repo import ROOT


def test_a_second_process_finds_the_repo_held_and_is_told_by_whom(tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        from pipelines.core import lock
        try:
            with lock.hold(Path({str(tmp_path)!r}), "kiln run"):
                print("acquired")
        except lock.Busy as err:
            print(err)
    """)
    with lock.hold(tmp_path, "kiln retrain"):
        with lock.hold(tmp_path, "kiln stage ingest"):  # the same process: its stages run inside it
            assert lock.held(tmp_path)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"another run (PID {os.getpid()}, started " in out.stdout and ": kiln retrain) holds this repo" in out.stdout
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "acquired"
