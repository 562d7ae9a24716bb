"""Fixtures and hooks; the helpers the tests share live in tests/support."""

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.support import prefect_server
from tests.support import webhook as hook
from tests.support.repo import SHARED_PREFECT, copy_repo, kiln
from tests.support.stores import empty_store
from tests.support.tiny import tiny_repo


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
    empty_store(dest / "mlflow/mlflow.db", home=dest)
    return dest


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
