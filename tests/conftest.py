"""Shared fixtures: a throwaway copy of the repository, and the `kiln` of this venv."""

import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def project_files() -> list[str]:
    """The repository's files as a clone would have them (tracked plus new, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any tracking server or Prefect API of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "KILN_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository in its own git repo, with no outputs and an empty MLflow store."""
    return copy_repo(tmp_path / "kiln")


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory) -> Path:
    """A tiny-config copy whose data stages and tokenizer have run: made once a session."""
    dest = tiny_repo(copy_repo(tmp_path_factory.mktemp("prepared") / "kiln"))
    out = kiln("run", "augment", "tokenize", cwd=dest)
    assert out.returncode == 0, out.stdout + out.stderr
    return dest


@pytest.fixture
def prepared(prepared_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of `prepared_template`, with an empty MLflow store of its own."""
    dest = tmp_path / "kiln"
    shutil.copytree(
        prepared_template, dest, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "artifacts", ".prefect")
    )
    return dest


def copy_repo(dest: Path) -> Path:
    """`dest` as a new git repo holding the project's files, without any outputs."""
    for name in project_files():
        outputs = (
            "data/raw/",
            "data/validated/",
            "data/split/",
            "data/augmented/",
            "data/quarantine/",
            "models/",
            "reports/",
            "checkpoints/",
            "mlflow/mlflow.db",
        )
        if (name.startswith(outputs) and not name.endswith(".gitignore")) or name == "dvc.lock":
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    git = ["git", "-c", "user.name=kiln-test", "-c", "user.email=test@kiln.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=clean_env(**extra), capture_output=True, text=True, timeout=900)


# The Prefect API that `kiln run` and `kiln retrain` get in tests (see `prefect_api`).
SHARED_PREFECT = "KILN_TEST_PREFECT_API_URL"


def kiln(*args: str, cwd: Path, own_prefect: bool = False, **extra: str) -> subprocess.CompletedProcess:
    """`kiln ARGS` in `cwd`. A run or retrain uses the test session's Prefect server instead
    of starting its own (seconds each), unless `own_prefect` or PREFECT_API_URL is given:
    tests of the temporary server itself use `own_prefect`."""
    if args[:1] in (("run",), ("retrain",)) and not own_prefect and os.environ.get(SHARED_PREFECT):
        extra.setdefault("PREFECT_API_URL", os.environ[SHARED_PREFECT])
    return run([str(BIN / "kiln"), *args], cwd, **extra)


@pytest.fixture(scope="session", autouse=True)
def prefect_api(request, tmp_path_factory):
    """One Prefect server for the session's pipeline runs, when it has any (not in the fast
    tier): each `kiln run` would otherwise start and stop a temporary one."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    import socket
    import time
    import urllib.request

    home = tmp_path_factory.mktemp("prefect")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(
            # As `kiln run` starts its own (lifecycle.TemporaryApi): runs need the API alone,
            # and the background services would take CPU from the tests all session.
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-services", "--no-ui"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        assert server.poll() is None, (home / "server.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the tests' Prefect server did not start"
        time.sleep(0.5)
    os.environ[SHARED_PREFECT] = url
    yield url
    del os.environ[SHARED_PREFECT]
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def set_params(repo: Path, **sections: dict) -> None:
    """Merge `sections` into the copy's params.yaml."""
    import yaml

    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        _merge(params.setdefault(name, {}), values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@functools.cache
def _shipped() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def shipped_params(**sections: dict) -> dict:
    """params.yaml's values, with `sections` merged in (for `parse`)."""
    params = copy.deepcopy(_shipped())
    for name, values in sections.items():
        _merge(params.setdefault(name, {}), values)
    return params


def shipped(key: str, **changes):
    """The config model at `key`, a params.yaml section or a dotted path into one
    ("finetune.loop"), holding params.yaml's values with `changes` merged in: the models
    have no defaults, so a test builds a config this way and names only the knobs it is
    about."""
    from pipelines.core.params import Params

    model, values = Params, shipped_params()
    for part in key.split("."):
        model = next(f.annotation for name, f in model.model_fields.items() if part in (name, f.alias))
        values = values[part]
    _merge(values, changes)
    return model.model_validate(values)


def _merge(into: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def tiny_frame(rows_per_label: int = 12) -> pd.DataFrame:
    """A small labelled dataset with distinct texts, balanced over the BBC labels."""
    rows = []
    for label in LABELS:
        for i in range(rows_per_label):
            words = " ".join(f"{label}word{j}" for j in range(i % 5 + 3))
            rows.append(
                {"text": f"Story {i} about {label}: {words}. More detail {i * 7} follows here.", "label": label}
            )
    return pd.DataFrame(rows)


# A model and budget small enough for a stage test to train in seconds.
TINY_TRAINING = {
    "encoder": {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64, "max_length": 32},
    "tokenize": {"vocab_size": 300},
    # From scratch: a pretrained start is for tests that test it (test_pretrained).
    "pretrain": {
        "init": None,
        "loop": {"max_steps": 6, "batch_size": 8, "val_every_steps": 3, "checkpoint_every": 2, "log_every": 1},
    },
    # The tiny models train on the augmented copies too, at the rates their margins were set for.
    # No more epochs for small data (min_steps): the tiny models' margins were set without them.
    "finetune": {
        "augmented": True,
        "pretrained_min_steps": 0,
        "loop": {"max_epochs": 2, "min_steps": 0, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
        "optim": {"lr": 5e-4},
    },
    "distill": {
        "student": {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32},
        "hidden_weight": 1.0,
        "augmented": True,
        "optim": {"lr": 1e-3},
        "loop": {"max_epochs": 1, "min_steps": 0, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
    },
    "prune": {
        "curve": [0.0, 0.25, 0.5, 0.75],
        "importance_batches": 2,
        "loop": {"max_epochs": 1, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
    },
    # fp32 whatever the CPU: the tiny models' margins were set for it.
    "hardware": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
    # A model trained for seconds sits on its decision boundaries, where INT8 noise flips
    # predictions by chance: the pipeline tests do not test the INT8 gate (test_deploy does).
    "quantize": {"min_agreement": 0.0, "max_f1_drop": 1.0},
    "evaluate": {"latency_texts": 10, "batches": 2, "rounds": 1, "warmup": 1},
    # A model trained for seconds must still get through the gate on its first run.
    "promote": {"min_macro_f1": 0.0, "max_latency_ms_p95_b1": 1000.0},
}


def tiny_repo(repo: Path, rows_per_label: int = 12, **overrides: dict) -> Path:
    """`repo` set up to train on `tiny_frame` with TINY_TRAINING (and `overrides`)."""
    tiny_frame(rows_per_label).to_csv(repo / "data/external/mine.csv", index=False)
    set_params(repo, ingest={"source": "file", "file": {"path": "data/external/mine.csv"}}, **TINY_TRAINING)
    if overrides:
        set_params(repo, **overrides)
    return repo


TEXTS = tiny_frame(8)["text"].tolist()


def tiny_onnx(folder: Path, seed: int = 0):
    """(PyTorch classifier, its optimised and stamped ONNX file, tokenizer.json) of a tiny
    untrained model in `folder`; `seed` picks its weights."""
    import torch

    from components.deploy.metadata import stamp
    from components.deploy.onnx import export, optimize
    from components.runtime.transformer import TextEncoder
    from components.text.classifier import MeanPoolClassifier
    from components.text.model import bert_config
    from components.text.tokenizer import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(TEXTS, shipped("tokenize", vocab_size=200, min_frequency=1))
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(seed)
    config = bert_config(
        shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=32, dropout=0.0),
        tokenizer.get_vocab_size(),
        tokenizer.token_to_id("[PAD]"),
        num_labels=len(LABELS),
    )
    model = MeanPoolClassifier(config).eval()
    encode = TextEncoder(folder / "tokenizer.json", 32)
    raw, path = folder / "raw.onnx", folder / "model.onnx"
    export(model, {k: torch.from_numpy(v) for k, v in encode(TEXTS[:2]).items()}, raw, opset=17)
    optimize(raw, path)
    raw.unlink()
    stamp(path, {"labels": {label: i for i, label in enumerate(LABELS)}, "max_length": 32, "git_commit": "abc"})
    return model, path, folder / "tokenizer.json"


def good_batch(start: int = 0, rows_per_label: int = 4) -> pd.DataFrame:
    """New texts in the words of `tiny_frame` (reversed word order), so nothing drifts."""
    rows = []
    for label in LABELS:
        for i in range(start, start + rows_per_label):
            words = " ".join(f"{label}word{j}" for j in reversed(range(i % 5 + 3)))
            rows.append(
                {"text": f"Story {i} about {label}: {words}. More detail {i * 7} follows here.", "label": label}
            )
    return pd.DataFrame(rows)


def drifted_batch() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"lol omg zzyzx qwv {i} sooo gud #blessed wow" for i in range(20)], "label": "tech"})


def incoming_repo(repo: Path, **overrides) -> Path:
    """A tiny repo whose dataset is `tiny_frame` plus the batches of data/incoming."""
    tiny_repo(repo)
    set_params(repo, ingest={"source": "incoming", "incoming": {"base": "file"}}, **overrides)
    return repo


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    """A local HTTP endpoint for Apprise's json:// notifications; yields (url, bodies)."""
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_port}/kiln", _Hook.received
    server.shutdown()


# The order `make test`'s workers take whole files in (with --no-loadscope-reorder), longest
# first (as measured). xdist hands each worker one file, then another whenever it is down
# to two tests: a file of one or two long tests is followed by a short one, which its
# worker takes at once and runs after it, so that no long file waits behind another.
ORDER = [
    "test_faults.py",
    "test_operations.py",  # 2 tests
    "test_training_stages.py",
    "test_params.py",
    "test_pipeline.py",  # 1 test
    "test_layout.py",
    "test_search.py",
    "test_generality.py",  # 2 tests
    "test_stats.py",
    "test_pretrained.py",  # 1 test
    "test_split.py",
    "test_retrain.py",
    "test_roles.py",  # 2 tests
    "test_sources.py",
    "test_stages.py",
    "test_registry.py",
    "test_audit.py",
    "test_pii_pipeline.py",  # 1 test
    "test_selection.py",
    "test_cli.py",
    "test_tokenizer.py",
]


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
