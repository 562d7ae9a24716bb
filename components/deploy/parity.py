"""The gates between a model and the file that ships it: an exported ONNX file must give
the PyTorch model's logits, and an INT8 file must keep FP32's predictions and macro-F1.
Each gate raises a KilnError that says what it measured against what it allows."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from components.deploy.evaluation import quality
from components.deploy.runtime import OnnxClassifier, TextEncoder
from components.errors import KilnError


class Scores(Protocol):
    labels: list[str]

    def logits(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Parity:
    """How far a candidate's logits are from the reference's on the same inputs."""

    texts: int
    max_abs_diff: float
    agreement: float

    def within(self, max_abs_diff: float) -> bool:
        return self.max_abs_diff <= max_abs_diff and self.agreement == 1.0


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    if reference.shape != candidate.shape:
        raise ValueError(f"logits of shape {candidate.shape} against {reference.shape}")
    agreement = float((reference.argmax(-1) == candidate.argmax(-1)).mean())
    return Parity(len(reference), float(np.abs(reference - candidate).max()), agreement)


class TorchClassifier:
    """A PyTorch classifier behind the same interface as OnnxClassifier, fed by the same
    tokenization code, so two runtimes differ only in the model and its runtime."""

    def __init__(self, model: torch.nn.Module, tokenizer: Path, labels: list[str]):
        self.model = model.eval()
        self.labels = labels
        self.encoder = TextEncoder(tokenizer, model.config.max_position_embeddings)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return self.model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.concatenate(
            [self.run(self.encoder(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        )


def parity_gate(
    name: str, model: TorchClassifier, runtime: OnnxClassifier, texts: list[str], max_abs_diff: float
) -> Parity:
    """Compare ONNX Runtime with PyTorch on `texts` (batches of 32, so padding is
    exercised too); a KilnError if they differ by more than the gate allows."""
    feeds = [runtime.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    onnx = np.concatenate([runtime.session.run(["logits"], feed)[0] for feed in feeds])
    result = parity(np.concatenate([model.run(feed) for feed in feeds]), onnx)
    if not result.within(max_abs_diff):
        differ = round((1 - result.agreement) * result.texts)
        raise KilnError(
            f"export: parity gate failed for {name}: max |logit difference| {result.max_abs_diff:.2e} "
            f"(allowed {max_abs_diff:.0e}) and {differ} of {result.texts} predicted labels differ "
            f"from PyTorch on held-out texts; nothing is exported"
        )
    return result


@dataclass(frozen=True)
class Agreement:
    agreement: float
    fp32_macro_f1: float
    int8_macro_f1: float


def agreement_gate(
    fp32: Scores,
    int8: Scores,
    texts: list[str],
    truth: list[int],
    min_agreement: float,
    max_f1_drop: float,
    split: str = "test",
) -> Agreement:
    """INT8 against FP32 on the whole `split`; a KilnError if predictions agree on fewer
    than `min_agreement` of the texts or macro-F1 drops by more than `max_f1_drop`."""
    before = fp32.logits(texts).argmax(-1)
    after = int8.logits(texts).argmax(-1)
    found = Agreement(
        float((before == after).mean()),
        quality(truth, before.tolist(), fp32.labels)["macro_f1"],
        quality(truth, after.tolist(), int8.labels)["macro_f1"],
    )
    drop = found.fp32_macro_f1 - found.int8_macro_f1
    if found.agreement < min_agreement or drop > max_f1_drop:
        raise KilnError(
            f"quantize: parity gate failed: INT8 agrees with FP32 on {found.agreement:.1%} of {len(texts)} "
            f"{split} texts (needs {min_agreement:.1%}) and loses {drop * 100:.2f} macro-F1 points "
            f"(allowed {max_f1_drop * 100:.2f}); nothing is written"
        )
    return found
