"""Faults a run meets in operation, each reproduced as it happened: invalid params under
`kiln run` and `dvc repro`, two runs in one repository, a run killed by SIGTERM or kill -9, `dvc repro`
killed under its stage, the tracking server gone mid-run, a full disk."""

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from pipelines.core.env import SERVER_JOBS_OFF
from tests.support.classical import fit_a_grid
from tests.support.params import set_params
from tests.support.repo import BIN, SHARED_PREFECT, clean_env, kiln, kiln_here, run
from tests.support.shared import free_port

pytestmark = pytest.mark.slow


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, what: str, timeout: float = 240, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while not (found := condition()):
        assert proc is None or proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)
    return found


def children(pid: int, needle: str) -> list[psutil.Process]:
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in found if needle in " ".join(p.cmdline())]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def runs(repo: Path, uri: str | None = None):
    mlflow.set_tracking_uri(uri or f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["kiln"])


def test_invalid_params_stop_a_run_naming_the_key_and_lose_no_data(prepared):
    """`kiln run` validates params before any stage and deletes nothing. Under `dvc repro`
    DVC removes a stage's outputs before running it, as it always does: the stage stops on
    the key, and `dvc checkout` brings the last good split back from DVC's cache."""
    before = {name: md5(prepared / f"data/split/{name}.parquet") for name in ("train", "val", "test")}
    set_params(prepared, split={"test": 1.5})
    out = kiln_here("run", "split", cwd=prepared)
    assert out.returncode == 1 and "split.test" in out.stderr and "Traceback" not in out.stderr
    assert {name: md5(prepared / f"data/split/{name}.parquet") for name in before} == before
    out = run([str(BIN / "dvc"), "repro", "split"], prepared)
    assert out.returncode != 0
    assert "split.test" in out.stdout + out.stderr
    restored = run([str(BIN / "dvc"), "checkout", "split"], prepared)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {name: md5(prepared / f"data/split/{name}.parquet") for name in before} == before


def test_one_run_at_a_time_and_a_stopped_run_takes_its_server_with_it(prepared):
    # A finetune that lasts until it is stopped.
    set_params(prepared, finetune={"patience": 1000, "loop": {"max_epochs": 1000, "max_steps": 100000}})
    first = start([str(BIN / "kiln"), "run"], prepared)
    server = wait_for(lambda: children(first.pid, "prefect server start"), "temporary Prefect server", proc=first)[0]
    wait_for(lambda: (prepared / "checkpoints").exists(), "a training stage", proc=first)
    second = kiln_here("run", cwd=prepared)
    assert second.returncode == 1
    assert f"kiln: error: another run (PID {first.pid}, started " in second.stderr
    assert ": kiln run) holds this repo" in second.stderr and "Traceback" not in second.stderr
    repro = run([str(BIN / "dvc"), "repro"], prepared)
    said = repro.stdout + repro.stderr
    # Either Kiln's lock stops the stage DVC starts, or DVC's own lock on the files the
    # first run is using stops DVC sooner; both name the first run's PID.
    assert repro.returncode != 0 and str(first.pid) in said and ("holds this repo" in said or "is busy" in said), said
    assert (prepared / "data/split/train.parquet").is_file()  # the second run removed nothing

    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "kiln: stopped" in err and "Traceback" not in err, err
    wait_for(lambda: gone(server), "the temporary server to stop", timeout=30)
    assert not (runs(prepared)["status"] == "RUNNING").any()

    again = start([str(BIN / "kiln"), "run"], prepared)
    server = wait_for(lambda: children(again.pid, "prefect server start"), "temporary Prefect server", proc=again)[0]
    wait_for(lambda: (runs(prepared)["status"] == "RUNNING").any(), "a stage's MLflow run", proc=again)
    again.kill()  # kill -9 of the run alone, not its process group
    again.wait()
    wait_for(lambda: gone(server), "the server of a kill -9'd run to stop", timeout=30)
    assert (runs(prepared)["status"] == "RUNNING").any()  # nobody could end them...
    later = kiln_here("run", "ingest", cwd=prepared)
    assert later.returncode == 0, later.stderr
    assert not (runs(prepared)["status"] == "RUNNING").any()  # ...the next run did: KILLED
    assert (runs(prepared)["status"] == "KILLED").any()


def test_a_killed_dvc_repro_takes_its_stage_with_it(prepared):
    set_params(prepared, finetune={"patience": 1000, "loop": {"max_epochs": 1000, "max_steps": 4000}})
    assert kiln_here("run", "pretrain", cwd=prepared).returncode == 0
    dvc = start([str(BIN / "dvc"), "repro", "finetune"], prepared)
    stage = wait_for(lambda: children(dvc.pid, "kiln stage finetune"), "kiln stage finetune", proc=dvc)[0]
    wait_for(lambda: (prepared / "checkpoints/finetune/teacher/last.ckpt").is_file(), "a checkpoint", proc=dvc)
    dvc.kill()  # dvc alone: its stage is left behind, as a scheduler's kill -9 leaves it
    dvc.wait()
    wait_for(lambda: gone(stage), "the orphaned stage to stop", timeout=30)
    assert not (prepared / "models/teacher").exists()


def _tracking_server(repo: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination",
            (repo / "mlflow" / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=repo,
        # Without MLflow's GenAI job processes, as `kiln up` starts its server: seven
        # fewer interpreters starting on two cores.
        env=clean_env(**SERVER_JOBS_OFF),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def healthy() -> bool:
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    wait_for(healthy, "the MLflow server", timeout=120, proc=server)
    return server


def test_a_gone_tracking_server_fails_the_run_fast_and_the_rerun_registers_once(trained):
    """From the trained models on: the stages up to prune are up to date."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _tracking_server(trained, port)
    # On the session's Prefect server: what this run tests is its tracking server, not its own API.
    shared = os.environ[SHARED_PREFECT]
    first = start([str(BIN / "kiln"), "run"], trained, MLFLOW_TRACKING_URI=uri, PREFECT_API_URL=shared)
    # Late in the run, so the rerun has little left to do.
    wait_for(lambda: (trained / "reports/selection.json").is_file(), "select to finish", proc=first)
    os.killpg(server.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, err = first.communicate(timeout=300)
    assert time.monotonic() - killed < 60, "the run did not stop within a minute of the server"
    assert first.returncode == 1 and f"the MLflow tracking server at {uri} is not answering" in err
    assert "Traceback" not in err
    assert (trained / "models/onnx/pruned.onnx").is_file()  # what finished is kept

    server = _tracking_server(trained, port)
    try:
        second = kiln_here("run", cwd=trained, MLFLOW_TRACKING_URI=uri)
        assert second.returncode == 0, second.stdout + second.stderr
        assert re.search(r"^export\s+up to date", second.stdout, re.MULTILINE), second.stdout
        # Register once more on the same inputs, as a rerun after a failure past registration does.
        again = kiln_here("stage", "register", cwd=trained, MLFLOW_TRACKING_URI=uri)
        assert again.returncode == 0 and "already holds this model" in again.stdout, again.stdout
        found = runs(trained, uri)
        assert not (found["status"] == "RUNNING").any()
        assert len(mlflow.MlflowClient(uri).search_model_versions("name = 'kiln-mine'")) == 1
    finally:
        os.killpg(server.pid, signal.SIGKILL)


def test_a_full_disk_is_one_line_naming_the_path(prepared):
    # A model whose checkpoint (weights and optimizer state, about 20 MB) meets the limit
    # long before the MLflow database does.
    set_params(prepared, encoder={"hidden": 256, "heads": 4, "intermediate": 1024})
    limit = 8_000_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(
        [str(BIN / "kiln"), "stage", "pretrain"],
        cwd=prepared,
        env=clean_env(),
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=600,
    )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("kiln: error: cannot write checkpoint "), out.stderr
    assert "checkpoints/pretrain/encoder/last.ckpt: File too large" in errors[0]
    assert not (prepared / "models/encoder").exists()
    assert not list((prepared / "checkpoints").rglob(".*.tmp*"))


def test_a_full_tracking_store_is_one_line_naming_it(prepared):
    # A process, as the one under the limit below: DVC's state database is made by the first.
    assert kiln("stage", "tokenize", cwd=prepared).returncode == 0  # the store exists, with a run
    store = prepared / "mlflow" / "mlflow.db"
    before = md5(prepared / "models/tokenizer.json")
    # No file may reach an eighth of the store (about 1 MB): the store's first write lands
    # past that, while every file the stage writes before it (DVC's 32 kB cache, the log)
    # stays under. Just above its size would not do: a young store's pages have room for
    # the next run's rows. SQLite reports the EFBIG of that write as an I/O error (ENOSPC,
    # a really full disk, as "database or disk is full (SQLITE_FULL)").
    limit = store.stat().st_size // 8

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(
        [str(BIN / "kiln"), "stage", "tokenize"],
        cwd=prepared,
        env=clean_env(),
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=600,
    )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, out.stderr
    assert re.fullmatch(
        r"kiln: error: the MLflow tracking store \S*/mlflow/mlflow\.db failed: disk I/O error "
        r"\(SQLITE_IOERR_WRITE\); check its disk",
        errors[0],
    ), errors[0]
    assert md5(prepared / "models/tokenizer.json") == before  # the last good output stays
    assert kiln("stage", "tokenize", cwd=prepared).returncode == 0  # and the store still works


def test_a_stage_killed_with_its_outputs_set_aside_blocks_nothing(prepared):
    """What kill -9 leaves while a stage runs: its outputs set aside in .kiln/previous/ and
    its own half-written ones in place. The next stage that runs, whichever it is, puts
    the set-aside ones back first."""
    from pipelines.run.executor import _set_aside

    tokenizer = prepared / "models/tokenizer.json"
    before = md5(tokenizer)
    _set_aside(prepared, [tokenizer])
    tokenizer.write_text("half written by the killed stage")
    out = kiln_here("stage", "split", cwd=prepared)
    assert out.returncode == 0, out.stderr
    assert md5(tokenizer) == before
    assert not (prepared / ".kiln/previous").exists()


def test_a_planted_model_file_is_never_unpickled(trained, tmp_path):
    """A `pytorch_model.bin` holding code, planted in a model folder a stage loads."""
    folder = trained / "models/encoder"
    (folder / "model.safetensors").unlink()
    mark = tmp_path / "payload-ran"
    code = (
        "import os, pathlib, torch\n"
        "class P:\n    def __reduce__(self):\n"
        "        return (pathlib.Path.touch, (pathlib.Path(os.environ['MARK']),))\n"
        f"torch.save({{'bert.embeddings.word_embeddings.weight': P()}}, {str(folder / 'pytorch_model.bin')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "MARK": str(mark)}, check=True)
    out = kiln_here("stage", "finetune", cwd=trained)
    assert out.returncode == 1 and "kiln: error: finetune: model models/encoder is corrupt" in out.stderr
    assert not mark.exists()
    shutil.rmtree(folder)


@pytest.mark.slow  # a fresh interpreter importing scikit-learn: seconds the fast tier need not wait
def test_a_process_that_multiprocessing_started_ends_when_its_grid_does():
    """joblib's workers idle 5 minutes for more work, and a process started by
    multiprocessing (a search trial's worker, a served flow run) waits for them when it
    ends: `kiln serve` and the search hung that long."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=fit_a_grid)
    child.start()
    child.join(timeout=120)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
