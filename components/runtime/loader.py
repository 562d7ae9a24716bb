"""The runtime for an exported file, whichever family made it. Used by evaluation, the
promotion gate, `kiln predict` and the served MLflow model alike."""

from pathlib import Path

from components.errors import KilnError
from components.runtime.classical import ClassicalClassifier
from components.runtime.session import TextClassifier
from components.runtime.transformer import OnnxClassifier


def load_classifier(model: Path, tokenizer: Path | None = None, threads: int | None = None) -> TextClassifier:
    """The runtime for an exported file, by the family its metadata names (a transformer
    needs its tokenizer; a classical model tokenizes inside its graph)."""
    from components.deploy.metadata import read_metadata

    if read_metadata(model).get("family") == "classical":
        return ClassicalClassifier(model, threads)
    if tokenizer is None:
        raise KilnError(f"ONNX model {model} is a transformer and needs its tokenizer.json")
    return OnnxClassifier(model, tokenizer, threads)
