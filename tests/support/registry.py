"""A registry on a throwaway SQLite store, and tiny models registered in it as Kiln
registers them."""

from pathlib import Path

from tests.support.data import TEXTS
from tests.support.stores import empty_store
from tests.support.tiny import tiny_onnx

NAME = "kiln-test"
# The gate's evidence of a version whose every check passed.
TAGS = {
    "gate.export_max_abs_diff": "1e-06",
    "gate.export_agreement": "1.0",
    "gate.quantize_agreement": "1.0",
    "gate.quantize_f1_drop": "0.0",
    "data.validation": "passed",
}


def use_store(folder: Path, monkeypatch) -> Path:
    """An empty SQLite store in `folder`, the test's working directory, as MLflow's store."""
    import mlflow

    monkeypatch.chdir(folder)  # the SQLite store keeps artifacts under ./mlruns
    uri = empty_store(folder / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.set_tracking_uri(uri)
    return folder


def register(folder: Path, seed: int, commit: str = "abc", temperature: float = 1.0) -> str:
    """A tiny model registered with the PyTorch model that explains it; `commit` goes into
    its metadata, so the same weights with another commit are another file."""
    from components.deploy.metadata import read_metadata, stamp
    from pipelines.registry import models

    torch_model, model, tokenizer = tiny_onnx(folder, seed)
    stamp(model, {**read_metadata(model), "git_commit": commit})
    source = folder / "explainer"
    torch_model.save_pretrained(source)
    (source / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    registered = models.register_model(
        NAME, model, tokenizer, TEXTS[:2], TAGS, None, {"dvc.lock": "stages: {}\n"}, source, temperature
    )
    return registered.version
