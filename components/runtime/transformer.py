"""Inference with an exported transformer: ONNX Runtime and the `tokenizers` tokenizer it
was trained with, nothing else (no torch, no pickles)."""

import logging
from pathlib import Path

import numpy as np

from components.errors import KilnError
from components.runtime.session import check_request, predictions, session

log = logging.getLogger(__name__)


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

    # The request checks every family's runtime makes alike.
    check = staticmethod(check_request)

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
