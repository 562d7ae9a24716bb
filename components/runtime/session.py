"""What every exported classifier's runtime shares: an ONNX Runtime session on a chosen
number of threads, the checks a request must pass, and logits turned into labels and
probabilities. ONNX Runtime alone: no torch, no pickles."""

from pathlib import Path
from typing import Protocol

import numpy as np

from components.errors import KilnError

# A request larger than this is refused rather than left to exhaust memory.
MAX_BATCH = 1024


def cores() -> int:
    """Threads for bulk work (predicting a whole split): OMP_NUM_THREADS where it is set, as
    torch reads it, else every core this process may run on."""
    import os

    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def session(model: Path, threads: int | None = None):
    """An ONNX Runtime CPU session of `model` on `threads` intra-op threads: a fixed count,
    for latencies comparable between models and runs; None: cores(), for bulk predictions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's Fail / InvalidGraph / NoSuchFile
        raise KilnError(f"ONNX model {model} cannot be loaded ({err})") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def check_request(texts: object) -> list[str]:
    """The request as a list of non-empty strings, or a KilnError saying what is wrong."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise KilnError(f"expected a text or a list of texts, got {type(texts).__name__}")
    if not texts:
        raise KilnError("no texts to classify")
    if len(texts) > MAX_BATCH:
        raise KilnError(f"{len(texts)} texts in one request; at most {MAX_BATCH}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise KilnError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise KilnError(f"text {i} is empty")
    return list(texts)


def predictions(labels: list[str], logits: np.ndarray, temperature: float = 1.0) -> list[dict]:
    """Each row's label and probabilities; `temperature` divides the logits first (the one
    fitted on val when it calibrates the model better, else 1)."""
    return [
        {"label": labels[int(row.argmax())], "probabilities": {label: float(p) for label, p in zip(labels, row)}}
        for row in _softmax(np.asarray(logits, float) / temperature)
    ]


class TextClassifier(Protocol):
    """What every family's runtime offers: the transformer's OnnxClassifier and the
    classical family's ClassicalClassifier."""

    labels: list[str]
    metadata: dict[str, object]

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...

    def predict(self, texts: object, temperature: float = 1.0) -> list[dict]: ...
