"""What the gates between a model and its file measured, as typed records: the export
stage, the classical stage and the search's trials make them, later stages read them
(export.json, the INT8 file's metadata, the search's front). Pydantic alone, so a reader
imports neither torch nor ONNX."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

from components.errors import KilnError


class Parity(BaseModel):
    """How far an exported file's logits are from the model it was made from, on the
    same held-out texts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    texts: int
    max_abs_diff: float
    agreement: float  # share of texts both label alike
    size_mb: float | None = None  # the exported file's; None where only logits were compared

    def require(self, max_abs_diff: float, gate: str, measure: str, reference: str, after: str = "") -> "Parity":
        """Itself, or a KilnError that starts with `gate` ("export: parity gate failed for
        tiny") and ends with `after` if the file differs from `reference` by more than
        `max_abs_diff` in any `measure` (logit, probability) or labels any text differently."""
        if self.max_abs_diff <= max_abs_diff and self.agreement == 1.0:
            return self
        differ = round((1 - self.agreement) * self.texts)
        raise KilnError(
            f"{gate}: max |{measure} difference| {self.max_abs_diff:.2e} (allowed {max_abs_diff:.0e}) and "
            f"{differ} of {self.texts} predicted labels differ from {reference} on held-out texts{after}"
        )


class QuantizeReport(BaseModel):
    """INT8 against FP32 on the whole val split, and the gate's verdict."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["dynamic", "static"]
    texts: int
    agreement: float  # share of val predictions equal to FP32's
    fp32_macro_f1: float
    int8_macro_f1: float
    one_text_f1: float  # the most macro-F1 one changed FP32 prediction can cost on these texts
    min_agreement: float  # quantize's params, as set
    max_f1_drop: float
    allowed_disagreements: int  # what the gate allowed: the params, or one text where they ask for less
    allowed_f1_drop: float
    passed: bool
    verdict: str  # measured against allowed, and why
