"""The registered champion served and loaded as operators do: over HTTP by `mlflow models
serve`, and a version planted with code of its own refused by every command that loads one."""

import json
import shutil
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
from tests.support.params import shipped
from tests.support.registry import NAME, register, use_store
from tests.support.repo import ROOT, clean_env
from tests.support.shared import free_port

FAST = shipped("evaluate", latency_texts=10, batches=2, rounds=1, warmup=1)


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
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError as err:
                if time.time() > deadline or server.poll() is not None:
                    output = server.stdout.read().decode() if server.poll() is not None else "no /ping"
                    raise AssertionError(output) from err
                time.sleep(1)

        def post(records: list[dict], params: dict | None = None) -> tuple[int, dict]:
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
