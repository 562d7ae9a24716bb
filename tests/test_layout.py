"""The project's shape: the layer rule, and nothing shadowing the mlflow package."""

import subprocess
import sys

from tests.conftest import BIN, ROOT


def test_mlflow_folder_has_no_init():
    assert (ROOT / "mlflow").is_dir()
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_import_mlflow_from_repo_root_is_the_installed_package():
    code = "import mlflow, pathlib; print(pathlib.Path(mlflow.__file__).resolve())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    assert "site-packages" in path, path
    assert not path.startswith(str(ROOT / "mlflow")), path


def test_components_never_import_tools():
    """import-linter's contracts (pyproject.toml): components import no prefect, mlflow,
    dvc, nor pipelines."""
    out = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken" in out.stdout
