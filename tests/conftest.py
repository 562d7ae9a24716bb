"""Fixtures and hooks; the helpers the tests share live in tests/support."""

import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from tests.support import prefect_server
from tests.support import webhook as hook
from tests.support.repo import SHARED_PREFECT, copy_repo, kiln_here
from tests.support.stores import copy_with_store, empty_store
from tests.support.tiny import tiny_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository in its own git repo, with no outputs and an empty MLflow store."""
    return copy_repo(tmp_path / "kiln")


def built_once(tmp_path_factory, worker_id: str, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` run once for the whole `pytest` run, by the first worker to ask: each
    of `make test`'s workers is a session of its own, and would otherwise build it again.
    The others wait for it, then read it; nobody changes it (tests copy it first)."""
    # The workers' temporary folders share this parent (pytest-xdist's own recipe).
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a build that failed left
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory, worker_id) -> Path:
    """A tiny-config copy whose data stages and tokenizer have run."""

    def build(folder: Path) -> None:
        dest = tiny_repo(copy_repo(folder / "kiln"))
        out = kiln_here("run", "augment", "tokenize", cwd=dest)
        assert out.returncode == 0, out.stdout + out.stderr

    return built_once(tmp_path_factory, worker_id, "prepared", build) / "kiln"


@pytest.fixture(scope="session")
def trained_template(prepared_template: Path, tmp_path_factory, worker_id) -> Path:
    """The prepared repo with pretrain, finetune, distill and prune run once."""

    def build(folder: Path) -> None:
        dest = folder / "kiln"
        shutil.copytree(prepared_template, dest, symlinks=True)
        out = kiln_here("run", "prune", cwd=dest)
        assert out.returncode == 0, out.stdout + out.stderr

    return built_once(tmp_path_factory, worker_id, "trained", build) / "kiln"


@pytest.fixture
def prepared(prepared_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of `prepared_template`, with an empty MLflow store of its own."""
    dest = tmp_path / "kiln"
    shutil.copytree(
        prepared_template, dest, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "artifacts", ".prefect")
    )
    empty_store(dest / "mlflow/mlflow.db", home=dest)
    return dest


@pytest.fixture
def trained(trained_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of `trained_template`, its MLflow store with it."""
    return copy_with_store(trained_template, tmp_path / "kiln")


@pytest.fixture(scope="session", autouse=True)
def prefect_api(request, tmp_path_factory):
    """One Prefect server for the session's pipeline runs, when it has any (not in the fast
    tier): each `kiln run` would otherwise start and stop a temporary one."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    with prefect_server.server(tmp_path_factory.mktemp("prefect")) as url:
        os.environ[SHARED_PREFECT] = url
        yield url
        del os.environ[SHARED_PREFECT]


@pytest.fixture(autouse=True)
def tracking_uri_put_back():
    """MLflow's tracking URI as it was before each test: `mlflow.set_tracking_uri` names it
    for the whole process (a global, and MLFLOW_TRACKING_URI), so a test that named a
    server it then stopped left every later test in its worker talking to that server."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if (mlflow := sys.modules.get("mlflow")) is not None:
        mlflow.set_tracking_uri(None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def webhook():
    """A local HTTP endpoint for Apprise's json:// notifications; yields (url, bodies)."""
    with hook.listening() as endpoint:
        yield endpoint


# The tier folders, in the order `make test`'s workers take them.
TIERS = ("ops", "pipeline", "stages", "unit")
# Why a test fails before it runs: it sits in the wrong tier folder.
MISPLACED = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list) -> None:
    """Order the tests for `make test`'s two workers, which take whole files in the order
    given here (--dist loadfile --no-loadscope-reorder), the next file whenever one is down
    to its last two tests. The rule: tier by tier, ops, pipeline, stages, then unit, as a
    tier's files run longer than the next tier's (servers and whole pipelines take minutes,
    a stage tests' file tens of seconds to minutes, a unit file seconds); within a tier,
    the files with more slow tests first, then by path; within a file, the order it
    defines its tests in (a module's later tests may change what its earlier ones read).
    Long files first leaves the short ones to fill in at the end, so the two workers
    finish together.

    The tiers hold their markers: tests/unit holds every test that is neither slow nor
    postgres, and no other (`make test-fast` runs that folder alone); a test in the wrong
    folder fails, saying so."""
    tests = Path(__file__).parent

    def tier(item) -> str:
        return item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""

    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    for item in items:
        if (tier(item) == "unit") == bool(item.get_closest_marker("slow") or item.get_closest_marker("postgres")):
            item.stash[MISPLACED] = (
                f"{item.nodeid} is in the wrong tier folder: slow and postgres tests go outside tests/unit, "
                "the rest in it"
            )

    # The PostgreSQL file starts a worker, alone, as it did under the hand-kept list: after
    # other ops files on the same worker, its database went away mid-test in three fresh-clone
    # suites running (cause not found yet).
    postgres = {item.path for item in items if item.get_closest_marker("postgres")}

    def rank(item) -> tuple:
        place = TIERS.index(tier(item)) if tier(item) in TIERS else len(TIERS)
        return (place, item.path not in postgres, -slow[item.path], str(item.path))

    items.sort(key=rank)


def pytest_runtest_setup(item) -> None:
    if why := item.stash.get(MISPLACED, None):
        pytest.fail(why, pytrace=False)
