"""The gates between a model and the file that ships it: an exported ONNX file must give
the PyTorch model's logits, and an INT8 file must keep FP32's predictions and macro-F1
(on val, to within what one text can show). Each gate raises a KilnError that says what
it measured against what it allows; `agreement` measures INT8 without raising."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from components.deploy.config import QuantizeConfig
from components.deploy.evaluation import quality
from components.deploy.gate import Tolerance, int8_tolerance
from components.deploy.records import Parity
from components.errors import KilnError
from components.runtime.transformer import OnnxClassifier, TextEncoder
from components.stats import one_text_loss


class Scores(Protocol):
    labels: list[str]

    def logits(self, texts: list[str]) -> np.ndarray: ...


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    if reference.shape != candidate.shape:
        raise ValueError(f"logits of shape {candidate.shape} against {reference.shape}")
    agreement = float((reference.argmax(-1) == candidate.argmax(-1)).mean())
    return Parity(texts=len(reference), max_abs_diff=float(np.abs(reference - candidate).max()), agreement=agreement)


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
    gate = f"export: parity gate failed for {name}"
    return result.require(max_abs_diff, gate, "logit", "PyTorch", after="; nothing is exported")


@dataclass(frozen=True)
class Agreement:
    """INT8 against FP32 on one split, and what the gate allows there."""

    texts: int
    differing: int  # texts the two label differently
    fp32_macro_f1: float
    int8_macro_f1: float
    one_text_f1: float  # the most macro-F1 one changed FP32 prediction can cost on these texts
    tolerance: Tolerance

    @property
    def agreement(self) -> float:
        return 1 - self.differing / self.texts

    @property
    def passed(self) -> bool:
        return self.tolerance.admits(self.differing, self.fp32_macro_f1 - self.int8_macro_f1)

    def verdict(self, split: str) -> str:
        return self.tolerance.verdict(self.differing, self.fp32_macro_f1 - self.int8_macro_f1, split)


def agreement(fp32: Scores, int8: Scores, texts: list[str], truth: list[int], cfg: QuantizeConfig) -> Agreement:
    """INT8 against FP32 on all of `texts`, held to `cfg`'s bounds widened to what one
    text of them can show."""
    before = fp32.logits(texts).argmax(-1)
    after = int8.logits(texts).argmax(-1)
    one_text = one_text_loss(truth, before.tolist(), len(fp32.labels))
    return Agreement(
        len(texts),
        int((before != after).sum()),
        quality(truth, before.tolist(), fp32.labels)["macro_f1"],
        quality(truth, after.tolist(), int8.labels)["macro_f1"],
        one_text,
        int8_tolerance(cfg, len(texts), one_text),
    )


def agreement_gate(
    fp32: Scores, int8: Scores, texts: list[str], truth: list[int], cfg: QuantizeConfig, split: str
) -> Agreement:
    """`agreement` on the whole `split`, a KilnError if INT8 falls outside the tolerance."""
    found = agreement(fp32, int8, texts, truth, cfg)
    if not found.passed:
        raise KilnError(f"quantize: parity gate failed: {found.verdict(split)}; nothing is written")
    return found
