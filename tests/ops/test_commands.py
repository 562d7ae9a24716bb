"""Commands an operator runs beside the pipeline: `kiln ui` on the local store and
`kiln profile`."""

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.support.repo import BIN, clean_env, kiln_here
from tests.support.shared import free_port


@pytest.mark.slow
def test_kiln_ui_serves_the_local_store(repo):
    (repo / "mlflow" / "mlflow.db").unlink()  # a clone `make install` has not run in: the UI makes the store
    port = free_port()
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
        # The address of the experiment's runs, on MLflow 3's machine-learning view.
        runs_page = rf"http://127.0.0.1:{port}/#/experiments/\d+/runs\?workflowType=machine_learning"
        assert re.search(f"MLflow UI: {runs_page}", first), first
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
    before = (repo / "params.yaml").read_text()
    out = kiln_here("profile", "gpu", cwd=repo)
    assert out.returncode == 0, out.stderr
    after = (repo / "params.yaml").read_text()
    assert "# Every knob of Kiln" in after and "precision: bf16-mixed" in after
    assert "  layers: 6" in after and after != before
    bad = kiln_here("profile", "tpu", cwd=repo)
    assert bad.returncode == 1 and "no profile 'tpu'" in bad.stderr and "profiles: gpu" in bad.stderr
