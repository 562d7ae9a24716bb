"""The MLflow registry end of Kiln on a real (SQLite) store: registration as a model from
code, the promotion gate, rollback, the history, a concurrent alias move, and serving
the champion over HTTP with `mlflow models serve`."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from components.deploy.metadata import read_metadata, stamp
from components.errors import KilnError
from components.runtime.transformer import OnnxClassifier
from pipelines.registry import gating, models, promotion
from pipelines.registry.gating import Bounds
from pipelines.tracking import runs
from tests.support.data import LABELS, TEXTS
from tests.support.params import shipped
from tests.support.repo import ROOT, clean_env
from tests.support.tiny import tiny_onnx

NAME = "kiln-test"
TAGS = {
    "gate.export_max_abs_diff": "1e-06",
    "gate.export_agreement": "1.0",
    "gate.quantize_agreement": "1.0",
    "gate.quantize_f1_drop": "0.0",
    "data.validation": "passed",
}
FAST = shipped("evaluate", latency_texts=10, batches=2, rounds=1, warmup=1)
GATE = shipped("promote", tolerance=0.0, min_macro_f1=0.0, max_latency_ms_p95_b1=1000, max_size_mb=10)
BOUNDS = Bounds(GATE, FAST, shipped("export"), shipped("quantize"), floor=0.0, floor_source="test")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SQLite store keeps artifacts under ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    import mlflow

    mlflow.set_tracking_uri(uri)
    return tmp_path


def _register(folder: Path, seed: int, commit: str = "abc", temperature: float = 1.0) -> str:
    """A tiny model registered with the PyTorch model that explains it; `commit` goes into
    its metadata, so the same weights with another commit are another file."""
    torch_model, model, tokenizer = tiny_onnx(folder, seed)
    stamp(model, {**read_metadata(model), "git_commit": commit})
    source = folder / "explainer"
    torch_model.save_pretrained(source)
    (source / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    registered = models.register_model(
        NAME, model, tokenizer, TEXTS[:2], TAGS, None, {"dvc.lock": "stages: {}\n"}, source, temperature
    )
    return registered.version


def test_the_same_file_registered_again_is_the_same_version(store):
    _, model, tokenizer = tiny_onnx(store / "a", 0)
    first = models.register_model(NAME, model, tokenizer, TEXTS[:2], TAGS, run_id=None, lineage={})
    again = models.register_model(NAME, model, tokenizer, TEXTS[:2], TAGS, run_id=None, lineage={})
    assert not first.reused and again.reused and again.version == first.version == "1"
    assert again.uri == "models:/kiln-test/1" and first.uri.startswith("models:/m-")
    assert len(runs.client().search_model_versions(f"name = '{NAME}'")) == 1


def _gate(test: pd.DataFrame, number: str):
    decision = promotion.promote(runs.client(), NAME, number, test, BOUNDS)
    return decision.champion, decision


def test_gate_promotes_refuses_and_rolls_back(store):
    a = _register(store / "a", seed=0)
    # The test labels are model a's own predictions: a scores what it can, others less.
    runtime = OnnxClassifier(next((store / "a").glob("model.onnx")), store / "a" / "tokenizer.json")
    test = pd.DataFrame({"text": TEXTS, "label": [LABELS[i] for i in runtime.logits(TEXTS).argmax(-1)]})

    champion, decision = _gate(test, a)
    assert decision.promoted and champion == a  # no champion yet: the floors decide

    worse = _register(store / "b", seed=7)
    champion, decision = _gate(test, worse)
    assert not decision.promoted and champion == a
    client = runs.client()
    tags = models.version(client, NAME, worse).tags
    assert tags["promotion.decision"] == "refused" and tags["promotion.vs_champion"].startswith("fail")
    assert str(models.alias(client, NAME, models.CHAMPION).version) == a

    again = _register(store / "c", seed=0, commit="def")
    champion, decision = _gate(test, again)
    assert decision.promoted and champion == again

    back = promotion.rollback(client, NAME, "test")
    assert back.promoted and back.version == a and back.champion == a
    assert str(models.alias(client, NAME, models.CHAMPION).version) == a
    events = promotion.history(client, NAME)
    assert [(e["action"], e["version"]) for e in events] == [
        ("rollback", a),
        ("gate", again),
        ("gate", worse),
        ("gate", a),
    ]
    assert str(models.alias(client, NAME, models.CHALLENGER).version) == again
    with pytest.raises(KilnError, match="no champion before version 1"):
        promotion.rollback(client, NAME, None)  # a was the first champion


def test_alias_moved_by_someone_else_is_not_overwritten(store):
    a = _register(store / "a", seed=0)
    b = _register(store / "b", seed=1)
    client = runs.client()
    client.set_registered_model_alias(NAME, models.CHAMPION, b)
    with pytest.raises(KilnError, match="moved to version"):
        promotion.move_champion(client, NAME, a, expected=None)
    assert str(models.alias(client, NAME, models.CHAMPION).version) == b


def test_unknown_version_and_unreachable_registry_are_clear(store, monkeypatch):
    client = runs.client()
    _register(store / "a", seed=0)
    with pytest.raises(KilnError, match="has no version 42"):
        models.version(client, NAME, 42)
    assert models.alias(client, NAME, models.CHAMPION) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri("http://127.0.0.1:9")
    with pytest.raises(KilnError, match="unreachable|Connection|connect"), models.registry_errors("history"):
        promotion.history(runs.client(), NAME)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_serves_the_champion_over_http(store):
    a = _register(store / "a", seed=0, temperature=2.0)
    client = runs.client()
    client.set_registered_model_alias(NAME, models.CHAMPION, a)
    port = _free_port()
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


def test_runs_of_a_process_that_died_are_marked_killed(store):
    import socket

    from pipelines.tracking.owners import owner, reap

    client = runs.client()
    experiment = runs.experiment_id(client, "kiln", store)
    # The UI opens it on its training runs, not on MLflow 3's GenAI view.
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = client.create_run(
        experiment, tags={"kiln.host": socket.gethostname(), "kiln.pid": str(gone.pid), "kiln.pid_started": "0"}
    )
    alive = client.create_run(experiment, tags=owner())
    assert reap(client, experiment) == 1
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


class _Payload:
    def __init__(self, mark: str):
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (Path(self.mark),))


def test_a_registered_version_edited_to_hold_a_pickle_is_never_unpickled(store):
    """The MLmodel of a registered version rewritten to load `python_model.pkl`: neither
    `kiln predict` (pyfunc load in Kiln's environment) nor `kiln serve-model` runs it."""
    import cloudpickle
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    number = _register(store / "a", seed=0)
    source = models.version(runs.client(), NAME, number).source.removeprefix("models:/")
    folder = next(p.parent for p in (store / "mlruns").rglob("MLmodel") if source in str(p))
    mark = store / "payload-ran"
    (folder / "python_model.pkl").write_bytes(cloudpickle.dumps(_Payload(str(mark))))
    described = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = described["flavors"]["python_function"]
    flavor.pop("model_code_path")
    flavor.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (folder / "MLmodel").write_text(yaml.safe_dump(described))

    with pytest.raises(MlflowException, match="pickle is disallowed"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{number}")
    repo = store / "repo"  # the smallest Kiln repository: the command needs one to start
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}")
    served = subprocess.run(
        [
            str(Path(sys.executable).parent / "kiln"),
            "serve-model",
            "--model",
            f"models:/{NAME}/{number}",
            "--port",
            str(_free_port()),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 1 and "kiln: error: serve-model" in served.stderr, served.stderr
    assert "it holds python_model.pkl, which Kiln never writes" in served.stderr
    assert not mark.exists()


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
    number = _register(store / "a", seed=0)
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
        "serve-model": ["serve-model", "--model", uri, "--port", str(_free_port())],
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


def test_only_kilns_own_files_pass_the_check(store, tmp_path, monkeypatch):
    """What the check refuses, one change at a time, and a version registered from an
    older commit of Kiln's, which loads although this installation's code differs."""
    import shutil

    import yaml

    from pipelines.registry import versions

    number = _register(store / "a", seed=0)
    good = versions.fetch(models.version(runs.client(), NAME, number), tmp_path / "good", "test")
    versions.check(good, "it", None)

    def variant(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    def loader(folder: Path) -> None:
        described = yaml.safe_load((folder / "MLmodel").read_text())
        described["flavors"]["python_function"]["loader_module"] = "mlflow.pyfunc.model"
        (folder / "MLmodel").write_text(yaml.safe_dump(described))

    refused = {
        "edited": (lambda f: (f / "code/components/errors.py").write_text("import os\n"), "code/components/errors.py"),
        "serving": (lambda f: (f / "serving.py").write_text("import os\n"), "serving.py is not"),
        "stray": (lambda f: (f / "code/components/sitecustomize.py").write_text(""), "sitecustomize.py"),
        "loader": (loader, "loads 'mlflow.pyfunc.model'"),
        "pickle": (lambda f: (f / "artifacts/weights.pkl").write_bytes(b"x"), "weights.pkl is not a kind"),
        "link": (lambda f: (f / "artifacts/link.json").symlink_to("/etc/hostname"), "link.json is a link"),
    }
    for name, (change, expected) in refused.items():
        with pytest.raises(KilnError, match="not a model Kiln registered") as found:
            versions.check(variant(name, change), "it", None)
        assert expected in str(found.value), (name, str(found.value))
    # Bytecode beside the checked source would be loaded instead of it: it goes.
    cached = variant("bytecode", lambda f: (f / "code/components/__pycache__").mkdir())
    versions.check(cached, "it", None)
    assert not (cached / "code/components/__pycache__").exists()

    # Kiln at another commit: the version holds that commit's errors.py and serving.py,
    # which lay where it was before pipelines/ was grouped by concern.
    kiln = tmp_path / "kiln"
    shutil.copytree(versions.KILN / "components", kiln / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (kiln / "pipelines").mkdir()
    older_serving = "# as an older Kiln had it\n" + (versions.KILN / versions.SERVING).read_text()
    (kiln / versions.FORMER_SERVING).write_text(older_serving)
    older = "# as an older Kiln had it\n" + (kiln / "components/errors.py").read_text()
    (kiln / "components/errors.py").write_text(older)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=kiln, check=True)
    subprocess.run([*git, "add", "-A"], cwd=kiln, check=True)
    subprocess.run([*git, "commit", "-qm", "older"], cwd=kiln, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=kiln, capture_output=True, text=True).stdout.strip()
    (kiln / "components/errors.py").write_text(older + "# and changed since\n")
    monkeypatch.setattr(versions, "KILN", kiln)
    (kiln / versions.SERVING).parent.mkdir()
    (kiln / versions.SERVING).write_text(older_serving + "# and moved since\n")

    def older_files(folder: Path) -> None:
        (folder / "code/components/errors.py").write_text(older)
        (folder / "serving.py").write_text(older_serving)

    registered = variant("older", older_files)
    versions.check(registered, "it", commit)
    with pytest.raises(KilnError, match="which it was registered from, is not in this repository"):
        versions.check(registered, "it", commit[::-1])
    with pytest.raises(KilnError, match="names no commit"):
        versions.check(registered, "it", None)
