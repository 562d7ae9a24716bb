"""Inference with a classical ONNX file: raw texts in, ONNX Runtime alone (no scikit-learn,
no tokenizer file, no pickles), behind the interface of
`components.runtime.transformer.OnnxClassifier`: `labels`, `metadata`, `check`, `logits`,
`predict`."""

from pathlib import Path

import numpy as np

from components.errors import KilnError
from components.runtime.session import check_request, predictions, session


class ClassicalClassifier:
    """Texts in, labels and probabilities out. The label map comes from the file's own
    metadata."""

    # The same request checks as the transformer's runtime, so both answer alike.
    check = staticmethod(check_request)

    def __init__(self, model: Path, threads: int | None = None):
        from components.deploy.metadata import read_metadata

        meta = read_metadata(model)
        if meta.get("family") != "classical" or "labels" not in meta:
            raise KilnError(
                f"ONNX model {model} is not a classical Kiln model (its metadata lacks family: classical "
                f"and labels); export it with components.classical.model.export"
            )
        labels: dict[str, int] = meta["labels"]  # type: ignore[assignment]
        self.labels = [label for label, _ in sorted(labels.items(), key=lambda item: item[1])]
        self.metadata = meta
        self.session = session(model, threads)

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Batches bound the tokenizer's padded [batch, longest text] tensor of strings."""
        parts = [
            self.session.run(["logits"], {"text": np.array(texts[i : i + batch_size], dtype=object)})[0]
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(parts)

    def predict(self, texts: object, temperature: float = 1.0) -> list[dict]:
        """[{label, probabilities: {label: p}}] for each text of a request."""
        return predictions(self.labels, self.logits(self.check(texts)), temperature)
