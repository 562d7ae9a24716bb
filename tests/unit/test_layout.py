"""The project's shape: the layer rule, and nothing shadowing the mlflow package."""

import subprocess
import sys

from tests.support.repo import BIN, ROOT


def test_mlflow_folder_has_no_init():
    assert (ROOT / "mlflow").is_dir()
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_import_mlflow_from_repo_root_is_the_installed_package():
    code = "import mlflow, pathlib; print(pathlib.Path(mlflow.__file__).resolve())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    assert "site-packages" in path, path
    assert not path.startswith(str(ROOT / "mlflow")), path


def test_import_contracts_hold():
    """import-linter's contracts (pyproject.toml): components import no prefect, mlflow,
    dvc, nor pipelines; pipelines/ imports only downward through its layers."""
    out = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pipelines are layered" in out.stdout and "Contracts: 3 kept, 0 broken" in out.stdout


def test_no_pipelines_module_is_over_250_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "pipelines").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 250
    }
    assert not long, long


def test_a_missing_input_is_worded_in_one_place():
    """ "X is missing; the Y stage makes it" comes from StageContext.missing alone, with Y
    read from DVC's graph, not written into each stage."""
    out = subprocess.run(
        ["grep", "-rnI", "stage makes it", "pipelines", "components"], cwd=ROOT, capture_output=True, text=True
    )
    found = out.stdout.splitlines()
    assert len(found) == 1 and found[0].startswith("pipelines/stagekit/contract.py:"), found


def test_no_module_imports_itself_through_others():
    """No import circle among Kiln's modules (imports inside functions count; those under
    TYPE_CHECKING never run): a circle makes import order matter and two modules one."""
    import grimp

    graph = grimp.build_graph("components", "pipelines", exclude_type_checking_imports=True, cache_dir=None)
    circles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if module in graph.find_upstream_modules(imported)
        }
    )
    assert not circles, circles
