"""The MLflow registry end of Kiln on a real (SQLite) store: registration as a model from
code, the promotion gate, rollback, the history, a concurrent alias move, and the check
that refuses a version Kiln did not register (serving: tests/ops/test_serving.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from components.errors import KilnError
from components.runtime.transformer import OnnxClassifier
from pipelines.registry import models, promotion
from pipelines.registry.gating import Bounds
from pipelines.tracking import runs
from tests.support.data import LABELS, TEXTS
from tests.support.params import shipped
from tests.support.registry import NAME, TAGS, register, use_store
from tests.support.repo import ROOT, clean_env
from tests.support.shared import free_port
from tests.support.tiny import tiny_onnx

FAST = shipped("evaluate", latency_texts=10, batches=2, rounds=1, warmup=1)
GATE = shipped("promote", tolerance=0.0, min_macro_f1=0.0, max_latency_ms_p95_b1=1000, max_size_mb=10)
BOUNDS = Bounds(GATE, FAST, shipped("export"), shipped("quantize"), floor=0.0, floor_source="test")


@pytest.fixture
def store(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


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
    a = register(store / "a", seed=0)
    # The test labels are model a's own predictions: a scores what it can, others less.
    runtime = OnnxClassifier(next((store / "a").glob("model.onnx")), store / "a" / "tokenizer.json")
    test = pd.DataFrame({"text": TEXTS, "label": [LABELS[i] for i in runtime.logits(TEXTS).argmax(-1)]})

    champion, decision = _gate(test, a)
    assert decision.promoted and champion == a  # no champion yet: the floors decide

    worse = register(store / "b", seed=7)
    champion, decision = _gate(test, worse)
    assert not decision.promoted and champion == a
    client = runs.client()
    tags = models.version(client, NAME, worse).tags
    assert tags["promotion.decision"] == "refused" and tags["promotion.vs_champion"].startswith("fail")
    assert str(models.alias(client, NAME, models.CHAMPION).version) == a
    # Refused, the newest version is still the challenger...
    assert str(models.alias(client, NAME, models.CHALLENGER).version) == worse

    again = register(store / "c", seed=0, commit="def")
    champion, decision = _gate(test, again)
    assert decision.promoted and champion == again
    # ...promoted, it no longer awaits the gate, and nothing else does.
    assert models.alias(client, NAME, models.CHALLENGER) is None

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
    assert models.alias(client, NAME, models.CHALLENGER) is None
    with pytest.raises(KilnError, match="no champion before version 1"):
        promotion.rollback(client, NAME, None)  # a was the first champion


def test_alias_moved_by_someone_else_is_not_overwritten(store):
    a = register(store / "a", seed=0)
    b = register(store / "b", seed=1)
    client = runs.client()
    client.set_registered_model_alias(NAME, models.CHAMPION, b)
    with pytest.raises(KilnError, match="moved to version"):
        promotion.move_champion(client, NAME, a, expected=None)
    assert str(models.alias(client, NAME, models.CHAMPION).version) == b


def test_unknown_version_and_unreachable_registry_are_clear(store, monkeypatch):
    client = runs.client()
    register(store / "a", seed=0)
    with pytest.raises(KilnError, match="has no version 42"):
        models.version(client, NAME, 42)
    assert models.alias(client, NAME, models.CHAMPION) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri("http://127.0.0.1:9")
    with pytest.raises(KilnError, match="unreachable|Connection|connect"), models.registry_errors("history"):
        promotion.history(runs.client(), NAME)


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

    number = register(store / "a", seed=0)
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
            str(free_port()),
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


def test_only_kilns_own_files_pass_the_check(store, tmp_path, monkeypatch):
    """What the check refuses, one change at a time, and a version registered from an
    older commit of Kiln's, which loads although this installation's code differs."""
    import shutil

    import yaml

    from pipelines.registry import versions

    number = register(store / "a", seed=0)
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
