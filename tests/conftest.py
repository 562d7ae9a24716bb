"""Fixtures and hooks; the helpers the tests share live in tests/support."""

import os
import shutil
from pathlib import Path

import pytest

from tests.support import prefect
from tests.support import webhook as hook
from tests.support.repo import SHARED_PREFECT, copy_repo, kiln
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
    return dest


@pytest.fixture(scope="session", autouse=True)
def prefect_api(request, tmp_path_factory):
    """One Prefect server for the session's pipeline runs, when it has any (not in the fast
    tier): each `kiln run` would otherwise start and stop a temporary one."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    with prefect.server(tmp_path_factory.mktemp("prefect")) as url:
        os.environ[SHARED_PREFECT] = url
        yield url
        del os.environ[SHARED_PREFECT]


@pytest.fixture
def webhook():
    """A local HTTP endpoint for Apprise's json:// notifications; yields (url, bodies)."""
    with hook.listening() as endpoint:
        yield endpoint


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
