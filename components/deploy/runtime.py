"""Inference with an exported classifier: ONNX Runtime and the `tokenizers` tokenizer
it was trained with, nothing else (no torch, no pickles). Used by evaluation, the
promotion gate, `kiln predict` and the served MLflow model alike."""

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from components.errors import KilnError

log = logging.getLogger(__name__)

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


class TextEncoder:
    """Texts to padded token ids and attention masks, cut at the model's token limit, with
    the tokenizer.json the model was trained with."""

    # Characters of a text tokenized first; BBC articles average ~4.5 characters a token.
    CHARS_PER_TOKEN = 8

    def __init__(self, path: Path, max_length: int):
        from tokenizers import Tokenizer

        if not path.is_file():
            raise KilnError(f"tokenizer {path} is missing")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for a broken file
            raise KilnError(f"tokenizer {path} is corrupt ({err})") from None
        pad = self.tokenizer.token_to_id("[PAD]")
        if pad is None:
            raise KilnError(f"tokenizer {path} has no [PAD] token")
        self.max_length = max_length
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad, pad_token="[PAD]")

    def _head(self, text: str) -> str:
        """The text up to the last space before max_length * CHARS_PER_TOKEN characters.
        Tokenizing a whole article to keep its first 128 tokens costs more than running a
        small model on them; normalisation and pre-tokenisation are per character and split
        at spaces, so the tokens of such a head equal the text's own up to the cut."""
        limit = self.max_length * self.CHARS_PER_TOKEN
        cut = text.rfind(" ", 0, limit) if len(text) > limit else -1
        return text[:cut] if cut > 0 else text

    def __call__(self, texts: list[str], warn: bool = False) -> dict[str, np.ndarray]:
        heads = [self._head(text) for text in texts]
        encodings = self.tokenizer.encode_batch(heads)
        inputs = [h if e.overflowing or h == t else t for e, h, t in zip(encodings, heads, texts)]
        if inputs != heads:
            # A head that did not fill the limit may have lost tokens: those texts go whole.
            encodings = self.tokenizer.encode_batch(inputs)
        cut = [i for i, e in enumerate(encodings) if e.overflowing]
        if warn and cut:
            log.warning(
                "%d of %d texts are longer than the model's %d tokens and were truncated (first: text %d)",
                len(cut),
                len(texts),
                self.max_length,
                cut[0],
            )
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }


class OnnxClassifier:
    """Texts in, labels and probabilities out. The label map and token limit come from
    the ONNX file's own metadata."""

    def __init__(self, model: Path, tokenizer: Path, threads: int | None = None):
        from components.deploy.metadata import read_metadata

        meta = read_metadata(model)
        if "labels" not in meta or "max_length" not in meta:
            raise KilnError(f"ONNX model {model} lacks Kiln's metadata (labels, max_length); export it with Kiln")
        labels: dict[str, int] = meta["labels"]  # type: ignore[assignment]
        self.labels = [label for label, _ in sorted(labels.items(), key=lambda item: item[1])]
        self.max_length = int(meta["max_length"])  # type: ignore[arg-type]
        self.metadata = meta
        self.encoder = TextEncoder(tokenizer, self.max_length)
        self.session = session(model, threads)

    @staticmethod
    def check(texts: object) -> list[str]:
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

    def encode(self, texts: list[str], warn: bool = False) -> dict[str, np.ndarray]:
        return self.encoder(texts, warn)

    def logits(self, texts: list[str], batch_size: int = 32, warn: bool = False) -> np.ndarray:
        parts = [
            self.session.run(["logits"], self.encode(texts[i : i + batch_size], warn))[0]
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(parts)

    def predict(self, texts: object, temperature: float = 1.0) -> list[dict]:
        """[{label, probabilities: {label: p}}] for each text of a request."""
        return predictions(self.labels, self.logits(self.check(texts), warn=True), temperature)


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


def load_classifier(model: Path, tokenizer: Path | None = None, threads: int | None = None) -> TextClassifier:
    """The runtime for an exported file, by the family its metadata names (a transformer
    needs its tokenizer; a classical model tokenizes inside its graph)."""
    from components.deploy.metadata import read_metadata

    if read_metadata(model).get("family") == "classical":
        from components.classical.runtime import ClassicalClassifier

        return ClassicalClassifier(model, threads)
    if tokenizer is None:
        raise KilnError(f"ONNX model {model} is a transformer and needs its tokenizer.json")
    return OnnxClassifier(model, tokenizer, threads)
