"""The registered champion served and loaded as operators do: over HTTP by `mlflow models
serve`, and a version planted with code of its own refused by every command that loads one."""

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from components.errors import KilnError
from components.runtime.transformer import OnnxClassifier
from pipelines.registry import gating, models
from pipelines.tracking import runs
from tests.support.data import LABELS, TEXTS
from tests.support.params import set_params, shipped
from tests.support.registry import NAME, register, use_store
from tests.support.repo import BIN, ROOT, clean_env
from tests.support.shared import free_port

FAST = shipped("evaluate", latency_texts=10, batches=2, rounds=1, warmup=1)


def awaited(server: subprocess.Popen, port: int) -> None:
    """Return once the server on `port` answers /ping; fail with its output if it died."""
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return
        except OSError as err:
            if time.time() > deadline or server.poll() is not None:
                output = server.stdout.read().decode() if server.poll() is not None else "no /ping"
                raise AssertionError(output) from err
            time.sleep(1)


def posted(port: int, records: list[dict], params: dict | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of an /invocations request of `records`."""
    body = {"dataframe_records": records, **({"params": params} if params else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def store(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


@pytest.mark.slow
def test_mlflow_serves_the_champion_over_http(store):
    a = register(store / "a", seed=0, temperature=2.0)
    client = runs.client()
    client.set_registered_model_alias(NAME, models.CHAMPION, a)
    port = free_port()
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=store,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        awaited(server, port)

        def post(records: list[dict], params: dict | None = None) -> tuple[int, dict]:
            return posted(port, records, params)

        status, body = post([{"text": TEXTS[0]}, {"text": TEXTS[5]}])
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == 2 and all(r["label"] in LABELS for r in rows)
        assert abs(sum(rows[0][label] for label in LABELS) - 1) < 1e-5
        assert "attributions" not in rows[0]  # explaining costs nothing unless asked for
        # The temperature fitted on val divides the logits: probabilities are flatter than raw.
        raw = OnnxClassifier(store / "a" / "model.onnx", store / "a" / "tokenizer.json").predict([TEXTS[0]])[0]
        assert max(rows[0][label] for label in LABELS) < max(raw["probabilities"].values())
        status, body = post([{"text": TEXTS[0]}], {"explain": True})
        assert status == 200, body
        words = json.loads(body["predictions"][0]["attributions"])
        assert [w for w, _ in words] == TEXTS[0].split() and all(isinstance(score, float) for _, score in words)
        status, body = post([{"text": "   "}])
        assert status == 400 and "text 0 is empty" in body["message"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_kiln_serve_model_logs_every_request_with_personal_data_masked(repo, monkeypatch):
    """`kiln serve-model` records each text it answers in the inference log, masked by
    ingest's recognizers, and a shutdown writes what was still queued."""
    import mlflow

    from components.monitor import inference

    set_params(repo, register={"model_name": NAME}, serve={"flush_s": 60.0})
    monkeypatch.chdir(repo)
    uri = f"sqlite:///{repo / 'mlflow/mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    runs.client().set_registered_model_alias(NAME, models.CHAMPION, register(repo / "a", seed=0))
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "kiln"), "serve-model", "--port", str(port)],
        cwd=repo,
        env=clean_env(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        awaited(server, port)
        address = "jane.doe@example.com"
        assert posted(port, [{"text": f"{TEXTS[0]} write to {address}"}, {"text": TEXTS[1]}])[0] == 200
        status, body = posted(port, [{"text": TEXTS[2]}])
        assert status == 200
        assert posted(port, [{"text": " "}])[0] == 400, "a refused request answers nothing to log"
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    assert "requests logged to data/inference (texts masked)" in output, output
    rows = inference.read(repo / "data/inference")
    assert rows["text"].tolist() == [f"{TEXTS[0]} write to <EMAIL>", TEXTS[1], TEXTS[2]]
    assert rows["length"][0] == len(f"{TEXTS[0]} write to {address}")
    assert (rows["model"] == NAME).all() and (rows["version"] == "1").all()
    assert rows["label"][2] == body["predictions"][0]["label"]
    assert json.loads(rows["probabilities"][2]) == pytest.approx({k: body["predictions"][0][k] for k in LABELS})
    assert rows["request"].nunique() == 2 and (rows["latency_ms"] > 0).all()
    logged = b"".join(f.read_bytes() for f in (repo / "data/inference").rglob("*") if f.is_file())
    assert address.encode() not in logged


def _version_folder(store: Path, number: str) -> Path:
    """The registered version's folder in the SQLite store's artifact root."""
    source = models.version(runs.client(), NAME, number).source.removeprefix("models:/")
    return next(p.parent for p in (store / "mlruns").rglob("MLmodel") if source in str(p))


def _plant_loader(folder: Path, mark: Path) -> None:
    """The version's MLmodel rewritten to load a module of its own from code/: no pickle."""
    import yaml

    (folder / "code" / "planted.py").write_text(
        f"import pathlib\npathlib.Path({str(mark)!r}).touch()\n"
        "def _load_pyfunc(path, model_config=None):\n    raise RuntimeError('planted')\n"
    )
    described = yaml.safe_load((folder / "MLmodel").read_text())
    described["flavors"]["python_function"]["loader_module"] = "planted"
    (folder / "MLmodel").write_text(yaml.safe_dump(described))


@pytest.mark.slow
def test_a_version_that_loads_its_own_code_is_refused_everywhere(store):
    """A registered version whose MLmodel names its own loader module in code/ (row 1 of
    issue 25): predict, serve-model, explain, the gate and the retrain's champion lookup
    refuse it in one line, and its code never runs."""
    number = register(store / "a", seed=0)
    mark = store / "planted-ran"
    _plant_loader(_version_folder(store, number), mark)
    client = runs.client()
    client.set_registered_model_alias(NAME, models.CHAMPION, number)
    refusal = f"version {number} of '{NAME}' is not a model Kiln registered (its MLmodel loads 'planted'"
    with pytest.raises(KilnError, match="not a model Kiln registered"):
        models.champion_reference(NAME)
    test = pd.DataFrame({"text": TEXTS, "label": [LABELS[i % len(LABELS)] for i in range(len(TEXTS))]})
    with pytest.raises(KilnError, match="gate: version 1 of 'kiln-test' is not a model Kiln registered"):
        gating.score(NAME, number, test, FAST)

    repo = store / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}")
    uri = f"models:/{NAME}/{number}"
    commands = {
        "predict": ["predict", "a text", "--model", uri],
        "explain": ["explain", "a text", "--model", f"models:/{NAME}@{models.CHAMPION}"],
        "serve-model": ["serve-model", "--model", uri, "--port", str(free_port())],
    }
    for command, args in commands.items():
        out = subprocess.run(
            [str(Path(sys.executable).parent / "kiln"), *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert lines[0].startswith(f"kiln: error: {command}: ") and refusal in lines[0], lines[0]
        assert "nothing of it was loaded" in lines[0]
    assert not mark.exists()
